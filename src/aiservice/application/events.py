"""The event envelope: every outbox event leaves the service as a CloudEvents 1.0 JSON document.

```json
{"specversion": "1.0", "id": "<event id>", "source": "/aiservice/tenants/acme",
 "type": "ai.model.version.created.v1", "subject": "<aggregate id>", "time": "2026-...Z",
 "datacontenttype": "application/json", "tenantid": "acme", "data": {...}}
```

``id`` is the outbox event's own id, so it is the same on every retry and consumers deduplicate by it.
``traceparent`` (the CloudEvents distributed-tracing extension) is there when the change was made inside
a traced request: a consumer's span joins the producer's trace.
``type`` is versioned: a change that breaks a consumer gets a new ``.vN`` type (and a new schema under
``docs/events/``); adding optional fields to ``data`` does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiservice.application.ports import CloudEvent, OutboxMessage

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"  # the structured mode's media type, on every broker
SOURCE_PREFIX = "/aiservice/tenants/"

# The wire type of each domain event. A class may be renamed; its type may not (consumers match on it).
EVENT_TYPES: Mapping[str, str] = {
    "ModelCreated": "ai.model.created.v1",
    "ModelUpdated": "ai.model.updated.v1",
    "ModelDeleted": "ai.model.deleted.v1",
    "ModelVersionCreated": "ai.model.version.created.v1",
    "ModelVersionCompiled": "ai.model.version.compiled.v1",
    "ModelStageChanged": "ai.model.version.stage_changed.v1",
    "ModelAliasSet": "ai.model.alias.set.v1",
    "ModelDriftDetected": "ai.model.drift_detected.v1",
    "ModelMonitoringAction": "ai.model.monitoring_action.v1",
    "ModelAliasDeleted": "ai.model.alias.deleted.v1",
    "AutoMLStudyStarted": "ai.model.automl_study.started.v1",
    "AutoMLStudyEnded": "ai.model.automl_study.ended.v1",
    "TrainingJobQueued": "ai.training.job.queued.v1",
    "TrainingJobStarted": "ai.training.job.started.v1",
    "TrainingProgress": "ai.training.job.progress.v1",
    "TrainingJobSucceeded": "ai.training.job.succeeded.v1",
    "TrainingJobFailed": "ai.training.job.failed.v1",
    "TrainingJobCancelled": "ai.training.job.cancelled.v1",
    "TrainingTrialScored": "ai.training.job.trial_scored.v1",
    "DeploymentCreated": "ai.deployment.created.v1",
    "DeploymentRolledOut": "ai.deployment.rolled_out.v1",
    "DeploymentRolledBack": "ai.deployment.rolled_back.v1",
    "DeploymentScaled": "ai.deployment.scaled.v1",
    "DeploymentFailed": "ai.deployment.failed.v1",
    "DeploymentDeleted": "ai.deployment.deleted.v1",
    "ExperimentCreated": "ai.experiment.created.v1",
    "ExperimentStarted": "ai.experiment.started.v1",
    "ExperimentPaused": "ai.experiment.paused.v1",
    "ExperimentStopped": "ai.experiment.stopped.v1",
    "ExperimentPromoted": "ai.experiment.promoted.v1",
    "ExperimentRolledBack": "ai.experiment.rolled_back.v1",
    "ExperimentTrafficShifted": "ai.experiment.traffic_shifted.v1",
}

# One destination (stream, topic, subject tree) per family, named for the aggregate's kind.
FAMILIES: Mapping[str, str] = {
    "model": "model",
    "training-job": "training",
    "deployment": "deployment",
    "experiment": "experiment",
    "tenant": "tenant",
}

_TYPE = re.compile(r"^ai\.(?P<name>[a-z0-9_]+(?:\.[a-z0-9_]+)*)\.v(?P<version>[0-9]+)$")
_WORDS = re.compile(r"[A-Z][a-z0-9]*")
_REQUIRED = ("specversion", "id", "source", "type", "time", "tenantid", "data")
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)


class MalformedEvent(ValueError):
    """A message on the broker that is not one of our CloudEvents."""


def family_of(aggregate_type: str) -> str:
    return FAMILIES.get(aggregate_type, aggregate_type.split("-", 1)[0])


def event_type_of(name: str, aggregate_type: str) -> str:
    """The wire type of a domain event by class name; a class missing from ``EVENT_TYPES`` (a test
    insists there is none) still gets a well-formed type from its name, never a stalled outbox."""
    known = EVENT_TYPES.get(name)
    if known is not None:
        return known
    family = family_of(aggregate_type)
    words = [w.lower() for w in _WORDS.findall(name)]
    if words and words[0] == family:
        words = words[1:]
    return ".".join(["ai", family, *words, "v1"])


def name_of(event_type: str) -> str:
    """``ai.model.version.created.v1`` -> ``model.version.created`` (a NATS subject's tail)."""
    match = _TYPE.match(event_type)
    if match is None:
        raise MalformedEvent(f"{event_type!r} is not a versioned ai.* event type")
    return match["name"]


def to_cloud_event(message: OutboxMessage) -> CloudEvent:
    event_type = event_type_of(message.event_type, message.aggregate_type)
    return CloudEvent(
        id=message.event_id,
        type=event_type,
        source=SOURCE_PREFIX + message.tenant_id,
        subject=message.aggregate_id,
        time=message.occurred_at,
        tenant_id=message.tenant_id,
        data=dict(message.data),
        family=family_of(message.aggregate_type),
        name=name_of(event_type),
        traceparent=message.traceparent,
    )


def envelope(event: CloudEvent) -> dict[str, Any]:
    """The CloudEvents JSON document (structured mode) of an event."""
    document: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": _rfc3339(event.time),
        "datacontenttype": "application/json",
        "tenantid": event.tenant_id,
    }
    if event.traceparent:
        document["traceparent"] = event.traceparent
    document["data"] = event.data
    return document


def from_envelope(document: Any) -> CloudEvent:
    """The event in a CloudEvents JSON document (already decoded); ``MalformedEvent`` if it is not one."""
    if not isinstance(document, dict):
        raise MalformedEvent("a CloudEvent is a JSON object")
    missing = [k for k in _REQUIRED if k not in document]
    if missing:
        raise MalformedEvent(f"the CloudEvent lacks {', '.join(missing)}")
    if document["specversion"] != SPEC_VERSION or not isinstance(document["data"], dict):
        raise MalformedEvent("not a CloudEvents 1.0 document with JSON object data")
    try:
        name = name_of(str(document["type"]))
        time = datetime.fromisoformat(str(document["time"]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedEvent(str(exc)) from exc
    return CloudEvent(
        id=str(document["id"]),
        type=str(document["type"]),
        source=str(document["source"]),
        subject=str(document.get("subject", "")),
        time=time,
        tenant_id=str(document["tenantid"]),
        data=document["data"],
        family=name.split(".", 1)[0],
        name=name,
        traceparent=_traceparent(document.get("traceparent")),
    )


def _traceparent(value: object) -> str | None:
    """A well-formed W3C ``traceparent`` or None: a bad one must not stop the event, only its trace."""
    return value if isinstance(value, str) and _TRACEPARENT.match(value) else None


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
