"""A JSON Schema (draft 2020-12) per event type, derived from the domain event classes, so the published
schemas under ``docs/events/`` cannot drift from what the service emits (a test compares them).

Write them again after changing an event: ``python -m aiservice.application.event_schemas docs/events``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from aiservice.application.events import (
    CONTENT_TYPE,
    SOURCE_PREFIX,
    SPEC_VERSION,
    TRACEPARENT_PATTERN,
    event_type_of,
)
from aiservice.domain import events as domain_events
from aiservice.domain.events import DomainEvent

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Any: {},
}


def event_classes() -> list[type[DomainEvent]]:
    """Every event the service emits: the leaves of the ``DomainEvent`` tree, by name."""
    leaves: list[type[DomainEvent]] = []
    pending = list(DomainEvent.__subclasses__())
    while pending:
        cls = pending.pop()
        children = cls.__subclasses__()
        pending.extend(children)
        if not children:
            leaves.append(cls)
    return sorted(leaves, key=lambda c: c.__name__)


def schema_of(cls: type[DomainEvent]) -> dict[str, Any]:
    event_type = event_type_of(cls.__name__, cls.aggregate_type)
    hints = typing.get_type_hints(cls, vars(domain_events))
    fields = [f for f in dataclasses.fields(cls) if f.name not in DomainEvent._envelope]
    data: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: _json_type(hints[f.name]) for f in fields},
        "required": [f.name for f in fields if _required(f)],
    }
    return {
        "$schema": DIALECT,
        "$id": f"urn:aiservice:events:{event_type}",
        "title": event_type,
        "description": _description(cls),
        "type": "object",
        "required": [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "tenantid",
            "data",
        ],
        "properties": {
            "specversion": {"const": SPEC_VERSION},
            "id": {"type": "string", "minLength": 1, "description": "The event id: the same on every retry"},
            "source": {"type": "string", "pattern": f"^{SOURCE_PREFIX}[^/]+$"},
            "type": {"const": event_type},
            "subject": {"type": "string", "minLength": 1, "description": f"The {cls.aggregate_type}'s id"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "tenantid": {"type": "string", "minLength": 1},
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT_PATTERN,
                "description": "W3C trace context of the request that made the change (when traced)",
            },
            "data": data,
        },
    }


def event_schemas() -> dict[str, dict[str, Any]]:
    """Schemas by event type (``ai.model.created.v1``)."""
    schemas = (schema_of(cls) for cls in event_classes())
    return {schema["title"]: schema for schema in schemas}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, schema in event_schemas().items():
        path = directory / f"{event_type}.json"
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _json_type(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        options = [_json_type(a) for a in args if a is not type(None)]
        nullable = type(None) in args
        if len(options) == 1 and "type" in options[0] and nullable:
            return {**options[0], "type": [options[0]["type"], "null"]}
        return {"anyOf": [*options, *([{"type": "null"}] if nullable else [])]}
    if origin is list:
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object", "additionalProperties": _json_type(args[1]) if args else {}}
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    raise TypeError(f"no JSON Schema for the event field type {hint!r}")


def _required(field: dataclasses.Field[Any]) -> bool:
    no_default = field.default is dataclasses.MISSING
    return no_default and field.default_factory is dataclasses.MISSING


def _description(cls: type[DomainEvent]) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    generated = doc.startswith(f"{cls.__name__}(")  # the signature dataclasses write when there is none
    own = "" if generated else " ".join(doc.split())
    return f"{cls.__name__} ({cls.aggregate_type} event) as a CloudEvent ({CONTENT_TYPE}). {own}".strip()


if __name__ == "__main__":
    for written_path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/events")):
        print(written_path)
