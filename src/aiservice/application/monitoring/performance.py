"""Rolling performance from feedback: per version and per hour (or day), how many predictions were
logged, how many got a true label, and their accuracy (classification: label == prediction) or RMSE
(regression).

A version counts as a regression when every labelled pair is numeric and one of them is not a whole
number; otherwise as a classification (labels compared as given, or as text: ``1`` matches ``"1"``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiservice.domain.payload_logging import LoggedPrediction

Bucket = Literal["hour", "day"]
Metric = Literal["accuracy", "rmse"]


@dataclass(frozen=True)
class PerformancePoint:
    version: int
    start: datetime
    predictions: int
    labelled: int
    metric: Metric | None  # None: no label in the bucket
    value: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "start": self.start.isoformat(),
            "predictions": self.predictions,
            "labelled": self.labelled,
            "metric": self.metric,
            "value": self.value,
        }


def bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    start = moment.replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if bucket == "day" else start


def rolling_performance(logged: Sequence[LoggedPrediction], bucket: Bucket) -> list[PerformancePoint]:
    """One point per (version, bucket) that logged a prediction, by version then time."""
    groups: dict[tuple[int, datetime], list[LoggedPrediction]] = defaultdict(list)
    for p in logged:
        groups[(p.version, bucket_start(p.created_at, bucket))].append(p)
    tasks = {version: _metric([p for p in logged if p.version == version]) for version, _ in groups}
    points = []
    for (version, start), items in sorted(groups.items(), key=lambda kv: kv[0]):
        pairs = _pairs(items)
        metric = tasks[version] if pairs else None
        points.append(PerformancePoint(version, start, len(items), len(pairs), metric, _score(metric, pairs)))
    return points


def overall(logged: Sequence[LoggedPrediction]) -> tuple[Metric | None, float | None, int]:
    """The metric over every labelled prediction given, its value and the labelled count."""
    pairs = _pairs(logged)
    metric = _metric(logged) if pairs else None
    return metric, _score(metric, pairs), len(pairs)


def _pairs(items: Sequence[LoggedPrediction]) -> list[tuple[Any, Any]]:
    return [
        (p.feedback.label, _prediction(p))
        for p in items
        if p.feedback is not None and p.feedback.has_label and p.feedback.label is not None
    ]


def _prediction(p: LoggedPrediction) -> Any:
    return p.outputs.get("prediction") if isinstance(p.outputs, dict) else None


def _metric(items: Sequence[LoggedPrediction]) -> Metric:
    pairs = _pairs(items)
    numeric = all(_number(a) and _number(b) for pair in pairs for a, b in [pair])
    fractional = any(not float(v).is_integer() for pair in pairs for v in pair if _number(v))
    return "rmse" if pairs and numeric and fractional else "accuracy"


def _score(metric: Metric | None, pairs: Sequence[tuple[Any, Any]]) -> float | None:
    if metric is None or not pairs:
        return None
    if metric == "rmse":
        return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in pairs) / len(pairs))
    return sum(1 for a, b in pairs if a == b or str(a) == str(b)) / len(pairs)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
