"""Edge export bundles through the API: each bundle is unpacked and its own ``run.py`` run in a
subprocess, without the service; its predictions must be the service's for the same rows."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, upload

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(trace|trace_method|save)` is deprecated:DeprecationWarning"
)

API = "/api/v1/ai/models"
X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [0, 60, 120, 33, 77]


def sklearn_artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.skops"
    path.write_bytes(iris_model_bytes())
    return path


def onnx_artifact(tmp_path: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X, Y)
    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(model, X[:1], options={id(model): {"zipmap": False}}).SerializeToString())
    return path


def pytorch_artifact(tmp_path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), path)
    return path


def pytorch_state_artifact(tmp_path: Path) -> Path:
    """A state_dict of a declared MLP (not TorchScript: the torchscript export traces it)."""
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = tmp_path / "model.pth"
    torch.save(net.state_dict(), path)
    return path


def keras_artifact(tmp_path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = tmp_path / "model.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.save(path)
    return path


ARTIFACTS = {
    "sklearn": sklearn_artifact,
    "onnx": onnx_artifact,
    "pytorch": pytorch_artifact,
    "pytorch-state": pytorch_state_artifact,
    "keras": keras_artifact,
}
MLP = {"type": "mlp", "inputSize": 4, "hiddenSizes": [8], "outputSize": 3}
CONFIGURATION: dict[str, dict[str, Any]] = {
    "pytorch": {"task": "classification", "inputShape": [4]},  # a fixed shape, for ONNX
    "pytorch-state": {"task": "classification", "architecture": MLP},
    "keras": {"task": "classification"},
}


def register(client: TestClient, auth: Auth, framework: str, tmp_path: Path) -> None:
    """A model named ``framework`` (``pytorch-state``: a PyTorch model from a state_dict) with version 1."""
    features = [{"name": f"f{i}", "type": "number"} for i in range(4)]
    create_model(
        client,
        auth(),
        framework,
        framework=framework.split("-")[0],
        configuration=CONFIGURATION.get(framework, {}),
        inputSchema={"type": "tabular", "features": features},
        outputSchema={"classes": CLASSES},
    )
    artifact = ARTIFACTS[framework](tmp_path)
    response = upload(client, auth(), framework, artifact.read_bytes(), filename=artifact.name)
    assert response.status_code == 201, response.text


def named(i: int) -> dict[str, float]:
    return {f"f{c}": float(X[i, c]) for c in range(4)}


@pytest.mark.parametrize(
    ("framework", "export_format", "model_file"),
    [
        ("sklearn", "onnx", "model.onnx"),
        ("onnx", "onnx", "model.onnx"),
        ("pytorch", "onnx", "model.onnx"),
        ("pytorch", "torchscript", "model.pt"),
        ("pytorch-state", "torchscript", "model.pt"),
        ("pytorch-state", "onnx", "model.onnx"),
        ("keras", "tflite", "model.tflite"),
    ],
)
def test_the_bundle_runs_without_the_service_and_answers_as_predict_does(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str, export_format: str, model_file: str
) -> None:
    register(client, auth, framework, tmp_path)
    response = client.get(
        f"{API}/{framework}/versions/1/export", params={"format": export_format}, headers=auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f'filename="{framework}-v1-{export_format}.zip"' in response.headers["content-disposition"]
    assert response.headers["content-disposition"].startswith("attachment")
    folder = tmp_path / "bundle"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == sorted([model_file, "schema.json", "README.md", "run.py"])
        archive.extractall(folder)
    schema = json.loads((folder / "schema.json").read_text())
    assert (schema["format"], schema["classes"], schema["features"]) == (
        export_format,
        CLASSES,
        ["f0", "f1", "f2", "f3"],
    )
    readme = (folder / "README.md").read_text()
    assert "pip install numpy==" in readme and "run.py" in readme

    # Named rows and a plain feature list, as a user would feed them.
    lines = [json.dumps(named(i)) for i in ROWS[:-1]] + [json.dumps({"features": X[ROWS[-1]].tolist()})]
    (folder / "rows.jsonl").write_text("\n".join(lines) + "\n")
    ran = subprocess.run(
        [sys.executable, "run.py", "rows.jsonl"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    answers = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(answers) == len(ROWS)
    for row, answer in zip(ROWS, answers, strict=True):
        served = client.post(
            f"{API}/{framework}/predict",
            json={"input": named(row), "options": {"includeConfidence": True}},
            headers=auth(),
        )
        assert served.status_code == 200, served.text
        body = served.json()
        assert answer["prediction"] == body["prediction"]
        assert list(answer["probabilities"]) == list(body["probabilities"])
        assert list(answer["probabilities"].values()) == pytest.approx(
            list(body["probabilities"].values()), abs=1e-4
        )


def test_the_runner_reads_rows_from_stdin(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    register(client, auth, "sklearn", tmp_path)
    response = client.get(f"{API}/sklearn/versions/1/export", headers=auth("viewer"))  # onnx by default
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path / "bundle")
    rows = json.dumps([named(0), named(120)])
    ran = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path / "bundle",
        input=rows,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert [json.loads(line)["prediction"] for line in ran.stdout.splitlines()] == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("framework", "export_format"),
    [
        ("sklearn", "torchscript"),
        ("sklearn", "tflite"),
        ("pytorch", "tflite"),
        ("keras", "torchscript"),
        ("keras", "onnx"),
    ],
)
def test_a_format_the_framework_does_not_convert_to_is_a_422_naming_the_format(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str, export_format: str
) -> None:
    register(client, auth, framework, tmp_path)
    response = client.get(
        f"{API}/{framework}/versions/1/export", params={"format": export_format}, headers=auth()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["query.format"]
    assert framework in response.json()["detail"]


def test_an_unknown_format_is_a_422_naming_the_format(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    register(client, auth, "sklearn", tmp_path)
    response = client.get(f"{API}/sklearn/versions/1/export", params={"format": "coreml"}, headers=auth())
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["query.format"]
    assert "onnx, torchscript, tflite" in response.json()["detail"]


def test_a_missing_version_or_model_is_a_404(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    register(client, auth, "sklearn", tmp_path)
    assert client.get(f"{API}/sklearn/versions/2/export", headers=auth()).status_code == 404
    assert client.get(f"{API}/ghost/versions/1/export", headers=auth()).status_code == 404


def test_exporting_needs_the_permission_that_downloads_artifacts(
    client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    register(client, auth, "sklearn", tmp_path)
    refused = client.get(f"{API}/sklearn/versions/1/export", headers=auth("predictor"))
    assert refused.status_code == 403
    assert refused.json()["permission"] == "model:read"
    # Audited as a download is: the refusal is recorded, a successful read is not (ADR 9).
    assert client.get(f"{API}/sklearn/versions/1/export", headers=auth("viewer")).status_code == 200
    records = client.get("/api/v1/ai/audit", params={"limit": 500}, headers=auth()).json()["items"]
    exports = [(r["action"], r["outcome"]) for r in records if r["action"] == "version.export"]
    assert exports == [("version.export", "denied")]


def test_a_compiled_version_exports_its_compiled_onnx_form(
    client: TestClient, auth: Auth, container: Container, tmp_path: Path
) -> None:
    register(client, auth, "sklearn", tmp_path)
    model_id = client.get(f"{API}/sklearn", headers=auth()).json()["id"]
    serving = container.compilation.compile_version("acme", model_id, 1)
    assert serving is not None and serving["kept"] is True
    response = client.get(f"{API}/sklearn/versions/1/export", params={"format": "onnx"}, headers=auth())
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path / "bundle")
    ran = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path / "bundle",
        input=json.dumps(named(60)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    served = client.post(f"{API}/sklearn/predict", json={"input": named(60)}, headers=auth()).json()
    assert json.loads(ran.stdout)["prediction"] == served["prediction"]
