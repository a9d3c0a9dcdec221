"""Which algorithms a training job may run, and whether its parameters are valid, checked before queuing.

It runs in the API process, so it stays cheap: scikit-learn and XGBoost are imported only when a request
names them, and torch or TensorFlow never (network shapes are checked by hand). scikit-learn estimators
come from an allow-list of modules of predictors whose fitted state the sklearn runtime loads from skops.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiservice.domain.errors import FieldError
from aiservice.infrastructure.runtimes.registry import installed

ALGORITHM = "trainingConfig.algorithm"
PARAMS = "trainingConfig.params"
SKLEARN_MODULES = (
    "sklearn.discriminant_analysis",
    "sklearn.dummy",
    "sklearn.ensemble",
    "sklearn.gaussian_process",
    "sklearn.kernel_ridge",
    "sklearn.linear_model",
    "sklearn.naive_bayes",
    "sklearn.neighbors",
    "sklearn.neural_network",
    "sklearn.svm",
    "sklearn.tree",
)
XGBOOST_ALGORITHMS = {"XGBClassifier": "classification", "XGBRegressor": "regression"}
# Set by the job, never by a request: the device follows TrainSpec.device, callbacks are code.
XGBOOST_RESERVED = {
    "device": "set the job's device instead",
    "callbacks": "callbacks are code and cannot be given as parameters",
    "gpu_id": "set the job's device instead",
}
XGBOOST_OBJECTIVES = {"XGBClassifier": ("binary:", "multi:"), "XGBRegressor": ("reg:", "count:")}
# Bounds XGBoost does not check itself (n_estimators=-1 trains nothing and says nothing), or checks late.
XGBOOST_BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    # name: (type, low, high, low bound exclusive)
    "n_estimators": (int, 1, 100_000, False),
    "max_depth": (int, 0, 64, False),
    "learning_rate": (float, 0.0, float("inf"), True),
    "subsample": (float, 0.0, 1.0, True),
    "colsample_bytree": (float, 0.0, 1.0, True),
    "colsample_bylevel": (float, 0.0, 1.0, True),
    "colsample_bynode": (float, 0.0, 1.0, True),
    "min_child_weight": (float, 0.0, float("inf"), False),
    "gamma": (float, 0.0, float("inf"), False),
    "reg_alpha": (float, 0.0, float("inf"), False),
    "reg_lambda": (float, 0.0, float("inf"), False),
    "early_stopping_rounds": (int, 1, 100_000, False),
}
NETWORKS = ("mlp", "cnn")
MAX_LAYERS = 32
MAX_WIDTH = 65_536
MAX_KERNEL = 15
NET_PARAMS = {
    "mlp": ("hiddenSizes", "dropout"),
    "cnn": ("channels", "kernelSize", "hiddenSizes", "dropout"),
}
_PARAM_NAMED = re.compile(r"The '(\w+)' parameter")


def validate(
    framework: str, algorithm: str, params: dict[str, Any], task_hint: str | None = None
) -> list[FieldError]:
    """Every problem with an algorithm and its parameters, or []; nothing is fitted.

    ``task_hint`` ("classification" | "regression"), when the model already declares a task, must agree
    with the algorithm's (a regressor cannot train a classifier).
    """
    if not isinstance(algorithm, str) or not algorithm:
        return [FieldError(ALGORITHM, "name an algorithm")]
    if not isinstance(params, dict):
        return [FieldError(PARAMS, "parameters must be an object of name: value")]
    trainer = installed().trainer(framework)
    if trainer is None:
        known = ", ".join(installed().catalog().with_trait("trainable"))
        return [FieldError(ALGORITHM, f"training is not supported for {framework!r}; supported: {known}")]
    errors = trainer.validate(algorithm, params)
    task = None if errors else task_of(framework, algorithm)
    if task is not None and task_hint in ("classification", "regression") and task != task_hint:
        errors.append(FieldError(ALGORITHM, f"{algorithm} does {task}, but the model does {task_hint}"))
    return errors


def default_algorithm(framework: str, task: str, images: bool) -> str | None:
    """The algorithm a job of ``framework`` runs when its request names none; None if it has no trainer."""
    trainer = installed().trainer(framework)
    if trainer is None or trainer.default is None:
        return None
    return trainer.default(task, images)


def task_of(framework: str, algorithm: str) -> str | None:
    """What the algorithm learns, "classification" or "regression"; None for networks (the model decides)."""
    trainer = installed().trainer(framework)
    return trainer.task(algorithm) if trainer is not None else None


def sklearn_task(algorithm: str) -> str | None:
    estimator_class = _sklearn_class(algorithm)
    return None if isinstance(estimator_class, str) else _sklearn_task(estimator_class)


def xgboost_task(algorithm: str) -> str | None:
    return XGBOOST_ALGORITHMS.get(algorithm)


def sklearn_estimator_class(algorithm: str) -> type:
    """The allowed estimator class a dotted name names; ValueError (with the reason) otherwise."""
    found = _sklearn_class(algorithm)
    if isinstance(found, str):
        raise ValueError(found)
    return found


def _sklearn_class(algorithm: str) -> type | str:
    """The estimator class, or why the name is refused."""
    module_name, _, name = algorithm.rpartition(".")
    if module_name not in SKLEARN_MODULES:
        return (
            f"{algorithm!r} is not an allowed estimator; use a predictor from "
            f"{', '.join(SKLEARN_MODULES)} (e.g. sklearn.ensemble.RandomForestClassifier)"
        )
    module = importlib.import_module(module_name)  # a fixed, allowed module: importing it runs no user code
    estimator_class = getattr(module, name, None)
    if not (isinstance(estimator_class, type) and _public_in(module, name, estimator_class)):
        return f"{module_name} has no estimator named {name!r}"
    if _sklearn_task(estimator_class) is None:
        return f"{algorithm} is neither a classifier nor a regressor"
    return estimator_class


def _public_in(module: Any, name: str, estimator_class: type) -> bool:
    """Defined in that module (not imported into it, like BaseEstimator) and public."""
    defined_here = (estimator_class.__module__ + ".").startswith(module.__name__ + ".")
    exported = name in getattr(module, "__all__", (name,))
    return defined_here and exported and not name.startswith("_")


def _sklearn_task(estimator_class: type) -> str | None:
    from sklearn.base import is_classifier, is_regressor

    try:
        estimator = estimator_class()
        if is_classifier(estimator):
            return "classification"
        return "regression" if is_regressor(estimator) else None
    except Exception:  # abstract bases and meta-estimators that need an estimator argument
        return None


def validate_sklearn(algorithm: str, params: dict[str, Any]) -> list[FieldError]:
    estimator_class = _sklearn_class(algorithm)
    if isinstance(estimator_class, str):
        return [FieldError(ALGORITHM, estimator_class)]
    known = set(estimator_class().get_params(deep=False))
    unknown = [FieldError(f"{PARAMS}.{p}", _unknown(p, known)) for p in params if p not in known]
    if unknown:
        return unknown
    try:
        estimator = estimator_class(**params)
        validate_params = getattr(estimator, "_validate_params", None)
        if validate_params is not None:
            validate_params()
    except (TypeError, ValueError) as exc:
        return [FieldError(_param_field(str(exc)), _first_line(exc))]
    return []


def validate_xgboost(algorithm: str, params: dict[str, Any]) -> list[FieldError]:
    import xgboost

    known = set(xgboost.XGBModel().get_params()) - {"kwargs"}
    return validate_booster(
        Booster(XGBOOST_ALGORITHMS, known, XGBOOST_RESERVED, XGBOOST_BOUNDS, XGBOOST_OBJECTIVES),
        algorithm,
        params,
    )


@dataclass(frozen=True)
class Booster:
    """What a gradient-boosting library's sklearn wrappers accept, for ``validate_booster``."""

    algorithms: Mapping[str, str]  # wrapper class name -> the task it learns
    known: set[str]  # its parameter names
    reserved: Mapping[str, str]  # parameters the job sets itself -> why they cannot be given
    bounds: Mapping[str, tuple[type, float, float, bool]]  # name -> (type, low, high, low bound exclusive)
    objectives: Mapping[str, tuple[str, ...]]  # wrapper -> the objectives (or their prefixes) it takes


