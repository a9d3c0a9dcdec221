"""XGBoost runtime: JSON and UBJSON models predict like XGBoost itself; garbage is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_iris, make_classification, make_regression

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.xgboost import XGBoostRuntime

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
XB, YB = make_classification(200, 6, random_state=0)
XB = XB.astype(np.float32)
XR, YR = make_regression(200, 5, random_state=0)
XR = XR.astype(np.float32)


def save(tmp_path: Path, model: xgb.XGBModel | xgb.Booster, name: str) -> Path:
    path = tmp_path / name
    model.save_model(path)
    return path


def spec(filename: str = "model.json", **configuration: object) -> LoadSpec:
    return LoadSpec(Framework("xgboost"), filename, configuration=dict(configuration))


@pytest.mark.parametrize("name", ["model.json", "model.ubj"])
def test_multiclass_classifier_predicts_like_xgboost(tmp_path: Path, name: str) -> None:
    fitted = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(X, Y)
    model = XGBoostRuntime().load(save(tmp_path, fitted, name), spec(name))
    prediction = model.predict(X[:20])
    np.testing.assert_array_equal(prediction.values, fitted.predict(X[:20]))
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(X[:20]), rtol=1e-6)  # type: ignore[arg-type]
    assert (model.signature.task, model.signature.classes, model.signature.n_features) == (
        "classification",
        (0, 1, 2),
        4,
    )


def test_binary_classifier_gives_two_probability_columns(tmp_path: Path) -> None:
    fitted = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(XB, YB)
    model = XGBoostRuntime().load(save(tmp_path, fitted, "model.ubj"), spec("model.ubj", numThreads=1))
    prediction = model.predict(XB[:20])
    np.testing.assert_array_equal(prediction.values, fitted.predict(XB[:20]))
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(XB[:20]), rtol=1e-6)  # type: ignore[arg-type]
    assert model.signature.classes == (0, 1)


def test_regressor_booster_predicts_values_with_feature_names(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(XR.shape[1])]
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3}, xgb.DMatrix(XR, YR, feature_names=names), 10
    )
    model = XGBoostRuntime().load(save(tmp_path, booster, "model.json"), spec())
    expected = booster.predict(xgb.DMatrix(XR[:20], feature_names=names))
    np.testing.assert_allclose(model.predict(XR[:20]).values, expected, rtol=1e-6)
    assert (model.signature.task, model.signature.feature_names) == ("regression", tuple(names))


def test_margin_objectives_are_turned_into_probabilities(tmp_path: Path) -> None:
    softmax = xgb.train({"objective": "multi:softmax", "num_class": 3}, xgb.DMatrix(X, Y), 5)
    softprob = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(X, Y), 5)
    model = XGBoostRuntime().load(save(tmp_path, softmax, "model.json"), spec())
    prediction = model.predict(X[:20])
    np.testing.assert_array_equal(prediction.values, softmax.predict(xgb.DMatrix(X[:20])))
    np.testing.assert_allclose(prediction.probabilities, softprob.predict(xgb.DMatrix(X[:20])), rtol=1e-5)  # type: ignore[arg-type]


def test_tree_shap_attributions_leave_out_the_bias(tmp_path: Path) -> None:
    fitted = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(X, Y)
    model = XGBoostRuntime().load(save(tmp_path, fitted, "model.json"), spec())
    attributions = model.explain(X[:5])
    contributions = fitted.get_booster().predict(xgb.DMatrix(X[:5]), pred_contribs=True)
    predicted = fitted.predict(X[:5])
    assert attributions is not None and attributions.method == "tree-shap"
    np.testing.assert_allclose(attributions.values, contributions[np.arange(5), predicted, :-1], rtol=1e-6)


def test_garbage_is_an_invalid_artifact(tmp_path: Path) -> None:
    for content in (b"definitely not a model", b"{not json either"):
        path = tmp_path / "model.json"
        path.write_bytes(content)
        with pytest.raises(InvalidArtifact):
            XGBoostRuntime().load(path, spec())


def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    fitted = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
    signature = SubprocessArtifactInspector(timeout_s=120).inspect(
        save(tmp_path, fitted, "model.ubj"), spec("model.ubj")
    )
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))
