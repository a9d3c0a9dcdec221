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


class RefusesZeros(torch.nn.Module):
    """Refuses one all-zero record (the upload check's two-row probe passes; the warm-up row fails)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and bool((x == 0).all()):
            raise RuntimeError("an all-zero row means a missing record")
        return x.sum(dim=1, keepdim=True)


class Slow(torch.nn.Module):
    """Milliseconds per call: too slow to run inline, so every call goes through the batcher."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.ones(256, 256)
        for _ in range(8):
            m = m @ m / 256.0
        return x.sum(dim=1, keepdim=True) + m[0, 0] - 1.0


def _register(client: TestClient, auth: Auth, folder: Path, name: str, module: torch.nn.Module) -> None:
    torch.jit.save(torch.jit.script(module), folder / f"{name}.pt")
    features = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]
    create_model(
        client,
        auth(),
        name,
        framework="pytorch",
        configuration={"inputShape": [2]},
        inputSchema={"type": "tabular", "features": features},
    )
    artifact = (folder / f"{name}.pt").read_bytes()
    assert upload(client, auth(), name, artifact, filename=f"{name}.pt").status_code == 201


@pytest.fixture
def picky(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    _register(client, auth, tmp_path, "picky", Picky())


@pytest.fixture
def slow(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    _register(client, auth, tmp_path, "slow", Slow())


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
    client: TestClient, auth: Auth, container: Container, slow: None
) -> None:
    container.inference.timeout_s = 0
    stalled = client.post(f"{API}/slow/predict", json={"input": {"a": 1, "b": 2}}, headers=auth())
    assert stalled.status_code == 503
    assert stalled.json()["type"].endswith("/prediction-timeout")
    container.inference.timeout_s = 30
    answered = client.post(f"{API}/slow/predict", json={"input": {"a": 1, "b": 2}}, headers=auth())
    assert answered.status_code == 200
    assert answered.json()["prediction"] == pytest.approx(3.0)


def test_a_model_that_refuses_the_warm_up_row_still_loads_and_serves(
    client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    _register(client, auth, tmp_path, "zeroless", RefusesZeros())
    loaded = client.post(f"{API}/zeroless/versions/1/load", headers=auth())
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loaded"] is True
    ok = client.post(f"{API}/zeroless/predict", json={"input": {"a": 1, "b": 2}}, headers=auth())
    assert ok.status_code == 200
    assert ok.json()["prediction"] == pytest.approx(3.0)
    refused = client.post(f"{API}/zeroless/predict", json={"input": {"a": 0, "b": 0}}, headers=auth())
    assert refused.status_code == 500
    assert "missing record" in refused.json()["detail"]
