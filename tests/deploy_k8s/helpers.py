"""Specs and scalings the Kubernetes tests render and apply."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiservice.application.deploying.ports import ReplicaSpec
from aiservice.domain.deployments import Autoscaling, Scaling, ScalingMetric

SPEC = ReplicaSpec(
    tenant_id="acme",
    deployment_id="0b6f1f8e-5c1d-4a57-9a8e-1d2f3c4b5a69",
    deployment="fraud",
    revision=1,
    model_id="4c1e2f3a-8b9d-4e5f-a6b7-c8d9e0f1a2b3",
    version=3,
    replicas=2,
    cpu_millicores=500,
    memory_bytes=512 * 1024**2,
)


def spec(**changes: Any) -> ReplicaSpec:
    return replace(SPEC, **changes)


def autoscaled(metric: ScalingMetric, target: float, low: int = 2, high: int = 6) -> Scaling:
    return Scaling(low, high, Autoscaling(enabled=True, metric=metric, target=target, cooldown_seconds=45))


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}
