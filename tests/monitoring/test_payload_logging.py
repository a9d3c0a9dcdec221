"""Payload logging through the API: a model's policy, its sampled predictions written off the hot path,
feedback joined to them by request id, reading, retention, erasure and deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.domain.payload_logging import sampled
from aiservice.infrastructure.db.tables import prediction_logs
from tests.conftest import Auth
from tests.helpers import create_model, row_count, upload, wait_until

API = "/api/v1/ai"
ROW = {"features": [5.1, 3.5, 1.4, 0.2]}
OTHER_ROW = {"features": [6.7, 3.0, 5.2, 2.3]}


@pytest.fixture(autouse=True)
def manual_flush(client: TestClient, container: Container) -> None:
    """Tests flush the recorder themselves, so what is queued is known (one test lets it run): its
    task, started with the app, is stopped."""
    container.payload_logging.flusher.stop()


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    return str(model["id"])


def enable(client: TestClient, auth: Auth, **policy: Any) -> dict[str, Any]:
    body = {"enabled": True, "sampleRate": 1.0, "retentionDays": 30, **policy}
    response = client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def predict(client: TestClient, auth: Auth, request_id: str, row: dict[str, Any] = ROW) -> dict[str, Any]:
    headers = {**auth("predictor"), "X-Request-ID": request_id}
    response = client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def logged(client: TestClient, auth: Auth, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/models/iris/predictions", params=params, headers=auth("editor"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def flush(container: Container) -> int:
    return container.payload_logging.recorder.flush()


# -- the policy ------------------------------------------------------------------------------------


def test_logging_is_off_until_a_policy_turns_it_on(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.get(f"{API}/models/iris/payload-logging", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "modelId": iris,
        "enabled": False,
        "sampleRate": 1.0,
        "retentionDays": 30,
        "sink": "database",
    }


def test_a_policy_set_is_read_back_and_audited(client: TestClient, auth: Auth, iris: str) -> None:
    assert enable(client, auth, sampleRate=0.25, retentionDays=7)["sampleRate"] == 0.25
    read = client.get(f"{API}/models/iris/payload-logging", headers=auth("viewer")).json()
    assert (read["enabled"], read["sampleRate"], read["retentionDays"]) == (True, 0.25, 7)
    records = client.get(f"{API}/audit", params={"limit": 500}, headers=auth("admin")).json()["items"]
    assert any(r["action"] == "payload-logging.set" and r["outcome"] == "success" for r in records)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sampleRate": 0}, "body.sampleRate"),
        ({"sampleRate": 1.5}, "body.sampleRate"),
        ({"retentionDays": 0}, "body.retentionDays"),
        ({"retentionDays": 3651}, "body.retentionDays"),
        ({"enabled": "maybe"}, "body.enabled"),
    ],
)
def test_an_invalid_policy_is_a_422_naming_the_field(
    client: TestClient, auth: Auth, iris: str, body: dict[str, Any], field: str
) -> None:
    response = client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_a_viewer_cannot_change_the_policy(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.put(f"{API}/models/iris/payload-logging", json={}, headers=auth("viewer"))
    assert response.status_code == 403
    assert response.json()["permission"] == "model:write"


# -- logging on the prediction path ----------------------------------------------------------------


def test_predictions_of_a_model_without_logging_write_nothing(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    predict(client, auth, "quiet-1")
    enable(client, auth, enabled=False)
    predict(client, auth, "quiet-2")
    assert flush(container) == 0
    assert row_count(engine, "prediction_logs") == 0


def test_a_logged_prediction_holds_its_inputs_and_outputs(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    answer = predict(client, auth, "req-one")
    assert row_count_of(container) == 0  # nothing is written on the prediction's path
    assert flush(container) == 1

    (item,) = logged(client, auth)
    assert (item["requestId"], item["modelId"], item["version"]) == ("req-one", iris, 1)
    assert item["inputs"] == ROW
    assert item["outputs"]["prediction"] == answer["prediction"]
    assert set(item["outputs"]["probabilities"]) == {"0", "1", "2"}
    assert item["latencyMs"] > 0
    assert (item["deployment"], item["experimentId"], item["arm"], item["feedback"]) == (None,) * 4


def row_count_of(container: Container) -> int:
    with container.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(prediction_logs)).scalar_one())


def test_a_batch_is_logged_one_row_per_answered_input(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    body = {"inputs": [ROW, {"features": ["x"]}, OTHER_ROW]}
    headers = {**auth("predictor"), "X-Request-ID": "batch-1"}
    response = client.post(f"{API}/models/iris/batch-predict", json=body, headers=headers)
    assert response.status_code == 200, response.text
    flush(container)

    items = {item["requestId"]: item for item in logged(client, auth)}
    assert set(items) == {"batch-1:0", "batch-1:2"}  # the invalid input answered an error: not logged
    assert items["batch-1:2"]["inputs"] == OTHER_ROW


def test_a_v2_inference_is_logged(client: TestClient, auth: Auth, container: Container, iris: str) -> None:
    enable(client, auth)
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW["features"]}]}
    headers = {**auth("predictor"), "X-Request-ID": "v2-one"}
    assert client.post("/v2/models/iris/infer", json=body, headers=headers).status_code == 200
    flush(container)

    (item,) = logged(client, auth)
    assert item["requestId"] == "v2-one"
    assert item["inputs"] == pytest.approx(ROW["features"])


def test_the_background_task_writes_what_is_queued(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    container.payload_logging.flusher.start()
    predict(client, auth, "background")
    wait_until(lambda: row_count(engine, "prediction_logs") == 1, what="the queued prediction written")


def test_the_sample_rate_is_honoured_by_request_id(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth, sampleRate=0.3)
    ids = [f"sample-{i}" for i in range(200)]
    for request_id in ids:
        predict(client, auth, request_id)
    flush(container)

    written = {item["requestId"] for item in logged(client, auth, limit=500)}
    assert written == {i for i in ids if sampled(i, 0.3)}  # deterministic: the same ids every time
    assert 40 <= len(written) <= 80


def test_a_full_queue_drops_and_counts_instead_of_waiting(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    recorder = container.payload_logging.recorder
    recorder.capacity = 2
    for i in range(5):
        predict(client, auth, f"flood-{i}")
    assert recorder.dropped == 3
    assert flush(container) == 2
    assert "ai_service_payload_logs_dropped_total 3.0" in client.get("/metrics").text


# -- feedback --------------------------------------------------------------------------------------


def test_feedback_is_joined_to_its_prediction_and_the_latest_wins(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "fb-1")
    flush(container)
    url = f"{API}/predictions/fb-1/feedback"
    first = client.post(url, json={"label": 2}, headers=auth("predictor"))
    assert first.status_code == 200, first.text
    second = client.post(url, json={"label": 0, "reward": 1.0}, headers=auth("predictor"))
    assert second.status_code == 200, second.text

    got = client.get(f"{API}/predictions/fb-1", headers=auth("editor")).json()
    assert (got["feedback"]["label"], got["feedback"]["reward"]) == (0, 1.0)
    assert logged(client, auth)[0]["feedback"]["label"] == 0
    window = container.payload_logging.logs.window(_principal(container), "iris", version=1)
    assert [(p.request_id, p.feedback.label if p.feedback else None) for p in window] == [("fb-1", 0)]


def _principal(container: Container) -> Any:
    from aiservice.domain.tenancy import Principal, Role

    return Principal("tester", "acme", frozenset({Role.EDITOR}))


def test_feedback_on_an_unknown_request_is_a_404_problem(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.post(f"{API}/predictions/nobody/feedback", json={"label": 1}, headers=auth("predictor"))
    assert response.status_code == 404
    assert response.json()["type"] == "https://aiservice.dev/problems/not-found"


def test_feedback_of_another_tenant_is_a_404(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "mine")
    flush(container)
    intruder = auth("admin", tenant="globex")
    assert (
        client.post(f"{API}/predictions/mine/feedback", json={"label": 1}, headers=intruder).status_code
        == 404
    )
    assert client.get(f"{API}/predictions/mine", headers=intruder).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body.label"), ({"reward": "high"}, "body.reward"), ({"label": None}, "body.label")],
)
def test_feedback_without_a_label_or_reward_is_a_422(
    client: TestClient, auth: Auth, container: Container, iris: str, body: dict[str, Any], field: str
) -> None:
    enable(client, auth)
    predict(client, auth, "fb-bad")
    flush(container)
    response = client.post(f"{API}/predictions/fb-bad/feedback", json=body, headers=auth("predictor"))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_batch_feedback_reports_each_item(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "b-1")
    predict(client, auth, "b-2")
    flush(container)
    items = [
        {"requestId": "b-1", "label": 0},
        {"requestId": "ghost", "label": 1},
        {"requestId": "b-2", "reward": 0.5},
    ]
    response = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stored"], body["missing"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["stored", "not-found", "stored"]
    assert row_count(engine, "prediction_feedback") == 2
    assert client.get(f"{API}/predictions/b-2", headers=auth("editor")).json()["feedback"]["reward"] == 0.5


def test_an_invalid_batch_item_stores_nothing(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "b-1")
    flush(container)
    items = [{"requestId": "b-1", "label": 0}, {"requestId": "b-1"}]
    response = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.items.1.label"]
    assert row_count(engine, "prediction_feedback") == 0


def test_a_batch_of_more_than_1000_items_is_refused(client: TestClient, auth: Auth, iris: str) -> None:
    items = [{"requestId": f"r{i}", "label": 1} for i in range(1001)]
    response = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert response.status_code == 422
    assert "body.items" in [e["field"] for e in response.json()["errors"]]


# -- reading ---------------------------------------------------------------------------------------


def test_logged_predictions_page_newest_first_and_filter_by_time(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    enable(client, auth)
    for i in range(5):
        predict(client, auth, f"page-{i}")
    flush(container)
    first = client.get(f"{API}/models/iris/predictions", params={"limit": 3}, headers=auth("editor")).json()
    rest = client.get(
        f"{API}/models/iris/predictions", params={"limit": 3, "cursor": first["nextCursor"]}, headers=auth()
    ).json()
    seen = [i["requestId"] for i in first["items"] + rest["items"]]
    assert sorted(seen) == [f"page-{i}" for i in range(5)] and rest["nextCursor"] is None
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert logged(client, auth, since=future) == []
    assert len(logged(client, auth, until=future, version=1)) == 5
    assert logged(client, auth, version=2) == []


def test_a_viewer_cannot_read_logged_payloads(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.get(f"{API}/models/iris/predictions", headers=auth("viewer", "predictor"))
    assert response.status_code == 403
    assert response.json()["permission"] == "prediction:read"


# -- retention, erasure, deletion ------------------------------------------------------------------


def _age(engine: Engine, request_id: str, days: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            prediction_logs.update()
            .where(prediction_logs.c.request_id == request_id)
            .values(created_at=datetime.now(UTC) - timedelta(days=days))
        )


def test_the_purge_removes_logs_past_their_retention(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth, retentionDays=7)
    predict(client, auth, "old")
    predict(client, auth, "new")
    flush(container)
    client.post(f"{API}/predictions/old/feedback", json={"label": 1}, headers=auth("predictor"))
    _age(engine, "old", days=8)

    assert container.payload_logging.logs.purge() == 1
    assert [i["requestId"] for i in logged(client, auth)] == ["new"]
    assert row_count(engine, "prediction_feedback") == 0


def test_erasing_a_models_predictions_is_audited_and_keeps_the_policy(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "gone")
    flush(container)
    client.post(f"{API}/predictions/gone/feedback", json={"label": 1}, headers=auth("predictor"))
    response = client.delete(f"{API}/models/iris/predictions", headers=auth("editor"))
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": 1, "feedback": 1}
    assert row_count(engine, "prediction_logs") == row_count(engine, "prediction_feedback") == 0
    assert client.get(f"{API}/models/iris/payload-logging", headers=auth()).json()["enabled"] is True
    records = client.get(f"{API}/audit", params={"limit": 500}, headers=auth("admin")).json()["items"]
    assert any(r["action"] == "prediction.erase" for r in records)


def test_deleting_a_model_removes_its_logs(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "doomed")
    flush(container)
    assert client.delete(f"{API}/models/iris", headers=auth("admin")).status_code == 204
    container.payload_logging.logs.purge()  # and the ModelDeleted handler, once the relay delivers it
    assert row_count(engine, "prediction_logs") == 0
    assert row_count(engine, "payload_log_policies") == 0
    recorder = container.payload_logging.recorder
    wait_until(lambda: not recorder.logging("acme", iris), what="the recorder to forget the model")


def test_tenant_erasure_removes_logs_feedback_and_policies(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    enable(client, auth)
    predict(client, auth, "erased")
    flush(container)
    client.post(f"{API}/predictions/erased/feedback", json={"label": 1}, headers=auth("predictor"))
    root = auth("superadmin", tenant="platform")
    response = client.delete(f"{API}/tenants/acme/data", headers=root)
    assert response.status_code == 200, response.text
    erased = response.json()["erased"]
    assert (erased["predictionLogs"], erased["predictionFeedback"], erased["payloadLogPolicies"]) == (1, 1, 1)
    for table in ("prediction_logs", "prediction_feedback", "payload_log_policies"):
        assert row_count(engine, table) == 0
