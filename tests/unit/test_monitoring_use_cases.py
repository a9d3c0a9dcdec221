"""The pure parts of drift monitoring: how rows become features, rolling performance from feedback,
and the monitoring policy's parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiservice.application.monitoring.features import feature_row
from aiservice.application.monitoring.performance import rolling_performance
from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.domain.errors import InvalidInput
from aiservice.domain.payload_logging import Feedback, LoggedPrediction

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def logged(i: int, prediction: Any, label: Any = None, version: int = 1, hours: int = 0) -> LoggedPrediction:
    feedback = None
    if label is not None:
        feedback = Feedback(f"r{i}", "m", label=label, has_label=True, created_at=START)
    return LoggedPrediction(
        id=str(i),
        request_id=f"r{i}",
        tenant_id="acme",
        model_id="m",
        version=version,
        inputs={},
        outputs={"prediction": prediction},
        latency_ms=1.0,
        created_at=START + timedelta(hours=hours, minutes=i),
        feedback=feedback,
    )


@pytest.mark.parametrize(
    ("payload", "row"),
    [
        ({"age": 41, "plan": "pro"}, {"age": 41, "plan": "pro"}),
        ({"features": [1.5, 2]}, {"f0": 1.5, "f1": 2}),
        ([3, "x"], {"f0": 3, "f1": "x"}),
        ({"age": 41, "tags": ["a"]}, {"age": 41}),
        ("a text", None),
    ],
)
def test_rows_become_named_features(payload: Any, row: dict[str, Any] | None) -> None:
    assert feature_row(payload) == row


def test_regression_performance_is_an_rmse_per_version_and_hour() -> None:
    items = [
        logged(0, 1.5, 2.5),
        logged(1, 2.0, 1.0),
        logged(2, 3.0, hours=1),
        logged(3, 1.0, 2.0, version=2),
    ]
    points = rolling_performance(items, "hour")
    assert [(p.version, p.start.hour, p.predictions, p.labelled) for p in points] == [
        (1, 10, 2, 2),
        (1, 11, 1, 0),
        (2, 10, 1, 1),
    ]
    assert (points[0].metric, points[0].value) == ("rmse", pytest.approx(1.0))
    assert (points[1].metric, points[1].value) == (None, None)


def test_classification_performance_is_an_accuracy_labels_compared_as_text() -> None:
    items = [logged(0, "cat", "cat"), logged(1, 1, "1"), logged(2, "dog", "cat"), logged(3, 0, 0)]
    [point] = rolling_performance(items, "day")
    assert (point.metric, point.value, point.start.hour) == ("accuracy", 0.75, 0)


def test_a_policy_reads_back_from_its_json() -> None:
    policy = MonitoringPolicy.parse({"thresholds": {"psi": 0.3}, "scheduleMinutes": 30, "accuracyFloor": 0.8})
    assert MonitoringPolicy.from_json(policy.to_json()) == policy
    assert policy.thresholds.psi == 0.3 and policy.thresholds.p_value == 0.01


def test_a_policy_names_every_bad_field() -> None:
    with pytest.raises(InvalidInput) as raised:
        MonitoringPolicy.parse({"thresholds": {"psi": -1, "auc": 2}, "windowHours": True, "extra": 1})
    assert {e.field for e in raised.value.errors} == {
        "body.thresholds.psi",
        "body.thresholds.auc",
        "body.windowHours",
        "body.extra",
    }
