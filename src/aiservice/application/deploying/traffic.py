"""The stable endpoints' side: find where a deployment's serving revision answers and pass requests on.

A caller names the deployment, never a version, so nothing changes for it when a rollout moves the
name to another revision. Where a deployment answers is read from the database (the reconcile loop
writes it) and remembered for ``ttl_s``; the revision it replaced keeps answering for longer than
that (the loop's drain), so a front still holding the old address is answered, not refused.

A request that got no response at all (the replica crashed, or was replaced) is sent once more,
after the address is read again; predictions are idempotent. A second failure is a clear 503.
A dev deployment scaled to zero asks for a replica and waits for it to be warm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiservice.application.deploying.ports import (
    DeploymentDirectory,
    Forwarded,
    ReplicaClient,
    ReplicaUnreachable,
)
from aiservice.domain.deployments import Deployment
from aiservice.domain.errors import NotFound, Unavailable
from aiservice.domain.tenancy import Permission, Principal

ROUTE_TTL_S = 1.0
REPLICA_TOKEN_HEADER = "X-Aiservice-Replica-Token"
FORWARDED_HEADERS = ("content-type", "x-request-id", "traceparent", "inference-header-content-length")


class ArmRouter(Protocol):
    """Routes a call by a running experiment on the deployment (``experimenting.deployment_arms``)."""

    async def forward(
        self,
        client: ReplicaClient,
        principal: Principal,
        deployment: Deployment,
        kind: str,
        body: bytes,
        sent: dict[str, str],
        headers: Mapping[str, str],
    ) -> Forwarded | None:
        """The chosen arm's answer, or None where the serving revision answers unrouted."""
        ...


@dataclass(frozen=True)
class DeploymentRoute:
    deployment: Deployment
    endpoint: str | None


def replica_path(kind: str, deployment: Deployment) -> str:
    """The replica's own route for a stable endpoint's request (it serves the pinned version)."""
    serving = deployment.serving or deployment.revision
    model, version = deployment.model_id, serving.version
    if kind == "v2":
        return f"/v2/models/{model}/versions/{version}/infer"
    return f"/api/v1/ai/models/{model}:{version}/{kind}"


class DeploymentTraffic:
    def __init__(
        self,
        directory: DeploymentDirectory,
        client: ReplicaClient,
        replica_token: Callable[[], str],
        wake: Callable[[str, str], None],
        *,
        ttl_s: float = ROUTE_TTL_S,
        cold_start_s: float = 60.0,
    ) -> None:
        self._directory = directory
        self._client = client
        self._token = replica_token
        self._wake = wake  # (tenant, name): ask a scaled-to-zero deployment for a replica
        self._ttl_s = ttl_s
        self._cold_start_s = cold_start_s
        self._routes: dict[tuple[str, str], tuple[float, DeploymentRoute | None]] = {}
        self.experiments: ArmRouter | None = None  # experiments on deployments (set by the bootstrap)

    async def forward(
        self, principal: Principal, name: str, kind: str, body: bytes, headers: dict[str, str]
    ) -> Forwarded:
        """Send ``body`` to the deployment's serving replicas; ``kind``: predict, batch-predict or v2."""
        principal.require(Permission.PREDICT)
        route = await self._route(principal, name, fresh=False)
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        sent[REPLICA_TOKEN_HEADER] = self._token()
        if self.experiments is not None:  # a running experiment on the deployment picks the arm
            routed = await self.experiments.forward(
                self._client, principal, route.deployment, kind, body, sent, headers
            )
            if routed is not None:
                return routed
        for attempt in (1, 2):
            endpoint = route.endpoint or await self._cold_start(principal, route)
            try:
                return await self._client.send(endpoint, replica_path(kind, route.deployment), body, sent)
            except ReplicaUnreachable as error:
                if attempt == 2:
                    raise Unavailable(
                        f"Deployment {name!r} has no replica that answers ({error}); try again shortly.",
                        code="replica-unavailable",
                        extra={"deployment": name, "retryAfter": 1},
                    ) from None
                route = await self._route(principal, name, fresh=True)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._client.close()

    def forget(self, tenant_id: str, name: str | None = None) -> None:
        for key in [k for k in self._routes if k[0] == tenant_id and (name is None or k[1] == name)]:
            self._routes.pop(key, None)

    async def serves(self, principal: Principal, name: str) -> bool:
        """Whether ``name`` is one of the caller's deployments (remembered, found or not, for ``ttl_s``):
        the v2 protocol's model names take deployment names first."""
        return await self._lookup(principal, name, fresh=False) is not None

    async def _lookup(self, principal: Principal, name: str, *, fresh: bool) -> DeploymentRoute | None:
        key = (principal.tenant_id, name)
        cached = self._routes.get(key)
        if cached is not None and not fresh and cached[0] > time.monotonic():
            route = cached[1]
        else:
            found = await asyncio.to_thread(self._directory.find, principal.tenant_id, name)
            route = None if found is None else DeploymentRoute(found, found.serving_endpoint())
            self._routes[key] = (time.monotonic() + self._ttl_s, route)
        if route is None or not principal.sees_model(route.deployment.model_id):
            return None
        return route

    async def _route(self, principal: Principal, name: str, *, fresh: bool) -> DeploymentRoute:
        route = await self._lookup(principal, name, fresh=fresh)
        if route is None:
            raise NotFound(f"No deployment {name!r} exists.", extra={"deployment": name})
        return route

    async def _cold_start(self, principal: Principal, route: DeploymentRoute) -> str:
        deployment = route.deployment
        if deployment.scaling.min_replicas > 0:  # only a dev deployment scaled to zero waits
            why = deployment.reason or f"its status is {deployment.status.value}"
            raise Unavailable(
                f"Deployment {deployment.name!r} has no ready replica: {why}.",
                code="deployment-not-ready",
                extra={
                    "deployment": deployment.name,
                    "deploymentStatus": deployment.status.value,
                    "retryAfter": 1,
                },
            )
        await asyncio.to_thread(self._wake, principal.tenant_id, deployment.name)
        deadline = time.monotonic() + self._cold_start_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            fresh = await self._route(principal, deployment.name, fresh=True)
            if fresh.endpoint is not None:
                return fresh.endpoint
        raise Unavailable(
            f"Deployment {deployment.name!r} was scaled to zero and no replica was warm within "
            f"{self._cold_start_s:g} s.",
            code="deployment-not-ready",
            extra={"deployment": deployment.name, "retryAfter": 5},
        )
