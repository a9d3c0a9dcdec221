"""Predictions over HTTP: named features in, labels and probabilities out, every bad input named."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import skops.io as sio
import starlette.requests
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, row_count, stored_files, upload

API = "/api/v1/ai/models"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
X, Y = load_iris(return_X_y=True)


def iris(client: TestClient, auth: Auth, name: str = "iris", content: bytes | None = None) -> None:
    create_model(
        client,
        auth(),
        name,
        inputSchema={"type": "tabular", "features": [{"name": f, "type": "number"} for f in FEATURES]},
        outputSchema={"classes": CLASSES},
    )
    response = upload(client, auth(), name, content)
    assert response.status_code == 201, response.text


def row(i: int) -> dict[str, float]:
    return dict(zip(FEATURES, map(float, X[i]), strict=True))


def reference() -> LogisticRegression:
    model: LogisticRegression = sio.loads(
        iris_model_bytes(), trusted=sio.get_untrusted_types(data=iris_model_bytes())
    )
    return model


def test_predict_returns_the_label_and_sklearns_probabilities(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    response = client.post(
        f"{API}/iris/predict",
        json={"input": row(100), "options": {"includeConfidence": True}},
        headers={**auth("predictor"), "X-Request-ID": "p-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference().predict_proba(X[100:101].astype(np.float32))[0]
    assert body["prediction"] == CLASSES[int(np.argmax(expected))]
    assert body["probabilities"] == pytest.approx(dict(zip(CLASSES, expected, strict=True)), rel=1e-5)
    assert body["confidence"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert (body["version"], body["requestId"]) == (1, "p-1")
    assert body["latencyMs"] >= 0


def test_feature_importance_names_the_method_and_each_feature(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    body = client.post(
        f"{API}/iris/predict",
        json={"input": row(0), "options": {"includeFeatureImportance": True}},
        headers=auth(),
    ).json()
    importance = body["featureImportance"]
    assert importance["method"] == "coefficient-x-value"
    assert list(importance["values"]) == FEATURES
    model = reference()
    predicted = int(model.predict(X[:1])[0])
    expected = X[0].astype(np.float32) * model.coef_[predicted]
    assert list(importance["values"].values()) == pytest.approx(list(expected), rel=1e-5)


def test_every_bad_feature_is_named(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    bad = {"sepal_length": "long", "sepal_width": True, "petal_width": 1.0, "colour": "blue"}
    response = client.post(f"{API}/iris/predict", json={"input": bad}, headers=auth())
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(fields) == {"input.sepal_length", "input.sepal_width", "input.petal_length", "input.colour"}
    assert fields["input.petal_length"] == "required"
    assert fields["input.colour"] == "unknown feature"


@pytest.mark.parametrize("path", ["predict", "batch-predict"])
def test_an_integer_of_hundreds_of_digits_is_refused_not_a_500(
    client: TestClient, auth: Auth, path: str
) -> None:
    iris(client, auth)
    row = '{"sepal_length": ' + "9" * 400 + ', "sepal_width": 1, "petal_length": 1, "petal_width": 1}'
    body = ('{"input": ' + row + "}" if path == "predict" else '{"inputs": [' + row + "]}").encode()
    response = client.post(
        f"{API}/iris/{path}", content=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].endswith("sepal_length"), response.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client: TestClient, auth: Auth, value: str) -> None:
    iris(client, auth)
    others = '"sepal_width": 1, "petal_length": 1, "petal_width": 1'
    body = ('{"input": {"sepal_length": ' + value + ", " + others + "}}").encode()
    response = client.post(
        f"{API}/iris/predict", content=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "input.sepal_length"


def test_model_without_declared_features_takes_a_feature_list(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "bare")
    upload(client, auth(), "bare")
    ok = client.post(f"{API}/bare/predict", json={"input": {"features": list(X[50])}}, headers=auth())
    assert ok.status_code == 200
    assert ok.json()["prediction"] == int(reference().predict(X[50:51])[0])
    short = client.post(f"{API}/bare/predict", json={"input": {"features": [1.0, 2.0]}}, headers=auth())
    assert short.status_code == 422
    assert "expected 4 values" in short.json()["errors"][0]["message"]


def test_batch_predict_keeps_order_and_fails_only_bad_items(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    inputs = [row(0), {"sepal_length": 1.0}, row(100), row(50)]
    response = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=auth())
    assert response.status_code == 200
    outputs = response.json()["outputs"]
    expected = [CLASSES[i] for i in reference().predict(X[[0, 100, 50]])]
    assert [outputs[i]["prediction"] for i in (0, 2, 3)] == expected
    problem = outputs[1]["error"]
    assert problem["status"] == 422
    assert {e["field"] for e in problem["errors"]} == {
        "inputs.1.sepal_width",
        "inputs.1.petal_length",
        "inputs.1.petal_width",
    }


def test_batch_predict_reads_the_body_the_middleware_parsed(
    client: TestClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strict-JSON check parsed the body already: FastAPI is handed that document, not a second
    parse by Python's json (the slowest step of a large batch), and answers exactly as before."""
    iris(client, auth)
    inputs = [row(0), {"sepal_length": 1.0}, row(100)]
    expected = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=auth()).json()

    loads = starlette.requests.json.loads  # the json module itself: PyJWT reads token headers with it

    def refuse(data: str | bytes, *args: object, **kwargs: object) -> object:
        if b"inputs" in (data.encode() if isinstance(data, str) else data):
            raise AssertionError("the body was parsed again")
        return loads(data, *args, **kwargs)

    headers = auth()
    with monkeypatch.context() as patch:
        patch.setattr(starlette.requests.json, "loads", refuse)
        response = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=headers)
    outputs = response.json()["outputs"]
    assert [o.get("prediction") for o in outputs] == [o.get("prediction") for o in expected["outputs"]]
    assert outputs[1]["error"]["errors"] == expected["outputs"][1]["error"]["errors"]


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b"", 422, "body"),
        (b"null", 422, "body"),
        (b'{"inputs": [', 400, "body"),
        (b'{"inputs": []}', 422, "body.inputs"),
        (b'{"inputs": [{"sepal_length": NaN}], "options": {"batchSize": 0}}', 422, "body.options.batchSize"),
    ],
)
def test_batch_predict_bodies_fastapi_refuses_are_refused_as_before(
    client: TestClient, auth: Auth, content: bytes, status: int, field: str
) -> None:
    iris(client, auth)
    headers = {**auth(), "Content-Type": "application/json"}
    response = client.post(f"{API}/iris/batch-predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_batch_predict_fail_fast_refuses_the_whole_batch(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    response = client.post(
        f"{API}/iris/batch-predict",
        json={"inputs": [row(0), {"sepal_length": 1.0}], "options": {"failFast": True}},
        headers=auth(),
    )
    assert response.status_code == 422


