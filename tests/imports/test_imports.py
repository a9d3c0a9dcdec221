"""Importing MLflow model folders and Hugging Face-style folders through ``POST /models/{m}/import``:
each imported version predicts like the original model in this process; pickled flavors, unknown
architectures and bad archives are 422 problems that leave nothing behind."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, stored_files

API = "/api/v1/ai/models"
X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [0, 60, 120, 33]
FEATURES = [{"name": f"f{i}", "type": "number"} for i in range(4)]
RUN_ID = "5a2b0c9d8e7f4a1b9c3d2e1f0a9b8c7d"


# -- building folders the way MLflow and Hugging Face lay them out -----------------------------------


def mlmodel(flavor: str, spec: dict[str, Any], loader: str, data: str) -> str:
    """An MLmodel file as ``mlflow.<flavor>.save_model`` writes it (MLflow 2.x)."""
    document = {
        "artifact_path": "model",
        "flavors": {
            flavor: {"code": None, **spec},
            "python_function": {
                "data": data,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": loader,
                "python_version": "3.11.9",
            },
        },
        "metadata": {"team": "risk", "dataset": "iris"},
        "mlflow_version": "2.17.2",
        "model_size_bytes": 1234,
        "model_uuid": "0f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
        "run_id": RUN_ID,
        "signature": {
            "inputs": json.dumps([{"type": "double", "name": f"f{i}", "required": True} for i in range(4)]),
            "outputs": json.dumps([{"type": "long", "required": True}]),
            "params": None,
        },
        "utc_time_created": "2024-10-01 09:30:12.345678",
    }
    return yaml.safe_dump(document, sort_keys=True)


def zipped(files: dict[str, Any], root: str = "model/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(root + name, content)
    return buffer.getvalue()


def tarred(files: dict[str, Any], root: str = "model/") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            raw = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(root + name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def onnx_bytes() -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X, Y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    return onx.SerializeToString(), model.predict_proba


def mlflow_onnx() -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    graph, predict = onnx_bytes()
    spec = {"data": "model.onnx", "onnx_version": "1.17.0", "providers": ["CPUExecutionProvider"]}
    folder = {
        "MLmodel": mlmodel("onnx", spec, "mlflow.onnx", "model.onnx"),
        "model.onnx": graph,
        "conda.yaml": "name: mlflow-env\n",
        "requirements.txt": "onnx==1.17.0\n",
    }
    return zipped(folder), predict


def mlflow_xgboost(tmp_path: Path) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(X, Y)
    with warnings.catch_warnings():  # model.xgb: xgboost saves UBJSON and says so
        warnings.simplefilter("ignore", UserWarning)
        model.save_model(tmp_path / "model.xgb")
    spec = {
        "data": "model.xgb",
        "model_class": "xgboost.sklearn.XGBClassifier",
        "model_format": "xgb",
        "xgb_version": xgb.__version__,
    }
    folder = {
        "MLmodel": mlmodel("xgboost", spec, "mlflow.xgboost", "model.xgb"),
        "model.xgb": (tmp_path / "model.xgb").read_bytes(),
    }
    return tarred(folder), model.predict_proba


def mlflow_sklearn_skops() -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, Y)
    spec = {"pickled_model": "model.skops", "serialization_format": "skops", "sklearn_version": "1.5.2"}
    folder = {
        "MLmodel": mlmodel("sklearn", spec, "mlflow.sklearn", "model.skops"),
        "model.skops": bytes(sio.dumps(model)),
        "python_env.yaml": "python: 3.11.9\n",
    }
    return zipped(folder), model.predict_proba


def torch_mlp() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()

    def probabilities(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(rows)), dim=1).numpy()

    return net, probabilities


def hf_config(architecture: str, **extra: Any) -> str:
    return json.dumps(
        {
            "architectures": [architecture],
            "model_type": "mlp",
            "id2label": {str(i): label for i, label in enumerate(CLASSES)},
            "label2id": {label: i for i, label in enumerate(CLASSES)},
            **extra,
        }
    )


def hf_safetensors(architecture: str = "AiserviceMLP") -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    from safetensors.torch import save

    net, probabilities = torch_mlp()
    folder = {
        "config.json": hf_config(architecture, layers=[4, 8, 3], activation="relu"),
        "model.safetensors": save({k: v.contiguous() for k, v in net.state_dict().items()}),
    }
    return zipped(folder, root=""), probabilities


# -- helpers ---------------------------------------------------------------------------------------


def mlflow_pytorch(scripted: bool = True) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    """``mlflow.pytorch.save_model`` of a scripted module (TorchScript in data/model.pth), or of the
    eager module (``torch.save``: a pickle)."""
    import torch

    net, probabilities = torch_mlp()
    buffer = io.BytesIO()
    if scripted:
        with warnings.catch_warnings():  # deprecated upstream, still what MLflow users log
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(net), buffer)
    else:
        torch.save(net, buffer)
    spec = {"model_data": "data", "pytorch_version": str(torch.__version__)}  # MLflow writes it so
    folder: dict[str, Any] = {
        "MLmodel": mlmodel("pytorch", spec, "mlflow.pytorch", "data"),
        "data/model.pth": buffer.getvalue(),
        "data/pickle_module_info.txt": "mlflow.pytorch.pickle_module",
    }
    return zipped(folder), probabilities


def declare(client: TestClient, auth: Auth, name: str, framework: str, **body: Any) -> None:
    create_model(
        client,
        auth(),
        name,
        framework=framework,
        inputSchema={"type": "tabular", "features": FEATURES},
        **body,
    )


def send(
    client: TestClient,
    auth: Auth,
    model: str,
    archive: bytes,
    filename: str = "model.zip",
    source: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    data: dict[str, str] = {}
    if source is not None:
        data["source"] = source
    if metadata is not None:
        data["metadata"] = json.dumps(metadata)
    return client.post(
        f"{API}/{model}/import",
        files={"file": (filename, archive, "application/octet-stream")},
        data=data or None,
        headers=auth(),
    )


def predictions(client: TestClient, auth: Auth, model: str) -> list[dict[str, Any]]:
    answers = []
    for row in ROWS:
        response = client.post(
            f"{API}/{model}/predict",
            json={
                "input": {f"f{c}": float(X[row, c]) for c in range(4)},
                "options": {"includeConfidence": True},
            },
            headers=auth(),
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def assert_predicts_like(
    client: TestClient, auth: Auth, model: str, expected: Callable[[np.ndarray], np.ndarray]
) -> None:
    want = expected(X[ROWS])
    for i, body in enumerate(predictions(client, auth, model)):
        assert list(body["probabilities"].values()) == pytest.approx(list(want[i]), abs=1e-5)
        assert body["prediction"] == CLASSES[int(np.argmax(want[i]))]


def no_versions(client: TestClient, auth: Auth, model: str) -> None:
    listed = client.get(f"{API}/{model}/versions", headers=auth())
    assert listed.status_code == 200
    assert listed.json()["items"] == []


# -- MLflow ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framework", "flavor"),
    [("onnx", "onnx"), ("xgboost", "xgboost"), ("sklearn", "sklearn"), ("pytorch", "pytorch")],
)
def test_mlflow_flavors_import_and_predict_like_the_original(
    client: TestClient, auth: Auth, tmp_path: Path, framework: str, flavor: str
) -> None:
    archive, expected = {
        "onnx": lambda: mlflow_onnx(),
        "xgboost": lambda: mlflow_xgboost(tmp_path),
        "sklearn": lambda: mlflow_sklearn_skops(),
        "pytorch": lambda: mlflow_pytorch(),
    }[flavor]()
    declare(client, auth, "imported", framework, outputSchema={"classes": CLASSES})
    filename = "model.tar.gz" if flavor == "xgboost" else "model.zip"
    response = send(
        client, auth, "imported", archive, filename, source="mlflow", metadata={"description": "x"}
    )
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1
    assert version["description"] == "x"
    lineage = version["lineage"]
    assert (lineage["importedFrom"], lineage["flavor"], lineage["mlflowRunId"]) == ("mlflow", flavor, RUN_ID)
    assert lineage["metadata"] == {"team": "risk", "dataset": "iris"}
    assert lineage["schemas"]["inputSchema"] == {"type": "tabular", "features": FEATURES}
    assert_predicts_like(client, auth, "imported", expected)


def test_the_source_is_told_by_the_files_when_not_given(client: TestClient, auth: Auth) -> None:
    archive, expected = mlflow_onnx()
    declare(client, auth, "told", "onnx", outputSchema={"classes": CLASSES})
    response = send(client, auth, "told", archive)
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith("/versions/1")
    assert_predicts_like(client, auth, "told", expected)


@pytest.mark.parametrize(
    ("flavor", "spec", "file", "advice"),
    [
        (
            "sklearn",
            {"pickled_model": "model.pkl", "serialization_format": "cloudpickle", "sklearn_version": "1.5.2"},
            "model.pkl",
            'serialization_format="skops"',
        ),
        ("pytorch", {"model_data": "data", "pytorch_version": "2.4.0"}, "data/model.pth", "ONNX"),
        (
            "sklearn",
            {"pickled_model": "model.skops", "serialization_format": "skops", "sklearn_version": "1.5.2"},
            "model.skops",
            'serialization_format="skops"',
        ),
    ],
)
def test_pickled_flavors_are_refused_and_nothing_is_kept(
    client: TestClient,
    auth: Auth,
    container: Container,
    flavor: str,
    spec: dict[str, Any],
    file: str,
    advice: str,
) -> None:
    declare(client, auth, "pickled", "sklearn")
    folder: dict[str, bytes | str] = {
        "MLmodel": mlmodel(flavor, spec, f"mlflow.{flavor}", file),
        file: b"\x80\x04K\x01.",
    }
    response = send(client, auth, "pickled", zipped(folder), source="mlflow")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/untrusted-artifact")
    assert f"MLflow {flavor} flavor" in problem["detail"]
    assert advice in problem["detail"]
    assert problem["errors"][0]["field"].startswith(f"MLmodel.flavors.{flavor}")
    no_versions(client, auth, "pickled")
    assert stored_files(container.settings.data_dir / "artifacts") == []


def test_an_eager_pytorch_module_is_refused_with_the_way_to_script_it(
    client: TestClient, auth: Auth, container: Container
) -> None:
    """``mlflow.pytorch.save_model`` of an eager module pickles it whole (a zip, like TorchScript, but
    without its code): refused before anything is stored."""
    archive, _ = mlflow_pytorch(scripted=False)
    declare(client, auth, "eager", "pytorch", outputSchema={"classes": CLASSES})
    response = send(client, auth, "eager", archive, source="mlflow")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/untrusted-artifact")
    assert "torch.jit.script" in problem["detail"]
    assert problem["errors"][0]["field"] == "MLmodel.flavors.pytorch"
    no_versions(client, auth, "eager")
    assert stored_files(container.settings.data_dir / "artifacts") == []


def test_a_folder_of_another_framework_is_refused(client: TestClient, auth: Auth) -> None:
    archive, _ = mlflow_onnx()
    declare(client, auth, "forest", "sklearn")
    response = send(client, auth, "forest", archive, source="mlflow")
    assert response.status_code == 422, response.text
    assert "onnx model" in response.json()["detail"]
    no_versions(client, auth, "forest")


# -- MLflow signatures -------------------------------------------------------------------------------

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def mlflow_onnx_signed(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> bytes:
    """An MLflow ONNX folder of the iris classifier whose MLmodel carries the given signature."""
    graph, _ = onnx_bytes()
    document = yaml.safe_load(mlmodel("onnx", {"data": "model.onnx"}, "mlflow.onnx", "model.onnx"))
    document["signature"] = {"inputs": json.dumps(inputs), "outputs": json.dumps(outputs), "params": None}
    return zipped({"MLmodel": yaml.safe_dump(document), "model.onnx": graph})


def columns(names: list[str]) -> list[dict[str, Any]]:
    return [{"type": "double", "name": name, "required": True} for name in names]


def model_of(client: TestClient, auth: Auth, name: str) -> dict[str, Any]:
    response = client.get(f"{API}/{name}", headers=auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_fresh_model_takes_its_schemas_from_the_mlflow_signature(client: TestClient, auth: Auth) -> None:
    _, expected = onnx_bytes()
    archive = mlflow_onnx_signed(columns(IRIS), [{"type": "string", "name": "species", "required": True}])
    create_model(client, auth(), "signed", framework="onnx")  # no schema declared
    response = send(client, auth, "signed", archive)
    assert response.status_code == 201, response.text

    model = model_of(client, auth, "signed")
    assert model["inputSchema"] == {
        "type": "tabular",
        "features": [{"name": name, "type": "number"} for name in IRIS],
    }
    assert model["outputSchema"]["name"] == "species"
    # Named features, as the signature names them, are what /predict now takes.
    for row, want in zip(ROWS, expected(X[ROWS]), strict=True):
        answer = client.post(
            f"{API}/signed/predict",
            json={
                "input": dict(zip(IRIS, map(float, X[row]), strict=True)),
                "options": {"includeConfidence": True},
            },
            headers=auth(),
        )
        assert answer.status_code == 200, answer.text
        assert list(answer.json()["probabilities"].values()) == pytest.approx(list(want), abs=1e-5)
    wrong = client.post(f"{API}/signed/predict", json={"input": {"f0": 1.0}}, headers=auth())
    assert wrong.status_code == 422, wrong.text
    # A model update like any other: its diff is in the import's audit record.
    record = client.get(
        "/api/v1/ai/audit", params={"action": "version.import", "limit": 10}, headers=auth()
    ).json()["items"][0]
    assert record["outcome"] == "success"
    assert record["changes"]["inputSchema"][0] == {}
    assert record["changes"]["inputSchema"][1] == model["inputSchema"]


def test_a_declared_output_schema_is_kept(client: TestClient, auth: Auth) -> None:
    archive = mlflow_onnx_signed(columns(IRIS), [{"type": "string", "name": "species"}])
    create_model(client, auth(), "labelled", framework="onnx", outputSchema={"classes": CLASSES})
    assert send(client, auth, "labelled", archive).status_code == 201
    model = model_of(client, auth, "labelled")
    assert [f["name"] for f in model["inputSchema"]["features"]] == IRIS
    assert model["outputSchema"] == {"classes": CLASSES}


@pytest.mark.parametrize(
    "names",
    [IRIS, ["f0", "f1", "f2"], ["f0", "f1", "f2", "f3", "f4"]],
    ids=["other-names", "fewer", "more"],
)
def test_a_signature_that_disagrees_with_the_declared_schema_is_refused(
    client: TestClient, auth: Auth, container: Container, names: list[str]
) -> None:
    declare(client, auth, "declared", "onnx")  # f0..f3
    before = model_of(client, auth, "declared")
    response = send(client, auth, "declared", mlflow_onnx_signed(columns(names), []))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/invalid-artifact")
    assert [e["field"] for e in problem["errors"]] == ["signature"]
    assert "declared input schema" in problem["detail"]
    no_versions(client, auth, "declared")
    assert stored_files(container.settings.data_dir / "artifacts") == []
    after = model_of(client, auth, "declared")
    assert (after["inputSchema"], after["updatedAt"]) == (before["inputSchema"], before["updatedAt"])


def test_a_signature_the_model_file_does_not_fit_changes_nothing(
    client: TestClient, auth: Auth, container: Container
) -> None:
    """The schema is applied in the version's transaction: a refused version leaves the model as it was."""
    tensor = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]
    create_model(client, auth(), "unfit", framework="onnx")
    response = send(client, auth, "unfit", mlflow_onnx_signed(tensor, []))  # the graph takes 4 values
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["signature"]
    no_versions(client, auth, "unfit")
    assert stored_files(container.settings.data_dir / "artifacts") == []
    assert model_of(client, auth, "unfit")["inputSchema"] == {}


