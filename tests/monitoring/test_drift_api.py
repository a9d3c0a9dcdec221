"""Drift monitoring through the API, on seeded traffic: a version's reference profile, drift checks
over its logged predictions (a shifted feature is flagged, a resample of the reference is not),
the event and the metric a drifted check raises, the monitoring policy, scheduled checks and
rolling performance from feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.infrastructure.db.tables import drift_reports, outbox
from tests.conftest import Auth
from tests.helpers import create_model, row_count, upload, wait_until

API = "/api/v1/ai"
DRIFT_EVENT = (
    "ModelDriftDetected"  # the outbox keeps class names; the wire type is ai.model.drift_detected.v1
)


@pytest.fixture(autouse=True)
def manual_flush(client: TestClient, container: Container) -> None:
    """Tests flush the payload recorder themselves; the scheduler is driven by hand too."""
    container.payload_logging.flusher.stop()
    container.monitoring.scheduler.stop()


def iris_rows(n: int, seed: int, shift: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """``n`` rows like iris (its rows resampled, with a little noise); ``shift`` adds to features."""
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = x[rng.choice(len(x), n)] + rng.normal(0, 0.05, (n, x.shape[1]))
    for feature, by in (shift or {}).items():
        rows[:, feature] += by
    return [{"features": [round(float(v), 4) for v in row]} for row in rows]


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    body = {"enabled": True, "sampleRate": 1.0}
    response = client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    return str(model["id"])


@pytest.fixture
def profiled(client: TestClient, auth: Auth, container: Container, iris: str) -> str:
    response = client.put(
        f"{API}/models/iris/versions/1/reference-profile",
        json={"rows": iris_rows(1000, seed=0)},
        headers=auth("editor"),
    )
    assert response.status_code == 200, response.text
    return iris


def serve(client: TestClient, auth: Auth, container: Container, rows: list[dict[str, Any]], rid: str) -> None:
    headers = {**auth("predictor"), "X-Request-ID": rid}
    response = client.post(f"{API}/models/iris/batch-predict", json={"inputs": rows}, headers=headers)
    assert response.status_code == 200, response.text
    container.payload_logging.recorder.flush()


def check(client: TestClient, auth: Auth, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(f"{API}/models/iris/drift", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def drift_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).where(outbox.c.event_type == DRIFT_EVENT)).all()
    return [dict(r[0]) for r in rows]


# -- reference profiles ----------------------------------------------------------------------------


def test_a_reference_profile_is_stored_and_summarised(
    client: TestClient, auth: Auth, container: Container, profiled: str
) -> None:
    response = client.get(f"{API}/models/iris/versions/1/reference-profile", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["modelId"], body["version"], body["source"], body["rows"]) == (profiled, 1, "rows", 1000)
    assert [f["name"] for f in body["features"]] == ["f0", "f1", "f2", "f3"]
    assert all("sample" not in f for f in body["features"])
    assert body["prediction"]["kind"] == "categorical"  # the version's own predictions on the rows


def test_reference_predictions_are_not_logged_as_traffic(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    container.payload_logging.recorder.flush()
    assert row_count(engine, "prediction_logs") == 0


def test_a_version_without_a_profile_is_a_404(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.get(f"{API}/models/iris/versions/1/reference-profile", headers=auth("viewer"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rows": []}, "body.rows"),
        ({}, "body.rows"),
        ({"rows": ["text"]}, "body.rows.0"),
        ({"rows": [{"features": [1, 2, 3, 4]}], "datasetId": 3}, "body.datasetId"),
    ],
)
def test_invalid_reference_rows_are_a_422_naming_the_field(
    client: TestClient, auth: Auth, iris: str, body: dict[str, Any], field: str
) -> None:
    response = client.put(
        f"{API}/models/iris/versions/1/reference-profile", json=body, headers=auth("editor")
    )
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_a_profile_of_a_missing_version_is_a_404(client: TestClient, auth: Auth, iris: str) -> None:
    body = {"rows": iris_rows(10, seed=0)}
    response = client.put(
        f"{API}/models/iris/versions/9/reference-profile", json=body, headers=auth("editor")
    )
    assert response.status_code == 404


def test_a_viewer_cannot_set_a_profile(client: TestClient, auth: Auth, iris: str) -> None:
    body = {"rows": iris_rows(10, seed=0)}
    response = client.put(
        f"{API}/models/iris/versions/1/reference-profile", json=body, headers=auth("viewer")
    )
    assert response.status_code == 403
    assert response.json()["permission"] == "model:write"


# -- drift -----------------------------------------------------------------------------------------


def test_a_shifted_feature_is_flagged_with_an_event_and_a_metric(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    serve(client, auth, container, iris_rows(600, seed=1, shift={2: 1.5}), "shifted")
    report = check(client, auth)
    assert (report["verdict"], report["version"], report["windowSize"]) == ("drift", 1, 600)
    flagged = {f["feature"] for f in report["features"] if f["drifted"]}
    assert "f2" in flagged and "f1" not in flagged
    events = drift_events(engine)
    assert len(events) == 1
    assert "f2" in events[0]["drifted_features"] and events[0]["report_id"] == report["id"]
    gauge = container.metrics.registry.get_sample_value(
        "ai_service_model_drift_score", {"model": "iris", "version": "1"}
    )
    assert gauge == pytest.approx(report["score"])


def test_a_resample_of_the_reference_is_not_flagged(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    serve(client, auth, container, iris_rows(600, seed=2), "resampled")
    report = check(client, auth)
    assert report["verdict"] == "no_drift", [(f["feature"], f["score"]) for f in report["features"]]
    assert report["multivariate"]["auc"] < report["thresholds"]["auc"]
    assert drift_events(engine) == []


def test_too_few_logged_predictions_are_not_enough_data(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    serve(client, auth, container, iris_rows(100, seed=3, shift={2: 1.5}), "few")
    report = check(client, auth, {"version": 1})
    assert (report["verdict"], report["score"], report["windowSize"]) == ("not_enough_data", None, 100)
    assert drift_events(engine) == []


def test_a_check_without_a_profile_is_a_409(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    serve(client, auth, container, iris_rows(10, seed=3), "unprofiled")
    response = client.post(f"{API}/models/iris/drift", headers=auth("editor"))
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("no-reference-profile")


def test_reports_are_listed_newest_first_in_pages(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    serve(client, auth, container, iris_rows(600, seed=4), "listed")
    first, second = check(client, auth), check(client, auth)
    page = client.get(f"{API}/models/iris/drift", params={"limit": 1}, headers=auth("viewer")).json()
    assert [r["id"] for r in page["items"]] == [second["id"]] and page["nextCursor"]
    rest = client.get(
        f"{API}/models/iris/drift", params={"limit": 1, "cursor": page["nextCursor"]}, headers=auth("viewer")
    ).json()
    assert [r["id"] for r in rest["items"]] == [first["id"]]
    assert {f["feature"] for f in rest["items"][0]["features"]} == {"f0", "f1", "f2", "f3"}


def test_a_viewer_reads_reports_but_cannot_run_a_check(client: TestClient, auth: Auth, profiled: str) -> None:
    assert client.get(f"{API}/models/iris/drift", headers=auth("viewer")).status_code == 200
    response = client.post(f"{API}/models/iris/drift", headers=auth("viewer"))
    assert response.status_code == 403
    assert response.json()["permission"] == "model:write"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": 0}, "body.version"),
        ({"since": "not a time"}, "body.since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "body.since"),
        ({"window": 3}, "body.window"),
    ],
)
def test_an_invalid_check_is_a_422_naming_the_field(
    client: TestClient, auth: Auth, profiled: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(f"{API}/models/iris/drift", json=body, headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


# -- the policy and the schedule -------------------------------------------------------------------


def test_the_policy_defaults_then_reads_back_what_was_set(client: TestClient, auth: Auth, iris: str) -> None:
    default = client.get(f"{API}/models/iris/monitoring", headers=auth("viewer")).json()
    assert default["thresholds"]["psi"] == 0.2 and default["scheduleMinutes"] is None
    body = {"thresholds": {"psi": 0.3, "minWindow": 50}, "scheduleMinutes": 60, "windowHours": 6}
    response = client.put(f"{API}/models/iris/monitoring", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    read = client.get(f"{API}/models/iris/monitoring", headers=auth("viewer")).json()
    assert (read["thresholds"]["psi"], read["thresholds"]["minWindow"], read["thresholds"]["auc"]) == (
        0.3,
        50,
        0.7,
    )
    assert (read["scheduleMinutes"], read["windowHours"], read["actions"]) == (60, 6, ["alert"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"thresholds": {"psi": 0}}, "body.thresholds.psi"),
        ({"thresholds": {"pValue": 1}}, "body.thresholds.pValue"),
        ({"thresholds": {"auc": 0.4}}, "body.thresholds.auc"),
        ({"thresholds": {"minWindow": 5}}, "body.thresholds.minWindow"),
        ({"thresholds": {"bins": 5}}, "body.thresholds.bins"),
        ({"scheduleMinutes": 1}, "body.scheduleMinutes"),
        ({"windowHours": 0}, "body.windowHours"),
        ({"accuracyFloor": 2}, "body.accuracyFloor"),
        ({"actions": ["explode"]}, "body.actions.0"),
    ],
)
def test_an_invalid_policy_is_a_422_naming_the_field(
    client: TestClient, auth: Auth, iris: str, body: dict[str, Any], field: str
) -> None:
    response = client.put(f"{API}/models/iris/monitoring", json=body, headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_scheduled_checks_run_when_due_only(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    serve(client, auth, container, iris_rows(600, seed=5, shift={2: 1.5}), "scheduled")
    assert container.monitoring.run_scheduled() == 0  # no policy with a schedule yet
    body = {"scheduleMinutes": 60}
    assert client.put(f"{API}/models/iris/monitoring", json=body, headers=auth("editor")).status_code == 200
    assert container.monitoring.run_scheduled() == 1
    assert container.monitoring.run_scheduled() == 0  # the next is an hour away
    with engine.connect() as conn:
        triggers = conn.execute(sa.select(drift_reports.c.trigger, drift_reports.c.verdict)).all()
    assert [tuple(t) for t in triggers] == [("schedule", "drift")]
    assert len(drift_events(engine)) == 1


# -- performance -----------------------------------------------------------------------------------


def test_rolling_accuracy_comes_from_feedback(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    rows = iris_rows(10, seed=6)
    serve(client, auth, container, rows, "graded")
    logged = client.get(f"{API}/models/iris/predictions", params={"limit": 10}, headers=auth("editor")).json()
    items = [
        {"requestId": p["requestId"], "label": p["outputs"]["prediction"] if i < 8 else "wrong"}
        for i, p in enumerate(logged["items"])
    ]
    response = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert response.status_code == 200, response.text
    client.put(f"{API}/models/iris/monitoring", json={"accuracyFloor": 0.9}, headers=auth("editor"))
    response = client.get(f"{API}/models/iris/performance", params={"bucket": "day"}, headers=auth("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    [point] = body["points"]
    assert (point["version"], point["predictions"], point["labelled"]) == (1, 10, 10)
    assert (point["metric"], point["value"]) == ("accuracy", pytest.approx(0.8))
    assert body["belowFloor"] == [point]


def test_performance_buckets_are_hours_or_days(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.get(f"{API}/models/iris/performance", params={"bucket": "week"}, headers=auth("viewer"))
    assert response.status_code == 422
    assert "query.bucket" in [e["field"] for e in response.json()["errors"]]


# -- alerts and deletion ---------------------------------------------------------------------------


def test_webhooks_can_subscribe_to_drift_events(client: TestClient, auth: Auth) -> None:
    body = {"url": "https://93.184.215.14/hook", "eventTypes": ["ai.model.drift_detected.v1"]}
    response = client.post(f"{API}/webhooks", json=body, headers=auth("admin"))
    assert response.status_code == 201, response.text


def test_deleting_a_model_deletes_its_profiles_policy_and_reports(
    client: TestClient, auth: Auth, container: Container, engine: Engine, profiled: str
) -> None:
    client.put(f"{API}/models/iris/monitoring", json={"scheduleMinutes": 60}, headers=auth("editor"))
    check(client, auth, {"version": 1})
    assert client.delete(f"{API}/models/iris", headers=auth("admin")).status_code == 204
    tables = ("reference_profiles", "monitoring_policies", "drift_reports")
    wait_until(
        lambda: all(row_count(engine, t) == 0 for t in tables), what="the model's monitoring rows gone"
    )


def test_a_trained_version_gets_its_validation_data_as_reference(
    client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    from tests.api.test_training import (
        FINISHED,
        IRIS_FEATURES,
        iris_model,
        train_body,
        wait_for,
        write_iris_csv,
    )

    headers = auth("editor")
    data = write_iris_csv(tmp_path / "iris.csv").read_bytes()
    posted = client.post(
        f"{API}/datasets", data={"name": "iris"}, files={"file": ("iris.csv", data)}, headers=headers
    )
    assert posted.status_code == 201, posted.text
    iris_model(client, headers, "trained")
    job = client.post(
        f"{API}/models/trained/train", json=train_body("dataset://iris"), headers=headers
    ).json()
    assert wait_for(client, headers, job["id"], *FINISHED)["status"] == "succeeded"
    response = client.get(f"{API}/models/trained/versions/1/reference-profile", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["source"], body["createdBy"]) == ("training", f"training-job:{job['id']}")
    assert [f["name"] for f in body["features"]] == list(IRIS_FEATURES)
    assert 0 < body["rows"] < 150  # the validation split
