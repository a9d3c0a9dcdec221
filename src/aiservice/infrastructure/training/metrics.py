"""Evaluation metrics of a trained model, as plain floats rounded to 6 decimals (JSON- and UI-ready).

Labels are compared by their index in ``classes``, so any label type works and a label outside
``classes`` simply counts as wrong. Metrics that are undefined on the data given (ROC AUC when a class
is missing, log loss with unknown labels) are left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiservice.infrastructure.training.spec import TrainingError

DECIMALS = 6


def classification_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray | None,
    classes: Sequence[Any],
    predicted: np.ndarray | None = None,
) -> dict[str, float]:
    """accuracy, f1 (binary on ``classes[1]``, else macro), roc_auc (one-vs-rest) and log_loss.

    ``probabilities`` has one column per class in ``classes`` order. A model without probabilities passes
    None and its ``predicted`` labels instead: then only accuracy and f1.
    """
    from sklearn.metrics import f1_score, log_loss, roc_auc_score

    k = len(classes)
    truth = _indices(np.asarray(y_true), classes)
    if probabilities is not None:
        probs = _normalised(np.asarray(probabilities, dtype=np.float64), k)
        guess = probs.argmax(axis=1)
    elif predicted is not None:
        probs = None
        guess = _indices(np.asarray(predicted), classes)
    else:
        raise ValueError("classification_metrics needs probabilities or predicted labels")
    result = {"accuracy": float(np.mean(truth == guess))}
    if k == 2:
        result["f1"] = float(f1_score(truth == 1, guess == 1, zero_division=0))
    else:
        result["f1"] = float(f1_score(truth, guess, labels=list(range(k)), average="macro", zero_division=0))
    every_class_known = bool((truth < k).all()) and len(np.unique(truth)) == k
    if probs is not None and every_class_known:
        if k == 2:
            result["roc_auc"] = float(roc_auc_score(truth, probs[:, 1]))
        else:
            result["roc_auc"] = float(roc_auc_score(truth, probs, multi_class="ovr", labels=list(range(k))))
    if probs is not None and bool((truth < k).all()):
        result["log_loss"] = float(log_loss(truth, probs, labels=list(range(k))))
    return _rounded(result)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2 (r2 only with at least two rows: it is undefined on one)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    _require_finite(pred)
    result = {
        "rmse": float(np.sqrt(mean_squared_error(truth, pred))),
        "mae": float(mean_absolute_error(truth, pred)),
    }
    if len(truth) >= 2:
        result["r2"] = float(r2_score(truth, pred))
    return _rounded(result)


def _indices(labels: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Each label's column in ``classes``; ``len(classes)`` for a label outside them."""
    index = {_key(c): i for i, c in enumerate(classes)}
    return np.fromiter((index.get(_key(v), len(classes)) for v in labels), dtype=np.int64, count=len(labels))


def _key(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _normalised(probabilities: np.ndarray, k: int) -> np.ndarray:
    if probabilities.ndim != 2 or probabilities.shape[1] != k:
        raise ValueError(f"probabilities have shape {probabilities.shape}; expected (rows, {k})")
    _require_finite(probabilities)
    clipped = np.clip(probabilities, 0.0, 1.0)
    totals = clipped.sum(axis=1, keepdims=True)
    return np.asarray(np.divide(clipped, totals, out=np.full_like(clipped, 1.0 / k), where=totals > 0))


def _require_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise TrainingError(
            "fit", "The model predicts NaN or infinite values: training diverged (try a lower learning rate)."
        )


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, DECIMALS) for name, value in metrics.items()}
