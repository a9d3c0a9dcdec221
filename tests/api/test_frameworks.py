"""Every framework end to end: a small real model is built, uploaded, and predicted through /predict and
/batch-predict; the numbers must be the framework's own."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from tests.conftest import Auth
from tests.helpers import create_model, upload

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(trace|trace_method|save)` is deprecated:DeprecationWarning"
)

API = "/api/v1/ai/models"
X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [0, 60, 120, 33]


@dataclass
class Built:
    path: Path
    probabilities: Callable[[np.ndarray], np.ndarray]  # the framework's own answer
    configuration: dict[str, Any] = field(default_factory=dict)


def sklearn_model(tmp_path: Path) -> Built:
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, Y)
    sio.dump(model, tmp_path / "model.skops")
    return Built(tmp_path / "model.skops", model.predict_proba)


def xgboost_model(tmp_path: Path) -> Built:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(X, Y)
    model.save_model(tmp_path / "model.json")
    return Built(tmp_path / "model.json", model.predict_proba)


def onnx_model(tmp_path: Path) -> Built:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X, Y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    (tmp_path / "model.onnx").write_bytes(onx.SerializeToString())
    return Built(tmp_path / "model.onnx", model.predict_proba)


def pytorch_model(tmp_path: Path) -> Built:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), tmp_path / "model.pt")

    def probabilities(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(rows)), dim=1).numpy()

    return Built(tmp_path / "model.pt", probabilities, {"inputShape": [4], "task": "classification"})


def keras_model(tmp_path: Path) -> Built:
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    with warnings.catch_warnings():  # Keras's saver hands TF tensors to numpy 2, which warns
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        net.save(tmp_path / "model.keras")
    return Built(tmp_path / "model.keras", lambda rows: np.asarray(net(rows)), {"task": "classification"})


BUILDERS = {
    "sklearn": sklearn_model,
    "xgboost": xgboost_model,
    "onnx": onnx_model,
    "pytorch": pytorch_model,
    "keras": keras_model,
}


def register(client: TestClient, auth: Auth, framework: str, tmp_path: Path) -> Built:
    built = BUILDERS[framework](tmp_path)
    declare(client, auth, framework, built)
    response = upload(client, auth(), framework, built.path.read_bytes(), filename=built.path.name)
    assert response.status_code == 201, response.text
    return built


def declare(client: TestClient, auth: Auth, framework: str, built: Built) -> None:
    features = [{"name": f"f{i}", "type": "number"} for i in range(4)]
    create_model(
        client,
        auth(),
        framework,
        framework=framework,
        configuration=built.configuration,
        inputSchema={"type": "tabular", "features": features},
        outputSchema={"classes": CLASSES},
    )


@pytest.mark.parametrize(
    ("framework", "media_type"),
    [
        ("sklearn", "application/x-skops"),
        ("xgboost", "application/json"),
        ("onnx", "application/onnx"),
        ("pytorch", "application/x-pytorch"),
        ("keras", "application/x-keras"),
    ],
)
def test_an_artifact_is_stored_and_served_under_our_media_type_not_the_clients(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str, media_type: str
) -> None:
    built = BUILDERS[framework](tmp_path)
    declare(client, auth, framework, built)
    part = (built.path.name, built.path.read_bytes(), "text/html")  # what a careless client may declare
    response = client.post(f"{API}/{framework}/versions", files={"file": part}, headers=auth())
    assert response.status_code == 201, response.text
    download = client.get(f"{API}/{framework}/versions/1/artifact", headers=auth())
    assert download.status_code == 200
    assert (response.json()["artifact"]["mediaType"], download.headers["content-type"]) == (
        media_type,
        media_type,
    )


def named(i: int) -> dict[str, float]:
    return {f"f{c}": float(X[i, c]) for c in range(4)}


@pytest.mark.parametrize("framework", list(BUILDERS))
def test_predict_matches_the_framework(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str
) -> None:
    built = register(client, auth, framework, tmp_path)
    expected = built.probabilities(X[ROWS])
    for i, row in enumerate(ROWS):
        response = client.post(
            f"{API}/{framework}/predict",
            json={"input": named(row), "options": {"includeConfidence": True}},
            headers=auth(),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body["probabilities"].values()) == pytest.approx(list(expected[i]), abs=1e-5)
        assert body["prediction"] == CLASSES[int(np.argmax(expected[i]))]


@pytest.mark.parametrize("framework", list(BUILDERS))
def test_batch_predict_matches_the_framework(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str
) -> None:
    built = register(client, auth, framework, tmp_path)
    expected = built.probabilities(X[ROWS])
    response = client.post(
        f"{API}/{framework}/batch-predict",
        json={"inputs": [named(r) for r in ROWS], "options": {"includeConfidence": True}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    for i, output in enumerate(outputs):
        assert list(output["probabilities"].values()) == pytest.approx(list(expected[i]), abs=1e-5)
        assert output["prediction"] == CLASSES[int(np.argmax(expected[i]))]


def test_pytorch_on_a_missing_gpu_falls_back_to_the_cpu(
    database_url: str, engine: object, auth: Auth, tmp_path: Path
) -> None:
    from aiservice.bootstrap import bootstrap
    from aiservice.interfaces.http.app import create_app
    from tests.conftest import make_settings

    container = bootstrap(make_settings(database_url, tmp_path / "data", pytorch_backend="cuda"))
    container.tenants.ensure("acme")
    try:
        with TestClient(create_app(container)) as client:
            built = register(client, auth, "pytorch", tmp_path)
            response = client.post(
                f"{API}/pytorch/predict",
                json={"input": named(0), "options": {"includeConfidence": True}},
                headers=auth(),
            )
    finally:
        container.close()
    assert response.status_code == 200, response.text
    expected = built.probabilities(X[:1])[0]
    assert list(response.json()["probabilities"].values()) == pytest.approx(list(expected), abs=1e-5)


@pytest.mark.parametrize("framework", list(BUILDERS))
def test_open_inference_protocol_with_tritonclient_matches_the_framework(
    client: TestClient, auth: Auth, server: str, tmp_path: Path, framework: str
) -> None:
    import tritonclient.http as httpclient

    built = register(client, auth, framework, tmp_path)
    batch = X[ROWS]
    expected = built.probabilities(batch)
    triton = httpclient.InferenceServerClient(url=server)
    try:
        request = httpclient.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch, binary_data=True)
        result = triton.infer(framework, [request], headers=auth())
        assert result.as_numpy("probabilities") == pytest.approx(expected, abs=1e-5)
        labels = [CLASSES[i].encode() for i in expected.argmax(axis=1)]
        assert result.as_numpy("label").tolist() == labels
    finally:
        triton.close()
