"""The tracer used when tracing is off: every call is a no-op on shared objects, so it costs nothing."""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType

from aiservice.application.ports import Span, SpanValue


class _NoSpan(AbstractContextManager["_NoSpan"]):
    def set_attribute(self, key: str, value: SpanValue) -> None:
        pass

    def add_event(self, name: str, attributes: dict[str, SpanValue] | None = None) -> None:
        pass

    def record_error(self, error: BaseException) -> None:
        pass

    def update_name(self, name: str) -> None:
        pass

    def end(self) -> None:
        pass

    def traceparent(self) -> str | None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


NO_SPAN = _NoSpan()


class NoTracer:
    """Satisfies ``Tracer``; the default wherever tracing is not configured."""

    def span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> AbstractContextManager[Span]:
        return NO_SPAN

    def start_span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> Span:
        return NO_SPAN

    def traceparent(self) -> str | None:
        return None

    def shutdown(self) -> None:
        pass


NO_TRACER = NoTracer()
