"""Logs: JSON lines carrying the trace, and the sampled prediction line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiservice.bootstrap import bootstrap
from aiservice.infrastructure.observability.tracing import OtelTracer
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, upload

API = "/api/v1/ai"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracer = OtelTracer(InMemorySpanExporter(), batch=False)
    with tracer.span("work"):
        logging.getLogger("aiservice.test").info("inside")
    logging.getLogger("aiservice.test").info("outside")
    inside, outside = _lines(capsys.readouterr().out)[-2:]
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16
    assert inside["message"] == "inside"
    assert "trace_id" not in outside and "span_id" not in outside


def _service(settings: Settings, rate: float) -> Iterator[TestClient]:
    assert settings.database_url is not None
    container = bootstrap(
        make_settings(settings.database_url, settings.data_dir, prediction_log_sample_rate=rate)
    )
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        yield client
    container.close()


@pytest.mark.parametrize(("rate", "expected"), [(1.0, 3), (0.0, 0)])
def test_predictions_are_logged_at_the_sample_rate(
    settings: Settings, auth: Auth, capsys: pytest.CaptureFixture[str], rate: float, expected: int
) -> None:
    for client in _service(settings, rate):
        headers = auth("editor")
        create_model(client, headers, "churn")
        assert upload(client, headers, "churn").status_code == 201
        capsys.readouterr()
        for _ in range(3):
            body = {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}
            assert client.post(f"{API}/models/churn/predict", json=body, headers=headers).status_code == 200
    logged = [line for line in _lines(capsys.readouterr().out) if line["message"] == "prediction"]
    assert len(logged) == expected
    for line in logged:
        assert line["level"] == "info" and line["tenantId"] == "acme"
        assert line["modelId"] and line["duration"] > 0 and 0 < line["confidence"] <= 1
