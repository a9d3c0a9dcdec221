"""How many replicas a deployment wants, from what its replicas report: Kubernetes' HPA rule.

``desired = ceil(current * observed / target)``, ignored within a 10 % tolerance, bounded by the
deployment's min and max and by what the host can hold, and changed at most once per cool-down.
A dev deployment with ``minReplicas: 0`` goes to zero after a cool-down with no requests in flight
and no CPU use; its next request asks for one replica again (see ``Deployments.wake``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aiservice.application.deploying.ports import RevisionState
from aiservice.domain.deployments import Deployment, ScalingMetric

TOLERANCE = 0.1
IDLE_CPU_PERCENT = 1.0


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: str


def observed(deployment: Deployment, state: RevisionState) -> float | None:
    """The chosen metric per replica, in the target's unit; None when it cannot be read."""
    metric = deployment.scaling.autoscaling.metric
    replicas = max(1, state.ready)
    if metric == ScalingMetric.CPU:
        return state.cpu_percent
    if metric == ScalingMetric.CONCURRENCY:
        return state.in_flight / replicas
    return state.p95_ms


def decide(
    deployment: Deployment, state: RevisionState, *, host_limit: int, quiet_s: float, since_change_s: float
) -> ScaleDecision | None:
    """A new replica count for ``deployment``, or None to keep the one it has.

    ``quiet_s``: how long its replicas have had nothing in flight and no CPU use; ``since_change_s``:
    time since its replica count last changed (the cool-down counts from there)."""
    scaling = deployment.scaling
    current = deployment.replicas_desired
    ceiling = max(scaling.min_replicas, min(scaling.max_replicas, host_limit))
    if current > ceiling:
        return ScaleDecision(ceiling, f"bounded by the host's {host_limit} replicas")
    if not scaling.autoscaling.enabled or since_change_s < scaling.autoscaling.cooldown_seconds:
        return None
    if scaling.min_replicas == 0 and current > 0 and quiet_s >= scaling.autoscaling.cooldown_seconds:
        return ScaleDecision(0, f"idle for {quiet_s:.0f} s: scaled to zero")
    value = observed(deployment, state)
    if value is None or state.ready == 0:
        return None
    ratio = value / scaling.autoscaling.target
    if abs(ratio - 1) <= TOLERANCE:
        return None
    wanted = max(1, min(ceiling, max(scaling.min_replicas, math.ceil(state.ready * ratio))))
    if wanted == current:
        return None
    unit = {
        ScalingMetric.CPU: "% CPU",
        ScalingMetric.CONCURRENCY: " in flight",
        ScalingMetric.LATENCY: " ms p95",
    }
    metric = scaling.autoscaling.metric
    return ScaleDecision(
        wanted,
        f"{metric.value} {value:.1f}{unit[metric]} per replica vs target {scaling.autoscaling.target:g}",
    )


def is_quiet(state: RevisionState | None) -> bool:
    return state is None or (state.in_flight == 0 and state.cpu_percent < IDLE_CPU_PERCENT)
