"""Every error becomes ``application/problem+json`` (RFC 9457) here, and only here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from aiservice.domain.errors import DomainError, FieldError, QuotaExceeded, Unauthenticated
from aiservice.interfaces.http.audit_context import note_problem

PROBLEM_BASE = "https://aiservice.dev/problems/"
PROBLEM_JSON = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "validation-error": 422,
    "malformed-json": 400,
    "malformed-upload": 400,
    "truncated-upload": 400,
    "not-found": 404,
    "method-not-allowed": 405,
    "conflict": 409,
    "invalid-artifact": 422,
    "untrusted-artifact": 422,
    "unsafe-archive": 422,
    "forbidden": 403,
    "tenant-mismatch": 403,
    "unknown-tenant": 403,
    "tenant-suspended": 403,
    "unauthenticated": 401,
    "payload-too-large": 413,
    "unsupported-media-type": 415,
    "upload-timeout": 408,
    "range-not-satisfiable": 416,
    "quota-exceeded": 429,
    "rate-limited": 429,
    "unavailable": 503,
    "prediction-failed": 500,
    "artifact-corrupt": 500,
    "internal-error": 500,
}

log = structlog.get_logger("aiservice.http")


_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


def problem_response(
    request: Request | None,
    code: str,
    title: str,
    detail: str,
    *,
    status: int | None = None,
    errors: list[FieldError] | None = None,
    extra: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    status = status or STATUS_BY_CODE.get(code, 400)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        note_problem(request, code)
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["requestId"] = request_id
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    # A domain error's extra members add to the problem; they never replace RFC 9457's own members.
    body.update((k, v) for k, v in (extra or {}).items() if k not in _STANDARD_MEMBERS)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(exc: DomainError) -> int:
    """A specific code's status, else its error class's (a ``code=`` override keeps the class's status)."""
    return STATUS_BY_CODE.get(exc.code) or STATUS_BY_CODE.get(type(exc).code, 400)


def domain_problem(request: Request, exc: DomainError, extra: dict[str, Any] | None = None) -> Response:
    """The problem response for a domain error; server-side ones are logged."""
    headers = {"WWW-Authenticate": _challenge(request)} if isinstance(exc, Unauthenticated) else None
    status = status_of(exc)
    if status >= 500:
        log.error("request failed", problem=exc.code, detail=exc.detail, path=request.url.path)
    return problem_response(
        request,
        exc.code,
        exc.title,
        exc.detail,
        status=status,
        errors=exc.errors,
        extra={**exc.extra, **(extra or {})},
        headers=headers,
    )


def _challenge(request: Request) -> str:
    """The scheme the caller tried (ApiKey), else Bearer; never an echo of the credential."""
    scheme = request.headers.get("authorization", "").partition(" ")[0]
    return "ApiKey" if scheme.lower() == "apikey" else "Bearer"


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    if isinstance(exc, QuotaExceeded):  # counted per tenant and quota (ai_service_quota_exceeded_total)
        tenant = request.headers.get("x-tenant-id")
        request.app.state.container.metrics.quota_refused(tenant, str(exc.extra.get("quota", "unknown")))
    return domain_problem(request, exc)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = list(exc.errors())
    if any(issue.get("type") == "json_invalid" for issue in issues):
        return problem_response(
            request,
            "malformed-json",
            "Malformed JSON",
            "The request body is not valid JSON.",
            errors=[FieldError("body", str(issues[0].get("ctx", {}).get("error", "invalid JSON")))],
        )
    errors = [FieldError(_field(i.get("loc", ())), str(i.get("msg", "invalid"))) for i in issues]
    names = ", ".join(e.field for e in errors[:5])
    return problem_response(
        request,
        "validation-error",
        "Invalid input",
        f"The request has invalid fields: {names}.",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        404: "not-found",
        405: "method-not-allowed",
        413: "payload-too-large",
        415: "unsupported-media-type",
    }
    slug = code.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else "The request cannot be served."
    return problem_response(
        request,
        slug,
        slug.replace("-", " ").capitalize(),
        detail,
        status=exc.status_code,
        headers=exc.headers,
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return problem_response(
        request,
        "internal-error",
        "Internal error",
        "The service failed to handle this request; quote its requestId when reporting it.",
    )


_HANDLERS = {
    DomainError: _domain_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
}


async def handled(request: Request, exc: Exception) -> Response | None:
    """The problem the app's handlers make of ``exc``, for code that runs outside Starlette's exception
    middleware (the predict lane); None for an error only the outermost handler answers (a 500)."""
    for kind in type(exc).__mro__:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return await handler(request, exc)
    return None


def install_problem_handlers(app: FastAPI) -> None:
    for kind, handler in _HANDLERS.items():
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, _unhandled)
