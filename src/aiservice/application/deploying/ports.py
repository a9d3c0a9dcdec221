"""The deployment ports: the repository, the deployers' cross-tenant view, and a deployer per target.

A ``Deployer`` runs replicas of one deployment revision somewhere (processes on this host, pods in a
Kubernetes namespace). It is told the desired state of a revision and reports what it sees; the
reconcile loop (``reconciler.py``) decides when traffic moves and writes the outcome to the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiservice.domain.deployments import Deployment, DeploymentStatus, DeploymentTarget, Environment
from aiservice.domain.pagination import Page


class DeploymentRepository(Protocol):
    """Deployments of the unit of work's tenant; deleted ones are invisible to ``get_by_name``."""

    def add(self, deployment: Deployment) -> None: ...
    def get_by_name(self, name: str, *, for_update: bool = False) -> Deployment | None: ...
    def get(self, deployment_id: str, *, for_update: bool = False) -> Deployment | None: ...
    def page(
        self,
        *,
        model_id: str | None,
        status: DeploymentStatus | None,
        environment: Environment | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Deployment]: ...
    def of_model(self, model_id: str) -> list[Deployment]: ...
    def count_live(self) -> int: ...
    def save(self, deployment: Deployment) -> None: ...


class DeploymentDirectory(Protocol):
    """Every tenant's live deployments (read-only, outside any unit of work)."""

    def live(self, target: DeploymentTarget | None = None) -> list[Deployment]: ...
    def find(self, tenant_id: str, name: str) -> Deployment | None: ...


@dataclass(frozen=True)
class ReplicaSpec:
    """What one revision's replicas run: a deployment's model version, so many copies, these limits."""

    tenant_id: str
    deployment_id: str
    deployment: str  # the stable name
    revision: int
    model_id: str
    version: int
    replicas: int
    cpu_millicores: int | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class RevisionState:
    """What a deployer sees of one revision's replicas."""

    revision: int
    desired: int
    ready: int
    endpoint: str | None = None  # base URL the stable endpoints forward to (None: nothing answers yet)
    failed: str | None = None  # why its replicas cannot start (a load error, a crash loop)
    in_flight: float = 0.0  # requests being answered, summed over the replicas
    cpu_percent: float = 0.0  # mean CPU use per replica, in percent of one core
    p95_ms: float | None = None  # over the last window


class Deployer(Protocol):
    target: DeploymentTarget
    # True where the platform scales replicas itself (Kubernetes' HPA): the reconcile loop's
    # autoscaler leaves such deployments alone and bounds nothing by this host's cores.
    scales_itself: bool

    def ensure(self, spec: ReplicaSpec) -> RevisionState:
        """Start (or resize to ``spec.replicas``) the revision's replicas; returns at once with what
        is seen now. Calling it again with the same spec changes nothing."""
        ...

    def observe(self, deployment_id: str, revision: int) -> RevisionState | None:
        """What runs of a revision, None when nothing does."""
        ...

    def retire(self, deployment_id: str, revision: int, drain_s: float) -> None:
        """Stop a revision's replicas once the requests they hold are answered (at most ``drain_s``)."""
        ...

    def revisions(self) -> dict[str, list[int]]:
        """The revisions that run, by deployment id (to stop what no deployment wants any more)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Forwarded:
    """A replica's answer, passed back to the caller as it came."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class ReplicaUnreachable(Exception):
    """No answer came from a replica (refused, reset, timed out before a response started)."""


class ReplicaClient(Protocol):
    """Sends one request to a revision's replicas (kept-alive connections per endpoint)."""

    async def send(self, endpoint: str, path: str, body: bytes, headers: dict[str, str]) -> Forwarded:
        """Raises ``ReplicaUnreachable`` when no response began (safe to send again elsewhere)."""
        ...

    async def close(self) -> None: ...
