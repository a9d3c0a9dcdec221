"""The CloudEvents envelope and the published JSON Schemas: one per event type, identical to what the
event classes define, and every event the service really writes validates against its schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.event_schemas import event_classes, event_schemas
from aiservice.application.events import (
    EVENT_TYPES,
    MalformedEvent,
    envelope,
    event_type_of,
    family_of,
    to_cloud_event,
)
from aiservice.application.ports import OutboxMessage
from aiservice.domain.deployments import (
    Deployment,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Scaling,
)
from aiservice.domain.events import (
    AutoMLStudyEnded,
    AutoMLStudyStarted,
    DomainEvent,
    ExperimentCreated,
    ExperimentPaused,
    ExperimentPromoted,
    ExperimentRolledBack,
    ExperimentStarted,
    ExperimentStopped,
    ExperimentTrafficShifted,
    ModelDriftDetected,
    ModelMonitoringAction,
    ModelVersionCompiled,
    TrainingJobCancelled,
    TrainingJobFailed,
    TrainingJobQueued,
    TrainingJobStarted,
    TrainingJobSucceeded,
    TrainingProgress,
    TrainingTrialScored,
)
from aiservice.infrastructure.db.tables import outbox
from aiservice.infrastructure.events.base import decode, encode
from tests.conftest import Auth
from tests.events.conftest import commit, outbox_message
from tests.helpers import create_model, upload

DOCS = Path(__file__).parents[2] / "docs" / "events"
API = "/api/v1/ai"


def _deployment_events(model_id: str) -> list[DomainEvent]:
    """One of each: created, rolled out, scaled, a failed rollout, rolled back, deleted."""
    now = datetime(2026, 12, 6, tzinfo=UTC)
    deployment = Deployment.create(
        tenant_id="acme",
        name="schematic-prod",
        model_id=model_id,
        environment=Environment.PRODUCTION,
        target=DeploymentTarget.LOCAL,
        scaling=Scaling(1, 3),
        resources=ResourceLimits(cpu="500m"),
        version=1,
        reference="production",
        now=now,
    )
    deployment.rolled_out(1, 1, now)
    deployment.scale_to(2, "cpu 95.0% CPU per replica vs target 70", now)
    deployment.roll_to(2, "2", now)
    deployment.rolled_out(2, 2, now)
    deployment.roll_to(3, "3", now)
    deployment.revision_failed(3, "replicas could not start", now)
    deployment.rollback(now)
    deployment.rolled_out(4, 2, now)
    deployment.delete(now)
    return list(deployment.events)


def _training_events(model_id: str) -> list[DomainEvent]:
    job = {"tenant_id": "acme", "aggregate_id": "job-1", "model_id": model_id}
    return [
        TrainingJobQueued(**job, algorithm="random_forest"),
        TrainingJobStarted(**job, runner="local"),
        TrainingProgress(**job, progress=0.5, epoch=3, metrics={"loss": 0.25}),
        TrainingProgress(**job, progress=1.0, epoch=None, metrics={}),
        TrainingJobSucceeded(**job, version=2, metrics={"accuracy": 0.97}),
        TrainingJobFailed(**job, stage="training", reason="out of memory"),
        TrainingJobCancelled(**job),
        TrainingTrialScored(**job, study_id="study-1", number=3, metric="accuracy", score=0.93),
    ]


def _experiment_events(model_id: str) -> list[DomainEvent]:
    about = {"tenant_id": "acme", "aggregate_id": "exp-1", "name": "e", "model_id": model_id}
    about["mode"] = "canary"
    return [
        ExperimentCreated(**about, arms=[{"name": "A", "reference": 1, "weight": 1.0}], champion="A"),
        ExperimentStarted(**about, weights={"A": 0.95, "B": 0.05}),
        ExperimentTrafficShifted(**about, weights={"A": 0.75, "B": 0.25}, reason="guards held"),
        ExperimentPaused(**about),
        ExperimentRolledBack(**about, challenger="B", reason="error rate"),
        ExperimentStopped(**about, reason="stopped by tester"),
        ExperimentPromoted(**about, winner="B", version=2, target="champion", reason="B better at 95%"),
    ]


def _drift_event(model_id: str) -> DomainEvent:
    return ModelDriftDetected(
        tenant_id="acme",
        aggregate_id=model_id,
        version=1,
        report_id="0" * 32,
        score=0.42,
        drifted_features=["f2"],
        prediction_drifted=False,
        window_size=600,
        trigger="manual",
    )


def _monitoring_action_event(model_id: str) -> DomainEvent:
    return ModelMonitoringAction(
        tenant_id="acme",
        aggregate_id=model_id,
        action_id="1" * 32,
        action="retrain",
        status="started",
        trigger="drift",
        reason="drift score 0.42 passed the psi threshold 0.2",
        version=1,
        reference="job-1",
        details={"datasetId": "iris"},
    )


def _automl_events(model_id: str) -> list[DomainEvent]:
    about = {"tenant_id": "acme", "aggregate_id": model_id, "study_id": "study-1"}
    return [
        AutoMLStudyStarted(**about, task="classification", metric="accuracy", algorithms=["linear"]),
        AutoMLStudyEnded(
            **about,
            status="succeeded",
            trials=8,
            version=2,
            best={"number": 3, "algorithm": "linear", "cvScore": 0.93},
            error=None,
        ),
        AutoMLStudyEnded(**about, status="failed", trials=0, version=None, best=None, error="no trial"),
    ]


def _stored_messages(engine: Engine) -> list[OutboxMessage]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox).order_by(outbox.c.position)).mappings().all()
    return [
        OutboxMessage(
            r["position"],
            r["event_id"],
            r["event_type"],
            r["tenant_id"],
            r["aggregate_type"],
            r["aggregate_id"],
            r["occurred_at"],
            r["payload"],
        )
        for r in rows
    ]


def test_every_event_class_has_a_versioned_type_in_the_table() -> None:
    names = {cls.__name__ for cls in event_classes()}
    assert names == set(EVENT_TYPES)
    for cls in event_classes():
        assert EVENT_TYPES[cls.__name__].startswith(f"ai.{family_of(cls.aggregate_type)}.")
        assert EVENT_TYPES[cls.__name__].endswith(".v1")


def test_docs_hold_one_schema_per_event_type_as_the_classes_define_it() -> None:
    """After changing an event: python -m aiservice.application.event_schemas docs/events"""
    published = {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in DOCS.glob("*.json")}
    assert published == event_schemas()
    readme = (DOCS / "README.md").read_text()
    assert all(f"`{event_type}`" in readme for event_type in EVENT_TYPES.values())


def test_every_event_the_service_writes_validates_against_its_schema(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    model = create_model(client, auth(), "schematic")
    assert upload(client, auth(), "schematic").status_code == 201
    client.patch(f"{API}/models/schematic", json={"description": "d"}, headers=auth())
    client.post(f"{API}/models/schematic/versions/1/stage", json={"stage": "production"}, headers=auth())
    client.put(f"{API}/models/schematic/aliases/champion", json={"version": 1}, headers=auth())
    client.delete(f"{API}/models/schematic/aliases/champion", headers=auth())
    compiled = ModelVersionCompiled(
        tenant_id="acme", aggregate_id=model["id"], version=1, form="onnx", reason="outputs match"
    )
    commit(
        engine,
        compiled,
        *_training_events(model["id"]),
        *_deployment_events(model["id"]),
        *_experiment_events(model["id"]),
        _drift_event(model["id"]),
        _monitoring_action_event(model["id"]),
        *_automl_events(model["id"]),
    )
    client.delete(f"{API}/models/schematic", headers=auth())

    schemas = event_schemas()
    written = [envelope(to_cloud_event(m)) for m in _stored_messages(engine)]
    assert {document["type"] for document in written} == set(EVENT_TYPES.values())
    for document in written:
        jsonschema.validate(document, schemas[document["type"]])


def test_an_envelope_carries_identity_origin_and_tenant() -> None:
    queued = TrainingJobQueued(tenant_id="acme", aggregate_id="job-7", model_id="m-1", algorithm="rf")
    document = envelope(to_cloud_event(outbox_message(queued)))
    assert document == {
        "specversion": "1.0",
        "id": queued.event_id,
        "source": "/aiservice/tenants/acme",
        "type": "ai.training.job.queued.v1",
        "subject": "job-7",
        "time": queued.occurred_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "tenantid": "acme",
        "data": {"model_id": "m-1", "algorithm": "rf"},
    }


@pytest.mark.parametrize("event", _training_events("m-1"), ids=lambda e: type(e).__name__)
def test_the_json_form_reads_back_as_the_same_event(event: DomainEvent) -> None:
    cloud_event = to_cloud_event(outbox_message(event))
    assert decode(encode(cloud_event)) == cloud_event
    assert cloud_event.family == "training"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"specversion": "1.0"}',
        b'{"specversion": "0.3", "id": "1", "source": "/s", "type": "ai.model.created.v1", '
        b'"time": "2026-01-01T00:00:00Z", "tenantid": "t", "data": {}}',
        b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.other", '
        b'"time": "2026-01-01T00:00:00Z", "tenantid": "t", "data": {}}',
    ],
)
def test_a_message_that_is_not_one_of_our_events_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode(payload)


def test_an_event_missing_from_the_table_still_gets_a_well_formed_type() -> None:
    assert event_type_of("DeploymentScaled", "deployment") == "ai.deployment.scaled.v1"
    assert event_type_of("TenantSuspended", "tenant") == "ai.tenant.suspended.v1"
    assert event_type_of("ExperimentArmAdded", "experiment") == "ai.experiment.arm.added.v1"
