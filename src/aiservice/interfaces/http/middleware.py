"""ASGI middleware: request ids, access logs and metrics, request body limits and strict JSON,
security and rate limit headers, CORS."""

from __future__ import annotations

import inspect
import itertools
import math
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiservice.application.ports import RateDecision, RequestMetrics, Tracer
from aiservice.application.rate_limits import retry_after
from aiservice.application.tracing import NO_TRACER
from aiservice.interfaces.http.problems import problem_response
from aiservice.interfaces.http.rate_limit import RATE_LIMIT_STATE
from aiservice.interfaces.http.strict_json import (
    NOT_PARSED,
    PARSED_BODY,
    media_type_violation,
    nul_violation,
    strict_document,
    url_nul_field,
)
from aiservice.interfaces.http.trusted_front import TRUSTED_FRONT

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("aiservice.http")


_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count()


def _new_request_id() -> str:
    """Unique per process start and request, without a system call per request (unlike uuid4)."""
    return f"{_PREFIX}{next(_COUNTER):016x}"


class RequestContextMiddleware:
    """Accepts or makes ``X-Request-ID``, echoes it, binds it to logs, records metrics, and runs the
    request in a server span (a child of the caller's W3C ``traceparent`` when it sends one).

    A call forwarded by a trusted front only gets its request id: the front wrote the call's log line,
    metrics and span, and doing it twice would cost a replica a third of its time (ADR 20)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, tracer: Tracer = NO_TRACER) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if supplied and REQUEST_ID.fullmatch(supplied) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        if scope.get(TRUSTED_FRONT):
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(requestId=request_id)  # on the replica's own warnings
            await self.app(scope, receive, send)
            return
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

        parent = headers.get(b"traceparent", b"").decode("latin-1") or None
        with self.tracer.span(scope["method"], {"http.method": scope["method"]}, traceparent=parent) as span:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                duration = (time.perf_counter() - started) * 1000
                route = scope.get("route")
                template = getattr(route, "path", None) or "<unmatched>"
                span.update_name(f"{scope['method']} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.status_code", status)
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


class JsonBodyGate:
    """Refuses bodies over a route's limit with 413, bodies not declared as JSON with 415, and bodies
    that are not strict JSON with 400, before a handler sees them.

    Small (JSON) bodies are read whole, up to their limit, so a chunked body without Content-Length
    is bounded too, and checked for a JSON Content-Type (every such route takes JSON; /predict parses
    its own body and would read a form or text as JSON), repeated keys and nesting deeper than
    ``max_json_depth``. An empty body passes, so body-less POSTs need no Content-Type. The document a
    strict body holds is left in the scope (``PARSED_BODY``), for ``ParsedBodyRoute``.
    """

    def __init__(self, default_limit: int, max_json_depth: int | None = None) -> None:
        self.default_limit = default_limit
        self.max_json_depth = max_json_depth

    async def admit(
        self, scope: Scope, receive: Receive, send: Send, *, parse: bool = True
    ) -> tuple[list[Message], bytes, Any] | None:
        """Reads a (JSON) body whole, with every check: its messages to replay, the body, and the
        document it holds (``NOT_PARSED`` for none). None when the request was refused (answered).
        Without ``parse`` the body is not read as JSON (a replica that receives it does that)."""
        if await self.refuse_url(scope, send) or await self.refuse_length(scope, send, None):
            return None
        limit = self.default_limit
        size, messages = 0, []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._reject(scope, send, limit)
                return None
            if not message.get("more_body", False):
                break
        body = messages[0].get("body", b"") if len(messages) == 1 else _joined(messages)
        document = NOT_PARSED
        if size:
            problem = media_type_violation(header_of(scope, b"content-type"))
            if problem is None and self.max_json_depth is not None and parse:
                problem, document = strict_document(body, self.max_json_depth)
                if document is not NOT_PARSED:  # a route need not parse it again (ParsedBodyRoute)
                    scope[PARSED_BODY] = document
            if problem is not None:
                response = problem_response(
                    Request(scope),
                    problem.code,
                    problem.title,
                    problem.detail,
                    status=problem.status,
                    extra=problem.extra,
                )
                await response(scope, _empty, send)
                return None
        return messages, body, document

    @staticmethod
    async def refuse_url(scope: Scope, send: Send) -> bool:
        """A NUL in the path or query: PostgreSQL cannot compare text with one, so it is refused here,
        by name, rather than failing deep inside a query."""
        nul = url_nul_field(scope["path"], scope.get("query_string", b""))
        if nul is None:
            return False
        refused = nul_violation(nul)
        response = problem_response(
            Request(scope), refused.code, refused.title, refused.detail, status=422, extra=refused.extra
        )
        await response(scope, _empty, send)
        return True

    async def refuse_length(self, scope: Scope, send: Send, streaming: int | None) -> bool:
        limit = streaming if streaming is not None else self.default_limit
        length = header_of(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(scope, send, limit)
            return True
        return False

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
        await response(scope, _empty, send)


class BodyLimitMiddleware:
    """The ``JsonBodyGate`` in front of every route that takes a body: small bodies are read whole and
    replayed to the app. Streaming routes (uploads, v2 inference) pass through with only the
    Content-Length check; they count bytes and check their own media types."""

    def __init__(
        self, app: ASGIApp, gate: JsonBodyGate, streaming_limit: Callable[[Scope], int | None]
    ) -> None:
        self.app = app
        self.gate = gate
        self.streaming_limit = streaming_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self.gate
        buffered = scope["method"] in _BODY_METHODS
        streaming = self.streaming_limit(scope) if buffered else None
        if not buffered or streaming is not None:
            if await gate.refuse_url(scope, send) or await gate.refuse_length(scope, send, streaming):
                return
            await self.app(scope, receive, send)
            return
        admitted = await gate.admit(scope, receive, send)
        if admitted is None:
            return
        messages = admitted[0]

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class ParsedBodyRoute(APIRoute):
    """A route whose declared JSON body is the document ``BodyLimitMiddleware`` already read, rather
    than a second parse by FastAPI (Python's ``json``, the slowest step of a 1,000-row batch).

    FastAPI reads a declared body with ``await request.json()``, which Starlette caches on the request;
    the cache is filled from the scope first. Everything after that (validation, its problems, the
    order of checks) is FastAPI's own. Where the middleware parsed nothing, FastAPI parses as before."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            document = request.scope.get(PARSED_BODY, NOT_PARSED)
            if document is not NOT_PARSED:
                request._json = document
            return await handler(request)

        return route


class DirectRoute(APIRoute):
    """For the hottest routes, whose endpoint takes the path parameters (as strings) and the request
    and returns a ``Response``: the endpoint is called as it is, without FastAPI's per-request solving
    of parameters and dependencies (about a quarter of a single-row prediction's time in the app).
    FastAPI still documents the route from its declaration; errors rise to the problem handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        names = [name for name in inspect.signature(endpoint).parameters if name != "request"]

        async def route(request: Request) -> Response:
            path_params = request.path_params
            response: Response = await endpoint(
                request=request, **{name: path_params[name] for name in names}
            )
            return response

        return route


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def header_of(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the header ``name`` (lower case), without building a mapping of all."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _joined(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


async def _empty() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP_API = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_CSP_PAGE = (b"content-security-policy", b"frame-ancestors 'none'")  # /docs loads its scripts
_NO_STORE = (b"cache-control", b"no-store")
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeadersMiddleware:
    """Adds the security headers, and the rate limit a call was measured against, to every response.

    It must wrap the whole app, error handling included, so that 500s carry the headers too: see
    ``HardenedFastAPI``. ``Strict-Transport-Security`` is only sent over TLS, as RFC 6797 wants.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _secured(list(message.get("headers", [])), scope)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secured(headers: list[tuple[bytes, bytes]], scope: Scope) -> list[tuple[bytes, bytes]]:
    names = {name.lower(): value for name, value in headers}
    headers += _SECURITY_HEADERS
    if b"cache-control" not in names:
        headers.append(_NO_STORE)
    html = names.get(b"content-type", b"").startswith(b"text/html")
    headers.append(_CSP_PAGE if html else _CSP_API)
    if scope.get("scheme") == "https":
        headers.append(_HSTS)
    decision = scope.get("state", {}).get(RATE_LIMIT_STATE)
    if isinstance(decision, RateDecision):
        headers += [
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(math.ceil(decision.reset_seconds)).encode()),
        ]
        if not decision.allowed:
            headers.append((b"retry-after", str(retry_after(decision)).encode()))
    return headers


class HardenedFastAPI(FastAPI):
    """FastAPI with ``SecurityHeadersMiddleware`` outside Starlette's ServerErrorMiddleware, which
    ``add_middleware`` cannot reach: an unhandled error's 500 is sent from there."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeadersMiddleware(super().build_middleware_stack())


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Cross-origin calls from ``origins`` only (CORS_ORIGINS); without any, browsers' preflights fail."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Tenant-ID", "X-Request-ID", "If-Match"],
        expose_headers=[
            "X-Request-ID",
            "Location",
            "ETag",
            "Content-Disposition",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
        max_age=600,
    )
