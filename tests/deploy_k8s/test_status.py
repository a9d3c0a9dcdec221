"""A Deployment's status as a RevisionState: readiness of the revision, and failed rollouts."""

from __future__ import annotations

from typing import Any

from aiservice.application.deploying.ports import RevisionState
from aiservice.infrastructure.deploy.k8s_status import revision_state


def _deployment(revision: int = 2, replicas: int = 3, generation: int = 4, **status: Any) -> dict[str, Any]:
    """A Deployment as the API server sends it; ``status`` holds the status fields (camelCase)."""
    return {
        "metadata": {"name": "acme-fraud-0123", "namespace": "models", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"aiservice.io/revision": str(revision)}}},
        },
        "status": {"observedGeneration": generation, **status},
    }


def test_a_finished_rollout_is_ready_with_its_service_as_endpoint() -> None:
    state = revision_state(_deployment(replicas=3, updatedReplicas=3, readyReplicas=3), 2)
    assert state == RevisionState(
        revision=2, desired=3, ready=3, endpoint="http://acme-fraud-0123.models.svc.cluster.local"
    )


def test_a_later_revision_does_not_run() -> None:
    assert revision_state(_deployment(revision=2, updatedReplicas=3, readyReplicas=3), 3) is None


def test_an_earlier_revision_is_the_old_pods_of_a_rolling_update() -> None:
    deployment = _deployment(revision=2, updatedReplicas=1, readyReplicas=3)
    deployment["status"]["replicas"] = 4
    state = revision_state(deployment, 1)
    assert state is not None and (state.desired, state.ready, state.endpoint) == (
        3,
        3,
        "http://acme-fraud-0123.models.svc.cluster.local",
    )


def test_an_earlier_revision_is_gone_once_the_rollout_finished() -> None:
    deployment = _deployment(revision=2, updatedReplicas=3, readyReplicas=3)
    deployment["status"]["replicas"] = 3
    assert revision_state(deployment, 1) is None


def test_a_status_behind_the_generation_counts_every_pod_as_an_earlier_revisions() -> None:
    deployment = _deployment(updatedReplicas=3, readyReplicas=3)
    deployment["status"]["replicas"] = 3
    deployment["metadata"]["generation"] = 5
    current, earlier = revision_state(deployment, 2), revision_state(deployment, 1)
    assert current is not None and (current.ready, current.endpoint) == (0, None)
    assert earlier is not None and earlier.ready == 3


def test_during_a_rolling_update_old_pods_do_not_count_as_ready() -> None:
    # 4 pods: 1 of the new template, 3 old ones; all 4 ready.
    deployment = _deployment(replicas=3, updatedReplicas=1, readyReplicas=4)
    deployment["status"]["replicas"] = 4
    state = revision_state(deployment, 2)
    assert state is not None and state.ready == 1


def test_a_progress_deadline_exceeded_is_a_failed_revision() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "acme-fraud-0123-5d8f" has timed out progressing.',
    }
    state = revision_state(_deployment(updatedReplicas=1, conditions=[condition]), 2)
    assert (
        state is not None and state.failed == 'ReplicaSet "acme-fraud-0123-5d8f" has timed out progressing.'
    )


def test_a_replica_failure_is_a_failed_revision() -> None:
    condition = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": "quota exceeded",
    }
    state = revision_state(_deployment(conditions=[condition]), 2)
    assert state is not None and state.failed == "quota exceeded"


def test_a_progressing_rollout_has_not_failed() -> None:
    condition = {
        "type": "Progressing",
        "status": "True",
        "reason": "ReplicaSetUpdated",
        "message": "progressing",
    }
    state = revision_state(_deployment(conditions=[condition]), 2)
    assert state is not None and state.failed is None
