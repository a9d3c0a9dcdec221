"""The device settings reach the loads they are for: TENSORFLOW_BACKEND the Keras and TensorFlow ones,
PYTORCH_BACKEND a PyTorch version's ONNX form too; where the device asked for is missing (this machine
has no GPU), the model serves on the CPU and the load says so."""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db.tables import model_versions
from aiservice.interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning")


@pytest.fixture
def service(
    database_url: str, engine: object, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A service built with the settings the test is parametrised with; (client, container, headers)."""
    container = bootstrap(make_settings(database_url, tmp_path / "data", **request.param))
    container.tenants.ensure("acme")
    headers = {
        "Authorization": f"Bearer {container.tokens.issue('t', 'acme', ['admin'], 3600)}",
        "X-Tenant-ID": "acme",
    }
    try:
        with TestClient(create_app(container)) as client:
            yield client, container, headers
    finally:
        container.close()


def keras_bytes() -> bytes:
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)  # Keras's saver
        net.save(Path(folder) / "model.keras")
        return (Path(folder) / "model.keras").read_bytes()


def torchscript_bytes() -> bytes:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def load(client: TestClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = client.post(f"{API}/{name}/versions/1/load", headers=headers)
    assert response.status_code == 200, response.text
    loaded: dict[str, Any] = response.json()
    return loaded


def keras_extra(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """What loading a Keras classifier reports about where it runs."""
    create_model(client, headers, "net", framework="keras", configuration={"task": "classification"})
    assert upload(client, headers, "net", keras_bytes(), filename="model.keras").status_code == 201
    extra: dict[str, Any] = load(client, headers, "net")["signature"]["extra"]
    return extra


@pytest.mark.parametrize("service", [{"tensorflow_backend": "gpu"}], indirect=True)
def test_tensorflow_backend_gpu_without_a_gpu_serves_keras_on_the_cpu_and_says_why(service: Any) -> None:
    client, _container, headers = service
    extra = keras_extra(client, headers)
    assert extra["device"] == "/CPU:0"
    assert "GPU" in extra["deviceReason"] and "CPU" in extra["deviceReason"]
    answer = client.post(
        f"{API}/net/predict", json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}}, headers=headers
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("service", [{"tensorflow_backend": "cpu"}], indirect=True)
def test_tensorflow_backend_cpu_pins_keras_to_the_cpu_without_a_reason(service: Any) -> None:
    client, _container, headers = service
    extra = keras_extra(client, headers)
    assert extra["device"] == "/CPU:0" and "deviceReason" not in extra


@pytest.mark.parametrize("service", [{"pytorch_backend": "cuda"}], indirect=True)
def test_pytorch_backend_cuda_reaches_a_versions_onnx_form(service: Any) -> None:
    client, container, headers = service
    configuration = {"task": "classification", "inputShape": [4]}
    model = create_model(client, headers, "mlp", framework="pytorch", configuration=configuration)
    assert upload(client, headers, "mlp", torchscript_bytes(), filename="model.pt").status_code == 201
    serving = container.compilation.compile_version("acme", model["id"], 1)
    assert serving is not None and serving["kept"] is True, serving
    serve_onnx(container, model["id"], serving)  # whichever form was faster on this machine
    loaded = load(client, headers, "mlp")
    assert loaded["form"] == "onnx"
    extra = loaded["signature"]["extra"]
    if "CUDAExecutionProvider" in extra["providers"]:  # a GPU build of onnxruntime on a GPU machine
        assert extra["device"] == "cuda" and "deviceReason" not in extra
    else:
        assert extra["device"] == "cpu"
        assert "cuda" in extra["deviceReason"] and "CUDAExecutionProvider" in extra["deviceReason"]
    rows = np.asarray([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    answer = client.post(
        f"{API}/mlp/batch-predict", json={"inputs": [{"features": r} for r in rows.tolist()]}, headers=headers
    )
    assert {o["form"] for o in answer.json()["outputs"]} == {"onnx"}


def serve_onnx(container: Container, model_id: str, serving: dict[str, Any]) -> None:
    with container.engine.begin() as conn:
        conn.execute(
            model_versions.update()
            .where(model_versions.c.model_id == model_id, model_versions.c.version == 1)
            .values(serving={**serving, "form": "onnx"})
        )
    container.inference.invalidate("acme", model_id)
