"""Keyset pagination: a page of items and an opaque cursor to the next one."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiservice.domain.errors import FieldError, InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field_name: str = "query.cursor") -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "The cursor is not one this service issued; start again without it.",
            errors=[FieldError(field_name, "malformed cursor")],
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInput("The cursor is malformed.", errors=[FieldError(field_name, "malformed cursor")])
    return value
