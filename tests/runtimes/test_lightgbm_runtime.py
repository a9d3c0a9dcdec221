"""LightGBM runtime: native text models predict like LightGBM itself; names, NaN, SHAP; garbage is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris, make_classification, make_regression

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.lightgbm import LightGBMRuntime

X, Y = load_iris(return_X_y=True)
XB, YB = make_classification(200, 6, random_state=0)
XR, YR = make_regression(200, 5, random_state=0)


def save(tmp_path: Path, model: Any, name: str = "model.txt") -> Path:
    """What users do: the sklearn wrappers' booster, or a Booster, saved as LightGBM's text format."""
    booster = model.booster_ if hasattr(model, "booster_") else model
    booster.save_model(str(tmp_path / name))
    return tmp_path / name


def classifier(x: Any = X, y: Any = Y, **params: Any) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1, **params).fit(x, y)


def spec(filename: str = "model.txt", **configuration: object) -> LoadSpec:
    return LoadSpec(Framework("lightgbm"), filename, configuration=dict(configuration))


def test_multiclass_classifier_predicts_like_lightgbm(tmp_path: Path) -> None:
    fitted = classifier()
    model = LightGBMRuntime().load(save(tmp_path, fitted), spec(numThreads=1))
    prediction = model.predict(X[:20])
    np.testing.assert_array_equal(prediction.values, fitted.predict(X[:20]))
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(X[:20]), rtol=1e-9)  # type: ignore[arg-type]
    signature = model.signature
    assert (signature.task, signature.classes, signature.n_features) == ("classification", (0, 1, 2), 4)
    assert signature.extra["objective"] == "multiclass"


def test_binary_classifier_gives_two_probability_columns(tmp_path: Path) -> None:
    fitted = classifier(XB, YB)
    model = LightGBMRuntime().load(save(tmp_path, fitted), spec())
    prediction = model.predict(XB[:20])
    np.testing.assert_array_equal(prediction.values, fitted.predict(XB[:20]))
    np.testing.assert_allclose(prediction.probabilities, fitted.predict_proba(XB[:20]), rtol=1e-9)  # type: ignore[arg-type]
    assert model.signature.classes == (0, 1)


def test_regression_booster_predicts_values(tmp_path: Path) -> None:
    booster = lgb.train({"objective": "huber", "verbose": -1}, lgb.Dataset(XR, YR), num_boost_round=10)
    model = LightGBMRuntime().load(save(tmp_path, booster), spec())
    np.testing.assert_allclose(model.predict(XR[:20]).values, booster.predict(XR[:20]), rtol=1e-9)
    assert (model.signature.task, model.signature.classes) == ("regression", None)


def test_dataframe_names_become_columns_and_default_names_name_nothing(tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    named = LightGBMRuntime().load(save(tmp_path, classifier(frame, Y), "named.txt"), spec("named.txt"))
    unnamed = LightGBMRuntime().load(save(tmp_path, classifier(X, Y), "plain.txt"), spec("plain.txt"))
    assert named.signature.feature_names == tuple(frame.columns)
    assert unnamed.signature.columns is not None
    assert [c.name for c in unnamed.signature.columns] == [None] * 4  # not Column_0..Column_3


def test_missing_values_go_where_the_trees_send_them(tmp_path: Path) -> None:
    x = XR.copy()
    x[::4, 0] = np.nan
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(x, YR), num_boost_round=10)
    model = LightGBMRuntime().load(save(tmp_path, booster), spec())
    rows = np.array([[np.nan, 0.1, 0.2, 0.3, 0.4], [1.0, np.nan, np.nan, 0.0, 0.0]])
    np.testing.assert_allclose(model.predict(rows).values, booster.predict(rows), rtol=1e-9)


def test_tree_shap_attributions_are_of_the_predicted_class_without_the_bias(tmp_path: Path) -> None:
    fitted = classifier()
    model = LightGBMRuntime().load(save(tmp_path, fitted), spec())
    attributions = model.explain(X[:5])
    contributions = fitted.booster_.predict(X[:5], pred_contrib=True).reshape(5, 3, 5)
    predicted = fitted.predict(X[:5])
    assert attributions is not None and attributions.method == "tree-shap"
    np.testing.assert_allclose(attributions.values, contributions[np.arange(5), predicted, :-1], rtol=1e-9)


@pytest.mark.parametrize(
    "content", [b"definitely not a model", b"tree\nversion=v4\nnonsense", b"tree\n\xff\xfe"]
)
def test_garbage_is_an_invalid_artifact(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.txt"
    path.write_bytes(content)
    with pytest.raises(InvalidArtifact):
        LightGBMRuntime().load(path, spec())


def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    signature = SubprocessArtifactInspector(timeout_s=120).inspect(save(tmp_path, classifier()), spec())
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))
