"""Experiments through the API on a real container: an iris model with two versions that disagree on
some inputs, and helpers that drive predictions, feedback and the background parts by hand."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.experimenting.ports import Observation
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.tables import prediction_feedback
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, upload

API = "/api/v1/ai"
ROW = {"features": [5.1, 3.5, 1.4, 0.2]}
ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
    [6.3, 2.8, 5.1, 1.5],
    [6.0, 2.2, 5.0, 1.5],
    [4.9, 3.0, 1.4, 0.2],
]


@pytest.fixture(autouse=True)
def manual_background(client: TestClient, container: Container) -> Iterator[None]:
    """The tests flush observations and run the controller themselves: the background tasks, started
    with the app, are stopped."""
    container.experiments.background.stop()
    container.experiments.control.stop()
    yield


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    """Version 1: logistic regression; version 2: a random forest; alias ``champion`` on 1."""
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    assert upload(client, auth(), "iris", content=iris_model_bytes("forest")).status_code == 201
    aliased = client.put(f"{API}/models/iris/aliases/champion", json={"version": 1}, headers=auth())
    assert aliased.status_code == 200, aliased.text
    return str(model["id"])


def body(**changes: Any) -> dict[str, Any]:
    return {
        "name": "ranker-test",
        "model": "iris",
        "mode": "ab",
        "arms": [{"name": "A", "alias": "champion", "weight": 1}, {"name": "B", "version": 2, "weight": 1}],
        "champion": "A",
        "routingKey": {"header": "X-User-Id"},
        **changes,
    }


def create(client: TestClient, auth: Auth, role: str = "editor", **changes: Any) -> dict[str, Any]:
    response = client.post(f"{API}/experiments", json=body(**changes), headers=auth(role))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def act(client: TestClient, auth: Auth, experiment_id: str, action: str, role: str = "editor") -> Any:
    return client.post(f"{API}/experiments/{experiment_id}/{action}", headers=auth(role))


def started(client: TestClient, auth: Auth, **changes: Any) -> dict[str, Any]:
    experiment = create(client, auth, **changes)
    response = act(client, auth, experiment["id"], "start")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def predict(client: TestClient, auth: Auth, row: list[float] | None = None, **headers: str) -> dict[str, Any]:
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    response = client.post(
        f"{API}/models/iris/predict",
        json={"input": {"features": row or ROW["features"]}},
        headers={**auth("predictor"), **extra},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def results(client: TestClient, auth: Auth, experiment_id: str) -> dict[str, Any]:
    response = client.get(f"{API}/experiments/{experiment_id}/results", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def observe(
    container: Container,
    experiment_id: str,
    arm: str,
    count: int,
    *,
    errors: int = 0,
    latency_ms: float = 5.0,
    prefix: str = "obs",
    predictions: list[Any] | None = None,
    shadow: bool = False,
) -> list[str]:
    """``count`` observations of ``arm`` (the first ``errors`` of them failed), written now; their ids."""
    ids = []
    for i in range(count):
        request_id = f"{prefix}-{arm}-{i}"
        ids.append(request_id)
        container.experiments.recorder.observe(
            Observation(
                "acme",
                experiment_id,
                arm,
                request_id,
                latency_ms,
                i < errors,
                None if i < errors else (predictions[i] if predictions else 0),
                shadow,
                utcnow(),
            )
        )
    container.experiments.recorder.flush()
    return ids


def give_feedback(engine: Engine, model_id: str, labels: dict[str, Any], rewards: dict[str, float]) -> None:
    """Feedback rows as the feedback endpoint stores them (for many seeded outcomes at once)."""
    rows = [
        {
            "tenant_id": "acme",
            "request_id": request_id,
            "model_id": model_id,
            "label": labels.get(request_id),
            "has_label": request_id in labels,
            "reward": rewards.get(request_id),
            "created_by": "tester",
            "created_at": utcnow(),
        }
        for request_id in sorted(set(labels) | set(rewards))
    ]
    with engine.begin() as conn:
        conn.execute(prediction_feedback.insert(), rows)
