"""Traces: a predict call is one trace, from the HTTP server span down to the model's load and call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiservice.application.events import envelope, from_envelope
from aiservice.application.ports import CloudEvent
from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.observability.tracing import OtelTracer, otlp_traces_url
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.api.test_training import FINISHED, iris_model, train_body, wait_for, write_iris_csv
from tests.conftest import Auth
from tests.helpers import create_model, upload, wait_until

API = "/api/v1/ai"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def container(settings: Settings, spans: InMemorySpanExporter) -> Iterator[Container]:
    c = bootstrap(settings, tracer=OtelTracer(spans, batch=False))
    c.tenants.ensure("acme")
    yield c
    c.close()


def _predict(client: TestClient, headers: dict[str, str], spans: InMemorySpanExporter) -> list[ReadableSpan]:
    create_model(client, headers, "iris")
    assert upload(client, headers, "iris").status_code == 201
    spans.clear()
    response = client.post(
        f"{API}/models/iris/predict",
        json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}},
        headers={**headers, "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    return list(spans.get_finished_spans())


def _named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert found, f"no {name!r} span in {[s.name for s in spans]}"
    return found[0]


def test_a_predict_call_is_a_server_span_with_load_and_predict_children(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter
) -> None:
    finished = _predict(client, auth("editor"), spans)
    server = _named(finished, "POST /api/v1/ai/models/{model}/predict")
    load = _named(finished, "model.load")
    predict = _named(finished, "model.predict")
    artifact = _named(finished, "artifact.open")
    assert server.attributes is not None and server.attributes["http.status_code"] == 200
    assert server.context is not None and load.context is not None
    assert load.parent is not None and load.parent.span_id == server.context.span_id
    assert predict.parent is not None and predict.parent.span_id == server.context.span_id
    assert artifact.parent is not None and artifact.parent.span_id == load.context.span_id


def test_the_callers_traceparent_keeps_its_trace_id(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter
) -> None:
    finished = _predict(client, auth("editor"), spans)
    server = _named(finished, "POST /api/v1/ai/models/{model}/predict")
    assert server.context is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    for name in ("model.load", "model.predict", "artifact.open"):
        span = _named(finished, name)
        assert span.context is not None and format(span.context.trace_id, "032x") == TRACE_ID


def test_database_statements_and_artifact_writes_are_spans(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter
) -> None:
    headers = auth("editor")
    create_model(client, headers, "iris")
    spans.clear()
    assert upload(client, headers, "iris").status_code == 201
    names = [s.name for s in spans.get_finished_spans()]
    assert "artifact.put" in names
    assert any(name.startswith("db INSERT") for name in names)


def test_tracing_is_off_without_an_endpoint_and_jaeger_is_reached_through_otlp(tmp_path: Path) -> None:
    assert otlp_traces_url(None, None) is None
    assert otlp_traces_url("http://collector:4318", None) == "http://collector:4318/v1/traces"
    assert otlp_traces_url(None, "http://jaeger:14268/api/traces") == "http://jaeger:4318/v1/traces"
    assert otlp_traces_url(None, "http://jaeger:4318") == "http://jaeger:4318/v1/traces"


def test_each_outbox_batch_published_is_a_span(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter
) -> None:
    create_model(client, auth("editor"), "iris")
    published = _wait_for_span(spans, "outbox.publish", 10, "the relay to publish in a span")
    assert published.attributes is not None and published.attributes["messaging.batch.size"] >= 1


def _wait_for_span(spans: InMemorySpanExporter, name: str, timeout: float, what: str) -> ReadableSpan:
    wait_until(lambda: any(s.name == name for s in spans.get_finished_spans()), timeout, what=what)
    return _named(list(spans.get_finished_spans()), name)


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def test_the_callers_trace_reaches_the_event_its_change_published(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter, container: Container
) -> None:
    seen: list[CloudEvent] = []
    container.events.subscribe("ai.model.created.v1", seen.append)
    created = client.post(
        f"{API}/models",
        json={"name": "traced", "framework": "sklearn"},
        headers={**auth("editor"), "traceparent": TRACEPARENT},
    )
    assert created.status_code == 201, created.text
    processed = _wait_for_span(spans, "event.process", 60, "the consumer to handle the event")
    # event.process runs inside outbox.publish (the in-process bus), which ends a moment later.
    published = wait_until(
        lambda: [s for s in spans.get_finished_spans() if s.name == "outbox.publish"],
        10,
        what="the relay's publish span to end",
    )
    (event,) = seen
    assert event.traceparent is not None and event.traceparent.split("-")[1] == TRACE_ID
    assert envelope(event)["traceparent"] == event.traceparent  # on every broker's wire form
    assert from_envelope(json.loads(json.dumps(envelope(event)))).traceparent == event.traceparent
    assert [_trace_id(span) for span in published] == [TRACE_ID] and _trace_id(processed) == TRACE_ID
    assert processed.attributes is not None and processed.attributes["messaging.message.id"] == event.id


def test_an_untraced_change_publishes_an_event_without_a_trace(settings: Settings) -> None:
    container = bootstrap(settings)  # tracing off: no endpoint configured
    container.tenants.ensure("acme")
    seen: list[CloudEvent] = []
    container.events.subscribe("ai.model.created.v1", seen.append)
    with TestClient(create_app(container)) as client:
        token = container.tokens.issue("tester", "acme", ["editor"], 60)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme", "traceparent": TRACEPARENT}
        create_model(client, headers, "plain")
        wait_until(lambda: seen, 10, what="the event")
    assert seen[0].traceparent is None and "traceparent" not in envelope(seen[0])


def test_a_malformed_traceparent_on_the_wire_is_dropped_not_fatal() -> None:
    document = {
        "specversion": "1.0",
        "id": "e1",
        "source": "/aiservice/tenants/acme",
        "type": "ai.model.created.v1",
        "subject": "m1",
        "time": "2026-11-26T18:00:00Z",
        "tenantid": "acme",
        "traceparent": "not-a-trace",
        "data": {},
    }
    assert from_envelope(document).traceparent is None


def test_a_training_job_joins_the_trace_of_the_request_that_submitted_it(
    client: TestClient, auth: Auth, spans: InMemorySpanExporter, container: Container
) -> None:
    headers = auth("editor")
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    data = write_iris_csv(root / "iris.csv")
    iris_model(client, headers)
    submitted = client.post(
        f"{API}/models/iris/train", json=train_body(data), headers={**headers, "traceparent": TRACEPARENT}
    )
    assert submitted.status_code == 202, submitted.text
    assert wait_for(client, headers, submitted.json()["id"], *FINISHED)["status"] == "succeeded"
    job = _wait_for_span(spans, "training.job", 60, "the job's span to end")
    register = _named(list(spans.get_finished_spans()), "training.register")
    assert _trace_id(job) == TRACE_ID and _trace_id(register) == TRACE_ID
    assert job.context is not None and register.parent is not None
    assert register.parent.span_id == job.context.span_id
    assert job.attributes is not None and job.attributes["job.outcome"] == "succeeded"
    assert any(e.name == "progress" for e in job.events)
