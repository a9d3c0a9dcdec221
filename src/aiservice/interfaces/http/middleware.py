"""ASGI middleware: request ids, access logs and metrics, and request body limits."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.interfaces.http.problems import problem_response

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("aiservice.http")


_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count()


def _new_request_id() -> str:
    """Unique per process start and request, without a system call per request (unlike uuid4)."""
    return f"{_PREFIX}{next(_COUNTER):016x}"


class RequestContextMiddleware:
    """Accepts or makes ``X-Request-ID``, echoes it, binds it to logs, and records metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if supplied and REQUEST_ID.fullmatch(supplied) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        tenant = headers.get(b"x-tenant-id", b"").decode("latin-1")[:63] or None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(requestId=request_id, tenantId=tenant)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = (time.perf_counter() - started) * 1000
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe_request(scope["method"], template, status, duration)
            if template not in ("/metrics", "/health"):
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=template,
                    status=status,
                    duration=round(duration, 3),
                )


class BodyLimitMiddleware:
    """Refuses bodies over a route's limit with 413 before a handler sees them.

    Small (JSON) bodies are read whole here, up to their limit, and replayed to the app, so a
    chunked body without Content-Length is bounded too. Streaming routes (uploads) pass through
    with only the Content-Length check; they count bytes themselves.
    """

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        streaming_limit: Callable[[Scope], int | None],
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.streaming_limit = streaming_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        streaming = self.streaming_limit(scope)
        limit = streaming if streaming is not None else self.default_limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(scope, send, limit)
            return
        if streaming is not None:
            await self.app(scope, receive, send)
            return
        body, messages = 0, []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += len(message.get("body", b""))
            if body > limit:
                await self._reject(scope, send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope: Scope, send: Send, limit: int) -> None:
        request = Request(scope)
        response = problem_response(
            request,
            "payload-too-large",
            "Payload too large",
            f"The request body is larger than this route's limit of {limit} bytes.",
            extra={"limit": limit},
            headers={"Connection": "close"},
        )
        await response(scope, lambda: _empty(), send)


async def _empty() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
