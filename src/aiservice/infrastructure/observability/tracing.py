"""OpenTelemetry behind the ``Tracer`` port: OTLP export, W3C ``traceparent``, database and artifact spans.

Tracing is off (``NoTracer``, nothing allocated per call) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``JAEGER_ENDPOINT`` is set. The provider is this container's own, never the process-global one, so two
apps in one process (tests) do not share spans; context propagation is OpenTelemetry's usual contextvar.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import event
from sqlalchemy.engine import Engine

from aiservice.application.ports import (
    ArtifactStore,
    ArtifactWriter,
    CloudEvent,
    EventPublisher,
    Span,
    SpanValue,
    StoredArtifact,
    Tracer,
)
from aiservice.application.tracing import NO_TRACER

_PROPAGATOR = TraceContextTextMapPropagator()
OTLP_TRACES_PATH = "/v1/traces"
JAEGER_OTLP_PORT = 4318


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: SpanValue) -> None:
        self._span.set_attribute(key, value)

    def add_event(self, name: str, attributes: dict[str, SpanValue] | None = None) -> None:
        self._span.add_event(name, attributes or {})

    def record_error(self, error: BaseException) -> None:
        self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def end(self) -> None:
        self._span.end()

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier.get("traceparent")


class OtelTracer:
    """Satisfies ``Tracer`` with an OpenTelemetry SDK provider that exports through ``exporter``."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        service_name: str = "aiservice",
        sample_ratio: float = 1.0,
        batch: bool = True,
    ) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBasedTraceIdRatio(sample_ratio),
        )
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("aiservice")
        self._shut = False

    @contextmanager
    def _span(
        self, name: str, attributes: dict[str, SpanValue] | None, traceparent: str | None
    ) -> Iterator[Span]:
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        with self._tracer.start_as_current_span(name, context=parent, attributes=attributes) as span:
            yield _OtelSpan(span)

    def span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> AbstractContextManager[Span]:
        return self._span(name, attributes, traceparent)

    def start_span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> Span:
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        return _OtelSpan(self._tracer.start_span(name, context=parent, attributes=attributes))

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    def shutdown(self) -> None:
        """Flush and stop exporting; a second call does nothing."""
        if not self._shut:
            self._shut = True
            self.provider.shutdown()


def otlp_traces_url(otlp_endpoint: str | None, jaeger_endpoint: str | None) -> str | None:
    """Where spans go: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` appended), else
    ``JAEGER_ENDPOINT`` mapped to Jaeger's own OTLP/HTTP receiver; None when neither is set."""
    if otlp_endpoint:
        base = otlp_endpoint.rstrip("/")
        return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH
    if not jaeger_endpoint:
        return None
    parts = urlsplit(jaeger_endpoint)
    if parts.path.rstrip("/") == "/api/traces" or parts.port in (14268, 14250):
        # The seed's Thrift collector URL: the same Jaeger takes OTLP on 4318.
        parts = parts._replace(netloc=f"{parts.hostname}:{JAEGER_OTLP_PORT}", path="")
    return otlp_traces_url(urlunsplit(parts), None)


def configure_tracing(
    otlp_endpoint: str | None,
    jaeger_endpoint: str | None,
    *,
    service_name: str = "aiservice",
    sample_ratio: float = 1.0,
) -> Tracer:
    """An OTLP-exporting tracer when an endpoint is configured, else the no-op tracer."""
    url = otlp_traces_url(otlp_endpoint, jaeger_endpoint)
    if url is None:
        return NO_TRACER
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OtelTracer(OTLPSpanExporter(endpoint=url), service_name=service_name, sample_ratio=sample_ratio)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


_DB_SPANS = "aiservice.spans"


def instrument_engine(engine: Engine, tracer: Tracer) -> None:
    """A ``db <statement>`` span around every SQL statement the engine runs (when tracing is on)."""
    if tracer is NO_TRACER:
        return
    system = engine.dialect.name

    def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(f"db {verb}", {"db.system": system, "db.statement": statement[:500]})
        conn.info.setdefault(_DB_SPANS, []).append(span)

    def after(conn: Any, *_args: Any) -> None:
        spans = conn.info.get(_DB_SPANS)
        if spans:
            spans.pop().end()

    def failed(context: Any) -> None:
        spans = context.connection.info.get(_DB_SPANS) if context.connection is not None else None
        if spans:
            span = spans.pop()
            span.record_error(context.original_exception)
            span.end()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


class TracedArtifactStore:
    """Satisfies ``ArtifactStore``: the wrapped store, with a span around each artifact read and write."""

    def __init__(self, store: ArtifactStore, tracer: Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def writer(self, key: str, max_bytes: int) -> ArtifactWriter:
        return _TracedWriter(self._store.writer(key, max_bytes), self._tracer, key)

    def open(self, key: str, digest: str) -> BinaryIO:
        with self._tracer.span("artifact.open", {"artifact.key": key}):
            return self._store.open(key, digest)

    def delete(self, key: str) -> None:
        with self._tracer.span("artifact.delete", {"artifact.key": key}):
            self._store.delete(key)

    def check_writable(self) -> None:
        self._store.check_writable()

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        with self._tracer.span("artifact.open", {"artifact.key": key, "artifact.verify": verify}):
            return self._store.local_path(key, digest, verify=verify)


class _TracedWriter:
    """The bytes stream in untraced (one span per chunk would swamp a trace); the commit, which
    finishes the hash and moves the file into place, is the ``artifact.put`` span."""

    def __init__(self, writer: ArtifactWriter, tracer: Tracer, key: str) -> None:
        self._writer = writer
        self._tracer = tracer
        self._key = key
        self._bytes = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self._writer.write(chunk)
        self._bytes += len(chunk)

    def commit(self) -> StoredArtifact:
        with self._tracer.span("artifact.put", {"artifact.key": self._key, "artifact.bytes": self._bytes}):
            return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


class TracedEventPublisher:
    """Satisfies ``EventPublisher``: the wrapped broker publisher, each batch an ``outbox.publish`` span."""

    def __init__(self, publisher: EventPublisher, tracer: Tracer) -> None:
        self._publisher = publisher
        self._tracer = tracer
        self.name = publisher.name

    def publish(self, events: list[CloudEvent]) -> None:
        attributes: dict[str, SpanValue] = {
            "messaging.system": self.name,
            "messaging.batch.size": len(events),
        }
        traces = {event.traceparent for event in events}
        # A batch from one request joins that request's trace; a mixed batch starts its own.
        parent = traces.pop() if len(traces) == 1 else None
        with self._tracer.span("outbox.publish", attributes, traceparent=parent):
            self._publisher.publish(events)

    def close(self) -> None:
        self._publisher.close()
