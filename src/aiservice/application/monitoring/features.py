"""Rows of features from what callers send: the same flattening for reference rows and for logged
inputs, so a profile and a window name their features alike.

A row is an object of named values (``{"age": 41, "plan": "pro"}``, kept as it is), an object with a
single ``features`` list (``{"features": [5.1, 3.5]}``, what a model without a schema takes) or a bare
list; list items are named by position, ``f0``, ``f1``... A nested value (a list inside a named
feature) is not a feature a profile can summarise: it is left out. Anything else (an image, a text
input) is not tabular: ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiservice.domain.errors import FieldError, InvalidInput


def feature_row(payload: Any, names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """One payload's features by name, or None when it is not a tabular row. A positional row as long
    as ``names`` (a profile's, say a training table's columns) takes those names."""
    if isinstance(payload, dict) and payload.keys() == {"features"} and isinstance(payload["features"], list):
        payload = payload["features"]
    if isinstance(payload, list):
        named = names if names is not None and len(names) == len(payload) else None
        return {named[i] if named else f"f{i}": v for i, v in enumerate(payload) if _scalar(v)}
    if isinstance(payload, dict):
        return {str(k): v for k, v in payload.items() if _scalar(v)}
    return None


def feature_rows(payloads: Sequence[Any], where: str = "body.rows") -> list[dict[str, Any]]:
    """Every payload's features; ``InvalidInput`` naming the first row that is not tabular."""
    rows = []
    for i, payload in enumerate(payloads):
        row = feature_row(payload)
        if not row:
            raise InvalidInput(
                f"{where}.{i} is not a row of features.",
                errors=[FieldError(f"{where}.{i}", "must be an object of feature values or a list")],
            )
        rows.append(row)
    return rows


def aligned(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each row with exactly ``names`` (a feature a row lacks is missing: None)."""
    return [{name: row.get(name) for name in names} for row in rows]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
