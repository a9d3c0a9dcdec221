"""The deployment's rules, without a database: what a body may say, and how revisions move."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aiservice.domain.deployments import (
    Autoscaling,
    Deployment,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Scaling,
    ScalingMetric,
)
from aiservice.domain.errors import Conflict, InvalidInput

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def deployment(min_replicas: int = 2, environment: Environment = Environment.PRODUCTION) -> Deployment:
    return Deployment.create(
        tenant_id="acme",
        name="churn-prod",
        model_id="m1",
        environment=environment,
        target=DeploymentTarget.LOCAL,
        scaling=Scaling(min_replicas, max(1, min_replicas) + 2),
        resources=ResourceLimits.parse({"cpu": "2", "memory": "4Gi"}),
        version=1,
        reference="production",
        now=NOW,
    )


def test_kubernetes_quantities_are_parsed_and_bad_ones_name_their_field() -> None:
    limits = ResourceLimits.parse({"cpu": "500m", "memory": "512Mi"})
    assert (limits.cpu_millicores, limits.memory_bytes) == (500, 512 * 1024**2)
    with pytest.raises(InvalidInput) as refused:
        ResourceLimits.parse({"cpu": "two", "memory": "-1Gi", "gpu": 1})
    fields = {e.field for e in refused.value.errors}
    assert fields == {"body.resourceLimits.cpu", "body.resourceLimits.memory", "body.resourceLimits.gpu"}


def test_autoscaling_takes_one_target_of_three() -> None:
    assert Autoscaling.parse({"enabled": True, "targetConcurrency": 4}).metric == ScalingMetric.CONCURRENCY
    assert Autoscaling.parse({"targetLatencyMs": 50}).metric == ScalingMetric.LATENCY
    with pytest.raises(InvalidInput) as refused:
        Autoscaling.parse({"targetCPUUtilization": 70, "targetLatencyMs": 50})
    assert refused.value.errors[0].field == "body.autoscaling.targetLatencyMs"
    with pytest.raises(InvalidInput):
        Autoscaling.parse({"targetCPUUtilization": 170})


def test_scale_to_zero_is_for_dev_only() -> None:
    Scaling(0, 2).check(Environment.DEV)
    with pytest.raises(InvalidInput) as refused:
        Scaling(0, 2).check(Environment.PRODUCTION)
    assert refused.value.errors[0].field == "body.minReplicas"
    with pytest.raises(InvalidInput):
        Scaling(3, 2).check(Environment.DEV)


def test_a_name_must_be_a_dns_label() -> None:
    with pytest.raises(InvalidInput) as refused:
        Deployment.create(
            tenant_id="acme",
            name="Churn_Prod",
            model_id="m1",
            environment=Environment.DEV,
            target=DeploymentTarget.LOCAL,
            scaling=Scaling(),
            resources=ResourceLimits(),
            version=1,
            reference="1",
            now=NOW,
        )
    assert refused.value.errors[0].field == "body.deploymentName"


def test_traffic_moves_only_when_the_new_revision_is_warm() -> None:
    d = deployment()
    assert d.serving is None and d.status == DeploymentStatus.PENDING
    assert d.rolled_out(1, 2, NOW)
    assert d.serving == d.revision and d.status == DeploymentStatus.AVAILABLE
    d.roll_to(2, "2", NOW)
    assert d.serving is not None and d.serving.version == 1  # still the old one
    assert not d.rolled_out(1, 2, NOW)  # a report about an older revision changes nothing
    assert d.rolled_out(2, 2, NOW)
    assert (d.serving.version, d.previous and d.previous.version) == (2, 1)
    kinds = [type(e).__name__ for e in d.events]
    assert kinds == ["DeploymentCreated", "DeploymentRolledOut", "DeploymentRolledOut"]


def test_a_failed_revision_leaves_traffic_on_the_old_one_and_says_why() -> None:
    d = deployment()
    d.rolled_out(1, 2, NOW)
    d.roll_to(2, "2", NOW)
    assert d.revision_failed(2, "model could not load: bad bytes", NOW)
    assert d.status == DeploymentStatus.DEGRADED and "bad bytes" in d.reason
    assert d.serving is not None and d.serving.version == 1
    first = deployment()
    first.revision_failed(1, "no memory", NOW)
    assert first.status == DeploymentStatus.FAILED


def test_rollback_returns_to_the_previous_version_as_a_new_revision() -> None:
    d = deployment()
    with pytest.raises(Conflict):
        d.rollback(NOW)  # nothing served before
    d.rolled_out(1, 2, NOW)
    d.roll_to(2, "2", NOW)
    d.rolled_out(2, 2, NOW)
    revision = d.rollback(NOW)
    assert (revision.number, revision.version, revision.rollback_of) == (3, 1, 2)
    d.rolled_out(3, 2, NOW)
    assert type(d.events[-1]).__name__ == "DeploymentRolledBack"
    assert d.serving is not None and d.serving.version == 1


def test_rollback_of_a_failed_rollout_keeps_what_serves() -> None:
    d = deployment()
    d.rolled_out(1, 2, NOW)
    d.roll_to(2, "2", NOW)
    d.revision_failed(2, "crash loop", NOW)
    assert d.rollback(NOW).version == 1


def test_scaling_is_an_event_with_its_reason_and_history_keeps_the_latest() -> None:
    d = deployment()
    assert d.scale_to(3, "cpu 95% per replica vs target 70", NOW)
    assert not d.scale_to(3, "same", NOW)
    assert d.history[-1]["event"] == "DeploymentScaled" and d.history[-1]["to_replicas"] == 3
    for n in range(30):
        d.scale_to(4 + n % 2, "flap", NOW)
    assert len(d.history) == 20
