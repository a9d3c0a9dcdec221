"""Declared classes and a model that names its own: a classifier fitted on a column of names answers
those names whatever order ``outputSchema.classes`` lists them in (declared classes rename a model's
class positions only when it predicts numbers), on every path; other names are refused at upload."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SHUFFLED = ["virginica", "setosa", "versicolor"]  # not the sorted order the estimator keeps


def named_classifier() -> tuple[LogisticRegression, pd.DataFrame]:
    iris = load_iris()
    X = pd.DataFrame(iris.data, columns=FEATURES)
    y = np.asarray(iris.target_names)[iris.target]
    return LogisticRegression(max_iter=1000).fit(X, y), X


def skops_bytes(model: LogisticRegression) -> bytes:
    buffer = io.BytesIO()
    buffer.write(sio.dumps(model))
    return buffer.getvalue()


@pytest.fixture
def declared(client: TestClient, auth: Auth) -> tuple[LogisticRegression, pd.DataFrame]:
    model, X = named_classifier()
    create_model(
        client,
        auth(),
        "iris",
        inputSchema={"type": "tabular", "features": [{"name": f, "type": "number"} for f in FEATURES]},
        outputSchema={"classes": SHUFFLED},
    )
    response = upload(client, auth(), "iris", skops_bytes(model))
    assert response.status_code == 201, response.text
    return model, X


def test_predict_and_batch_predict_answer_the_models_own_names(
    client: TestClient, auth: Auth, declared: tuple[LogisticRegression, pd.DataFrame]
) -> None:
    model, X = declared
    rows = X.iloc[[0, 60, 120, 33]]
    expected = model.predict(rows)
    probabilities = model.predict_proba(rows)
    for i, (_, row) in enumerate(rows.iterrows()):
        answer = client.post(
            f"{API}/iris/predict",
            json={"input": row.to_dict(), "options": {"includeConfidence": True}},
            headers=auth(),
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["prediction"] == expected[i]
        shown = body["probabilities"]
        for c, name in enumerate(model.classes_):
            assert shown[name] == pytest.approx(probabilities[i, c], abs=1e-6)
    batch = client.post(f"{API}/iris/batch-predict", json={"inputs": rows.to_dict("records")}, headers=auth())
    assert batch.status_code == 200, batch.text
    assert [r["prediction"] for r in batch.json()["outputs"]] == list(expected)


def test_v2_answers_the_models_own_names(
    client: TestClient, auth: Auth, declared: tuple[LogisticRegression, pd.DataFrame]
) -> None:
    model, X = declared
    rows = X.iloc[[0, 60, 120]].to_numpy(dtype=np.float32)
    answer = client.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]
        },
        headers=auth(),
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    labels = next(o["data"] for o in outputs.values() if o["datatype"] == "BYTES")
    assert labels == list(model.predict(pd.DataFrame(rows, columns=FEATURES)))


def test_other_names_than_the_model_predicts_are_refused_at_upload(client: TestClient, auth: Auth) -> None:
    model, _ = named_classifier()
    create_model(client, auth(), "flowers", outputSchema={"classes": ["rose", "tulip", "daisy"]})
    response = upload(client, auth(), "flowers", skops_bytes(model))
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert "outputSchema.classes" in fields
    assert "setosa" in response.text
    assert client.get(f"{API}/flowers/versions", headers=auth()).json()["items"] == []


def test_declared_names_still_rename_a_model_that_predicts_numbers(client: TestClient, auth: Auth) -> None:
    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)  # classes 0, 1, 2
    create_model(client, auth(), "coded", outputSchema={"classes": SHUFFLED})
    assert upload(client, auth(), "coded", skops_bytes(model)).status_code == 201
    answer = client.post(
        f"{API}/coded/predict", json={"input": {"features": iris.data[0].tolist()}}, headers=auth()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == SHUFFLED[int(model.predict(iris.data[:1])[0])]
