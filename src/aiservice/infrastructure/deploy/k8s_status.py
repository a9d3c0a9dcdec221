"""What a Deployment's status says of one revision, as a ``RevisionState`` (a pure function).

The Deployment is read as the API server sends it (camelCase JSON). Its revision is the one its pod
template carries in the ``aiservice.io/revision`` label. An earlier revision is what the pods of
earlier templates are while a rolling update replaces them (the status cannot tell earlier templates
apart, so they all count as the one asked about); a later revision does not run at all.

Counting the revision's ready replicas follows ``kubectl rollout status``: a status whose
``observedGeneration`` is behind ``metadata.generation`` describes the previous template, so all its
pods count as earlier ones (and its conditions are not this revision's either). During a
rolling update ``readyReplicas`` also counts the old pods; the old ones are assumed ready first, so
``ready`` is a lower bound: ``min(updated, ready - old)``.

A rollout fails when its ``Progressing`` condition turns False with reason
``ProgressDeadlineExceeded`` (no progress for ``progressDeadlineSeconds``), or a ``ReplicaFailure``
condition is True (a quota or admission refusing its pods); the condition's message says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiservice.application.deploying.ports import RevisionState
from aiservice.infrastructure.deploy.k8s_render import REVISION_LABEL


def service_url(name: str, namespace: str) -> str:
    """The cluster-internal base URL of a deployment's Service (port 80)."""
    return f"http://{name}.{namespace}.svc.cluster.local"


def template_revision(deployment: Mapping[str, Any]) -> int | None:
    """The revision the Deployment's pod template runs (None when it carries no readable label)."""
    labels = _get(deployment, "spec", "template", "metadata", "labels")
    value = labels.get(REVISION_LABEL) if isinstance(labels, Mapping) else None
    return int(value) if isinstance(value, str) and value.isdigit() else None


def revision_state(deployment: Mapping[str, Any], revision: int) -> RevisionState | None:
    """What runs of ``revision`` according to ``deployment``; None when nothing does."""
    running = template_revision(deployment)
    if running is None or revision > running:
        return None
    spec, status = _get(deployment, "spec") or {}, _get(deployment, "status") or {}
    metadata = _get(deployment, "metadata") or {}
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    stale = generation is not None and (observed is None or int(observed) < int(generation))
    total, ready_total = int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)
    updated = 0 if stale else int(status.get("updatedReplicas") or 0)
    old = max(0, total - updated)
    url = service_url(str(metadata.get("name", "")), str(metadata.get("namespace", "")))
    if revision < running:  # the pods of earlier templates, still running during a rolling update
        ready = min(old, ready_total)
        return (
            RevisionState(revision, desired=old, ready=ready, endpoint=url if ready else None)
            if old
            else None
        )
    # An autoscaled Deployment is applied without replicas; the API server defaults it to 1.
    desired = int(spec.get("replicas", status.get("replicas", 1)))
    ready = max(0, min(updated, ready_total - old))
    return RevisionState(
        revision=revision,
        desired=desired,
        ready=ready,
        endpoint=url if ready else None,
        failed=None if stale else _failure(status.get("conditions") or []),
    )


def _failure(conditions: list[Mapping[str, Any]]) -> str | None:
    for condition in conditions:
        kind, state, reason = condition.get("type"), condition.get("status"), condition.get("reason")
        stalled = kind == "Progressing" and state == "False" and reason == "ProgressDeadlineExceeded"
        if stalled or (kind == "ReplicaFailure" and state == "True"):
            return str(condition.get("message") or reason or kind)
    return None


def _get(data: Mapping[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node
