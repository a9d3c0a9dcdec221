"""Closing the loop through the API, on seeded drifted traffic: a monitoring policy that retrains on a
named dataset when the traffic drifts, compares the retrained version with the current one on held-out
rows, puts it into a canary and sees it promoted; one that rolls a fresh deployment back; one that acts
on accuracy below its floor; and one switched off or cooling down, which does nothing but the report."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.experimenting.ports import Observation
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.domain.deployments import DeploymentTarget
from aiservice.infrastructure.db.tables import outbox
from tests.conftest import Auth
from tests.deployments.fakes import FakeDeployer
from tests.helpers import create_model, upload, wait_until
from tests.monitoring.test_drift_api import iris_rows

API = "/api/v1/ai"
FEATURES = ("x0", "x1", "x2", "x3")
ACTION_EVENT = (
    "ModelMonitoringAction"  # the outbox keeps class names; on the wire ai.model.monitoring_action.v1
)


@pytest.fixture(autouse=True)
def manual_background(client: TestClient, container: Container) -> Iterator[None]:
    """Payload logs are flushed, drift checks and the canary controller run by the test itself."""
    container.payload_logging.flusher.stop()
    container.monitoring.scheduler.stop()
    container.experiments.control.stop()
    yield


# -- seeded data: the old world v1 learns, and a new one where both the inputs and the concept moved ---


def world(n: int, seed: int, *, new: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, len(FEATURES)))
    if new:
        x[:, 0] += 3.0  # the inputs moved...
        y = (x[:, 1] > 0).astype(int)  # ...and so did what decides the label
    else:
        y = (x[:, 0] > 0).astype(int)
    return x, y


def csv_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    out = io.StringIO()
    out.write(",".join([*FEATURES, "label"]) + "\n")
    for row, label in zip(x, y, strict=True):
        out.write(",".join(f"{v:.5f}" for v in row) + f",{int(label)}\n")
    return out.getvalue().encode()


def named(x: np.ndarray) -> list[dict[str, float]]:
    return [{f: round(float(v), 5) for f, v in zip(FEATURES, row, strict=True)} for row in x]


def upload_dataset(client: TestClient, auth: Auth, name: str, data: bytes) -> None:
    files = {"file": (f"{name}.csv", data)}
    posted = client.post(f"{API}/datasets", data={"name": name}, files=files, headers=auth("editor"))
    assert posted.status_code == 201, posted.text


def wait_for_job(client: TestClient, auth: Auth, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"{API}/training-jobs/{job_id}", headers=auth()).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(ended, 120, 0.1, f"training job {job_id} to end")


def actions(client: TestClient, auth: Auth, model: str = "churn", **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/models/{model}/monitoring/actions", params=params, headers=auth("viewer"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def set_policy(client: TestClient, auth: Auth, body: dict[str, Any], model: str = "churn") -> dict[str, Any]:
    response = client.put(f"{API}/models/{model}/monitoring", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


def check(client: TestClient, auth: Auth, model: str = "churn") -> dict[str, Any]:
    response = client.post(f"{API}/models/{model}/drift", headers=auth("editor"))
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def serve(
    client: TestClient, container: Container, auth: Auth, rows: list[Any], model: str = "churn"
) -> None:
    response = client.post(
        f"{API}/models/{model}/batch-predict", json={"inputs": rows}, headers=auth("predictor")
    )
    assert response.status_code == 200, response.text
    container.payload_logging.recorder.flush()


def action_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).where(outbox.c.event_type == ACTION_EVENT)).all()
    return [dict(r[0]) for r in rows]


@pytest.fixture
def churn(client: TestClient, auth: Auth) -> str:
    """Model ``churn``, version 1 trained by a job on the old world (dataset ``old``), its reference
    profile set from old rows, payload logging on; dataset ``fresh`` holds the new world."""
    schema = {"type": "tabular", "features": [{"name": f, "type": "number"} for f in FEATURES]}
    model = create_model(client, auth(), "churn", inputSchema=schema)
    upload_dataset(client, auth, "old", csv_bytes(*world(600, seed=1, new=False)))
    upload_dataset(client, auth, "fresh", csv_bytes(*world(600, seed=2, new=True)))
    body = {
        "trainingConfig": {
            "algorithm": "sklearn.ensemble.RandomForestClassifier",
            "params": {"n_estimators": 30, "random_state": 0},
        },
        "datasetConfig": {"trainPath": "dataset://old", "format": "csv", "target": "label"},
    }
    submitted = client.post(f"{API}/models/churn/train", json=body, headers=auth("editor"))
    assert submitted.status_code == 202, submitted.text
    assert wait_for_job(client, auth, submitted.json()["id"])["status"] == "succeeded"
    reference = named(world(500, seed=3, new=False)[0])
    profiled = client.put(
        f"{API}/models/churn/versions/1/reference-profile", json={"rows": reference}, headers=auth("editor")
    )
    assert profiled.status_code == 200, profiled.text
    logging_on = {"enabled": True, "sampleRate": 1.0}
    assert (
        client.put(f"{API}/models/churn/payload-logging", json=logging_on, headers=auth("editor")).status_code
        == 200
    )
    return str(model["id"])


RETRAIN_AND_PROMOTE = {
    "actions": ["alert", "retrain", "promote"],
    "retrain": {"datasetId": "fresh"},
    "canary": {"steps": [0.5, 1.0], "minRequests": 20, "minSeconds": 0},
    "thresholds": {"minWindow": 50},
}


def test_drifted_traffic_retrains_compares_and_promotes_through_a_canary(
    client: TestClient, auth: Auth, container: Container, engine: Engine, churn: str
) -> None:
    set_policy(client, auth, RETRAIN_AND_PROMOTE)
    serve(client, container, auth, named(world(300, seed=4, new=True)[0]))

    report = check(client, auth)
    assert report["drifted"] and report["version"] == 1

    # a retraining job on the named dataset, by the monitoring principal, recorded with its reason
    taken = actions(client, auth)
    assert [(a["action"], a["status"], a["trigger"]) for a in taken] == [
        ("retrain", "started", "drift"),
        ("alert", "done", "drift"),
    ]
    retrain = taken[0]
    assert "drifted" in retrain["reason"] and retrain["details"]["datasetId"] == "fresh"
    job = client.get(f"{API}/training-jobs/{retrain['reference']}", headers=auth()).json()
    assert job["createdBy"] == "system:monitoring"
    assert job["datasetConfig"]["trainPath"] == "dataset://fresh"
    assert job["trainingConfig"]["algorithm"] == "sklearn.ensemble.RandomForestClassifier"
    records = client.get(f"{API}/audit", headers=auth("admin")).json()["items"]
    audited = {r["action"] for r in records if r["subject"] == "system:monitoring"}
    assert {"monitoring.alert", "monitoring.retrain", "training.submit"} <= audited
    assert {e["action"] for e in action_events(engine)} >= {"alert", "retrain"}

    # the job ends, the new version is compared on held-out rows of the dataset and goes into a canary
    assert wait_for_job(client, auth, retrain["reference"])["status"] == "succeeded"
    promote = wait_until(
        lambda: next((a for a in actions(client, auth) if a["action"] == "promote"), None),
        60,
        0.1,
        "the retrained version's promotion to start",
    )
    compared = next(a for a in actions(client, auth) if a["action"] == "compare")
    scores = compared["details"]["scores"]
    assert compared["details"]["better"] and scores["2"] > scores["1"]
    assert compared["details"]["rows"] > 50
    assert promote["status"] == "started" and promote["version"] == 2
    experiment = client.get(f"{API}/experiments/{promote['reference']}", headers=auth()).json()
    assert (experiment["mode"], experiment["status"]) == ("canary", "running")
    arms = {a["name"]: a for a in experiment["arms"]}
    assert (arms["champion"]["reference"], arms["challenger"]["reference"]) == (1, 2)

    # the canary's guards hold on its traffic: the controller moves the challenger up, then promotes it
    outcome = None
    for step in range(4):
        for arm in ("champion", "challenger"):
            for i in range(25):
                container.experiments.recorder.observe(
                    Observation(
                        "acme", experiment["id"], arm, f"c{step}-{arm}-{i}", 5.0, False, 1, False, utcnow()
                    )
                )
        container.experiments.recorder.flush()
        (running,) = container.experiments.traffic._directory.running()
        outcome = container.experiments.controller.look(running)
        if outcome == "promoted":
            break
    assert outcome == "promoted"
    after = client.get(f"{API}/experiments/{experiment['id']}", headers=auth()).json()
    assert after["status"] == "completed"
    version = client.get(f"{API}/models/churn/versions/2", headers=auth()).json()
    assert version["stage"] == "production"


def test_a_switched_off_policy_stores_the_report_and_does_nothing_else(
    client: TestClient, auth: Auth, container: Container, engine: Engine, churn: str
) -> None:
    container.training_runner.stop()  # nothing should be queued; if it were, it stays queued
    set_policy(client, auth, {**RETRAIN_AND_PROMOTE, "enabled": False})
    serve(client, container, auth, named(world(300, seed=4, new=True)[0]))
    assert check(client, auth)["drifted"]
    assert actions(client, auth) == []
    jobs = client.get(f"{API}/training-jobs", params={"model": "churn"}, headers=auth()).json()["items"]
    assert len(jobs) == 1  # the one that trained version 1
    assert action_events(engine) == []


def test_the_cooldown_keeps_a_second_drift_from_retraining_again(
    client: TestClient, auth: Auth, container: Container, churn: str
) -> None:
    container.training_runner.stop()
    set_policy(client, auth, {**RETRAIN_AND_PROMOTE, "cooldownMinutes": 60})
    serve(client, container, auth, named(world(300, seed=4, new=True)[0]))
    assert check(client, auth)["drifted"]
    assert check(client, auth)["drifted"]
    kinds = [a["action"] for a in actions(client, auth)]
    assert kinds.count("retrain") == 1 and kinds.count("alert") == 1
    jobs = client.get(f"{API}/training-jobs", params={"model": "churn"}, headers=auth()).json()["items"]
    assert len(jobs) == 2


def test_actions_are_listed_newest_first_in_pages(
    client: TestClient, auth: Auth, container: Container, churn: str
) -> None:
    container.training_runner.stop()
    set_policy(client, auth, {**RETRAIN_AND_PROMOTE, "cooldownMinutes": 0})
    serve(client, container, auth, named(world(300, seed=4, new=True)[0]))
    for _ in range(2):
        check(client, auth)
    first = client.get(f"{API}/models/churn/monitoring/actions", params={"limit": 3}, headers=auth("viewer"))
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 3 and page["nextCursor"]
    rest = actions(client, auth, cursor=page["nextCursor"])
    everything = page["items"] + rest
    assert len(everything) == 4
    stamps = [a["createdAt"] for a in everything]
    assert stamps == sorted(stamps, reverse=True)


# -- accuracy below the floor, and rollback ---------------------------------------------------------


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    body = {"enabled": True, "sampleRate": 1.0}
    assert (
        client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor")).status_code == 200
    )
    profiled = client.put(
        f"{API}/models/iris/versions/1/reference-profile",
        json={"rows": iris_rows(500, seed=0)},
        headers=auth("editor"),
    )
    assert profiled.status_code == 200, profiled.text
    return str(model["id"])


def test_accuracy_below_the_floor_triggers_the_policy_without_drift(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    set_policy(client, auth, {"accuracyFloor": 0.9, "actions": ["alert"]}, model="iris")
    serve(client, container, auth, iris_rows(60, seed=1), model="iris")
    logged = client.get(f"{API}/models/iris/predictions", params={"limit": 60}, headers=auth("editor")).json()
    items = [
        {"requestId": p["requestId"], "label": p["outputs"]["prediction"] if i % 2 else "wrong"}
        for i, p in enumerate(logged["items"])
    ]
    given = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert given.status_code == 200, given.text

    report = check(client, auth, model="iris")
    assert not report["drifted"]
    [alert] = actions(client, auth, model="iris")
    assert (alert["action"], alert["trigger"], alert["status"]) == ("alert", "accuracy", "done")
    assert "below the floor 0.9" in alert["reason"]
    assert alert["details"]["accuracy"] == pytest.approx(0.5)
    [event] = action_events(engine)
    assert (event["action"], event["trigger"]) == ("alert", "accuracy")


def test_accuracy_above_the_floor_does_nothing(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    set_policy(client, auth, {"accuracyFloor": 0.5, "actions": ["alert"]}, model="iris")
    serve(client, container, auth, iris_rows(40, seed=1), model="iris")
    logged = client.get(f"{API}/models/iris/predictions", params={"limit": 40}, headers=auth("editor")).json()
    items = [{"requestId": p["requestId"], "label": p["outputs"]["prediction"]} for p in logged["items"]]
    assert (
        client.post(
            f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor")
        ).status_code
        == 200
    )
    check(client, auth, model="iris")
    assert actions(client, auth, model="iris") == []


@pytest.fixture
def fake(container: Container) -> Iterator[FakeDeployer]:
    deployer = FakeDeployer()
    real = container.deployers.get(DeploymentTarget.LOCAL)
    container.deployers[DeploymentTarget.LOCAL] = deployer  # type: ignore[index]
    yield deployer
    if real is not None:
        real.close()


def test_a_fresh_deployment_of_a_drifting_version_is_rolled_back(
    client: TestClient, auth: Auth, container: Container, fake: FakeDeployer, iris: str
) -> None:
    assert upload(client, auth(), "iris").status_code == 201  # version 2
    body = {"deploymentName": "iris-prod", "environment": "staging", "version": 1}
    assert client.post(f"{API}/models/iris/deploy", json=body, headers=auth("deployer")).status_code == 202
    container.deployment_reconcile._task()
    patched = client.patch(f"{API}/deployments/iris-prod", json={"version": 2}, headers=auth("deployer"))
    assert patched.status_code == 202, patched.text
    container.deployment_reconcile._task()
    shown = client.get(f"{API}/deployments/iris-prod", headers=auth()).json()
    assert (shown["serving"]["version"], shown["previous"]["version"]) == (2, 1)
    profiled = client.put(
        f"{API}/models/iris/versions/2/reference-profile",
        json={"rows": iris_rows(500, seed=0)},
        headers=auth("editor"),
    )
    assert profiled.status_code == 200, profiled.text
    staged = client.post(
        f"{API}/models/iris/versions/2/stage", json={"stage": "production"}, headers=auth("admin")
    )
    assert staged.status_code == 200, staged.text
    set_policy(client, auth, {"actions": ["rollback"], "thresholds": {"minWindow": 50}}, model="iris")
    serve(client, container, auth, iris_rows(300, seed=5, shift={2: 1.5}), model="iris")

    report = check(client, auth, model="iris")
    assert report["drifted"] and report["version"] == 2
    [rollback] = actions(client, auth, model="iris")
    assert (rollback["action"], rollback["status"], rollback["reference"]) == (
        "rollback",
        "done",
        "iris-prod",
    )
    assert (rollback["details"]["fromVersion"], rollback["details"]["toVersion"]) == (2, 1)
    shown = client.get(f"{API}/deployments/iris-prod", headers=auth()).json()
    assert shown["revision"]["version"] == 1 and shown["revision"]["rollbackOf"] == 2
    records = client.get(f"{API}/audit", headers=auth("admin")).json()["items"]
    assert any(r["action"] == "deployment.rollback" and r["subject"] == "system:monitoring" for r in records)


def test_a_deployment_that_rolled_out_long_ago_is_left_alone(
    client: TestClient, auth: Auth, container: Container, fake: FakeDeployer, iris: str
) -> None:
    body = {"deploymentName": "iris-prod", "environment": "staging", "version": 1}
    assert client.post(f"{API}/models/iris/deploy", json=body, headers=auth("deployer")).status_code == 202
    container.deployment_reconcile._task()
    set_policy(client, auth, {"actions": ["rollback"], "thresholds": {"minWindow": 50}}, model="iris")
    serve(client, container, auth, iris_rows(300, seed=5, shift={2: 1.5}), model="iris")
    assert check(client, auth, model="iris")["drifted"]
    assert actions(client, auth, model="iris") == []  # no previous revision to go back to


# -- invalid policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"actions": ["retrain"]}, "body.retrain.datasetId"),
        ({"actions": ["retrain"], "retrain": {"datasetId": "nowhere"}}, "body.retrain.datasetId"),
        ({"actions": ["retrain"], "retrain": {"datasetId": "old", "rows": 3}}, "body.retrain.rows"),
        ({"actions": ["alert", "promote"]}, "body.actions"),
        ({"actions": ["explode"]}, "body.actions.0"),
        ({"canary": {"steps": [0.5, 0.2]}}, "body.canary.steps"),
        ({"canary": {"minRequests": 0}}, "body.canary.minRequests"),
        ({"cooldownMinutes": -1}, "body.cooldownMinutes"),
        ({"enabled": "sometimes"}, "body.enabled"),
    ],
)
def test_an_invalid_closing_policy_is_a_422_naming_the_field(
    client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    create_model(client, auth(), "churn")
    upload_dataset(client, auth, "old", csv_bytes(*world(50, seed=1, new=False)))
    response = client.put(f"{API}/models/churn/monitoring", json=body, headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_the_policy_reads_back_its_closing_fields(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    upload_dataset(client, auth, "fresh", csv_bytes(*world(50, seed=2, new=True)))
    set_policy(client, auth, {**RETRAIN_AND_PROMOTE, "cooldownMinutes": 15, "accuracyFloor": 0.8})
    read = client.get(f"{API}/models/churn/monitoring", headers=auth("viewer")).json()
    assert read["actions"] == ["alert", "retrain", "promote"] and read["enabled"] is True
    assert read["retrain"] == {"datasetId": "fresh"} and read["cooldownMinutes"] == 15
    assert read["canary"]["steps"] == [0.5, 1.0] and read["canary"]["minRequests"] == 20
