"""LightGBM through the API, served by its plugin alone: uploads of native text models answer as LightGBM
does in-process (labels equal, probabilities within 1e-4), a DataFrame's names bind the declared
features whatever their order, the ONNX form answers the same, and training jobs fit LGBM wrappers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris, make_classification, make_regression

from aiservice.application.ports import LoadSpec
from aiservice.bootstrap import Container, artifact_store
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.onnx import OnnxRuntime
from tests.api.test_training import (
    FINISHED,
    SPECIES,
    datasets,
    iris_model,
    train_body,
    wait_for,
    write_iris_csv,
)
from tests.conftest import Auth
from tests.helpers import create_model, upload

__all__ = ["datasets"]  # the training tests' fixture, used here too

API = "/api/v1/ai/models"
TOLERANCE = 1e-4
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
BINARY_X, BINARY_Y = make_classification(300, 5, random_state=1)
REGRESSION_X, REGRESSION_Y = make_regression(300, 5, noise=5, random_state=1)
REGRESSION_X[::7, 2] = np.nan  # LightGBM learns where missing values go


def text_model(model: Any) -> bytes:
    return str(model.booster_.model_to_string()).encode()


def fitted(kind: str) -> tuple[Any, np.ndarray]:
    params = {"n_estimators": 20, "num_leaves": 7, "random_state": 0, "verbose": -1}
    if kind == "binary":
        return lgb.LGBMClassifier(**params).fit(BINARY_X, BINARY_Y), BINARY_X[:12]
    if kind == "multiclass":
        return lgb.LGBMClassifier(**params).fit(IRIS_X, IRIS_Y), IRIS_X[::13]
    return lgb.LGBMRegressor(**params).fit(REGRESSION_X, REGRESSION_Y), REGRESSION_X[:12]


def register(client: TestClient, headers: dict[str, str], name: str, model: Any, **body: Any) -> None:
    create_model(client, headers, name, framework="lightgbm", **body)
    response = upload(client, headers, name, text_model(model), filename="model.txt")
    assert response.status_code == 201, response.text


def batch_predict(
    client: TestClient, headers: dict[str, str], name: str, inputs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = client.post(
        f"{API}/{name}/batch-predict",
        json={"inputs": inputs, "options": {"includeConfidence": True}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    outputs: list[dict[str, Any]] = response.json()["outputs"]
    return outputs


def features(rows: np.ndarray) -> list[dict[str, Any]]:
    return [{"features": [None if np.isnan(v) else float(v) for v in row]} for row in rows]


def assert_answers_as_lightgbm(model: Any, rows: Any, outputs: list[dict[str, Any]]) -> None:
    if isinstance(model, lgb.LGBMRegressor):
        np.testing.assert_allclose([o["prediction"] for o in outputs], model.predict(rows), rtol=TOLERANCE)
        return
    assert [o["prediction"] for o in outputs] == model.predict(rows).tolist()
    probabilities = np.asarray([list(o["probabilities"].values()) for o in outputs])
    np.testing.assert_allclose(probabilities, model.predict_proba(rows), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_an_uploaded_text_model_answers_as_lightgbm(client: TestClient, auth: Auth, kind: str) -> None:
    model, rows = fitted(kind)
    names = [f"f{j}" for j in range(rows.shape[1])]  # the booster's own are LightGBM's defaults
    schema = {"type": "tabular", "features": [{"name": n, "nullable": True} for n in names]}
    register(client, auth(), kind, model, inputSchema=schema)
    version = client.get(f"{API}/{kind}/versions/1", headers=auth()).json()
    assert version["signature"]["task"] == ("regression" if kind == "regression" else "classification")
    inputs = [{n: None if np.isnan(v) else float(v) for n, v in zip(names, row, strict=True)} for row in rows]
    assert_answers_as_lightgbm(model, rows, batch_predict(client, auth(), kind, inputs))


def test_a_dataframe_fitted_booster_binds_declared_features_by_name(client: TestClient, auth: Auth) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(400, 3)), columns=["age", "income", "debt"])
    target = (3 * frame.age - frame.debt > 0).astype(int)  # income is noise: a swap changes answers
    model = lgb.LGBMClassifier(n_estimators=30, random_state=0, verbose=-1).fit(frame, target)
    declared = {"type": "tabular", "features": [{"name": n} for n in ("debt", "income", "age")]}
    register(client, auth(), "credit", model, inputSchema=declared)
    inputs = [dict(zip(frame.columns, map(float, row), strict=True)) for row in frame.to_numpy()[:16]]
    outputs = batch_predict(client, auth(), "credit", inputs)
    assert_answers_as_lightgbm(model, frame.iloc[:16], outputs)
    version = client.get(f"{API}/credit/versions/1", headers=auth()).json()
    assert version["signature"]["featureNames"] == ["age", "income", "debt"]


def test_the_onnx_form_answers_as_lightgbm(client: TestClient, auth: Auth, container: Container) -> None:
    model, rows = fitted("multiclass")
    register(client, auth(), "iris", model)
    model_id = client.get(f"{API}/iris", headers=auth()).json()["id"]
    serving = container.compilation.compile_version("acme", model_id, 1)
    assert serving is not None and serving["kept"] is True, serving
    assert serving["maxAbsDiff"] <= TOLERANCE
    outputs = batch_predict(client, auth(), "iris", features(rows))
    assert {o["form"] for o in outputs} == {serving["form"]}
    assert_answers_as_lightgbm(model, rows, outputs)

    compiled = serving["onnx"]
    path = artifact_store(container.settings).local_path(compiled["key"], compiled["digest"])
    onnx = OnnxRuntime().load(path, LoadSpec(Framework.ONNX, "model.onnx"))
    answered = onnx.predict(rows.astype(np.float32))
    assert answered.values.tolist() == model.predict(rows).tolist()
    np.testing.assert_allclose(answered.probabilities, model.predict_proba(rows), atol=TOLERANCE)  # type: ignore[arg-type]


def test_open_inference_protocol_metadata_lists_the_datatypes_infer_answers(
    client: TestClient, auth: Auth
) -> None:
    model, rows = fitted("multiclass")
    register(client, auth(), "iris", model)
    described = client.get("/v2/models/iris/versions/1", headers=auth()).json()
    tensor = {"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    response = client.post("/v2/models/iris/versions/1/infer", json={"inputs": [tensor]}, headers=auth())
    assert response.status_code == 200, response.text
    answered = {o["name"]: o["datatype"] for o in response.json()["outputs"]}
    assert answered == {o["name"]: o["datatype"] for o in described["outputs"]}
    labels = next(o["data"] for o in response.json()["outputs"] if o["name"] == "label")
    assert labels == model.predict(rows).tolist()


def test_a_training_job_fits_lightgbm_and_its_version_predicts(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, framework="lightgbm", outputSchema={"classes": SPECIES})
    data = write_iris_csv(datasets / "iris.csv")
    body = train_body(data, algorithm="LGBMClassifier", params={"n_estimators": 25, "num_leaves": 7})
    submitted = client.post("/api/v1/ai/models/iris/train", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_accuracy"] > 0.8
    version = client.get(f"{API}/iris/versions/1", headers=headers).json()
    assert version["params"]["n_estimators"] == 25
    assert version["signature"]["featureNames"] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    row = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    answer = client.post(f"{API}/iris/predict", json={"input": row}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"


def test_lightgbm_parameters_are_checked_before_a_job_is_queued(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers, framework="lightgbm")
    data = write_iris_csv(datasets / "iris.csv")
    params = {"num_leaves": 1, "device_type": "gpu", "colour": "red"}
    body = train_body(data, algorithm="LGBMClassifier", params=params)
    refused = client.post("/api/v1/ai/models/iris/train", json=body, headers=headers)
    assert refused.status_code == 422, refused.text
    fields = {e["field"] for e in refused.json()["errors"]}
    assert fields == {f"trainingConfig.params.{p}" for p in params}
