"""Trial batches for a freshly loaded model: a smoke call at upload, which of its columns it answers
with a missing value, and the seeded sample an ONNX compilation is checked on.

A tabular model's batch is its columns in its order (``domain/tabular.py``): numbers as float64, or an
object array when some column takes its values (a category, text) itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from aiservice.application.ports import LoadedModel, Prediction
from aiservice.domain.signature import Column, Signature

MAX_MISSING_PROBES = 256  # columns tried one by one when a batch with every column missing fails
log = logging.getLogger(__name__)


def tabular_batch(columns: tuple[Column, ...], rows: int, seed: int = 0, missing: bool = False) -> np.ndarray:
    """``rows`` rows for these columns: numbers from a seeded normal (whole for integers, 0/1 for
    booleans), categories from their known values; with ``missing``, some cells of every column the
    model answers without are NaN."""
    rng = np.random.default_rng(seed)
    raw = any(c.raw for c in columns)
    batch = np.empty((rows, len(columns)), dtype=object if raw else np.float64)
    for j, column in enumerate(columns):
        if column.raw:
            known = column.values or ("",)
            batch[:, j] = [known[i] for i in rng.integers(0, len(known), rows)]
        elif column.type == "boolean":
            batch[:, j] = rng.integers(0, 2, rows).astype(np.float64)
        elif column.type == "integer":
            batch[:, j] = rng.integers(-3, 4, rows).astype(np.float64)
        else:
            batch[:, j] = rng.normal(size=rows)
        if missing and column.nullable:
            batch[rng.random(rows) < 0.1, j] = math.nan
    return batch


def smoke_batch(signature: Signature) -> np.ndarray | None:
    """Two rows shaped like the model's input, when its shape (and every text column's values) is known."""
    if signature.columns:
        if any(c.raw and not c.values for c in signature.columns):
            return None  # any text might be refused (an encoder of unknown categories): no fair trial
        return tabular_batch(signature.columns, 2)
    if len(signature.inputs) != 1:
        return None
    spec = signature.inputs[0]
    dims = spec.shape[1:]
    if not spec.shape or any(d < 1 for d in dims) or spec.dtype == "object":
        return None
    return np.zeros((2, *dims), dtype=spec.dtype)


def answers(predict: Callable[[np.ndarray], Prediction], batch: np.ndarray) -> bool:
    """Whether the model answers this batch with finite numbers (a model that cannot take a missing
    value either raises or, as a bare linear ONNX graph does, answers NaN)."""
    try:
        prediction = predict(batch)
    except Exception:
        return False
    for output in (prediction.values, prediction.probabilities):
        if output is not None and output.dtype.kind in "fc" and not np.isfinite(output).all():
            return False
    return True


def with_nullability(model: LoadedModel) -> Signature:
    """The model's signature with each column's ``nullable`` set by trial: does it answer with that
    column missing (NaN)? One call with every column missing in turn, else one call a column."""
    signature = model.signature
    columns = signature.columns
    if not columns:
        return signature
    base = tabular_batch(columns, 1)
    probes = np.repeat(base, len(columns), axis=0)
    for j in range(len(columns)):
        probes[j, j] = math.nan
    if answers(model.predict, probes):
        return replace(signature, columns=tuple(replace(c, nullable=True) for c in columns))
    if len(columns) > MAX_MISSING_PROBES:
        log.info("%d columns: not trying each with a missing value", len(columns))
        return signature
    found = tuple(
        replace(c, nullable=answers(model.predict, probes[j : j + 1])) for j, c in enumerate(columns)
    )
    return replace(signature, columns=found)