def test_batch_predict_in_chunks_matches_one_call(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    inputs = [row(i) for i in range(0, 150, 5)]
    whole = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=auth()).json()
    chunked = client.post(
        f"{API}/iris/batch-predict", json={"inputs": inputs, "options": {"batchSize": 4}}, headers=auth()
    ).json()
    assert [o["prediction"] for o in whole["outputs"]] == [o["prediction"] for o in chunked["outputs"]]


def test_batch_larger_than_max_batch_size_is_413(
    client: TestClient, auth: Auth, container: Container
) -> None:
    iris(client, auth)
    inputs = [row(0)] * (container.inference.max_batch_size + 1)
    response = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=auth())
    assert response.status_code == 413
    assert (response.json()["limit"], "MAX_BATCH_SIZE" in response.json()["detail"]) == (1000, True)


def test_a_batch_of_a_hundred_is_answered_whatever_the_batcher_merges(
    client: TestClient, auth: Auth, container: Container
) -> None:
    """MAX_BATCH_SIZE counts a request's inputs (1000 by default); the adaptive batcher's own bound on
    the rows it merges (BATCHER_MAX_ROWS, 32) does not limit one request."""
    iris(client, auth)
    assert (container.inference.max_batch_size, container.inference.loader.max_batch_rows) == (1000, 32)
    inputs = [row(i) for i in range(100)]
    response = client.post(f"{API}/iris/batch-predict", json={"inputs": inputs}, headers=auth())
    assert response.status_code == 200, response.text
    expected = [CLASSES[i] for i in reference().predict(X[:100])]
    assert [o["prediction"] for o in response.json()["outputs"]] == expected


