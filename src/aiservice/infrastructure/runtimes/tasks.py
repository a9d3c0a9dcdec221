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