# -- Hugging Face-style folders ----------------------------------------------------------------------


def test_a_hugging_face_onnx_folder_answers_its_id2label_labels(client: TestClient, auth: Auth) -> None:
    graph, expected = onnx_bytes()
    folder: dict[str, bytes | str] = {
        "config.json": hf_config("LogisticRegression"),
        "onnx/model.onnx": graph,
    }
    declare(client, auth, "hf-onnx", "onnx")  # no classes declared: they come from id2label
    response = send(client, auth, "hf-onnx", zipped(folder), source="huggingface")
    assert response.status_code == 201, response.text
    assert response.json()["lineage"]["architecture"] == "LogisticRegression"
    assert_predicts_like(client, auth, "hf-onnx", expected)


def test_safetensors_weights_of_a_known_architecture_predict_like_the_torch_module(
    client: TestClient, auth: Auth
) -> None:
    archive, expected = hf_safetensors()
    declare(client, auth, "hf-mlp", "pytorch")
    response = send(client, auth, "hf-mlp", archive)
    assert response.status_code == 201, response.text
    assert_predicts_like(client, auth, "hf-mlp", expected)


def test_an_unknown_architecture_is_refused_naming_the_known_ones(client: TestClient, auth: Auth) -> None:
    archive, _ = hf_safetensors("BertForSequenceClassification")
    declare(client, auth, "hf-bert", "pytorch")
    response = send(client, auth, "hf-bert", archive, source="huggingface")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert "BertForSequenceClassification" in problem["detail"]
    assert "AiserviceMLP" in problem["detail"]
    assert problem["errors"][0]["field"] == "config.json.architectures"
    no_versions(client, auth, "hf-bert")


