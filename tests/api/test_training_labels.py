"""A training target checked against the classes the model declares, when the job is submitted: the
classes themselves train as they are, the integers 0..K-1 train as the K declared names by position (and
the job says so), anything else is a 422 naming the column and the values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from aiservice.interfaces.http.app import create_app
from tests.api.test_training import (
    API,
    FINISHED,
    IRIS_FEATURES,
    SPECIES,
    compiled_serving,
    iris_model,
    own_service,
    s3_settings,
    train_body,
    wait_for,
    write_image_folder,
)
from tests.conftest import Auth
from tests.helpers import create_model
from tests.moto_s3 import MotoServer

BY_POSITION = {"kind": "position", "values": {"0": "setosa", "1": "versicolor", "2": "virginica"}}
VIRGINICA = dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))


@pytest.fixture
def datasets(container: Container) -> Path:
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_iris(folder: Path, format: str, labels: Any = None, rows: slice = slice(None)) -> Path:
    """Iris as ``format`` (csv, parquet or npz), its target ``species`` (npz: ``y``) holding ``labels``
    (an array over the 150 rows; default the species' names)."""
    x, y = load_iris(return_X_y=True)
    target = np.asarray(SPECIES)[y] if labels is None else np.asarray(labels)
    x, target = x[rows], target[rows]
    path = folder / f"iris.{format}"
    if format == "npz":
        np.savez(path, X=x.astype(np.float32), y=target)
        return path
    table = pa.table({**{n: x[:, i] for i, n in enumerate(IRIS_FEATURES)}, "species": target})
    if format == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
    return path


def body_for(path: Path | str, format: str, **extra: Any) -> dict[str, Any]:
    return train_body(
        path, dataset={"format": format, "target": None if format == "npz" else "species"}, **extra
    )


def declaring(where: str, classes: list[Any] = SPECIES) -> dict[str, Any]:
    return (
        {"outputSchema": {"classes": classes}}
        if where == "outputSchema"
        else {"configuration": {"classes": classes}}
    )


def refusal(
    client: TestClient,
    headers: dict[str, str],
    data: Path | str,
    format: str = "csv",
    model: str = "iris",
    **body: Any,
) -> str:
    """What the 422 for training ``model`` on ``data`` says about ``datasetConfig.target`` (one error)."""
    response = client.post(
        f"{API}/models/{model}/train", json=body_for(data, format, **body), headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [message] = [e["message"] for e in response.json()["errors"] if e["field"] == "datasetConfig.target"]
    assert "datasetConfig.target" in response.json()["detail"]
    return message


@pytest.mark.parametrize(
    ("format", "where", "network"),
    [
        ("csv", "outputSchema", False),
        ("parquet", "configuration", False),
        ("npz", "outputSchema", False),
        ("npz", "configuration", True),  # a network's runtime names its outputs from configuration.classes
    ],
)
def test_integer_labels_train_as_the_declared_classes_by_position_and_predict_their_names(
    client: TestClient, auth: Auth, datasets: Path, format: str, where: str, network: bool
) -> None:
    headers = auth("editor")
    model = declaring(where)
    job: dict[str, Any] = {}
    if network:
        model = {"framework": "pytorch", "configuration": {**model["configuration"], "inputShape": [4]}}
        job = {
            "algorithm": "mlp",
            "params": {"hiddenSizes": [32]},
            "training": {"epochs": 60, "learningRate": 0.01},
        }
    iris_model(client, headers, **model)
    data = write_iris(datasets, format, load_iris().target)  # 0, 1, 2: a label-encoded target
    submitted = client.post(f"{API}/models/iris/train", json=body_for(data, format, **job), headers=headers)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["labelMapping"] == BY_POSITION
    assert "labelMapping" not in submitted.json()["datasetConfig"]  # what the user sent, as sent

    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert done["labelMapping"] == BY_POSITION
    version = client.get(f"{API}/models/iris/versions/1", headers=headers).json()
    assert version["lineage"]["labelMapping"] == BY_POSITION
    answer = client.post(
        f"{API}/models/iris/predict",
        json={"input": VIRGINICA, "options": {"includeConfidence": True}},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"
    assert set(answer.json()["probabilities"]) == set(SPECIES)


def test_labels_that_are_the_declared_classes_train_as_they_are(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema", ["virginica", "setosa", "versicolor"]))
    submitted = client.post(
        f"{API}/models/iris/train", json=body_for(write_iris(datasets, "csv"), "csv"), headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["labelMapping"] is None
    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert (
        "labelMapping" not in client.get(f"{API}/models/iris/versions/1", headers=headers).json()["lineage"]
    )
    answer = client.post(f"{API}/models/iris/predict", json={"input": VIRGINICA}, headers=headers)
    assert answer.json()["prediction"] == "virginica"


@pytest.mark.parametrize("format", ["csv", "parquet", "npz"])
def test_labels_the_model_does_not_declare_are_refused_naming_the_column_and_values(
    client: TestClient, auth: Auth, datasets: Path, format: str
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema"))
    data = write_iris(datasets, format, load_iris().target + 1)  # 1, 2, 3: counted from 1, not positions
    message = refusal(client, headers, data, format)
    column = "array 'y' of iris.npz" if format == "npz" else f"column 'species' of iris.{format}"
    assert f"trainPath: labels in {column} that outputSchema.classes does not declare: 1, 2, 3;" in message
    assert "declared: setosa, versicolor, virginica" in message
    assert client.get(f"{API}/training-jobs", headers=headers).json()["items"] == []


def test_a_class_name_the_model_does_not_declare_is_refused_at_submission(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("configuration", ["setosa", "versicolor"]))
    message = refusal(client, headers, write_iris(datasets, "csv"))
    assert "configuration.classes does not declare: virginica;" in message


def test_a_refusal_lists_ten_values_and_how_many_there_are(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema"))
    petal_length = load_iris().data[:, 2]  # 43 distinct lengths, not classes
    message = refusal(client, headers, write_iris(datasets, "csv", petal_length))
    assert "1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.9, 3.0, ... (43 in all)" in message


def test_a_training_file_without_every_declared_class_is_refused(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema"))
    data = write_iris(datasets, "csv", load_iris().target, rows=slice(0, 100))  # no 2: no virginica
    message = refusal(client, headers, data)
    assert "no label in column 'species' of iris.csv stands for virginica, of the 3 classes" in message


def test_an_image_folders_class_folders_are_checked_against_the_declared_classes(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    create_model(client, headers, "colours", framework="pytorch", configuration={"classes": ["green", "red"]})
    images = write_image_folder(datasets / "images")
    cnn = {"algorithm": "cnn", "params": {"channels": [4]}, "training": {"epochs": 1}}
    message = refusal(client, headers, images, "imagefolder", model="colours", **cnn)
    assert (
        "labels in the class folders of images that configuration.classes does not declare: blue;" in message
    )


def test_an_uploaded_dataset_is_checked_like_a_file(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema"))
    content = write_iris(tmp_path, "csv", load_iris().target + 1).read_bytes()
    uploaded = client.post(f"{API}/datasets", files={"file": ("iris.csv", content)}, headers=headers)
    assert uploaded.status_code == 201, uploaded.text
    message = refusal(client, headers, "dataset://iris")
    assert "does not declare: 1, 2, 3" in message


def test_an_s3_dataset_of_integer_labels_is_mapped_by_position(
    moto_server: MotoServer, engine: Any, database_url: str, tmp_path: Path
) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="label-codes")
    s3.put_object(
        Bucket="label-codes",
        Key="iris.parquet",
        Body=write_iris(tmp_path, "parquet", load_iris().target).read_bytes(),
    )
    container, headers = own_service(database_url, tmp_path / "data", **s3_settings(moto_server))
    with TestClient(create_app(container, manage_lifecycle=False)) as client:  # nothing runs the job
        iris_model(client, headers, **declaring("outputSchema"))
        body = body_for("s3://label-codes/iris.parquet", "parquet")
        submitted = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    container.close()
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["labelMapping"] == BY_POSITION


def test_data_changed_after_submission_still_fails_the_job_at_its_dataset_stage(
    engine: Any, database_url: str, tmp_path: Path
) -> None:
    container, headers = own_service(database_url, tmp_path / "data")
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True)
    data = write_iris(root, "csv", load_iris().target)
    with TestClient(create_app(container, manage_lifecycle=False)) as client:
        iris_model(client, headers, **declaring("outputSchema"))
        job = client.post(f"{API}/models/iris/train", json=body_for(data, "csv"), headers=headers).json()
        assert job["labelMapping"] == BY_POSITION
        write_iris(root, "csv")  # the names now, where the job was submitted with their codes
        container.start()
        try:
            failed = wait_for(client, headers, job["id"], *FINISHED)
        finally:
            container.close()
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "dataset"
    message = failed["error"]["message"]
    assert "positional mapping" in message
    assert "changed since: setosa, versicolor, virginica" in message


def test_a_regressor_on_a_model_that_declares_classes_is_not_checked_against_them(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, **declaring("outputSchema"))
    petal_length = load_iris().data[:, 2]
    body = body_for(
        write_iris(datasets, "csv", petal_length), "csv", algorithm="sklearn.linear_model.Ridge", params={}
    )
    submitted = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["labelMapping"] is None
    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]


def test_a_mapped_version_compiled_to_onnx_still_answers_class_names(
    engine: Any, database_url: str, tmp_path: Path
) -> None:
    container, headers = own_service(database_url, tmp_path / "data", onnx_compile=True)
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True)
    data = write_iris(root, "csv", load_iris().target)
    with TestClient(create_app(container)) as client:
        iris_model(client, headers, **declaring("configuration"))
        job = client.post(f"{API}/models/iris/train", json=body_for(data, "csv"), headers=headers).json()
        assert wait_for(client, headers, job["id"], *FINISHED)["status"] == "succeeded"
        serving = compiled_serving(client, headers)
        assert serving.get("form") == "onnx", serving
        answer = client.post(f"{API}/models/iris/predict", json={"input": VIRGINICA}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"
