"""The single-row prediction's short way through the app.

A ``POST .../models/{model}/predict`` (and a deployment's ``.../deployments/{name}/predict``) crosses
the same outer middleware as every call (security headers, the request context with its logs, metrics
and span, the audit record). What lies between the audit middleware and the endpoint (the body
middleware's replay, CORS, Starlette's exception middleware and router, FastAPI's route) is replaced
here by one step: the same ``JsonBodyGate`` reads and checks the body, the same endpoint answers, and
its errors become the problems the app's handlers make. That is about a third of a single-row
prediction's server time (ADR 19 has the figures). A cross-origin call takes the long way, where CORS
answers it; the route stays declared there, for it and for OpenAPI.
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


class Lane:
    """One hot route: ``endpoint(<its one path parameter>=..., request=...)`` answers it. A lane that
    passes its body on unread (a deployment's, to a replica that checks it) has it checked for size
    and media type only (``parse=False``)."""

    def __init__(self, route: APIRoute, endpoint: Endpoint, *, parse: bool = True) -> None:
        self.route = route
        self.endpoint = endpoint
        self.parse = parse
        names = re.findall(r"{(\w+)}", route.path)
        assert len(names) == 1, "a lane's route has one path parameter"
        self.parameter = names[0]
        pattern = re.escape(route.path).replace(re.escape("{" + self.parameter + "}"), "([^/]+)")
        self.path = re.compile("^" + pattern + "$")


class PredictLane:
    """Serves each lane's route by calling its endpoint directly; every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, gate: JsonBodyGate, lanes: tuple[Lane, ...], cors: bool) -> None:
        self.app = app
        self.gate = gate
        self.lanes = lanes
        self.cors = cors

    def _lane(self, scope: Scope) -> tuple[Lane, str] | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        for lane in self.lanes:
            match = lane.path.match(scope["path"])
            if match is not None:
                return lane, match.group(1)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._lane(scope)
        if found is None or (self.cors and header_of(scope, b"origin") is not None):
            await self.app(scope, receive, send)
            return
        lane, value = found
        # What routing would have set: logs, metrics and the audit record name the route by it.
        scope["route"] = lane.route
        scope["path_params"] = {lane.parameter: value}
        admitted = await self.gate.admit(scope, receive, send, parse=lane.parse)
        if admitted is None:
            return
        request = Request(scope, receive)
        request._body = admitted[1]  # read by the gate; the endpoint's ``await request.body()`` is this
        try:
            response = await lane.endpoint(**{lane.parameter: value}, request=request)
        except Exception as exc:
            problem = await handled(request, exc)
            if problem is None:
                raise  # answered as a 500 by the outermost handler, as on the long way
            response = problem
        await response(scope, receive, send)
