"""The Open Inference Protocol (v2): metadata, JSON and binary tensors, errors, tenancy, Triton's client."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from aiservice import __version__
from aiservice.application.health import HealthReport
from aiservice.bootstrap import Container
from aiservice.domain.models import Framework
from aiservice.interfaces.http import v2
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, upload

V2 = "/v2/models"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
X, Y = load_iris(return_X_y=True)
BATCH = X[::7].astype(np.float32)  # every class, 22 rows
HEADER = "Inference-Header-Content-Length"


def iris(
    client: TestClient, auth: Auth, name: str = "iris", features: list[dict[str, Any]] | None = None
) -> None:
    create_model(
        client,
        auth(),
        name,
        inputSchema={"type": "tabular", "features": features or [{"name": f} for f in FEATURES]},
        outputSchema={"classes": CLASSES},
    )
    response = upload(client, auth(), name)
    assert response.status_code == 201, response.text


def reference() -> LogisticRegression:
    model: LogisticRegression = sio.loads(
        iris_model_bytes(), trusted=sio.get_untrusted_types(data=iris_model_bytes())
    )
    return model


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.tolist()}


def infer(
    client: TestClient, headers: dict[str, str], body: dict[str, Any], path: str = f"{V2}/iris/infer"
) -> Any:
    return client.post(path, json=body, headers=headers)


def binary_infer(
    client: TestClient,
    headers: dict[str, str],
    raw: bytes,
    shape: list[int],
    size: int | None = None,
    requested: list[dict[str, Any]] | None = None,
) -> Any:
    """A request in the binary tensor format, built by hand: JSON header, then the raw input."""
    parameters = {"binary_data_size": len(raw) if size is None else size}
    request: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "parameters": parameters}]
    }
    if requested is not None:
        request["outputs"] = requested
    header = json.dumps(request).encode()
    return client.post(
        f"{V2}/iris/infer",
        content=header + raw,
        headers={**headers, HEADER: str(len(header)), "Content-Type": "application/octet-stream"},
    )


def outputs(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def expected_labels(x: np.ndarray) -> list[str]:
    return [CLASSES[i] for i in reference().predict(x)]


def assert_problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["error"] == problem["detail"]
    assert field in [e["field"] for e in problem.get("errors", [])], problem
    return problem


# -- server ------------------------------------------------------------------------------------


def test_health_and_server_metadata_need_no_token(client: TestClient) -> None:
    assert (client.get("/v2/health/live").status_code, client.get("/v2/health/live").json()) == (
        200,
        {"live": True},
    )
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json() == {
        "name": "aiservice",
        "version": __version__,
        "extensions": ["binary_tensor_data"],
    }


def test_ready_is_503_while_a_dependency_is_down(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(container.health, "detailed", lambda: HealthReport(False, {}))
    response = client.get("/v2/health/ready")
    assert (response.status_code, response.json()) == (503, {"ready": False})


# -- models ------------------------------------------------------------------------------------


def test_metadata_of_a_tabular_classifier(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    response = client.get(f"{V2}/iris", headers=auth("predictor"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
        "parameters": {"task": "classification", "form": "native", "feature_names": FEATURES},
    }
    assert client.get(f"{V2}/iris/versions/1", headers=auth()).json() == response.json()


def test_ready_reports_whether_the_version_is_loaded(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    for path in (f"{V2}/iris/ready", f"{V2}/iris/versions/1/ready"):
        response = client.get(path, headers=auth("predictor"))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "name": "iris",
            "ready": True,
            "parameters": {"version": "1", "loaded": False},
        }
    infer(client, auth(), {"inputs": [tensor("input", BATCH[:1])]})
    assert client.get(f"{V2}/iris/ready", headers=auth()).json()["parameters"]["loaded"] is True


def test_ready_is_503_when_the_runtime_is_missing(
    client: TestClient, auth: Auth, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    iris(client, auth)
    runtime = container.inference.require_runtime(Framework("sklearn"))
    monkeypatch.setattr(runtime, "available", lambda: "install aiservice[sklearn]")
    response = client.get(f"{V2}/iris/ready", headers=auth())
    assert response.status_code == 503, response.text
    assert (response.json()["ready"], response.json()["error"]) == (False, response.json()["detail"])
    inferred = infer(client, auth(), {"inputs": [tensor("input", BATCH[:1])]})
    assert inferred.status_code == 503
    assert "install aiservice[sklearn]" in inferred.json()["error"]


# -- inference ---------------------------------------------------------------------------------


def test_one_tensor_gives_class_names_and_sklearns_probabilities(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    headers = {**auth("predictor"), "X-Request-ID": "v2-1"}
    response = infer(client, headers, {"inputs": [tensor("input", BATCH)]})
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "v2-1")
    got = outputs(response)
    assert got["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [22],
        "data": expected_labels(BATCH),
    }
    probabilities = got["probabilities"]
    assert (probabilities["datatype"], probabilities["shape"]) == ("FP64", [22, 3])
    expected = reference().predict_proba(BATCH)
    assert np.asarray(probabilities["data"]).reshape(22, 3) == pytest.approx(expected, rel=1e-6)


def test_nested_data_and_a_pinned_version_give_the_same_answer(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    flat = infer(
        client, auth(), {"id": "a", "inputs": [{**tensor("input", BATCH), "data": BATCH.ravel().tolist()}]}
    )
    nested = infer(
        client, auth(), {"id": "a", "inputs": [tensor("input", BATCH)]}, f"{V2}/iris/versions/1/infer"
    )
    assert flat.json() == nested.json()


def test_one_tensor_per_feature_gives_the_same_answer(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    columns = [tensor(f, BATCH[:, i].astype(np.float64), "FP64") for i, f in enumerate(FEATURES)]
    whole = outputs(infer(client, auth(), {"inputs": [tensor("input", BATCH)]}))
    assert outputs(infer(client, auth(), {"inputs": columns[::-1]})) == whole


def test_category_and_boolean_features_are_encoded_like_predict(client: TestClient, auth: Auth) -> None:
    features = [
        {"name": "sepal_length"},
        {"name": "sepal_width", "type": "integer"},
        {"name": "petal_length", "type": "category", "values": ["short", "medium", "long"]},
        {"name": "petal_width", "type": "boolean"},
    ]
    iris(client, auth, "coded", features)
    inputs = [
        tensor("sepal_length", np.array([5.0, 6.5]), "FP64"),
        tensor("sepal_width", np.array([3, 2], dtype=np.int32), "INT32"),
        {"name": "petal_length", "shape": [2], "datatype": "BYTES", "data": ["long", "short"]},
        {"name": "petal_width", "shape": [2], "datatype": "BOOL", "data": [True, False]},
    ]
    got = outputs(infer(client, auth(), {"inputs": inputs}, f"{V2}/coded/infer"))
    rows = np.array([[5.0, 3, 2, 1], [6.5, 2, 0, 0]], dtype=np.float32)
    assert got["probabilities"]["data"] == pytest.approx(
        reference().predict_proba(rows).ravel().tolist(), rel=1e-6
    )
    predicted = client.post(
        "/api/v1/ai/models/coded/predict",
        json={
            "input": {"sepal_length": 5.0, "sepal_width": 3, "petal_length": "long", "petal_width": True},
            "options": {"includeConfidence": True},
        },
        headers=auth(),
    ).json()
    assert got["label"]["data"][0] == predicted["prediction"]
    assert got["probabilities"]["data"][:3] == pytest.approx(
        list(predicted["probabilities"].values()), rel=1e-6
    )
    strings = b"".join(struct.pack("<I", len(w)) + w for w in (b"long", b"short"))
    inputs[2] = {"name": "petal_length", "shape": [2], "datatype": "BYTES"}
    inputs[2]["parameters"] = {"binary_data_size": len(strings)}
    header = json.dumps({"inputs": inputs}).encode()
    mixed = client.post(
        f"{V2}/coded/infer", content=header + strings, headers={**auth(), HEADER: str(len(header))}
    )
    assert outputs(mixed) == got
    inputs[2] = {"name": "petal_length", "shape": [2], "datatype": "BYTES", "data": ["long", "huge"]}
    assert_problem(infer(client, auth(), {"inputs": inputs}, f"{V2}/coded/infer"), 422, "inputs.2.data")
    inputs[2]["datatype"], inputs[2]["data"] = "INT64", [2, 0]
    assert_problem(infer(client, auth(), {"inputs": inputs}, f"{V2}/coded/infer"), 422, "inputs.2.datatype")


def _bare(client: TestClient, auth: Auth, estimator: Any) -> None:
    """A model registered without schemas: v2 describes it from the signature its upload recorded."""
    create_model(client, auth(), "bare")
    response = upload(client, auth(), "bare", bytes(sio.dumps(estimator.fit(X, Y))))
    assert response.status_code == 201, response.text


def test_a_regressor_without_schemas_gives_predictions(client: TestClient, auth: Auth) -> None:
    regressor = LinearRegression()
    _bare(client, auth, regressor)
    metadata = client.get(f"{V2}/bare", headers=auth()).json()
    assert (metadata["inputs"], metadata["outputs"]) == (
        [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        [{"name": "predictions", "datatype": "FP64", "shape": [-1]}],
    )
    assert "feature_names" not in metadata["parameters"]
    got = outputs(infer(client, auth(), {"inputs": [tensor("input", BATCH)]}, f"{V2}/bare/infer"))
    assert list(got) == ["predictions"]
    assert got["predictions"]["data"] == pytest.approx(regressor.predict(BATCH).tolist(), rel=1e-6)


def test_a_classifier_without_schemas_gives_its_own_integer_labels(client: TestClient, auth: Auth) -> None:
    classifier = LogisticRegression(max_iter=500)
    _bare(client, auth, classifier)
    metadata = client.get(f"{V2}/bare", headers=auth()).json()
    assert metadata["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}
    got = outputs(infer(client, auth(), {"inputs": [tensor("input", BATCH)]}, f"{V2}/bare/infer"))
    assert (got["label"]["datatype"], got["label"]["data"]) == ("INT64", classifier.predict(BATCH).tolist())


def test_requested_outputs_come_alone_and_in_the_order_asked(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    x = {"inputs": [tensor("input", BATCH[:3])]}
    both = infer(client, auth(), {**x, "outputs": [{"name": "probabilities"}, {"name": "label"}]}).json()
    assert [o["name"] for o in both["outputs"]] == ["probabilities", "label"]
    only = infer(client, auth(), {**x, "outputs": [{"name": "label"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["label"]


def test_binary_request_and_binary_response(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    raw = BATCH.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [22, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    response = client.post(
        f"{V2}/iris/infer",
        content=header + raw,
        headers={**auth(), HEADER: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    meta = json.loads(response.content[:length])
    probabilities, label = meta["outputs"]
    assert "data" not in probabilities and "data" not in label
    size = probabilities["parameters"]["binary_data_size"]
    assert size == 22 * 3 * 8
    blob = response.content[length:]
    assert np.frombuffer(blob[:size], "<f8").reshape(22, 3) == pytest.approx(
        reference().predict_proba(BATCH), rel=1e-6
    )
    labels, rest = [], blob[size:]
    assert len(rest) == label["parameters"]["binary_data_size"]
    while rest:
        (n,) = struct.unpack_from("<I", rest)
        labels.append(rest[4 : 4 + n].decode())
        rest = rest[4 + n :]
    assert labels == expected_labels(BATCH)


def test_binary_data_output_makes_every_output_binary(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    body = {"inputs": [tensor("input", BATCH[:2])], "parameters": {"binary_data_output": True}}
    response = infer(client, auth(), body)
    assert response.headers["content-type"] == "application/octet-stream"
    meta = json.loads(response.content[: int(response.headers[HEADER])])
    assert [o["parameters"]["binary_data_size"] for o in meta["outputs"]] == [
        4 + len(CLASSES[0]) + 4 + len(CLASSES[0]),
        2 * 3 * 8,
    ]


def test_a_body_over_the_json_limit_is_served(client: TestClient, auth: Auth, container: Container) -> None:
    iris(client, auth)
    rows = np.tile(BATCH, (4000, 1))
    raw = rows.tobytes()
    assert len(raw) > container.settings.max_json_body_bytes
    response = binary_infer(client, auth(), raw, list(rows.shape))
    assert outputs(response)["label"]["data"] == expected_labels(BATCH) * 4000


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_infer_limit_is_413(
    client: TestClient, auth: Auth, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    iris(client, auth)
    monkeypatch.setattr(v2, "MAX_INFER_BODY_BYTES", 4096)
    body = json.dumps({"inputs": [tensor("input", np.tile(BATCH, (10, 1)))]}).encode()
    content: Any = iter([body[i : i + 1000] for i in range(0, len(body), 1000)]) if chunked else body
    response = client.post(
        f"{V2}/iris/infer", content=content, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["limit"] == 4096


# -- errors ------------------------------------------------------------------------------------


def _bad(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**tensor("input", BATCH[:2]), **changes}]}


COLUMNS = [tensor(f, BATCH[:2, i]) for i, f in enumerate(FEATURES)]

BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("element-count", _bad(shape=[2, 4], data=[1.0] * 7), 422, "inputs.0.data"),
    ("ragged", _bad(data=[[1.0, 2.0, 3.0, 4.0], [1.0]]), 422, "inputs.0.data"),
    ("model-datatype", _bad(datatype="BOOL", data=[[True] * 4] * 2), 422, "inputs.0.datatype"),
    ("data-not-datatype", _bad(data=[["a", "b", "c", "d"]] * 2), 422, "inputs.0.data"),
    ("int-out-of-range", _bad(datatype="UINT8", data=[[1, 2, 3, 300]] * 2), 422, "inputs.0.data"),
    ("unknown-datatype", _bad(datatype="FP8"), 422, "inputs.0.datatype"),
    ("shape", _bad(shape=[1, 8], data=[1.0] * 8), 422, "inputs.0.shape"),
    ("no-rows", _bad(shape=[0, 4], data=[]), 422, "inputs.0.shape"),
    ("overflowing-shape", _bad(shape=[2**64 - 1, 0], data=[]), 422, "inputs.0.shape"),
    ("sizes-past-any-array", _bad(shape=[2**31 - 1, 2**31 - 1, 0], data=[]), 422, "inputs.0.shape"),
    ("too-many-dimensions", _bad(shape=[1] * 33, data=[1.0]), 422, "inputs.0.shape"),
    ("unknown-input", _bad(name="pixels"), 422, "inputs.0.name"),
    ("unknown-feature", {"inputs": [*COLUMNS, tensor("colour", BATCH[:2, 0])]}, 422, "inputs.4.name"),
    ("missing-feature", {"inputs": COLUMNS[:3]}, 422, "inputs"),
    (
        "unequal-features",
        {"inputs": [*COLUMNS[:3], tensor(FEATURES[3], BATCH[:3, 3])]},
        422,
        "inputs.3.shape",
    ),
    ("no-inputs", {"inputs": []}, 400, "inputs"),
    ("unknown-output", {**_bad(), "outputs": [{"name": "label"}, {"name": "logits"}]}, 400, "outputs.1.name"),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_tensors_are_problems_naming_the_field(
    client: TestClient, auth: Auth, body: dict[str, Any], status: int, field: str
) -> None:
    iris(client, auth)
    assert_problem(infer(client, auth(), body), status, field)


def test_non_finite_binary_values_are_refused(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    raw = np.array([[1, 2, np.nan, 4]], dtype="<f4").tobytes()
    response = binary_infer(client, auth(), raw, [1, 4])
    problem = assert_problem(response, 422, "inputs.0.data")
    assert "petal_length" in problem["detail"]


@pytest.mark.parametrize(
    ("size", "extra", "field"),
    [
        (15, b"", "inputs.0.parameters.binary_data_size"),
        (17, b"", "inputs.0.parameters.binary_data_size"),
        (16, b"??", "body"),
    ],
)
def test_binary_sizes_must_add_up(
    client: TestClient, auth: Auth, size: int, extra: bytes, field: str
) -> None:
    iris(client, auth)
    response = binary_infer(client, auth(), np.ones((1, 4), dtype="<f4").tobytes() + extra, [1, 4], size)
    assert response.status_code in (400, 422)
    assert_problem(response, response.status_code, field)


def test_malformed_json_is_400(client: TestClient, auth: Auth) -> None:
    iris(client, auth)
    response = client.post(
        f"{V2}/iris/infer", content=b'{"inputs": [', headers={**auth(), "Content-Type": "application/json"}
    )
    assert_problem(response, 400, "body")


def test_a_version_that_is_not_a_number_is_a_problem_with_error(client: TestClient, auth: Auth) -> None:
    response = client.get(f"{V2}/iris/versions/latest", headers=auth())
    assert_problem(response, 422, "path.version")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/ghost"),
        ("GET", "/v2/models/iris/versions/2"),
        ("GET", "/v2/models/ghost/ready"),
        ("GET", "/v2/models/iris/versions/2/ready"),
        ("POST", "/v2/models/ghost/infer"),
        ("POST", "/v2/models/iris/versions/2/infer"),
    ],
)
def test_missing_model_or_version_is_404(client: TestClient, auth: Auth, method: str, path: str) -> None:
    iris(client, auth)
    response = client.request(method, path, json=_bad() if method == "POST" else None, headers=auth())
    assert response.status_code == 404, response.text
    assert response.json()["error"] == response.json()["detail"]


V2_ENDPOINTS = [
    ("GET", "/v2/models/{model}"),
    ("GET", "/v2/models/{model}/versions/1"),
    ("GET", "/v2/models/{model}/ready"),
    ("GET", "/v2/models/{model}/versions/1/ready"),
    ("POST", "/v2/models/{model}/infer"),
    ("POST", "/v2/models/{model}/versions/1/infer"),
]


def test_the_table_covers_every_v2_model_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path.replace("{name}", "{model}").replace("{version}", "1"))
        for path, operations in paths.items()
        if path.startswith("/v2/models/")
        for method in operations
    }
    assert routes == set(V2_ENDPOINTS)


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize(("method", "template"), V2_ENDPOINTS)
def test_other_tenant_gets_404_on_every_v2_endpoint(
    client: TestClient, auth: Auth, by: str, method: str, template: str
) -> None:
    iris(client, auth)
    model = client.get("/api/v1/ai/models/iris", headers=auth()).json()
    path = template.format(model=model[by])
    body = _bad() if method == "POST" else None
    assert client.request(method, path, json=body, headers=auth()).status_code == 200
    response = client.request(method, path, json=body, headers=auth("admin", tenant="globex"))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("method", "template"), V2_ENDPOINTS)
def test_model_endpoints_need_a_token(client: TestClient, auth: Auth, method: str, template: str) -> None:
    iris(client, auth)
    response = client.request(method, template.format(model="iris"), headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 401
    assert response.json()["error"] == response.json()["detail"]


# -- Triton's own client -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_reads_metadata_and_infers(
    client: TestClient, auth: Auth, server: str, binary: bool
) -> None:
    import tritonclient.http as httpclient

    iris(client, auth)
    headers = auth("viewer", "predictor")  # reads metadata, and infers
    triton = httpclient.InferenceServerClient(url=server)
    try:
        assert triton.is_server_live(headers=headers)
        assert triton.is_server_ready(headers=headers)
        assert triton.is_model_ready("iris", headers=headers)
        assert not triton.is_model_ready("ghost", headers=headers)
        metadata = triton.get_model_metadata("iris", headers=headers)
        assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]
        assert metadata["parameters"]["feature_names"] == FEATURES
        request = httpclient.InferInput("input", list(BATCH.shape), "FP32")
        request.set_data_from_numpy(BATCH, binary_data=binary)
        wanted = [
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
            httpclient.InferRequestedOutput("label", binary_data=binary),
        ]
        result = triton.infer("iris", [request], outputs=wanted, headers=headers, model_version="1")
        assert result.as_numpy("probabilities") == pytest.approx(reference().predict_proba(BATCH), rel=1e-6)
        labels = expected_labels(BATCH)
        assert result.as_numpy("label").tolist() == ([s.encode() for s in labels] if binary else labels)
        every = triton.infer("iris", [request], headers=headers)  # no outputs named: all of them, binary
        assert every.as_numpy("label").tolist() == [s.encode() for s in labels]
        with pytest.raises(httpclient.InferenceServerException, match="unknown output 'logits'"):
            triton.infer(
                "iris", [request], outputs=[httpclient.InferRequestedOutput("logits")], headers=headers
            )
    finally:
        triton.close()
