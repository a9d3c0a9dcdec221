"""What a network's outputs mean when the artifact cannot say: the model's configuration decides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.domain.signature import Task


def declared_task(configuration: dict[str, Any], width: int | None) -> Task:
    """``configuration.task`` or ``classes`` decide; otherwise one output column is a regression."""
    if configuration.get("task") == "classification" or configuration.get("classes"):
        return "classification"
    if configuration.get("task") in ("regression", "other"):
        task: Task = configuration["task"]
        return task
    return "regression" if width == 1 else "other"


def scores_to_probabilities(output: np.ndarray, one_column_logit: bool = False) -> np.ndarray:
    """A network's class scores as probabilities: rows that already sum to 1 stay as they are, others
    go through softmax. One column is P(positive) when it lies in [0, 1] (unless ``one_column_logit``),
    else its logit."""
    scores = output.reshape(len(output), -1).astype(np.float64)
    if scores.shape[1] == 1:
        column = scores[:, 0]
        inside = not one_column_logit and bool(((column >= 0) & (column <= 1)).all())
        positive = column if inside else 1.0 / (1.0 + np.exp(-column))
        return np.column_stack([1.0 - positive, positive])
    if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def network_prediction(
    output: np.ndarray,
    task: Task,
    classes: np.ndarray | None,
    probabilities_of: Callable[[np.ndarray], np.ndarray],
) -> Prediction:
    """A network's raw output as a prediction: labels and probabilities for classifiers, a value per
    row for single-output regressors, the output itself otherwise."""
    if task == "classification":
        probabilities = probabilities_of(output)
        predicted = probabilities.argmax(axis=1)
        labels = classes[predicted] if classes is not None else predicted
        return Prediction(values=labels, probabilities=probabilities)
    if task == "regression" and output.size == len(output):
        return Prediction(values=output.reshape(len(output)))
    return Prediction(values=output)
