"""A model that fails or stalls answers with a clear problem, and the service keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, upload

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning")

API = "/api/v1/ai/models"


class Picky(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x > 100).any()):
            raise RuntimeError("value out of range for this model")
        return x.sum(dim=1, keepdim=True)


@pytest.fixture
def picky(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(Picky()), tmp_path / "picky.pt")
    features = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]
    create_model(
        client,
        auth(),
        "picky",
        framework="pytorch",
        configuration={"inputShape": [2]},
        inputSchema={"type": "tabular", "features": features},
    )
    assert (
        upload(client, auth(), "picky", (tmp_path / "picky.pt").read_bytes(), filename="picky.pt").status_code
        == 201
    )


def test_a_failing_model_is_a_clear_problem_and_others_still_answer(
    client: TestClient, auth: Auth, picky: None
) -> None:
    failed = client.post(f"{API}/picky/predict", json={"input": {"a": 1000, "b": 1}}, headers=auth())
    assert failed.status_code == 500
    problem = failed.json()
    assert problem["type"].endswith("/prediction-failed")
    assert "value out of range" in problem["detail"]
    assert "Traceback" not in failed.text
    ok = client.post(f"{API}/picky/predict", json={"input": {"a": 1, "b": 2}}, headers=auth())
    assert ok.status_code == 200
    assert ok.json()["prediction"] == pytest.approx(3.0)


def test_a_model_past_its_time_limit_is_503_and_the_service_recovers(
    client: TestClient, auth: Auth, container: Container, picky: None
) -> None:
    container.inference.timeout_s = 0
    stalled = client.post(f"{API}/picky/predict", json={"input": {"a": 1, "b": 2}}, headers=auth())
    assert stalled.status_code == 503
    assert stalled.json()["type"].endswith("/prediction-timeout")
    container.inference.timeout_s = 30
    assert (
        client.post(f"{API}/picky/predict", json={"input": {"a": 1, "b": 2}}, headers=auth()).status_code
        == 200
    )