def validate_booster(booster: Booster, algorithm: str, params: dict[str, Any]) -> list[FieldError]:
    """Every problem with a boosting wrapper's name and parameters: unknown or reserved names, numbers
    out of bounds, an objective of the other task."""
    if algorithm not in booster.algorithms:
        return [FieldError(ALGORITHM, f"use {' or '.join(booster.algorithms)}, not {algorithm!r}")]
    errors: list[FieldError] = []
    for name, value in params.items():
        where = f"{PARAMS}.{name}"
        if name in booster.reserved:
            errors.append(FieldError(where, booster.reserved[name]))
        elif name not in booster.known:
            errors.append(FieldError(where, _unknown(name, booster.known)))
        elif name in booster.bounds:
            problem = _out_of_bounds(value, *booster.bounds[name])
            if problem:
                errors.append(FieldError(where, problem))
        elif name == "objective" and not (
            isinstance(value, str) and value.startswith(booster.objectives[algorithm])
        ):
            prefixes = " or ".join(f"'{p}…'" for p in booster.objectives[algorithm])
            errors.append(FieldError(where, f"{algorithm} takes an objective {prefixes}, not {value!r}"))
    return errors


def _out_of_bounds(value: Any, kind: type, low: float, high: float, open_low: bool) -> str | None:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (kind is int and not isinstance(value, int)):
        return f"must be {'an integer' if kind is int else 'a number'}, not {value!r}"
    too_low = value <= low if open_low else value < low
    if too_low or value > high:
        bound = f"greater than {low:g}" if open_low else f"at least {low:g}"
        return f"must be {bound}{f' and at most {high:g}' if high != float('inf') else ''}, not {value!r}"
    return None


