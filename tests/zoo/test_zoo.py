"""The zoo: every model kind we serve, built as users build it, answers what its framework answers
in-process, on every path (/predict, /batch-predict, Open Inference Protocol JSON and binary, and
Triton's own client), in its native form (version 1) and after ONNX compilation (version 2).

Labels must be equal; probabilities within 1e-4; regression values within 1e-4 (relative, as the
ONNX check is: a float32 graph cannot promise more on a value in the hundreds). Each answer names the
form that served it, and it is the form the version's serving record says.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from tests.zoo.catalog import BUILDERS, Answers
from tests.zoo.conftest import API, COMPILED, NATIVE, Registered, Zoo

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning"),
]
# A group per model: every test of a model runs on the worker that built and registered it (once), and
# the two workers share the zoo.
MODELS = [pytest.param(name, marks=pytest.mark.xdist_group(f"zoo-{name}")) for name in BUILDERS]
FORMS = [pytest.param(NATIVE, id="native"), pytest.param(COMPILED, id="compiled")]
TOLERANCE = 1e-4
V2_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}


# -- what the service says about a version ----------------------------------------------------------


def served_schema(zoo: Zoo, name: str, version: int) -> dict[str, Any] | None:
    """The model's declared input schema, else the one its version's own columns give."""
    declared = zoo.client.get(f"{API}/{name}", headers=zoo.headers).json()["inputSchema"]
    if declared:
        return dict(declared)
    own = zoo.client.get(f"{API}/{name}/versions/{version}", headers=zoo.headers).json()["inputSchema"]
    return dict(own) if own else None


def expected_form(zoo: Zoo, registered: Registered, version: int) -> str:
    """Version 1 is never compiled. Version 2 serves the form its compilation chose, but natively where
    callers may send missing values that the ONNX form was found to answer differently."""
    serving = registered.compilation
    if version == NATIVE or serving.get("form") != "onnx":
        return "native"
    schema = served_schema(zoo, registered.zoo.name, version) or {}
    nullable = any(f.get("nullable") for f in schema.get("features", []))
    return "native" if nullable and serving.get("missingValues") == "differ" else "onnx"


# -- comparing answers ----------------------------------------------------------------------------


def assert_labels_and_probabilities(
    answers: Answers, rows: list[int], labels: list[Any], probabilities: np.ndarray | None
) -> None:
    assert answers.labels is not None and answers.probabilities is not None
    assert labels == [answers.labels[i] for i in rows]
    assert probabilities is not None
    np.testing.assert_allclose(probabilities, answers.probabilities[rows], rtol=0, atol=TOLERANCE)
    assert ((probabilities >= 0) & (probabilities <= 1)).all(), probabilities  # never -1e-07 or 1.0000001


def assert_values(answers: Answers, rows: list[int], values: list[float]) -> None:
    assert answers.values is not None
    np.testing.assert_allclose(values, answers.values[rows], rtol=TOLERANCE, atol=TOLERANCE)


def assert_predict_outputs(answers: Answers, outputs: list[dict[str, Any]]) -> None:
    rows = list(range(len(outputs)))
    if answers.values is not None:
        assert_values(answers, rows, [o["prediction"] for o in outputs])
        return
    assert answers.classes is not None
    for output in outputs:
        assert list(output["probabilities"]) == [str(c) for c in answers.classes]
    probabilities = np.asarray([list(o["probabilities"].values()) for o in outputs])
    assert_labels_and_probabilities(answers, rows, [o["prediction"] for o in outputs], probabilities)


# -- /predict and /batch-predict -----------------------------------------------------------------------


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_predict_answers_as_the_framework(zoo: Zoo, name: str, version: int) -> None:
    registered = zoo.get(name)
    outputs = []
    for row in registered.zoo.inputs:
        response = zoo.client.post(
            f"{API}/{name}/predict",
            json={"input": row, "options": {"includeConfidence": True, "version": version}},
            headers=zoo.headers,
        )
        assert response.status_code == 200, response.text
        outputs.append(response.json())
    assert {o["form"] for o in outputs} == {expected_form(zoo, registered, version)}
    assert_predict_outputs(registered.zoo.answers, outputs)


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_batch_predict_answers_as_the_framework(zoo: Zoo, name: str, version: int) -> None:
    registered = zoo.get(name)
    response = zoo.client.post(
        f"{API}/{name}/batch-predict",
        json={"inputs": registered.zoo.inputs, "options": {"includeConfidence": True, "version": version}},
        headers=zoo.headers,
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert {o["form"] for o in outputs} == {expected_form(zoo, registered, version)}
    assert_predict_outputs(registered.zoo.answers, outputs)


# -- the Open Inference Protocol ----------------------------------------------------------------------


def metadata(zoo: Zoo, name: str, version: int) -> dict[str, Any]:
    response = zoo.client.get(f"/v2/models/{name}/versions/{version}", headers=zoo.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def v2_inputs(
    zoo: Zoo, registered: Registered, version: int, binary: bool
) -> tuple[list[tuple[str, str, np.ndarray]], list[int]]:
    """The tensors a user reads off the model's metadata, built from the zoo's inputs; and which of
    the inputs they carry (a missing text value has no binary form, so such rows stay JSON-only)."""
    described = metadata(zoo, registered.zoo.name, version)
    specs, rows = described["inputs"], registered.zoo.inputs
    if binary:
        keep = [i for i, row in enumerate(rows) if not _missing_text(row, specs)]
    else:
        keep = list(range(len(rows)))
    chosen = [rows[i] for i in keep]
    names = [s["name"] for s in specs]
    if names == ["input"] and "feature_names" in described["parameters"]:
        schema = served_schema(zoo, registered.zoo.name, version) or {}
        by_name = {f["name"]: f for f in schema["features"]}
        order = described["parameters"]["feature_names"]
        matrix = [[_model_ready(by_name[n], row[n]) for n in order] for row in chosen]
        return [("input", specs[0]["datatype"], np.asarray(matrix, dtype=np.float64))], keep
    if names == ["input"] or (len(specs) == 1 and set(rows[0]) != {specs[0]["name"]}):
        (key,) = set(rows[0])  # {"features": [...]} or a tensor schema's own name
        dtype = V2_DTYPES[specs[0]["datatype"]]
        return [(names[0], specs[0]["datatype"], np.asarray([r[key] for r in chosen], dtype=dtype))], keep
    tensors = []
    for spec in specs:
        column = [row[spec["name"]] for row in chosen]
        if spec["datatype"] == "BYTES":
            tensors.append((spec["name"], "BYTES", np.asarray(column, dtype=object)))
        else:
            values = [math.nan if v is None else v for v in column]
            tensors.append(
                (spec["name"], spec["datatype"], np.asarray(values, dtype=V2_DTYPES[spec["datatype"]]))
            )
    return tensors, keep


def _missing_text(row: dict[str, Any], specs: list[dict[str, Any]]) -> bool:
    return any(s["datatype"] == "BYTES" and row.get(s["name"], "") is None for s in specs)


def _model_ready(feature: dict[str, Any], value: Any) -> float:
    """A feature's value in the ``input`` matrix: a category as its index, a boolean as 0 or 1."""
    if value is None:
        return math.nan
    if feature.get("type") == "category":
        return float(feature["values"].index(value))
    return float(value)


