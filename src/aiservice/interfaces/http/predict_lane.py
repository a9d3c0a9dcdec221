"""The single-row prediction's short way through the app.

A ``POST .../models/{model}/predict`` crosses the same outer middleware as every call (security headers,
the request context with its logs, metrics and span, the audit record). What lies between the audit
middleware and the endpoint (the body middleware's replay, CORS, Starlette's exception middleware and
router, FastAPI's route) is replaced here by one step: the same ``JsonBodyGate`` reads and checks the
body, the same endpoint answers, and its errors become the problems the app's handlers make. That is
about a third of a single-row prediction's server time (ADR 19 has the figures). A cross-origin call
takes the long way, where CORS answers it; the route stays declared there, for it and for OpenAPI.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aiservice.interfaces.http.middleware import JsonBodyGate, header_of
from aiservice.interfaces.http.problems import handled

Endpoint = Callable[..., Awaitable[Response]]


class PredictLane:
    """Serves the route ``route`` (one path parameter, ``model``) by calling ``endpoint(model=...,
    request=...)`` directly; every other request goes on to ``app``."""

    def __init__(
        self, app: ASGIApp, gate: JsonBodyGate, route: APIRoute, endpoint: Endpoint, cors: bool
    ) -> None:
        self.app = app
        self.gate = gate
        self.route = route
        self.endpoint = endpoint
        self.cors = cors
        template = route.path
        self.path = re.compile("^" + re.escape(template).replace(re.escape("{model}"), "([^/]+)") + "$")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            self.path.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if match is None or (self.cors and header_of(scope, b"origin") is not None):
            await self.app(scope, receive, send)
            return
        # What routing would have set: logs, metrics and the audit record name the route by it.
        scope["route"] = self.route
        scope["path_params"] = {"model": match.group(1)}
        admitted = await self.gate.admit(scope, receive, send)
        if admitted is None:
            return
        request = Request(scope, receive)
        request._body = admitted[1]  # read by the gate; the endpoint's ``await request.body()`` is this
        try:
            response = await self.endpoint(model=match.group(1), request=request)
        except Exception as exc:
            problem = await handled(request, exc)
            if problem is None:
                raise  # answered as a 500 by the outermost handler, as on the long way
            response = problem
        await response(scope, receive, send)
