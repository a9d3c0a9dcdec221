"""Structured JSON logs: ``timestamp``, ``level``, ``service``, ``message`` and the request's context."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from aiservice.infrastructure.observability.tracing import current_ids

SERVICE = "aiservice"
_predictions = structlog.get_logger("aiservice.predictions")


def add_trace_ids(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the span current when the line is written, if any."""
    ids = current_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def log_prediction(model_id: str, tenant_id: str, duration_ms: float, confidence: float | None) -> None:
    """The seed's prediction log line (sampled by the caller: PREDICTION_LOG_SAMPLE_RATE)."""
    _predictions.info(
        "prediction", modelId=model_id, tenantId=tenant_id, duration=duration_ms, confidence=confidence
    )


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is when a record is emitted, so redirections are honoured."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _rename_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event["message"] = event.pop("event", "")
    event.pop("color_message", None)  # uvicorn's ANSI-coloured twin of the message
    event.setdefault("service", SERVICE)
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route stdlib and structlog records through one JSON renderer on stdout."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    tail: list[Any] = [] if fmt == "console" else [_rename_event]
    structlog.configure(
        # Drop records below the level before any processor runs: a request log costs nothing when off.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *tail,
            renderer,
        ],
    )
    handler = _StdoutHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request once
    for chatty in ("httpx", "httpx2", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