def check_v2_outputs(
    described: dict[str, Any],
    answers: Answers,
    rows: list[int],
    outputs: dict[str, np.ndarray],
    types: dict[str, str],
) -> None:
    """Outputs are exactly those the metadata lists, in its datatypes; and the framework's answers."""
    listed = {o["name"]: o["datatype"] for o in described["outputs"]}
    assert types == listed
    for spec in described["outputs"]:
        assert [-1 if d == -1 else d for d in spec["shape"][1:]] in (
            [],
            list(outputs[spec["name"]].shape[1:]),
        ), spec
    if answers.values is not None:
        assert_values(answers, rows, outputs["predictions"].reshape(-1).tolist())
        return
    labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].tolist()]
    assert_labels_and_probabilities(answers, rows, labels, outputs["probabilities"])


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_open_inference_protocol_json_answers_as_the_framework(zoo: Zoo, name: str, version: int) -> None:
    registered = zoo.get(name)
    tensors, rows = v2_inputs(zoo, registered, version, binary=False)
    body = {
        "inputs": [
            {"name": n, "datatype": d, "shape": list(a.shape), "data": _json_data(a)} for n, d, a in tensors
        ]
    }
    response = zoo.client.post(
        f"/v2/models/{name}/versions/{version}/infer",
        content=json.dumps(body, allow_nan=False),
        headers={**zoo.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["parameters"]["form"] == expected_form(zoo, registered, version)
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in result["outputs"]}
    types = {o["name"]: o["datatype"] for o in result["outputs"]}
    check_v2_outputs(metadata(zoo, name, version), registered.zoo.answers, rows, outputs, types)


def _json_data(array: np.ndarray) -> list[Any]:
    """Row-major elements for JSON: a missing number is null."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in array.reshape(-1).tolist()]


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_open_inference_protocol_binary_answers_as_the_framework(zoo: Zoo, name: str, version: int) -> None:
    import tritonclient.http as httpclient

    registered = zoo.get(name)
    tensors, rows = v2_inputs(zoo, registered, version, binary=True)
    inputs = []
    for tensor_name, datatype, array in tensors:
        request = httpclient.InferInput(tensor_name, list(array.shape), datatype)
        request.set_data_from_numpy(array, binary_data=True)
        inputs.append(request)
    described = metadata(zoo, name, version)
    wanted = [httpclient.InferRequestedOutput(o["name"], binary_data=True) for o in described["outputs"]]
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=wanted)
    response = zoo.client.post(
        f"/v2/models/{name}/versions/{version}/infer",
        content=body,
        headers={
            **zoo.headers,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )
    assert response.status_code == 200, response.text
    result = httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["Inference-Header-Content-Length"])
    )
    payload = result.get_response()
    assert payload["parameters"]["form"] == expected_form(zoo, registered, version)
    outputs = {o["name"]: result.as_numpy(o["name"]) for o in payload["outputs"]}
    types = {o["name"]: o["datatype"] for o in payload["outputs"]}
    check_v2_outputs(described, registered.zoo.answers, rows, outputs, types)


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_answers_as_the_framework(zoo: Zoo, name: str, version: int) -> None:
    import tritonclient.http as httpclient

    registered = zoo.get(name)
    tensors, rows = v2_inputs(zoo, registered, version, binary=True)
    triton = httpclient.InferenceServerClient(url=zoo.address)
    try:
        # tritonclient writes its own headers into the dict it is given: it gets copies.
        described = triton.get_model_metadata(name, model_version=str(version), headers=dict(zoo.headers))
        inputs = []
        for tensor_name, datatype, array in tensors:
            request = httpclient.InferInput(tensor_name, list(array.shape), datatype)
            request.set_data_from_numpy(array, binary_data=True)
            inputs.append(request)
        result = triton.infer(name, inputs, model_version=str(version), headers=dict(zoo.headers))
    finally:
        triton.close()
    payload = result.get_response()
    outputs = {o["name"]: result.as_numpy(o["name"]) for o in payload["outputs"]}
    types = {o["name"]: o["datatype"] for o in payload["outputs"]}
    check_v2_outputs(described, registered.zoo.answers, rows, outputs, types)


# -- compilation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_compilation_is_kept_where_it_verifies_or_says_why_not(zoo: Zoo, name: str) -> None:
    registered = zoo.get(name)
    serving = registered.compilation
    if registered.zoo.compiles:
        assert serving.get("kept") is True, serving
        assert serving["maxAbsDiff"] <= TOLERANCE or registered.zoo.answers.values is not None
        assert serving["form"] in ("onnx", "native") and serving["reason"]
    elif serving:  # tried: kept, or refused with the reason recorded
        assert serving["form"] in ("onnx", "native") and serving["reason"], serving
    else:  # a framework we do not compile (Keras, ONNX itself): served as uploaded
        native = zoo.client.get(f"{API}/{name}/versions/{COMPILED}", headers=zoo.headers).json()["serving"]
        assert native["form"] == "native" and native["reason"]
