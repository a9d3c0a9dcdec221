"""Deployments: a stable, named endpoint for one model, served by replicas of one revision at a time.

A deployment keeps three revisions apart, because a rollout can fail half-way:

- ``revision``: the one asked for last (``POST .../deploy``, ``PATCH`` or ``rollback``);
- ``serving``: the one taking traffic now (None until the first rollout finishes);
- ``previous``: the one that took traffic before ``serving`` (what ``rollback`` returns to).

Traffic moves to ``revision`` only once its replicas are loaded and warm; a revision whose replicas
fail leaves ``serving`` alone and the deployment ``degraded`` (or ``failed`` when nothing serves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from aiservice.domain.errors import Conflict, FieldError, InvalidInput
from aiservice.domain.events import (
    DeploymentCreated,
    DeploymentDeleted,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentRolledBack,
    DeploymentRolledOut,
    DeploymentScaled,
    DomainEvent,
)
from aiservice.domain.quantities import HINT, cpu_millicores, memory_bytes

# A DNS-1035 label, as Kubernetes names a Deployment and a Service (the name becomes both).
DEPLOYMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 100
HISTORY_LENGTH = 20


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    ROLLING_OUT = "rolling_out"
    AVAILABLE = "available"
    DEGRADED = "degraded"  # something serves, but not what was asked (or no replica is ready)
    FAILED = "failed"  # nothing serves
    DELETED = "deleted"


class Environment(StrEnum):
    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"


class DeploymentTarget(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class ScalingMetric(StrEnum):
    CPU = "cpu"  # targetCPUUtilization, percent of the replica's CPU limit (or one core)
    CONCURRENCY = "concurrency"  # targetConcurrency: in-flight requests per replica
    LATENCY = "latency"  # targetLatencyMs: p95 over the last window


TARGET_FIELDS = {
    ScalingMetric.CPU: "targetCPUUtilization",
    ScalingMetric.CONCURRENCY: "targetConcurrency",
    ScalingMetric.LATENCY: "targetLatencyMs",
}


def check_deployment_name(name: str, field_name: str = "body.deploymentName") -> None:
    if not DEPLOYMENT_NAME.fullmatch(name):
        raise InvalidInput(
            f"Deployment name {name[:80]!r} must be 1-63 lower-case letters, digits or '-', start with "
            "a letter and end with a letter or digit (it names the Kubernetes objects too).",
            errors=[FieldError(field_name, "must match ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")],
        )


@dataclass(frozen=True)
class ResourceLimits:
    """CPU and memory per replica, as written (``"2"``, ``"500m"``, ``"4Gi"``), checked on parse."""

    cpu: str | None = None
    memory: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, where: str = "body.resourceLimits") -> ResourceLimits:
        raw = raw or {}
        errors: list[FieldError] = []
        values: dict[str, str | None] = {}
        for name, check in (("cpu", cpu_millicores), ("memory", memory_bytes)):
            value = raw.get(name)
            if value is None:
                values[name] = None
                continue
            text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
            try:
                if not isinstance(text, str):
                    raise ValueError(f"must be {HINT}")
                check(text)
                values[name] = text
            except ValueError as error:
                errors.append(FieldError(f"{where}.{name}", str(error)))
        for name in raw:
            if name not in ("cpu", "memory"):
                errors.append(FieldError(f"{where}.{name}", "unknown resource; known: cpu, memory"))
        if errors:
            raise InvalidInput(
                "Invalid resource limits: " + "; ".join(e.field for e in errors), errors=errors
            )
        return cls(cpu=values["cpu"], memory=values["memory"])

    @property
    def cpu_millicores(self) -> int | None:
        return None if self.cpu is None else cpu_millicores(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


@dataclass(frozen=True)
class Autoscaling:
    """When on, replicas follow one metric between min and max, no faster than the cool-down."""

    enabled: bool = False
    metric: ScalingMetric = ScalingMetric.CPU
    target: float = 70.0
    cooldown_seconds: float = 30.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, where: str = "body.autoscaling") -> Autoscaling:
        raw = raw or {}
        errors: list[FieldError] = []
        enabled = raw.get("enabled", bool(raw))
        if not isinstance(enabled, bool):
            errors.append(FieldError(f"{where}.enabled", "must be a boolean"))
        chosen = [(metric, name) for metric, name in TARGET_FIELDS.items() if raw.get(name) is not None]
        if len(chosen) > 1:
            names = ", ".join(name for _, name in chosen)
            errors.append(FieldError(f"{where}.{chosen[1][1]}", f"give one target, not several ({names})"))
        metric, name = chosen[0] if chosen else (ScalingMetric.CPU, TARGET_FIELDS[ScalingMetric.CPU])
        target = raw.get(name, 70)
        if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
            errors.append(FieldError(f"{where}.{name}", "must be a number above 0"))
        elif metric == ScalingMetric.CPU and target > 100:
            errors.append(FieldError(f"{where}.{name}", "is a percentage: 1 to 100"))
        cooldown = raw.get("cooldownSeconds", 30)
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not 0 <= cooldown <= 3600:
            errors.append(FieldError(f"{where}.cooldownSeconds", "must be 0 to 3600 seconds"))
        known = {"enabled", "cooldownSeconds", *TARGET_FIELDS.values()}
        errors += [
            FieldError(f"{where}.{k}", f"unknown; known: {sorted(known)}") for k in raw if k not in known
        ]
        if errors:
            raise InvalidInput("Invalid autoscaling: " + "; ".join(e.field for e in errors), errors=errors)
        return cls(
            enabled=bool(enabled), metric=metric, target=float(target), cooldown_seconds=float(cooldown)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            TARGET_FIELDS[self.metric]: self.target,
            "metric": self.metric.value,
            "cooldownSeconds": self.cooldown_seconds,
        }


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 1
    max_replicas: int = 1
    autoscaling: Autoscaling = field(default_factory=Autoscaling)

    def check(self, environment: Environment, where: str = "body") -> Scaling:
        errors: list[FieldError] = []
        floor = 0 if environment == Environment.DEV else 1
        if not floor <= self.min_replicas <= MAX_REPLICAS:
            why = "0 is allowed only for dev (scale to zero)" if self.min_replicas == 0 else ""
            errors.append(
                FieldError(f"{where}.minReplicas", f"must be {floor} to {MAX_REPLICAS} {why}".strip())
            )
        if not max(1, self.min_replicas) <= self.max_replicas <= MAX_REPLICAS:
            errors.append(
                FieldError(
                    f"{where}.maxReplicas", f"must be at least minReplicas (and 1), at most {MAX_REPLICAS}"
                )
            )
        if errors:
            raise InvalidInput(
                "Invalid replica counts: " + "; ".join(e.message for e in errors), errors=errors
            )
        return self

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Revision:
    """One rollout's target: a model version, and what the caller named to get it."""

    number: int
    version: int
    reference: str  # "production" (a stage), an alias, or the version number as text
    created_at: datetime
    rollback_of: int | None = None  # the revision number this one went back from

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.number,
            "version": self.version,
            "reference": self.reference,
            "createdAt": self.created_at.isoformat(),
            "rollbackOf": self.rollback_of,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Revision:
        return cls(
            number=int(data["revision"]),
            version=int(data["version"]),
            reference=str(data["reference"]),
            created_at=datetime.fromisoformat(data["createdAt"]),
            rollback_of=data.get("rollbackOf"),
        )


