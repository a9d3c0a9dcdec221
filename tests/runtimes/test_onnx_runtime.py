"""ONNX runtime: skl2onnx graphs predict like onnxruntime itself, with or without ZipMap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.onnx import OnnxRuntime

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
NAMES = np.array(["setosa", "versicolor", "virginica"])


def convert(tmp_path: Path, estimator: Any, zipmap: bool | None = False) -> Path:
    path = tmp_path / "model.onnx"
    options = {"zipmap": zipmap} if zipmap is not None else None
    onx = to_onnx(estimator, X[:1, : estimator.n_features_in_], options=options)
    path.write_bytes(onx.SerializeToString())
    return path


def reference(path: Path, batch: np.ndarray) -> list[Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: list[Any] = session.run(None, {session.get_inputs()[0].name: batch})
    return result


def spec(**configuration: object) -> LoadSpec:
    return LoadSpec(Framework.ONNX, "model.onnx", configuration=dict(configuration))


@pytest.mark.parametrize(
    "estimator", [LogisticRegression(max_iter=500), RandomForestClassifier(10, random_state=0)]
)
def test_classifier_without_zipmap_predicts_like_onnxruntime(tmp_path: Path, estimator: Any) -> None:
    path = convert(tmp_path, estimator.fit(X, Y))
    model = OnnxRuntime().load(path, spec(numThreads=1))
    labels, probabilities = reference(path, X[:20])
    prediction = model.predict(X[:20])
    np.testing.assert_array_equal(prediction.values, labels)
    np.testing.assert_allclose(prediction.probabilities, probabilities, rtol=1e-6)  # type: ignore[arg-type]
    assert (model.signature.task, model.signature.classes, model.signature.n_features) == (
        "classification",
        (0, 1, 2),
        4,
    )


def test_zipmap_probabilities_become_an_array_in_class_order(tmp_path: Path) -> None:
    fitted = LogisticRegression(max_iter=500).fit(X, NAMES[Y])
    path = convert(tmp_path, fitted, zipmap=True)
    model = OnnxRuntime().load(path, spec())
    labels, maps = reference(path, X[:20])
    prediction = model.predict(X[:20])
    expected = np.array([[row[c] for c in NAMES] for row in maps])
    np.testing.assert_array_equal(prediction.values, labels)
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(X[:20]), atol=1e-5)  # type: ignore[arg-type]
    assert model.signature.classes == tuple(NAMES)


def test_configured_classes_name_the_probability_columns(tmp_path: Path) -> None:
    fitted = LogisticRegression(max_iter=500).fit(X, Y)
    model = OnnxRuntime().load(convert(tmp_path, fitted), spec(classes=["a", "b", "c"]))
    np.testing.assert_array_equal(
        model.predict(X[:20]).values, np.array(["a", "b", "c"])[fitted.predict(X[:20])]
    )
    assert model.signature.classes == ("a", "b", "c")


def test_single_output_regression_is_flattened(tmp_path: Path) -> None:
    XR, YR = make_regression(100, 4, random_state=0)
    fitted = LinearRegression().fit(XR.astype(np.float32), YR)
    path = convert(tmp_path, fitted, zipmap=None)
    model = OnnxRuntime().load(path, spec())
    (expected,) = reference(path, X[:10])
    prediction = model.predict(X[:10].astype(np.float64))  # cast to the input's float32
    assert prediction.values.shape == (10,) and prediction.probabilities is None
    np.testing.assert_allclose(prediction.values, expected.ravel(), rtol=1e-6)
    assert model.signature.task == "regression"
    assert model.explain(X[:2]) is None


def matmul_graph(weights: TensorProto) -> bytes:
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [weights],
    )
    return bytes(helper.make_model(graph).SerializeToString())


def test_a_plain_graph_returns_its_raw_output(tmp_path: Path) -> None:
    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    path = tmp_path / "model.onnx"
    path.write_bytes(matmul_graph(numpy_helper.from_array(w, "w")))
    model = OnnxRuntime().load(path, spec())
    np.testing.assert_allclose(model.predict(X[:3]).values, X[:3] @ w, rtol=1e-6)
    assert model.signature.task == "other"
    assert model.signature.inputs[0].shape == (-1, 4)


def test_weights_in_external_files_are_refused(tmp_path: Path) -> None:
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 2])
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "neighbour.bin"), ("offset", "0"), ("length", "32")):
        weights.external_data.add(key=key, value=value)
    (tmp_path / "neighbour.bin").write_bytes(np.ones(8, dtype=np.float32).tobytes())
    path = tmp_path / "model.onnx"
    path.write_bytes(matmul_graph(weights))
    with pytest.raises(InvalidArtifact, match="external"):
        OnnxRuntime().load(path, spec())


def test_garbage_is_an_invalid_artifact(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"definitely not a model")
    with pytest.raises(InvalidArtifact):
        OnnxRuntime().load(path, spec())


def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    path = convert(tmp_path, RandomForestClassifier(5, random_state=0).fit(X, Y), zipmap=True)
    signature = SubprocessArtifactInspector(timeout_s=120).inspect(path, spec())
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))


def test_probabilities_of_a_float32_forest_stay_between_0_and_1(tmp_path: Path) -> None:
    """Twenty trees' float32 sums reach 1.0000001 on most iris rows; a probability never does."""
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y)
    path = convert(tmp_path, forest)
    assert reference(path, X)[1].max() > 1.0  # what onnxruntime itself answers
    model = OnnxRuntime().load(path, LoadSpec(Framework.ONNX, "model.onnx"))
    probabilities = model.predict(X).probabilities
    assert probabilities is not None
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    assert probabilities == pytest.approx(forest.predict_proba(X), abs=1e-4)


def test_cuda_asked_for_without_the_cuda_provider_serves_on_the_cpu_and_says_why(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the GPU test below covers it")
    path = convert(tmp_path, LogisticRegression(max_iter=500).fit(X, Y))
    model = OnnxRuntime().load(path, LoadSpec(Framework.ONNX, "model.onnx", device="cuda"))
    assert model.signature.extra["providers"] == ["CPUExecutionProvider"]
    assert model.signature.extra["device"] == "cpu"
    assert "no CUDAExecutionProvider" in model.signature.extra["deviceReason"]


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA build of onnxruntime here"
)
def test_cuda_asked_for_runs_on_the_cuda_provider(tmp_path: Path) -> None:
    path = convert(tmp_path, LogisticRegression(max_iter=500).fit(X, Y))
    model = OnnxRuntime().load(path, LoadSpec(Framework.ONNX, "model.onnx", device="cuda"))
    assert model.signature.extra["providers"][0] == "CUDAExecutionProvider"
    assert model.signature.extra["device"] == "cuda"
