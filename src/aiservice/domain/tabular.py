"""Named features in, the model's own columns out.

Callers name features in any order; the schema checks them. A version's columns have an order and a
type of their own (a scikit-learn pipeline fitted on a DataFrame knows both), so a ``TabularPlan``
binds each model column to the feature of the same name, once per loaded version: the same names
in another order are mapped, never read by position. A column the model reads as text gets the value
itself (``"red"``); a category feature whose column is numeric gets the index of its value in the
declared ``values`` (a model trained on codes). ``null`` is a missing value (NaN) for a nullable
feature, served only where the version was found at upload to answer with that column missing.

The batch a plan makes is the model's columns in its order: float64, or an object array (numbers
as floats, text as str) when some column is text.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.schemas import Feature, TabularSchema, model_columns
from aiservice.domain.signature import Column, Signature

_MISSING = object()  # a cell that is null (a missing value)
_NUMBER_TYPES = frozenset({float, int})


@dataclass(frozen=True)
class TabularPlan:
    features: tuple[Feature, ...]  # what callers send, in the schema's order
    order: tuple[int, ...]  # model column j takes features[order[j]]
    raw: tuple[bool, ...]  # per feature: the model reads the value itself (text, a category), not a number
    refused_null: tuple[str | None, ...]  # per feature: why null cannot be served, or None
    known: tuple[tuple[Any, ...] | None, ...]  # per feature: the only text values the model takes

    # Cached: read on every request (the dataclass is frozen; the cache is its own instance dict).
    @cached_property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def model_names(self) -> list[str]:
        """Feature names in the model's column order (the order of attributions, say)."""
        return [self.features[i].name for i in self.order]

    @cached_property
    def has_raw(self) -> bool:
        return any(self.raw)

    @cached_property
    def in_model_order(self) -> bool:
        return self.order == tuple(range(len(self.order)))

    @cached_property
    def plain_numbers(self) -> bool:
        """Every feature a number that cannot be null: rows can be checked in bulk."""
        return all(f.type == "number" and not f.nullable for f in self.features)

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def bind(
        cls, schema: TabularSchema, signature: Signature | None, version: int | None = None
    ) -> TabularPlan:
        """The plan for ``schema`` over a version's columns (checked at upload to match it). A version
        stored before columns were recorded was never tried with missing values: its nulls pass."""
        features = schema.features
        columns = model_columns(signature)
        checked = signature is not None and signature.columns is not None
        if not columns or len(columns) != len(features):
            columns, checked = tuple(Column(None) for _ in features), False
        if all(c.name for c in columns) and {c.name for c in columns} == set(schema.names):
            position = {name: i for i, name in enumerate(schema.names)}
            order = tuple(position[str(c.name)] for c in columns)
        else:
            order = tuple(range(len(features)))
        by_feature = [columns[order.index(i)] for i in range(len(features))]
        which = f"version {version} of this model" if version is not None else "this model version"
        return cls(
            features=features,
            order=order,
            raw=tuple(
                f.type == "string" or (c.raw and f.type == "category")
                for f, c in zip(features, by_feature, strict=True)
            ),
            refused_null=tuple(
                None
                if not f.nullable or c.nullable or not checked
                else f"{which} does not answer with {f.name!r} missing (checked at upload); send a value"
                for f, c in zip(features, by_feature, strict=True)
            ),
            known=tuple(c.values if c.raw else None for c in by_feature),
        )

    def missing_problem(self, c: int) -> str | None:
        """Why feature ``c`` cannot be sent missing (null, or NaN in a tensor), or None when it can."""
        if not self.features[c].nullable:
            return "must not be missing (null or NaN): the feature is not declared nullable"
        return self.refused_null[c]

    # -- JSON objects -----------------------------------------------------------------------------

    def rows(self, rows: list[Any], where: str = "input") -> np.ndarray:
        """Named-feature objects -> the model's batch; every problem named."""
        fast = self._plain_number_rows(rows)
        if fast is not None:
            return self._layout_numbers(fast)
        errors: list[FieldError] = []
        cells: list[list[Any]] = []
        known = set(self.names)
        for r, row in enumerate(rows):
            base = where if len(rows) == 1 else f"{where}.{r}"
            if not isinstance(row, dict):
                errors.append(FieldError(base, "must be an object of feature values"))
                continue
            errors += [FieldError(f"{base}.{name}", "unknown feature") for name in row if name not in known]
            out: list[Any] = []
            for c, feature in enumerate(self.features):
                path = f"{base}.{feature.name}"
                if feature.name not in row:
                    errors.append(FieldError(path, "required"))
                    continue
                value, problem = self._cell(c, row[feature.name])
                if problem:
                    errors.append(FieldError(path, problem))
                out.append(value)
            cells.append(out)
        if errors:
            shown = ", ".join(e.field for e in errors[:5])
            raise InvalidInput(f"The input does not match the model's features: {shown}.", errors=errors)
        return self._layout([[row[c] for row in cells] for c in range(len(self.features))], len(rows))

    def _plain_number_rows(self, rows: list[Any]) -> np.ndarray | None:
        """The bulk path for all-number schemas; None (so every cell is checked and named) on any doubt.

        Every step runs in C over the whole batch: the rows' sizes, their values in schema order, the
        values' types (bool is not int here: ``type(True) is bool``), then one pack into the array."""
        if not self.plain_numbers:
            return None
        try:
            if set(map(len, rows)) != {len(self.features)}:
                return None
            values = list(map(self._in_order, rows))
        except (KeyError, TypeError):
            return None
        if not _NUMBER_TYPES.issuperset(map(type, chain.from_iterable(values))):
            return None
        array = np.empty((len(rows), len(self.features)), dtype=np.float64)
        try:
            struct.pack_into(f"={array.size}d", array.data, 0, *chain.from_iterable(values))
        except struct.error:  # an integer past float64's range
            return None
        if not np.isfinite(array).all():
            return None
        return array

    @cached_property
    def _in_order(self) -> Callable[[Any], tuple[Any, ...]]:
        """A row's values in the schema's order (KeyError for a missing one)."""
        names = self.names
        if len(names) == 1:
            return lambda row: (row[names[0]],)
        getter: Callable[[Any], tuple[Any, ...]] = operator.itemgetter(*names)
        return getter

    def _cell(self, c: int, value: Any) -> tuple[Any, str | None]:
        """One value as the model's column takes it (or ``_MISSING``), or why it cannot be."""
        feature = self.features[c]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return _MISSING, self.missing_problem(c)
        if feature.type == "category":
            values = feature.values or ()
            if value not in values or isinstance(value, bool) != any(isinstance(v, bool) for v in values):
                return None, f"must be one of {list(values)}"
            return (value if self.raw[c] else float(values.index(value))), None
        if feature.type == "string":
            if not isinstance(value, str):
                return None, "must be a string"
            allowed = self.known[c]
            if allowed is not None and value not in allowed:
                return None, f"must be one of {list(allowed)} (the values the model knows)"
            return value, None
        if feature.type == "boolean":
            if not isinstance(value, bool):
                return None, "must be true or false"
            return float(value), None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a {'whole ' if feature.type == 'integer' else ''}number"
        try:
            number = float(value)  # an integer of hundreds of digits has no float
        except OverflowError:
            return None, "must be a finite number (this one is too large)"
        if not math.isfinite(number):
            return None, "must be a finite number"
        if feature.type == "integer" and number != int(number):
            return None, "must be a whole number"
        return number, None

    # -- tensors (the Open Inference Protocol) ------------------------------------------------------

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """An [N, F] numeric matrix in the schema's order (a category as its index, a boolean as 0 or 1,
        NaN for a missing value) -> the model's batch. The caller checked NaN against ``nullable``."""
        if not self.has_raw:
            return self._layout_numbers(np.asarray(matrix, dtype=np.float64))
        columns: list[Sequence[Any] | np.ndarray] = []
        for c, feature in enumerate(self.features):
            column = matrix[:, c]
            if self.raw[c]:
                values = feature.values or ()
                columns.append([_MISSING if math.isnan(v) else values[int(v)] for v in column.tolist()])
            else:
                columns.append(column.astype(np.float64))
        return self._layout(columns, len(matrix))

    def from_columns(self, columns: list[np.ndarray]) -> np.ndarray:
        """One checked 1-D array per feature, in the schema's order: numbers (NaN for missing) or, for a
        text column, the values themselves (None for missing) -> the model's batch."""
        rows = len(columns[0]) if columns else 0
        prepared: list[Sequence[Any] | np.ndarray] = []
        for c, column in enumerate(columns):
            if self.raw[c]:
                prepared.append([_MISSING if v is None else v for v in column.tolist()])
            else:
                prepared.append(np.asarray(column, dtype=np.float64))
        return self._layout(prepared, rows)

    # -- layout -------------------------------------------------------------------------------------

    def _layout_numbers(self, matrix: np.ndarray) -> np.ndarray:
        if self.in_model_order:
            return matrix
        return np.ascontiguousarray(matrix[:, list(self.order)])

    def _layout(self, columns: list[Sequence[Any] | np.ndarray], rows: int) -> np.ndarray:
        """Columns in the schema's order -> the model's batch in its order."""
        batch = np.empty((rows, len(columns)), dtype=object if self.has_raw else np.float64)
        for j, c in enumerate(self.order):
            column = columns[c]
            if isinstance(column, np.ndarray):
                batch[:, j] = column
            else:
                batch[:, j] = [math.nan if v is _MISSING else v for v in column]
        return batch
