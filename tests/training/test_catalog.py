"""The training catalog: which algorithms a job may run and which parameters it refuses, before queuing."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import make_classification, make_regression

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import FieldError
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.sklearn import SklearnRuntime
from aiservice.infrastructure.training.catalog import SKLEARN_MODULES, task_of, validate

ALGORITHM = "trainingConfig.algorithm"
# Enough to fit every estimator's state types quickly: the test is about what skops stores, not accuracy.
SMALL = {"n_estimators": 2, "max_iter": 5, "cv": 2, "max_subpopulation": 20, "n_restarts_optimizer": 0}


def fields(errors: list[FieldError]) -> list[str]:
    return [error.field for error in errors]


def test_allowed_estimator_with_known_parameters_is_accepted() -> None:
    params = {"n_estimators": 50, "max_depth": 4}
    assert validate("sklearn", "sklearn.ensemble.RandomForestClassifier", params) == []


@pytest.mark.parametrize(
    "algorithm",
    ["os.system", "sklearn.utils.Bunch", "sklearn.ensemble._forest.RandomForestClassifier", "RandomForest"],
)
def test_names_outside_the_allowed_sklearn_modules_are_refused(algorithm: str) -> None:
    assert fields(validate("sklearn", algorithm, {})) == [ALGORITHM]


def test_estimator_that_is_neither_classifier_nor_regressor_is_refused() -> None:
    errors = validate("sklearn", "sklearn.ensemble.IsolationForest", {})
    assert "neither a classifier nor a regressor" in errors[0].message


def test_unknown_sklearn_parameter_is_refused_by_name() -> None:
    errors = validate("sklearn", "sklearn.ensemble.RandomForestClassifier", {"n_trees": 10})
    assert fields(errors) == ["trainingConfig.params.n_trees"]


def test_invalid_sklearn_parameter_value_is_refused_before_anything_runs() -> None:
    errors = validate("sklearn", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": -1})
    assert fields(errors) == ["trainingConfig.params.n_estimators"]


def test_algorithm_that_contradicts_the_models_task_is_refused() -> None:
    errors = validate("sklearn", "sklearn.linear_model.Ridge", {}, task_hint="classification")
    assert fields(errors) == [ALGORITHM]


@pytest.mark.parametrize(
    ("framework", "algorithm", "task"),
    [
        ("sklearn", "sklearn.linear_model.LogisticRegression", "classification"),
        ("sklearn", "sklearn.tree.DecisionTreeRegressor", "regression"),
        ("xgboost", "XGBClassifier", "classification"),
        ("xgboost", "XGBRegressor", "regression"),
        ("pytorch", "mlp", None),
        ("keras", "cnn", None),
    ],
)
def test_task_of_names_what_the_algorithm_learns(framework: str, algorithm: str, task: str | None) -> None:
    assert task_of(framework, algorithm) == task


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_estimators": -1}, "trainingConfig.params.n_estimators"),
        ({"subsample": 1.5}, "trainingConfig.params.subsample"),
        ({"device": "cuda"}, "trainingConfig.params.device"),
        ({"n_trees": 3}, "trainingConfig.params.n_trees"),
        ({"objective": "reg:squarederror"}, "trainingConfig.params.objective"),
    ],
)
def test_xgboost_parameters_are_checked_by_hand(params: dict[str, object], field: str) -> None:
    assert fields(validate("xgboost", "XGBClassifier", params)) == [field]


def test_xgboost_accepts_only_its_two_sklearn_wrappers() -> None:
    assert fields(validate("xgboost", "XGBRFClassifier", {})) == [ALGORITHM]


@pytest.mark.parametrize(
    ("algorithm", "params", "field"),
    [
        ("mlp", {"hiddenSizes": [0]}, "trainingConfig.params.hiddenSizes[0]"),
        ("mlp", {"hiddenSizes": [True]}, "trainingConfig.params.hiddenSizes[0]"),
        ("mlp", {"hiddenSizes": "32"}, "trainingConfig.params.hiddenSizes"),
        ("mlp", {"dropout": 1.0}, "trainingConfig.params.dropout"),
        ("mlp", {"channels": [8]}, "trainingConfig.params.channels"),
        ("cnn", {"channels": []}, "trainingConfig.params.channels"),
        ("cnn", {"kernelSize": 0}, "trainingConfig.params.kernelSize"),
    ],
)
def test_network_shapes_are_refused_when_not_positive_layer_sizes(
    algorithm: str, params: dict[str, object], field: str
) -> None:
    assert fields(validate("pytorch", algorithm, params)) == [field]


def test_network_shape_within_bounds_is_accepted() -> None:
    params = {"channels": [8, 16], "kernelSize": 3, "hiddenSizes": [32], "dropout": 0.25}
    assert validate("keras", "cnn", params) == []


def test_unknown_network_and_unknown_framework_are_refused() -> None:
    assert fields(validate("pytorch", "transformer", {})) == [ALGORITHM]
    assert fields(validate("onnx", "mlp", {})) == [ALGORITHM]


def test_validating_networks_imports_neither_torch_nor_tensorflow() -> None:
    """Run in a fresh interpreter: this test process has imported both already."""
    code = (
        "import sys\n"
        "from aiservice.infrastructure.training.catalog import validate\n"
        "validate('pytorch', 'mlp', {'hiddenSizes': [8]})\n"
        "validate('keras', 'cnn', {'channels': [4]})\n"
        "print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def allowed_estimators() -> list[str]:
    names = []
    for module_name in SKLEARN_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", dir(module)):
            if task_of("sklearn", f"{module_name}.{name}") is not None:
                names.append(f"{module_name}.{name}")
    return names


def test_every_allowed_estimator_loads_in_the_sklearn_runtime(tmp_path: Path) -> None:
    """The runtime trusts only sklearn, numpy and scipy types in a skops file: the catalog must not admit
    an estimator whose fitted state needs anything else."""
    X, labels = make_classification(40, 4, n_informative=3, n_redundant=0, n_classes=3, random_state=0)
    Xr, yr = make_regression(40, 4, random_state=0)
    data = {
        "classification": (np.abs(X), np.array(["a", "b", "c"])[labels]),  # |X|: the NB family needs >= 0
        "regression": (Xr, np.abs(yr) + 1),  # > 0: Poisson and Gamma regressors
    }
    refused = {}
    for algorithm in allowed_estimators():
        module_name, _, name = algorithm.rpartition(".")
        estimator = getattr(importlib.import_module(module_name), name)()
        known = estimator.get_params(deep=False)
        estimator.set_params(**{k: v for k, v in SMALL.items() if k in known})
        features, target = data[str(task_of("sklearn", algorithm))]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence and future-default notices: not our point
                estimator.fit(features, target)
        except ValueError:
            continue  # shapes this tiny table cannot satisfy (multi-task, rank-deficient): not our point
        path = tmp_path / f"{name}.skops"
        sio.dump(estimator, path)
        try:
            SklearnRuntime().load(path, LoadSpec(framework=Framework("sklearn"), filename="model.skops"))
        except Exception as exc:
            refused[algorithm] = str(exc)
    assert refused == {}
