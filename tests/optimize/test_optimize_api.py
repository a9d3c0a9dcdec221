"""Model optimisation through the API: each method makes a new, measured version that predicts close
to its source, and a result that loses too much accuracy is refused with nothing registered."""

from __future__ import annotations

import io
import zipfile
from functools import cache
from typing import Any

import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"
X, Y = load_iris(return_X_y=True)
ROWS = X[::3].tolist()  # 50 rows of every class
LABELS = Y[::3].tolist()
MLP = {"type": "mlp", "inputSize": 4, "hiddenSizes": [32], "outputSize": 3}
VALIDATION = {"rows": ROWS, "labels": LABELS}


@cache
def torch_mlp_bytes() -> bytes:
    """A small torch MLP trained on iris (seeded), saved as a state_dict."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    inputs = torch.tensor(X, dtype=torch.float32)
    targets = torch.tensor(Y)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(inputs), targets).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


@cache
def sklearn_mlp_bytes() -> bytes:
    from sklearn.neural_network import MLPClassifier

    estimator = MLPClassifier((32,), max_iter=2000, random_state=0).fit(X, Y)
    return bytes(sio.dumps(estimator))


def torch_model(client: TestClient, auth: Auth, name: str = "net") -> None:
    create_model(
        client,
        auth(),
        name,
        framework="pytorch",
        category="classification",
        configuration={"architecture": MLP},
    )
    response = upload(client, auth(), name, torch_mlp_bytes(), filename="weights.pt")
    assert response.status_code == 201, response.text


def sklearn_model(client: TestClient, auth: Auth, name: str = "skl") -> None:
    create_model(client, auth(), name, category="classification")
    response = upload(client, auth(), name, sklearn_mlp_bytes())
    assert response.status_code == 201, response.text


def optimize(client: TestClient, auth: Auth, model: str, version: int = 1, **body: Any) -> Any:
    return client.post(
        f"{API}/{model}/versions/{version}/optimize",
        json={"validation": VALIDATION, "maxAccuracyDrop": 0.05, **body},
        headers=auth(),
    )


def probabilities(client: TestClient, auth: Auth, model: str, version: int, row: list[float]) -> list[float]:
    response = client.post(
        f"{API}/{model}/predict",
        json={"input": {"features": row}, "options": {"includeConfidence": True, "version": version}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    return list(response.json()["probabilities"].values())


def assert_predicts_close(
    client: TestClient, auth: Auth, source: tuple[str, int], result: tuple[str, int], tolerance: float
) -> None:
    for row in (X[0].tolist(), X[60].tolist(), X[120].tolist()):
        expected = probabilities(client, auth, *source, row)
        assert probabilities(client, auth, *result, row) == pytest.approx(expected, abs=tolerance)


def assert_measured(version: dict[str, Any], method: str, source_version: int = 1) -> dict[str, Any]:
    record: dict[str, Any] = version["lineage"]["optimization"]
    assert record["method"] == method and record["sourceVersion"] == source_version
    for key in ("accuracyBefore", "accuracyAfter", "accuracyDelta", "sizeBytesBefore", "sizeBytesAfter"):
        assert key in record
    assert record["latencyUsBefore"] > 0 and record["latencyUsAfter"] > 0
    assert record["accuracyAfter"] >= record["accuracyBefore"] - 0.05
    assert version["params"]["method"] == method
    return record


def test_dynamic_int8_of_a_torch_mlp(client: TestClient, auth: Auth) -> None:
    torch_model(client, auth)
    response = optimize(client, auth, "net", method="quantization")
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["version"] == 2
    assert response.headers["Location"].endswith(f"/{created['modelId']}/versions/2")
    shown = client.get(f"{API}/net/versions/2", headers=auth()).json()
    assert_measured(shown, "quantization")
    assert_predicts_close(client, auth, ("net", 1), ("net", 2), 0.05)


def test_pruning_half_the_weights_makes_them_really_zero(client: TestClient, auth: Auth) -> None:
    import torch

    torch_model(client, auth)
    response = optimize(client, auth, "net", method="pruning", sparsity=0.5, maxAccuracyDrop=0.2)
    assert response.status_code == 201, response.text
    artifact = client.get(f"{API}/net/versions/2/artifact", headers=auth())
    assert artifact.status_code == 200
    state = torch.load(io.BytesIO(artifact.content), weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros / total == pytest.approx(0.5, abs=0.01)
    record = assert_measured(client.get(f"{API}/net/versions/2", headers=auth()).json(), "pruning")
    assert record["options"] == {"sparsity": 0.5}


def test_float16_of_a_torch_mlp(client: TestClient, auth: Auth) -> None:
    torch_model(client, auth)
    response = optimize(client, auth, "net", method="float16")
    assert response.status_code == 201, response.text
    artifact = client.get(f"{API}/net/versions/2/artifact", headers=auth()).content
    assert zipfile.is_zipfile(io.BytesIO(artifact))  # TorchScript
    assert_predicts_close(client, auth, ("net", 1), ("net", 2), 0.01)


def test_dynamic_int8_of_an_sklearn_models_onnx_compilation(client: TestClient, auth: Auth) -> None:
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", method="quantization")
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["Location"].endswith(f"/{created['modelId']}/versions/1")
    target = client.get(f"{API}/skl-onnx", headers=auth()).json()
    assert target["framework"] == "onnx" and target["id"] == created["modelId"]
    record = assert_measured(client.get(f"{API}/skl-onnx/versions/1", headers=auth()).json(), "quantization")
    assert record["sourceForm"] == "onnx"
    assert_predicts_close(client, auth, ("skl", 1), ("skl-onnx", 1), 0.05)


def test_static_int8_with_a_calibration_sample(client: TestClient, auth: Auth) -> None:
    sklearn_model(client, auth)
    response = optimize(
        client,
        auth,
        "skl",
        method="quantization",
        mode="static",
        calibrationRows=X[1::5].tolist(),
        targetModel="skl-int8",
    )
    assert response.status_code == 201, response.text
    record = assert_measured(client.get(f"{API}/skl-int8/versions/1", headers=auth()).json(), "quantization")
    assert record["options"] == {"mode": "static", "calibrationRows": 30}
    assert_predicts_close(client, auth, ("skl", 1), ("skl-int8", 1), 0.1)


def test_float16_of_an_onnx_form_halves_the_weights(client: TestClient, auth: Auth) -> None:
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", method="float16", maxAccuracyDrop=0)
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert record["sizeBytesAfter"] < record["sizeBytesBefore"]
    assert_predicts_close(client, auth, ("skl", 1), ("skl-onnx", 1), 0.01)


def test_a_drop_past_the_bound_is_refused_and_registers_nothing(client: TestClient, auth: Auth) -> None:
    torch_model(client, auth)
    response = optimize(client, auth, "net", method="pruning", sparsity=0.99, maxAccuracyDrop=0)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/accuracy-drop-too-large")
    assert [e["field"] for e in problem["errors"]] == ["body.maxAccuracyDrop"]
    figures = problem["optimization"]
    assert figures["accuracyAfter"] < figures["accuracyBefore"]
    versions = client.get(f"{API}/net/versions", headers=auth()).json()["items"]
    assert [v["version"] for v in versions] == [1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "distillation"}, "body.method"),
        ({"method": "pruning", "sparsity": 1.5}, "body.sparsity"),
        ({"method": "quantization", "mode": "sometimes"}, "body.mode"),
        ({"method": "float16", "validation": {"rows": [], "labels": []}}, "body.validation.rows"),
        ({"method": "float16", "maxAccuracyDrop": -1}, "body.maxAccuracyDrop"),
        (
            {"method": "float16", "validation": {"rows": [[1.0, 2.0]], "labels": [0, 1]}},
            "body.validation.labels",
        ),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    torch_model(client, auth)
    response = client.post(
        f"{API}/net/versions/1/optimize", json={"validation": VALIDATION, **body}, headers=auth()
    )
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_a_method_that_does_not_apply_is_422_naming_the_method(client: TestClient, auth: Auth) -> None:
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", method="pruning")
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.method"]
    native = optimize(client, auth, "skl", method="quantization", form="native")
    assert native.status_code == 422, native.text
    assert [e["field"] for e in native.json()["errors"]] == ["body.form"]
    assert client.get(f"{API}/skl-onnx", headers=auth()).status_code == 404


def test_a_missing_version_is_404(client: TestClient, auth: Auth) -> None:
    torch_model(client, auth)
    assert optimize(client, auth, "net", version=7, method="float16").status_code == 404


def test_a_linear_models_onnx_quantises_too(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "lr", category="classification")
    assert upload(client, auth(), "lr").status_code == 201  # skl2onnx declares its opset twice here
    response = optimize(client, auth, "lr", method="quantization", maxAccuracyDrop=0)
    assert response.status_code == 201, response.text
    assert_predicts_close(client, auth, ("lr", 1), ("lr-onnx", 1), 1e-4)


def test_a_regressor_is_judged_by_its_rmse(client: TestClient, auth: Auth) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor

    x, y = load_diabetes(return_X_y=True)
    estimator = MLPRegressor(hidden_layer_sizes=(16,), max_iter=500, random_state=0).fit(x, y / 100)
    create_model(client, auth(), "sugar", category="regression")
    assert upload(client, auth(), "sugar", bytes(sio.dumps(estimator))).status_code == 201
    validation = {"rows": x[::4].tolist(), "labels": (y[::4] / 100).tolist()}
    response = client.post(
        f"{API}/sugar/versions/1/optimize",
        json={"method": "float16", "validation": validation, "maxAccuracyDrop": 0.01},
        headers=auth(),
    )
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/sugar-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert record["rmseAfter"] == pytest.approx(record["rmseBefore"], rel=0.01)
    assert record["accuracyDrop"] <= 0.01


def test_static_int8_of_a_torch_mlps_onnx_form(client: TestClient, auth: Auth) -> None:
    """``form: onnx`` quantises the torch model's ONNX compilation, registered in an ONNX model."""
    torch_model(client, auth)
    response = optimize(
        client, auth, "net", method="quantization", mode="static", form="onnx", targetModel="net-int8"
    )
    assert response.status_code == 201, response.text
    target = client.get(f"{API}/net-int8", headers=auth()).json()
    assert target["framework"] == "onnx"
    record = assert_measured(client.get(f"{API}/net-int8/versions/1", headers=auth()).json(), "quantization")
    assert record["sourceForm"] == "onnx"
    assert record["options"]["mode"] == "static"
    assert_predicts_close(client, auth, ("net", 1), ("net-int8", 1), 0.1)
