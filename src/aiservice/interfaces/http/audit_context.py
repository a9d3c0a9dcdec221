"""The HTTP side of the audit log: each request is described as a call (action from its route, resource
from its path), and the records no unit of work committed are written before the response leaves.

Who writes which record (see docs/decisions/0009-audit-log.md):
- a change that commits through a unit of work: the unit of work, in the change's own transaction;
- a refusal (401/403), a change that failed, a change outside the database (datasets, model cache),
  a prediction of a tenant with ``auditPredictions``: ``AuditMiddleware``, in a transaction of its own.
"""

from __future__ import annotations

import itertools
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiservice.application.audit import (
    AuditLog,
    CallContext,
    CallDescription,
    CallKind,
    begin_call,
    end_call,
)
from aiservice.application.ports import RequestMetrics
from aiservice.domain.audit import Resource
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.trusted_front import TRUSTED_FRONT

PREDICT = "model.predict"

# Route names whose action the generic "verb_noun" -> "noun.verb" rule would not name well.
ACTIONS = {
    "set_stage": "stage.transition",
    "train": "training.submit",
    "cancel_job": "training.cancel",
    "job_events": "training.events",
    "load": "version.load",
    "unload": "version.unload",
    "predict": PREDICT,
    "batch_predict": PREDICT,
    "model_infer": PREDICT,
    "version_infer": PREDICT,
    "deploy": "deployment.create",
    "deployment_predict": PREDICT,
    "deployment_batch_predict": PREDICT,
}
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

log = structlog.get_logger("aiservice.audit")


def action_of(route_name: str) -> str:
    """``create_model`` -> ``model.create``, ``delete_api_key`` -> ``api-key.delete``."""
    if route_name in ACTIONS:
        return ACTIONS[route_name]
    verb, _, noun = route_name.partition("_")
    return f"{_singular(noun.replace('_', '-'))}.{verb}" if noun else verb


def _singular(word: str) -> str:
    if word.endswith("ses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ias")):  # not "alias", "status"
        return word[:-1]
    return word


def resource_type(template: str) -> str | None:
    """The innermost collection a route addresses: ``/models/{model}/versions/{version}/stage`` ->
    ``version``; ``/datasets`` -> ``dataset``."""
    parts = [p for p in template.removeprefix(API_PREFIX).split("/") if p and p != "v2"]
    named = [p for p, after in itertools.pairwise(parts) if after.startswith("{")]
    chosen = named[-1] if named else next((p for p in parts if not p.startswith("{")), None)
    return _singular(chosen) if chosen else None


def reference(path_params: dict[str, Any]) -> str | None:
    """The name the caller used, in the service's reference syntax: ``churn``, ``churn:3``,
    ``churn@champion``; other resources by their path values."""
    params = {k: str(v) for k, v in path_params.items()}
    model = params.pop("model", None) or (params.pop("name", None) if "version" in params else None)
    if model is None:
        return "/".join(params.values()) or None
    version, alias = params.pop("version", None), params.pop("alias", None)
    return model + (f":{version}" if version else "") + (f"@{alias}" if alias else "")


def describe(scope: Scope) -> CallDescription:
    route = scope.get("route")
    name: str = getattr(route, "name", None) or "request"
    action = action_of(name)
    if action == PREDICT:
        kind = CallKind.PREDICT
    else:
        kind = CallKind.CHANGE if scope["method"] in _CHANGING else CallKind.READ
    resource = Resource(
        type=resource_type(getattr(route, "path", None) or scope["path"]),
        name=reference(scope.get("path_params") or {}),
    )
    return CallDescription(action, kind, resource)


class _Description:
    """Describes the call once routing is done, and remembers it."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._done: CallDescription | None = None

    def __call__(self) -> CallDescription:
        if self._done is not None:
            return self._done
        description = describe(self._scope)
        if "route" in self._scope:
            self._done = description
        return description


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))[:63] or None
    return None


def note_problem(request: Request, code: str) -> None:
    """The problem code a failed call ends with, kept for its audit record."""
    call = request.scope.get("state", {}).get("audit")
    if isinstance(call, CallContext):
        call.problem = code


class AuditMiddleware:
    """Opens a ``CallContext`` per request and writes the records no commit wrote, before the response
    status goes out; counts predictions per tenant."""

    def __init__(self, app: ASGIApp, audit: AuditLog, metrics: RequestMetrics) -> None:
        self.app = app
        self.audit = audit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get(TRUSTED_FRONT):  # the front audits what it forwards; the call keeps its request id
            state = scope.setdefault("state", {})
            token = begin_call(CallContext(describe=_Description(scope), request_id=state.get("request_id")))
            try:
                await self.app(scope, receive, send)
            finally:
                end_call(token)
            return
        state = scope.setdefault("state", {})
        client = scope.get("client")
        call = CallContext(
            describe=_Description(scope),
            request_id=state.get("request_id"),
            client_ip=client[0] if client else None,
            tenant_hint=_header(scope, b"x-tenant-id"),
        )
        state["audit"] = call
        token = begin_call(call)
        started = False

        async def send_audited(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                await self._finish(call, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not started:  # an unhandled error: the outer error middleware answers 500
                call.problem = call.problem or "internal-error"
                await self._finish(call, 500)
            raise
        finally:
            end_call(token)

    async def _finish(self, call: CallContext, status: int) -> None:
        if call.principal is not None and call.describe().kind is CallKind.PREDICT:
            outcome = "success" if status < 400 else "failed"
            self.metrics.tenant_prediction(call.principal.tenant_id, outcome)
        if not self.audit.needs_record(call, status):
            return
        try:
            await run_in_threadpool(self.audit.finish, call, status)
        except Exception:
            # The call's own outcome stands; a record that could not be written is reported loudly.
            log.exception("audit record not written", action=call.describe().action, status=status)