def validate_network(algorithm: str, params: dict[str, Any]) -> list[FieldError]:
    if algorithm not in NETWORKS:
        return [FieldError(ALGORITHM, f"use 'mlp' (tables) or 'cnn' (images), not {algorithm!r}")]
    allowed = NET_PARAMS[algorithm]
    errors = [
        FieldError(f"{PARAMS}.{p}", f"unknown parameter; {algorithm} takes {', '.join(allowed)}")
        for p in params
        if p not in allowed
    ]
    for name, value in params.items():
        where = f"{PARAMS}.{name}"
        if name == "hiddenSizes":
            errors += _sizes(where, value, allow_empty=True)
        elif name == "channels":
            errors += _sizes(where, value, allow_empty=False)
        elif name == "kernelSize" and not (_is_int(value) and 1 <= value <= MAX_KERNEL):
            errors.append(FieldError(where, f"must be an integer from 1 to {MAX_KERNEL}, not {value!r}"))
        elif name == "dropout" and not (_is_number(value) and 0 <= value < 1):
            errors.append(FieldError(where, f"must be a number in [0, 1), not {value!r}"))
    return errors


def _sizes(where: str, value: Any, allow_empty: bool) -> list[FieldError]:
    if not isinstance(value, list) or (not value and not allow_empty) or len(value) > MAX_LAYERS:
        least = 0 if allow_empty else 1
        return [FieldError(where, f"must be a list of {least} to {MAX_LAYERS} layer sizes, not {value!r}")]
    return [
        FieldError(f"{where}[{i}]", f"must be an integer from 1 to {MAX_WIDTH}, not {size!r}")
        for i, size in enumerate(value)
        if not (_is_int(size) and 1 <= size <= MAX_WIDTH)
    ]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unknown(name: str, known: set[str]) -> str:
    return f"unknown parameter {name!r}; known: {', '.join(sorted(known))}"


def _param_field(message: str) -> str:
    named = _PARAM_NAMED.search(message)
    return f"{PARAMS}.{named.group(1)}" if named else PARAMS


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