# -- bad archives ------------------------------------------------------------------------------------


def traversal_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("MLmodel", mlmodel("onnx", {"data": "model.onnx"}, "mlflow.onnx", "model.onnx"))
        archive.writestr("../../evil.onnx", b"x")
    return buffer.getvalue()


def traversal_tar() -> bytes:
    return tarred({"MLmodel": "flavors: {}", "../../evil.onnx": b"x"}, root="")


def symlink_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model/model.onnx")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "code", "field"),
    [
        (zipped({"README.md": "no model here"}), "invalid-artifact", "form.file"),
        (traversal_zip(), "unsafe-archive", None),
        (symlink_tar(), "unsafe-archive", None),
        (traversal_tar(), "unsafe-archive", None),
        (b"not an archive at all", "invalid-artifact", "form.file"),
        (zipped({"MLmodel": "flavors: [unclosed"}), "invalid-artifact", "MLmodel"),
        (
            zipped({"MLmodel": mlmodel("onnx", {"data": "../outside.onnx"}, "mlflow.onnx", "x")}),
            "invalid-artifact",
            "MLmodel.flavors.onnx.data",
        ),
    ],
    ids=[
        "no-mlmodel",
        "path-traversal",
        "symlink",
        "tar-traversal",
        "not-an-archive",
        "bad-yaml",
        "data-outside",
    ],
)
def test_bad_archives_are_422_and_leave_nothing(
    client: TestClient, auth: Auth, container: Container, archive: bytes, code: str, field: str | None
) -> None:
    declare(client, auth, "bad", "onnx")
    response = send(client, auth, "bad", archive)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith(f"/{code}")
    if field is not None:
        assert problem["errors"][0]["field"] == field
    no_versions(client, auth, "bad")
    assert stored_files(container.settings.data_dir / "artifacts") == []


def test_an_unknown_source_names_the_field(client: TestClient, auth: Auth) -> None:
    archive, _ = mlflow_onnx()
    declare(client, auth, "src", "onnx")
    response = send(client, auth, "src", archive, source="tensorflow-hub")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "form.source"


def test_importing_needs_version_write(client: TestClient, auth: Auth) -> None:
    archive, _ = mlflow_onnx()
    declare(client, auth, "guarded", "onnx")
    response = client.post(
        f"{API}/guarded/import", files={"file": ("m.zip", archive)}, headers=auth("viewer")
    )
    assert response.status_code == 403
    no_versions(client, auth, "guarded")
