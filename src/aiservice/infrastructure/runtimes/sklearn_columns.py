"""The columns a fitted scikit-learn estimator takes: names from ``feature_names_in_``, and which of them
its encoders read as categories (a ``ColumnTransformer`` over a DataFrame with string columns, say).

Only fitted attributes are read (``transformers_``, an encoder's ``categories_``), never the data. A
column whose encoder refuses unknown values (``handle_unknown="error"``) is a ``category`` with the
values it knows, so callers get a 422 instead of the model's failure; one whose encoder takes any value
is a ``string``. Everything else is a number.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from aiservice.domain.signature import Column, ColumnType

ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")


def sklearn_columns(estimator: Any) -> tuple[Column, ...] | None:
    """One column per input feature, in the estimator's order; None when it does not say how many."""
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        return None
    names = getattr(estimator, "feature_names_in_", None)
    labels: list[str | None] = [str(n) for n in names] if names is not None else [None] * int(count)
    encoded: dict[int, Column] = {}
    for transformer, indices in _column_transformers(estimator, labels):
        for index, column in _encoded_columns(transformer, indices):
            encoded.setdefault(index, column)
    return tuple(
        replace(encoded[i], name=label) if i in encoded else Column(label) for i, label in enumerate(labels)
    )


def _column_transformers(estimator: Any, labels: list[str | None]) -> list[tuple[Any, list[int]]]:
    """(fitted transformer, the input columns it reads) for each part of the first ColumnTransformer
    the estimator starts with: itself, a pipeline's first step, or a histogram booster's own."""
    first = estimator
    while hasattr(first, "steps") and first.steps:  # Pipeline: its first step sees the input
        first = first.steps[0][1]
    if type(first).__name__ != "ColumnTransformer":
        preprocessor = getattr(first, "_preprocessor", None)  # HistGradientBoosting's categorical encoder
        if type(preprocessor).__name__ != "ColumnTransformer":
            return _encoder_alone(first, len(labels))
        first = preprocessor
    parts: list[tuple[Any, list[int]]] = []
    for _name, transformer, selected in getattr(first, "transformers_", []):
        if transformer in ("drop", "passthrough"):
            continue
        indices = _indices(selected, labels)
        if indices is not None:
            parts.append((transformer, indices))
    return parts


def _encoder_alone(first: Any, count: int) -> list[tuple[Any, list[int]]]:
    """An encoder (or a pipeline of imputer and encoder) that takes every column itself."""
    return [(first, list(range(count)))] if _encoder_of(first) is not None else []


def _indices(selected: Any, labels: list[str | None]) -> list[int] | None:
    """A ColumnTransformer's column selection as input positions; None where it cannot be told."""
    if isinstance(selected, str | int):
        selected = [selected]
    if isinstance(selected, slice):
        return list(range(len(labels)))[selected]
    try:
        items = list(selected)
    except TypeError:  # a callable selector: resolved only at fit, so nothing to read here
        return None
    if items and all(isinstance(i, bool | np.bool_) for i in items):
        return [i for i, keep in enumerate(items) if keep]
    positions: list[int] = []
    for item in items:
        if isinstance(item, int | np.integer):
            positions.append(int(item))
        elif item in labels:
            positions.append(labels.index(item))
        else:
            return None
    return positions


def _encoder_of(transformer: Any) -> Any:
    """The encoder a transformer is, or ends its column-preserving pipeline with (imputer, encoder)."""
    if type(transformer).__name__ in ENCODERS:
        return transformer
    steps = getattr(transformer, "steps", None)
    if steps and type(steps[-1][1]).__name__ in ENCODERS:
        return steps[-1][1]
    return None


def _encoded_columns(transformer: Any, indices: list[int]) -> list[tuple[int, Column]]:
    encoder = _encoder_of(transformer)
    categories = getattr(encoder, "categories_", None)
    if encoder is None or categories is None or len(categories) != len(indices):
        return []
    strict = getattr(encoder, "handle_unknown", "error") == "error"
    columns = []
    for index, known in zip(indices, categories, strict=True):
        values = tuple(_plain(v) for v in known if not _is_missing(v))
        kind: ColumnType = "category" if strict and values else "string"
        if kind == "string" and not all(isinstance(v, str) for v in values):
            kind = "category"  # numbers read as categories: only the known ones are worth sending
        columns.append((index, Column(None, kind, values if kind == "category" else None)))
    return columns


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
