"""The Grafana dashboard and Prometheus alert rules load, and reference only metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiservice.infrastructure.observability.metrics import ServiceMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC_NAME = re.compile(r"\bai_service_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported_series() -> set[str]:
    """Every sample name the service's registry can expose (histograms' and counters' suffixes included)."""
    names: set[str] = set()
    for family in ServiceMetrics().registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def dashboard_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("exprs", [dashboard_exprs, alert_exprs], ids=["dashboard", "alerts"])
def test_every_metric_referenced_is_one_the_service_exports(exprs: Any) -> None:
    referenced = {name for expr in exprs() for name in METRIC_NAME.findall(expr)}
    assert referenced, "no ai_service_* metric referenced"
    assert referenced - exported_series() == set()


def test_the_dashboard_shows_what_operators_ask_for() -> None:
    text = " ".join(dashboard_exprs())
    for metric in (
        "ai_service_requests_total",
        "ai_service_request_duration_ms_bucket",
        "ai_service_model_predictions_total",
        "ai_service_model_cache_hits_total",
        "ai_service_model_training_jobs_total",
        "ai_service_outbox_lag",
    ):
        assert metric in text, metric
    assert "histogram_quantile(0.99" in text


def test_every_alert_has_a_name_a_severity_and_a_summary() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for rule in (r for group in rules["groups"] for r in group["rules"]):
        assert rule["alert"].startswith("AIService")
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"]
