"""``/openapi.json`` declares the ``application/problem+json`` errors every operation can answer with.

FastAPI documents only a 422 in its own ``HTTPValidationError`` shape, which this service never sends
(``problems.py`` renders every error as RFC 9457). Clients and fuzzers read the schema, so it must say
what a caller really gets: the same problem object for each error status an operation can return.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from aiservice.interfaces.http.problems import PROBLEM_JSON

PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem; `errors` names the invalid fields of a 4xx caused by input.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "requestId": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

# Any operation can fail inside (500); one that takes input or a caller can also refuse them, and one
# that takes a body can refuse its media type (415).
PUBLIC_ERRORS = (400, 413, 500)
CALLER_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 500, 503)
BODY_ERRORS = (415,)
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def document_problems(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare problem+json responses on every operation."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_problems(build())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def declare_problems(schema: dict[str, Any]) -> None:
    """Add the problem responses to each operation of ``schema`` in place."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            _declare(operation)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ONLY:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA


def _declare(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    takes_caller = any(p.get("name") == "X-Tenant-ID" for p in operation.get("parameters", []))
    statuses = CALLER_ERRORS if takes_caller else PUBLIC_ERRORS
    if "requestBody" in operation:
        statuses = tuple(sorted((*statuses, *BODY_ERRORS)))
    for status in statuses:
        declared = responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
        if status == 422 or "content" not in declared:  # FastAPI's own 422 shape is never sent
            declared["content"] = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
