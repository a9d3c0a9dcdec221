"""scikit-learn: fit any allowed estimator and save it with skops, which the sklearn runtime loads.

Estimators get the job's seed as ``random_state`` unless the parameters set one. Class labels go in as
they are (strings too); the estimator's ``classes_`` are sorted, like every trainer's classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.infrastructure.training import catalog
from aiservice.infrastructure.training.common import (
    check_tables,
    check_task,
    first_line,
    fit_error,
    json_safe,
    logged_warnings,
    targets,
)
from aiservice.infrastructure.training.metrics import classification_metrics, regression_metrics
from aiservice.infrastructure.training.spec import Progress, Table, TrainedModel, TrainingError, TrainSpec

FILENAME = "model.skops"
SCORED_TRAINING_ROWS = (
    10_000  # training metrics on a sample: predicting every row can cost as much as fitting
)


@dataclass
class FittedSklearn:
    estimator: Any
    spec: TrainSpec

    def predict(self, X: np.ndarray) -> Prediction:
        if self.spec.task == "classification" and hasattr(self.estimator, "predict_proba"):
            # One pass: a classifier's predict is the argmax of these (a forest's costs as much again).
            probabilities = np.asarray(self.estimator.predict_proba(X))
            values = np.asarray(self.estimator.classes_)[probabilities.argmax(axis=1)]
            return Prediction(values=values, probabilities=probabilities)
        return Prediction(values=np.asarray(self.estimator.predict(X)))

    def save(self, out_dir: Path) -> TrainedModel:
        import skops.io as sio

        path = out_dir / FILENAME
        try:
            sio.dump(self.estimator, path)
        except Exception as exc:
            raise TrainingError("save", f"The model cannot be saved with skops: {first_line(exc)}") from exc
        classes = getattr(self.estimator, "classes_", None)
        return TrainedModel(
            path=path,
            filename=FILENAME,
            classes=[json_safe(c) for c in classes] if classes is not None else None,
            params=json_safe(self.estimator.get_params(deep=False)),
            device="cpu",
            configuration={},
        )


def fit(
    spec: TrainSpec, train: Table, validation: Table | None, report: Callable[[Progress], None]
) -> FittedSklearn:
    check_task(spec)
    if spec.device != "cpu":
        raise TrainingError("device", "scikit-learn trains on the CPU only; set the device to 'cpu'.")
    estimator = _estimator(spec)
    check_tables(train, validation, ndim=2)
    _check_missing(estimator, train, validation)
    target = targets(spec.task, train, validation)  # the same label checks as every trainer
    y = train.y if spec.task == "classification" else target.train
    with logged_warnings():
        try:
            estimator.fit(train.X, y)
        except (TypeError, ValueError) as exc:
            raise fit_error(exc, spec.params, otherwise="data") from exc
    fitted = FittedSklearn(estimator, spec)
    report(Progress(epoch=1, epochs=1, metrics=_metrics(fitted, spec, train, validation)))
    return fitted


def _estimator(spec: TrainSpec) -> Any:
    try:
        estimator_class = catalog.sklearn_estimator_class(spec.algorithm)
    except ValueError as exc:
        raise TrainingError("params", str(exc)) from exc
    task = catalog.task_of("sklearn", spec.algorithm)
    if task != spec.task:
        raise TrainingError("params", f"{spec.algorithm} does {task}, but this job trains {spec.task}.")
    errors = catalog.validate("sklearn", spec.algorithm, spec.params)
    if errors:
        raise TrainingError("params", "; ".join(f"{e.field}: {e.message}" for e in errors))
    params = dict(spec.params)
    if "random_state" in estimator_class().get_params(deep=False):
        params.setdefault("random_state", spec.seed)
    return estimator_class(**params)


def _check_missing(estimator: Any, train: Table, validation: Table | None) -> None:
    from sklearn.utils import get_tags

    if get_tags(estimator).input_tags.allow_nan:
        return
    for name, table in (("training", train), ("validation", validation)):
        if table is not None and not np.isfinite(table.X).all():
            raise TrainingError(
                "data",
                f"The {name} features hold missing (NaN) or infinite values, which "
                f"{type(estimator).__name__} does not accept; impute them, or use an estimator that "
                "handles them (e.g. sklearn.ensemble.HistGradientBoostingClassifier).",
            )


def _metrics(
    fitted: FittedSklearn, spec: TrainSpec, train: Table, validation: Table | None
) -> dict[str, float]:
    rows = np.random.default_rng(spec.seed).permutation(len(train.X))[:SCORED_TRAINING_ROWS]
    metrics = _score(fitted, spec, train.X[rows], train.y[rows])
    if validation is not None:
        scores = _score(fitted, spec, validation.X, validation.y)
        metrics.update({f"val_{name}": value for name, value in scores.items()})
    return metrics


def _score(fitted: FittedSklearn, spec: TrainSpec, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    prediction = fitted.predict(X)
    if spec.task == "regression":
        return regression_metrics(y, prediction.values)
    classes = list(fitted.estimator.classes_)
    return classification_metrics(y, prediction.probabilities, classes, predicted=prediction.values)