def test_version_and_alias_pin_the_model(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    upload(client, auth(), "iris", iris_model_bytes("forest"))
    client.put(f"{API}/iris/aliases/old", json={"version": 1}, headers=auth())
    latest = client.post(f"{API}/iris/predict", json={"input": row(0)}, headers=auth()).json()
    pinned = client.post(
        f"{API}/iris/predict", json={"input": row(0), "options": {"version": 1}}, headers=auth()
    )
    aliased = client.post(
        f"{API}/iris/predict", json={"input": row(0), "options": {"alias": "old"}}, headers=auth()
    )
    assert latest["version"] == 2
    assert pinned.json()["version"] == aliased.json()["version"] == 1
    client.post(f"{API}/iris/versions/1/stage", json={"stage": "production"}, headers=auth())
    assert client.post(f"{API}/iris/predict", json={"input": row(0)}, headers=auth()).json()["version"] == 1


def test_missing_model_version_or_alias_is_404(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    assert client.post(f"{API}/nope/predict", json={"input": row(0)}, headers=auth()).status_code == 404
    for options in ({"version": 7}, {"alias": "ghost"}):
        response = client.post(
            f"{API}/iris/predict", json={"input": row(0), "options": options}, headers=auth()
        )
        assert response.status_code == 404


def test_other_tenant_cannot_predict(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    response = client.post(f"{API}/iris/predict", json={"input": row(0)}, headers=auth(tenant="globex"))
    assert response.status_code == 404


def test_corrupted_artifact_cannot_be_served(client: TestClient, auth: Auth, container: Container) -> None:
    iris(client, auth)
    (artifact,) = stored_files(container.settings.artifact_path)
    artifact.write_bytes(b"tampered")
    response = client.post(f"{API}/iris/predict", json={"input": row(0)}, headers=auth())
    assert response.status_code == 500
    assert response.json()["type"].endswith("/artifact-corrupt")


def test_load_and_unload_warm_and_free_the_cache(
    client: TestClient, auth: Auth, container: Container
) -> None:
    iris(client, auth)
    assert client.post(f"{API}/iris/versions/1/load", headers=auth("viewer")).status_code == 403
    loaded = client.post(f"{API}/iris/versions/1/load", headers=auth("editor"))
    assert loaded.status_code == 200
    assert loaded.json()["memoryBytes"] >= len(iris_model_bytes())
    assert len(container.inference.cache._entries) == 1
    assert client.post(f"{API}/iris/versions/1/unload", headers=auth("editor")).status_code == 204
    assert len(container.inference.cache._entries) == 0
    metrics = client.get("/metrics").text
    assert "ai_service_model_cache_misses_total 1.0" in metrics


def test_predictions_are_counted_by_outcome(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    client.post(f"{API}/iris/predict", json={"input": row(0)}, headers=auth())
    client.post(f"{API}/iris/predict", json={"input": {}}, headers=auth())
    metrics = client.get("/metrics").text
    assert 'ai_service_model_predictions_total{model="iris",outcome="success",version="1"} 1.0' in metrics
    assert 'ai_service_model_predictions_total{model="iris",outcome="invalid",version="1"} 1.0' in metrics
    assert "ai_service_batch_size_bucket" in metrics


def test_pickle_is_refused_by_default_and_served_when_the_tenant_allows_it(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    create_model(client, auth(), "pickled")
    blob = pickle.dumps(LogisticRegression(max_iter=500).fit(X, Y))
    refused = upload(client, auth(), "pickled", blob, filename="model.pkl")
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/untrusted-artifact")
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []
    container.tenants.configure("acme", allow_pickle=True)
    assert upload(client, auth(), "pickled", blob, filename="model.pkl").status_code == 201
    response = client.post(f"{API}/pickled/predict", json={"input": {"features": list(X[0])}}, headers=auth())
    assert response.status_code == 200


def test_broken_or_mislabelled_artifacts_leave_no_version(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    create_model(client, auth(), "broken")
    garbage = upload(client, auth(), "broken", b"PK\x03\x04 not really a zip")
    assert garbage.status_code == 422
    assert garbage.json()["type"].endswith("/invalid-artifact")
    create_model(
        client,
        auth(),
        "mislabelled",
        inputSchema={"type": "tabular", "features": [{"name": "only", "type": "number"}]},
    )
    mismatch = upload(client, auth(), "mislabelled")
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["field"] == "inputSchema.features"
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


def test_malformed_input_schema_is_refused_at_registration(client: TestClient, auth: Auth) -> None:
    response = client.post(
        "/api/v1/ai/models",
        json={
            "name": "x",
            "framework": "sklearn",
            "inputSchema": {"type": "tabular", "features": [{"type": "number"}]},
        },
        headers=auth(),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.inputSchema.features.0"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0, 2.0, 3.0], "has shape [3], expected [4]"),
        ([["a", "b"], ["c", "d"]], "cannot be read as a float32 tensor"),
        ([1.0, 2.0, "x", 4.0], "cannot be read as a float32 tensor"),
    ],
)
def test_tensor_inputs_check_dtype_and_shape(
    client: TestClient, auth: Auth, value: object, message: str
) -> None:
    create_model(
        client,
        auth(),
        "tensor",
        inputSchema={"type": "tensor", "name": "x", "dtype": "float32", "shape": [4]},
    )
    assert upload(client, auth(), "tensor").status_code == 201
    ok = client.post(f"{API}/tensor/predict", json={"input": {"x": list(map(float, X[0]))}}, headers=auth())
    assert ok.status_code == 200, ok.text
    bad = client.post(f"{API}/tensor/predict", json={"input": {"x": value}}, headers=auth())
    assert bad.status_code == 422
    (error,) = bad.json()["errors"]
    assert error["field"] == "input.x"
    assert message in error["message"]


def test_the_product_specs_batch_options_work_as_written(client: TestClient, auth: Auth) -> None:
    """The spec's example: batch-predict with {"options": {"batchSize": 32, "parallel": true}}."""
    iris(client, auth)
    inputs = [row(i) for i in range(0, 150, 2)]
    response = client.post(
        f"{API}/iris/batch-predict",
        json={"inputs": inputs, "options": {"batchSize": 32, "parallel": True}},
        headers=auth("predictor"),
    )
    assert response.status_code == 200, response.text
    expected = [CLASSES[i] for i in reference().predict(X[0:150:2])]
    assert [o["prediction"] for o in response.json()["outputs"]] == expected
