"""XGBoost in the AutoML search (ADR 28): the estimators a study's trials fit, the check of a study's
xgboost search space, and the saving of its best trial as the xgboost trainer saves a job's booster.

XGBoost's classifier wants labels 0..K-1. A trial fits on the study's labels as they are (strings, or
integers with gaps), so ``LabelledXGBClassifier`` encodes them itself, sorted as the xgboost trainer
encodes them, and answers in them (``classes_``, ``predict``): the scikit-learn scorers and the held-out
figures see the study's labels. Its booster is the plain one a job saves, predicting class positions.

Imported only when xgboost is installed (the search offers xgboost only then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from aiservice.domain.errors import FieldError
from aiservice.infrastructure.training.catalog import (
    PARAMS,
    XGBOOST_ALGORITHMS,
    XGBOOST_BOUNDS,
    validate_xgboost,
)
from aiservice.infrastructure.training.spec import TrainedModel

# Set by the study, never by a search space: the seed, one core per fit, no stopping without an
# evaluation set (trials are cross-validated fits), no code, the CPU.
FIXED_BY_STUDY = ("random_state", "n_jobs", "early_stopping_rounds", "callbacks", "device", "kwargs")


class LabelledXGBClassifier(xgboost.XGBClassifier):
    """An XGBClassifier that fits and predicts the study's own labels (see the module's docstring)."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> LabelledXGBClassifier:
        self.__dict__.pop("labels_", None)  # the parent checks its classes_ (0..K-1) while fitting
        labels, positions = np.unique(np.asarray(y), return_inverse=True)
        super().fit(X, positions.astype(np.int64), **kwargs)
        self.labels_ = labels
        return self

    @property
    def classes_(self) -> np.ndarray:
        labels = self.__dict__.get("labels_")
        return super().classes_ if labels is None else labels

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
        positions = np.asarray(super().predict(X, **kwargs)).astype(np.int64)
        labels = self.__dict__.get("labels_")
        return positions if labels is None else np.asarray(labels)[positions]


def estimator_class(task: str) -> type:
    return LabelledXGBClassifier if task == "classification" else xgboost.XGBRegressor


def known_params() -> set[str]:
    """What an xgboost search space may name: the wrappers' parameters less those the study sets."""
    return set(xgboost.XGBModel().get_params()) - set(FIXED_BY_STUDY)


def problems(
    task: str, spaces: dict[str, Any], samples: list[dict[str, Any]], where: str
) -> list[FieldError]:
    """The xgboost trainer's checks (bounds XGBoost leaves to the fit, the task's objectives) of both
    ends of every range (``samples``), named by the space's field; an integer parameter searched as a
    float would fail every trial."""
    errors = [
        FieldError(f"{where}.{name}", "an integer parameter: search it with an int space")
        for name, space in spaces.items()
        if isinstance(space, dict) and space.get("type") == "float" and _integer(name)
    ]
    wrapper = next(name for name, does in XGBOOST_ALGORITHMS.items() if does == task)
    for sample in samples:
        found = validate_xgboost(wrapper, sample)
        errors += [FieldError(e.field.replace(PARAMS, where, 1), e.message) for e in found]
    return list({(e.field, e.message): e for e in errors}.values())  # both ends may say the same


def _integer(name: str) -> bool:
    bounds = XGBOOST_BOUNDS.get(name)
    return bounds is not None and bounds[0] is int


def save(estimator: Any, feature_names: list[str], out_dir: Path) -> TrainedModel:
    """The refitted best trial as a job of the xgboost trainer saves it: the UBJSON booster, its
    features named, and the labels of its class positions (sorted, as the trainer encodes them)."""
    from aiservice.infrastructure.training.common import json_safe
    from aiservice.infrastructure.training.xgboost_trainer import FittedXGBoost, _name_features

    effective = {k: v for k, v in estimator.get_params().items() if v is not None and k != "callbacks"}
    _name_features(estimator, feature_names)
    classes = estimator.__dict__.get("labels_")
    return FittedXGBoost(estimator, classes, json_safe(effective), "cpu").save(out_dir)
