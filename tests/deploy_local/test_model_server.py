"""``serve-model``'s app, in-process: the service narrowed to one deployment revision, behind the
replica's edge (the token, the replica header, the status route), warm before it takes a request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from aiservice.bootstrap.model_server import ReplicaOf, model_server
from aiservice.domain.errors import NotFound
from aiservice.domain.tenancy import Principal, Role
from aiservice.interfaces.cli.serve_model import CannotServe, ReplicaFront, _warm, expose_load
from aiservice.interfaces.http.app import create_app
from tests.deploy_local.conftest import TENANT, TOKEN, World, predict_path, row, sklearn_label

REPLICA = {"X-Aiservice-Replica-Token": TOKEN}
HOST_THREADS = (
    "outbox-relay",
    "training-runner",
    "leftover-sweeper",
    "deployment-reconciler",
    "webhook-delivery",
)


@pytest.fixture(scope="module")
def replica(world: World) -> Iterator[tuple[TestClient, Container, ReplicaOf]]:
    container, target = model_server(world.settings, TENANT, "iris-direct")
    front = ReplicaFront(
        create_app(container),
        7,
        lambda: _warm(container, target),
        status_port=None,
        describe="iris-direct",
        trusted_token=TOKEN,  # as serve-model does, from REPLICA_TOKEN
    )
    expose_load(container, front)
    with TestClient(front) as client:
        yield client, container, target


def test_the_replica_token_predicts_what_sklearn_predicts(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    response = client.post(predict_path(world), json={"input": row(100)}, headers=REPLICA)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == sklearn_label(100)


def test_without_the_token_or_with_a_wrong_one_it_is_401(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    assert client.post(predict_path(world), json={"input": row(0)}).status_code == 401
    wrong = {"X-Aiservice-Replica-Token": TOKEN + "x"}
    assert client.post(predict_path(world), json={"input": row(0)}, headers=wrong).status_code == 401


def test_a_wrong_replica_token_is_not_saved_by_a_valid_bearer_token(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, container, _ = replica
    bearer = container.tokens.issue("tester", TENANT, ["admin"], 600)
    headers = {
        "Authorization": f"Bearer {bearer}",
        "X-Tenant-ID": TENANT,
        "X-Aiservice-Replica-Token": "nope",
    }
    assert client.post(predict_path(world), json={"input": row(0)}, headers=headers).status_code == 401


def test_ordinary_tokens_still_work(replica: tuple[TestClient, Container, ReplicaOf], world: World) -> None:
    client, container, _ = replica
    bearer = container.tokens.issue("tester", TENANT, ["predictor"], 600)
    headers = {"Authorization": f"Bearer {bearer}", "X-Tenant-ID": TENANT}
    response = client.post("/api/v1/ai/models/iris/predict", json={"input": row(50)}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == sklearn_label(50)


def test_a_call_from_a_front_is_logged_and_measured_by_the_front_not_again_here(
    replica: tuple[TestClient, Container, ReplicaOf], world: World, caplog: pytest.LogCaptureFixture
) -> None:
    client, container, _ = replica
    bearer = container.tokens.issue("tester", TENANT, ["predictor"], 600)

    def footprint(headers: dict[str, str], path: str) -> tuple[int, int]:
        caplog.clear()
        before = metric_total(container)
        with caplog.at_level(logging.INFO):
            response = client.post(path, json={"input": row(3)}, headers=headers)
        assert response.status_code == 200, response.text
        lines = sum(
            1 for r in caplog.records if r.getMessage().startswith("request") or "'request'" in str(r.msg)
        )
        return lines, int(metric_total(container) - before)

    assert footprint({**REPLICA, "X-Request-ID": "front-0001"}, predict_path(world)) == (0, 0)
    direct = {"Authorization": f"Bearer {bearer}", "X-Tenant-ID": TENANT}
    assert footprint(direct, "/api/v1/ai/models/iris/predict") == (
        1,
        1,
    )  # a caller that reached the replica itself is seen as ever


def test_a_forwarded_prediction_is_logged_by_the_replica_under_the_fronts_request_id(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, container, target = replica
    admin = Principal("tester", TENANT, frozenset({Role.ADMIN}))
    container.payload_logging.logs.set_policy(admin, target.model_id, {"enabled": True, "sampleRate": 1.0})
    container.payload_logging.recorder.refresh()  # what its flushing task does every few seconds
    try:
        headers = {**REPLICA, "X-Request-ID": "front-request-0042"}
        response = client.post(predict_path(world), json={"input": row(7)}, headers=headers)
        assert response.status_code == 200, response.text
        container.payload_logging.recorder.flush()
        logged = container.payload_logging.logs.get(admin, "front-request-0042")
        assert logged.version == target.version
        assert logged.inputs == row(7) and logged.outputs["prediction"] == sklearn_label(7)
    finally:
        container.payload_logging.logs.set_policy(admin, target.model_id, {"enabled": False})


def test_metrics_carry_the_load_a_kubernetes_autoscaler_scales_on(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    for i in range(5):
        assert client.post(predict_path(world), json={"input": row(i)}, headers=REPLICA).status_code == 200
    scraped = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("aiservice_")
    }
    assert scraped["aiservice_inflight_requests"] == 1  # the scrape itself, answered by this replica
    assert scraped["aiservice_request_latency_p95_ms"] > 0  # the POSTs above, the last minute's


def metric_total(container: Container) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(container.metrics.registry).decode()  # type: ignore[attr-defined]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ai_service_requests_total{")
    )


def test_the_token_reaches_its_model_only(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    other = f"/api/v1/ai/models/{world.broken_model_id}/predict"
    assert client.post(other, json={"input": row(0)}, headers=REPLICA).status_code == 404
    assert client.get("/api/v1/ai/models", headers=REPLICA).status_code == 403  # a predictor lists nothing


def test_another_version_is_not_served_here(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    response = client.post(predict_path(world, version=2), json={"input": row(0)}, headers=REPLICA)
    assert response.status_code == 404
    assert "serves version 1" in response.json()["detail"]


def test_batch_and_v2_inference_are_served(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    batch = client.post(
        f"/api/v1/ai/models/{world.model_id}:1/batch-predict",
        json={"inputs": [row(0), row(100)]},
        headers=REPLICA,
    )
    assert batch.status_code == 200, batch.text
    assert [p["prediction"] for p in batch.json()["outputs"]] == [sklearn_label(0), sklearn_label(100)]
    v2 = client.post(
        f"/v2/models/{world.model_id}/versions/1/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": list(row(100).values())}
            ]
        },
        headers=REPLICA,
    )
    assert v2.status_code == 200, v2.text


def test_every_answer_names_its_replica(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    assert client.get("/health").headers["x-aiservice-replica"] == "7"
    assert client.post(predict_path(world), json={"input": row(0)}).headers["x-aiservice-replica"] == "7"


def test_the_status_route_reports_load_and_latency(
    replica: tuple[TestClient, Container, ReplicaOf], world: World
) -> None:
    client, _, _ = replica
    client.post(predict_path(world), json={"input": row(0)}, headers=REPLICA)
    status = client.get("/health/replica").json()
    assert status["replica"] == 7
    assert status["inFlight"] == 0
    assert status["p95Ms"] > 0


def test_the_version_is_loaded_before_the_first_request(
    replica: tuple[TestClient, Container, ReplicaOf],
) -> None:
    _, container, target = replica
    assert (TENANT, target.model_id, target.version, "native") in container.inference.cache


def test_a_replica_runs_none_of_the_hosts_background_work(
    replica: tuple[TestClient, Container, ReplicaOf],
) -> None:
    _, container, _ = replica
    assert container.model_server
    running = {t.name for t in threading.enumerate()}
    assert not [name for name in running if name.startswith(HOST_THREADS)], running


def test_a_deployment_that_does_not_exist_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no live deployment"):
        model_server(world.settings, TENANT, "nobody")


def test_a_revision_the_deployment_no_longer_knows_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no longer knows revision 9"):
        model_server(world.settings, TENANT, "iris-direct", revision=9)


def test_a_version_that_cannot_load_fails_the_startup_with_the_reason(world: World) -> None:
    container, target = model_server(world.settings, TENANT, "broken")
    front = ReplicaFront(create_app(container), 0, lambda: _warm(container, target), status_port=None)
    with pytest.raises(
        CannotServe, match="cannot be served: The stored artifact does not match the checksum"
    ):
        with TestClient(front):
            pass
