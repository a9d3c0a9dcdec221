"""Shaping a model's answer for callers: the label in the caller's terms, probabilities by class name,
and attributions by feature name, per row of a batch that may have failed in places."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.application.serving.inputs import ServingModel, labels_of
from aiservice.domain.errors import DomainError


@dataclass(frozen=True)
class PredictOptions:
    include_confidence: bool = False
    include_feature_importance: bool = False
    version: int | None = None
    alias: str | None = None
    # The request's headers (case-insensitive), where an experiment's routing key may be read.
    headers: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    def selector(self) -> str:
        if self.version is not None:
            return f":{self.version}"
        return f"@{self.alias}" if self.alias else ""


@dataclass
class PredictionResult:
    prediction: Any
    model_id: str
    version: int
    latency_ms: float
    form: str = "native"  # the form of the version that answered: native or onnx
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    feature_importance: dict[str, Any] | None = None
    experiment: Mapping[str, str] | None = None  # {"id", "arm"} when an experiment routed the call


def shaped(
    serving: ServingModel,
    count: int,
    errors: dict[int, DomainError],
    prediction: Prediction | None,
    importance: dict[str, Any] | None,
    options: PredictOptions,
    latency_ms: float,
) -> list[PredictionResult | DomainError]:
    """One result per input, in order: the input's error, else its row of the prediction (the rows
    of ``prediction`` are the inputs without errors, in order)."""
    labels = labels_of(serving, prediction.values) if prediction is not None else []
    results: list[PredictionResult | DomainError] = []
    row = 0
    for i in range(count):
        error = errors.get(i)
        if error is not None:
            results.append(error)
            continue
        assert prediction is not None
        results.append(result_of(serving, prediction, labels[row], importance, row, options, latency_ms))
        row += 1
    return results


def result_of(
    serving: ServingModel,
    prediction: Prediction,
    label: Any,
    importance: dict[str, Any] | None,
    row: int,
    options: PredictOptions,
    latency_ms: float,
) -> PredictionResult:
    result = PredictionResult(
        prediction=label,
        model_id=serving.model.id,
        version=serving.version.version,
        latency_ms=latency_ms,
        form=serving.form,
    )
    if prediction.probabilities is not None and options.include_confidence:
        probs = prediction.probabilities[row]
        classes = serving.labels or tuple(range(len(probs)))
        result.probabilities = {str(classes[c]): float(p) for c, p in enumerate(probs)}
        result.confidence = float(np.max(probs))
    if importance is not None:
        names = serving.feature_names
        values = importance["values"][row]
        result.feature_importance = {
            "method": importance["method"],
            "values": {names[i] if i < len(names) else f"f{i}": float(v) for i, v in enumerate(values)},
        }
    elif options.include_feature_importance:
        result.feature_importance = {
            "method": None,
            "values": {},
            "reason": "not supported for this model",
        }
    return result
