"""scikit-learn runtime: skops loads with the same numbers; pickle and untrusted types are refused."""

from __future__ import annotations

import operator
import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.sklearn import SklearnRuntime

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)


def dump(tmp_path: Path, estimator: object, name: str = "model.skops") -> Path:
    path = tmp_path / name
    sio.dump(estimator, path)
    return path


def spec(filename: str = "model.skops", allow_pickle: bool = False) -> LoadSpec:
    return LoadSpec(Framework("sklearn"), filename, allow_pickle=allow_pickle)


@pytest.mark.parametrize(
    "estimator", [LogisticRegression(max_iter=500), RandomForestClassifier(10, random_state=0)]
)
def test_classifier_loads_and_predicts_like_sklearn(tmp_path: Path, estimator: object) -> None:
    fitted = estimator.fit(X, Y)  # type: ignore[attr-defined]
    model = SklearnRuntime().load(dump(tmp_path, fitted), spec())
    prediction = model.predict(X[:10])
    np.testing.assert_array_equal(prediction.values, fitted.predict(X[:10]))
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(X[:10]))  # type: ignore[arg-type]
    assert model.signature.task == "classification"
    assert model.signature.classes == (0, 1, 2)
    assert model.signature.n_features == 4


def test_linear_attributions_are_coefficient_times_value(tmp_path: Path) -> None:
    fitted = LinearRegression().fit(X[:, :3], X[:, 3])
    model = SklearnRuntime().load(dump(tmp_path, fitted), spec())
    attributions = model.explain(X[:2, :3])
    assert attributions is not None and attributions.method == "coefficient-x-value"
    np.testing.assert_allclose(attributions.values, X[:2, :3] * fitted.coef_, rtol=1e-6)
    assert model.signature.task == "regression"


def test_pickle_is_refused_unless_allowed(tmp_path: Path) -> None:
    fitted = LogisticRegression(max_iter=500).fit(X, Y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fitted))
    with pytest.raises(UntrustedArtifact, match="allowPickle"):
        SklearnRuntime().load(path, spec("model.pkl"))
    allowed = SklearnRuntime().load(path, spec("model.pkl", allow_pickle=True))
    np.testing.assert_array_equal(allowed.predict(X[:5]).values, fitted.predict(X[:5]))


def test_untrusted_types_are_named_in_the_refusal(tmp_path: Path) -> None:
    pipeline = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500)).fit(X, Y)
    with pytest.raises(UntrustedArtifact) as refused:
        SklearnRuntime().load(dump(tmp_path, pipeline), spec())
    assert "_operator.neg" in refused.value.extra["untrustedTypes"]


def test_garbage_is_an_invalid_artifact(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"definitely not a model")
    with pytest.raises(InvalidArtifact):
        SklearnRuntime().load(path, spec())


def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    fitted = RandomForestClassifier(5, random_state=0).fit(X, Y)
    signature = SubprocessArtifactInspector(timeout_s=60).inspect(dump(tmp_path, fitted), spec())
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))


def test_inspector_passes_refusals_through(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression()))
    with pytest.raises(UntrustedArtifact):
        SubprocessArtifactInspector(timeout_s=60).inspect(path, spec("model.pkl"))


def test_inspector_stops_a_loader_that_uses_too_much_memory(tmp_path: Path) -> None:
    fitted = LogisticRegression(max_iter=500).fit(X, Y)
    with pytest.raises(InvalidArtifact, match="more than"):
        SubprocessArtifactInspector(timeout_s=60, memory_bytes=1024**2).inspect(
            dump(tmp_path, fitted), spec()
        )