@dataclass(frozen=True)
class ReplicaLoad:
    """What the serving revision's replicas last reported (the autoscaler's inputs): requests in flight
    over all replicas, mean CPU per replica in percent of a core, and p95 latency over the last window."""

    in_flight: float
    cpu_percent: float
    p95_ms: float | None
    observed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "inFlight": self.in_flight,
            "cpuPercent": self.cpu_percent,
            "p95Ms": self.p95_ms,
            "observedAt": self.observed_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaLoad:
        p95 = data.get("p95Ms")
        return cls(
            in_flight=float(data["inFlight"]),
            cpu_percent=float(data["cpuPercent"]),
            p95_ms=None if p95 is None else float(p95),
            observed_at=datetime.fromisoformat(data["observedAt"]),
        )


@dataclass
class Deployment:
    tenant_id: str
    name: str
    model_id: str
    environment: Environment
    target: DeploymentTarget
    scaling: Scaling
    resources: ResourceLimits
    revision: Revision
    created_at: datetime
    updated_at: datetime
    id: str = field(default_factory=lambda: str(uuid4()))
    serving: Revision | None = None
    previous: Revision | None = None
    status: DeploymentStatus = DeploymentStatus.PENDING
    reason: str = ""
    replicas_desired: int = 0
    replicas_ready: int = 0
    created_by: str | None = None
    deleted_at: datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the latest events, newest last
    endpoints: dict[str, str] = field(default_factory=dict)  # revision number -> where its replicas answer
    load: ReplicaLoad | None = None  # the serving revision's last reported load
    events: list[DomainEvent] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        model_id: str,
        environment: Environment,
        target: DeploymentTarget,
        scaling: Scaling,
        resources: ResourceLimits,
        version: int,
        reference: str,
        now: datetime,
        created_by: str | None = None,
    ) -> Deployment:
        check_deployment_name(name)
        scaling.check(environment)
        deployment = cls(
            tenant_id=tenant_id,
            name=name,
            model_id=model_id,
            environment=environment,
            target=target,
            scaling=scaling,
            resources=resources,
            revision=Revision(1, version, reference, now),
            created_at=now,
            updated_at=now,
            replicas_desired=scaling.min_replicas,
            created_by=created_by,
        )
        deployment._record(
            DeploymentCreated,
            version=version,
            environment=environment.value,
            target=target.value,
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
        )
        return deployment

    @property
    def live(self) -> bool:
        return self.deleted_at is None

    @property
    def rolling(self) -> bool:
        """Whether the asked-for revision is not yet the serving one (and has not failed)."""
        return self.status in (DeploymentStatus.PENDING, DeploymentStatus.ROLLING_OUT)

    def roll_to(self, version: int, reference: str, now: datetime) -> Revision:
        """Ask for a new revision; traffic stays where it is until its replicas are warm."""
        self._require_live()
        self.revision = Revision(self.revision.number + 1, version, reference, now)
        self.status, self.reason, self.updated_at = DeploymentStatus.ROLLING_OUT, "", now
        return self.revision

    def rollback(self, now: datetime) -> Revision:
        """Ask for the revision served before this one, as a new revision (as Kubernetes does)."""
        self._require_live()
        back_to = self.previous if self.serving == self.revision or self.serving is None else self.serving
        if back_to is None:
            raise Conflict(
                f"Deployment {self.name!r} has no earlier revision to roll back to.",
                code="no-previous-revision",
                extra={"deployment": self.name},
            )
        self.revision = Revision(
            self.revision.number + 1,
            back_to.version,
            back_to.reference,
            now,
            rollback_of=self.revision.number,
        )
        self.status, self.reason, self.updated_at = DeploymentStatus.ROLLING_OUT, "", now
        return self.revision

    def rescale(self, scaling: Scaling, now: datetime) -> None:
        self._require_live()
        self.scaling = scaling.check(self.environment)
        self.updated_at = now
        self.scale_to(scaling.clamp(self.replicas_desired), "new replica bounds", now)

    def scale_to(self, replicas: int, reason: str, now: datetime) -> bool:
        """Set the desired replica count (already within bounds); True when it changed."""
        if replicas == self.replicas_desired:
            return False
        before, self.replicas_desired, self.updated_at = self.replicas_desired, replicas, now
        self._record(DeploymentScaled, from_replicas=before, to_replicas=replicas, reason=reason)
        return True

    def rolled_out(self, revision: int, ready: int, now: datetime) -> bool:
        """The replicas of ``revision`` are warm and take all traffic; False for a stale report."""
        if revision != self.revision.number or not self.live:
            return False
        self.replicas_ready, self.updated_at = ready, now
        if self.serving == self.revision:
            self.status = DeploymentStatus.AVAILABLE if ready else self.status
            return False
        before = self.serving
        self.previous, self.serving = before, self.revision
        self.status, self.reason = DeploymentStatus.AVAILABLE, ""
        previous_version = None if before is None else before.version
        if self.revision.rollback_of is not None:
            self._record(
                DeploymentRolledBack,
                revision=revision,
                version=self.revision.version,
                from_version=previous_version,
            )
        else:
            self._record(
                DeploymentRolledOut,
                revision=revision,
                version=self.revision.version,
                previous_version=previous_version,
            )
        return True

    def revision_failed(self, revision: int, reason: str, now: datetime) -> bool:
        """The replicas of ``revision`` could not start: traffic stays on ``serving`` (if any)."""
        if revision != self.revision.number or not self.live or not self.rolling:
            return False
        self.status = DeploymentStatus.FAILED if self.serving is None else DeploymentStatus.DEGRADED
        self.reason, self.updated_at = reason, now
        self._record(DeploymentFailed, revision=revision, version=self.revision.version, reason=reason)
        return True

    def replicas_observed(self, ready: int, now: datetime, reason: str = "") -> None:
        """A health report of the serving revision: none ready while some are asked for is ``degraded``
        (fewer than asked, as while scaling up, is still ``available``; ``replicas`` says how many)."""
        if not self.live or self.rolling:
            return
        self.replicas_ready = ready
        if self.status == DeploymentStatus.DEGRADED and self.serving != self.revision:
            return  # a failed rollout keeps its reason until the next PATCH or rollback
        short = ready == 0 and self.replicas_desired > 0
        status = DeploymentStatus.DEGRADED if short else DeploymentStatus.AVAILABLE
        if status != self.status or (reason and reason != self.reason):
            self.status, self.reason, self.updated_at = status, reason if short else "", now

    def delete(self, now: datetime) -> None:
        self._require_live()
        self.deleted_at, self.updated_at = now, now
        self.status, self.replicas_desired = DeploymentStatus.DELETED, 0
        self._record(DeploymentDeleted)

    def serving_endpoint(self) -> str | None:
        """Where the serving revision's replicas answer (None: none is ready)."""
        return None if self.serving is None else self.endpoints.get(str(self.serving.number))

    def _require_live(self) -> None:
        if not self.live:
            raise Conflict(f"Deployment {self.name!r} is deleted.", extra={"deployment": self.name})

    def _record(self, kind: type[DeploymentEvent], **data: Any) -> None:
        event = kind(
            tenant_id=self.tenant_id, aggregate_id=self.id, name=self.name, model_id=self.model_id, **data
        )
        self.events.append(event)
        entry = {"event": kind.__name__, "at": event.occurred_at.isoformat(), **data}
        self.history = [*self.history, entry][-HISTORY_LENGTH:]


def with_scaling(
    scaling: Scaling,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    autoscaling: Mapping[str, Any] | None = None,
    where: str = "body",
) -> Scaling:
    """``scaling`` with the PATCH body's replica and autoscaling fields that were given applied."""
    updated = scaling
    if min_replicas is not None:
        updated = replace(updated, min_replicas=min_replicas)
    if max_replicas is not None:
        updated = replace(updated, max_replicas=max_replicas)
    if autoscaling is not None:
        updated = replace(updated, autoscaling=Autoscaling.parse(autoscaling, f"{where}.autoscaling"))
    return updated
