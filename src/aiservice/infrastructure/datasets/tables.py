"""The shared ground of every reader: the ``Table`` it returns, the ``DatasetError`` it raises, how files
are named and opened, and how arrow columns become arrays (which columns are features and which the
target, numbers parsed with the row of the first bad one, labels typed alike in every file).

Rows are numbered from 1, the first row of data (a csv's header is not a row).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Table:
    """Features ``X``: float32 ``(N, F)``, or ``(N, H, W, C)`` in [0, 1] for images; labels ``y`` ``(N,)``."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]


class DatasetError(Exception):
    """A dataset the job cannot use; the message names the file and column where it can."""


class NoRows(DatasetError):
    """A file with no rows of data: refused on its own, skipped as one file of a folder."""


@contextlib.contextmanager
def reading(name: str) -> Iterator[None]:
    """I/O failures (OSError, botocore/aiohttp errors: the data is gone or S3 is down) as ``DatasetError``;
    running out of memory stays a ``MemoryError``, which the job reports as such."""
    try:
        yield
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:
        raise DatasetError(f"could not read {name}: {exc}") from exc


def display_name(uri: str) -> str:
    """How messages name a dataset: the S3 URI, or a local file's own name (never the server's folders)."""
    return uri if "://" in uri else Path(uri).name


def filesystem(uri: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec file system and path for ``uri``; s3fs is imported only for ``s3://``."""
    from fsspec.core import url_to_fs  # type: ignore[import-untyped]

    fs, path = url_to_fs(uri, **storage_options)
    return fs, path


def file_size(fs: Any, path: str, name: str, format: str) -> int:
    info = fs.info(path)
    if info["type"] == "directory":
        raise DatasetError(f"{name} is a folder, not a {format} file")
    size = int(info["size"])
    if size == 0:
        raise NoRows(f"{name} is empty: it has no rows")
    return size


# --- columns ---------------------------------------------------------------------------------------------


def column_problems(columns: list[str], target: str | None, features: list[str] | None) -> list[str]:
    problems = []
    duplicates = sorted(column for column, count in Counter(columns).items() if count > 1)
    if duplicates:
        problems.append(f"columns appear more than once: {', '.join(duplicates)}")
    if target is None:
        problems.append("a target column is needed")
    elif target not in columns:
        problems.append(f"has no target column {target!r} (columns: {', '.join(columns)})")
    if features is not None:
        unknown = [feature for feature in features if feature not in columns]
        if unknown:
            problems.append(f"has no feature columns {', '.join(map(repr, unknown))}")
        if target is not None and target in features:
            problems.append(f"the target {target!r} cannot also be a feature")
    if not feature_columns(columns, target, features):
        problems.append("has no feature columns besides the target")
    return problems


def feature_columns(columns: list[str], target: str | None, features: list[str] | None) -> list[str]:
    return list(features) if features is not None else [column for column in columns if column != target]


def pick_columns(
    columns: list[str], name: str, target: str | None, features: list[str] | None
) -> tuple[str, list[str]]:
    problems = column_problems(columns, target, features)
    if problems or target is None:
        raise DatasetError(f"{name}: {'; '.join(problems)}")
    return target, feature_columns(columns, target, features)


def feature_values(column: pa.ChunkedArray, label: str, name: str, first_row: int = 1) -> np.ndarray:
    """A feature column as float64, or the first row that is not a number (``first_row``: the number of
    the column's first row, for a batch read from further down a file)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = _parse_floats(column, label, name, first_row)
    elif not any(
        test(kind)
        for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
    ):
        raise DatasetError(f"{name}: column {label!r} holds {kind} values, not numbers")
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise DatasetError(f"{name}: column {label!r} has a missing value at row {first_row + row}")
    values: np.ndarray = column.to_numpy().astype(np.float64, copy=False)
    nan = np.flatnonzero(np.isnan(values))
    if nan.size:
        raise DatasetError(f"{name}: column {label!r} has a missing value (NaN) at row {first_row + nan[0]}")
    return values


def _parse_floats(column: pa.ChunkedArray, label: str, name: str, first_row: int) -> pa.ChunkedArray:
    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    offset = 0
    for chunk in column.chunks:
        if not _parses(chunk):
            row = offset + _first_unparsable(chunk)
            value = str(column[row].as_py())
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise DatasetError(
                f"{name}: column {label!r} has a non-numeric value {shown!r} at row {first_row + row}"
            )
        offset += len(chunk)
    raise DatasetError(f"{name}: column {label!r} could not be read as numbers")


def _parses(values: pa.Array) -> bool:
    try:
        pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _first_unparsable(chunk: pa.Array) -> int:
    """Binary search with pyarrow's own parser, so the row found is the one pyarrow refused."""
    low, high = 0, len(chunk)  # chunk[low:high] holds a bad value
    while high - low > 1:
        middle = (low + high) // 2
        if _parses(chunk.slice(low, middle - low)):
            low = middle
        else:
            high = middle
    return low


# How a text target is typed, most specific first: integers, else floats, else text.
LABEL_KINDS = (pa.int64(), pa.float64(), pa.string())


def is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def typed_labels(
    column: pa.ChunkedArray, label: str, name: str, first_row: int, kind: pa.DataType
) -> tuple[np.ndarray, pa.DataType]:
    """The target as stored, and the kind text labels were given (``kind`` itself for a column that is
    not text). Text whose values all parse as integers (else as floats) becomes numbers, as a csv's labels
    are text until parsed; ``kind`` (one of ``LABEL_KINDS``) is the most specific type text is tried as:
    a stream fixes it over the whole file, so that every batch is typed alike."""
    text = is_text(column.type)
    empty = pc.is_null(column)
    if text:
        empty = pc.or_(empty, pc.equal(column, ""))
    if pc.any(empty).as_py():
        row = pc.index(empty, True).as_py()
        raise DatasetError(f"{name}: target column {label!r} is empty at row {first_row + row}")
    if not text:
        labels: np.ndarray = column.to_numpy()
        return labels, kind
    for number in LABEL_KINDS[LABEL_KINDS.index(kind) : -1]:
        try:
            return np.asarray(pc.cast(column, number).to_numpy()), number
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str), LABEL_KINDS[-1]


def to_table(
    table: pa.Table,
    name: str,
    target: str,
    features: list[str],
    first_row: int = 1,
    kind: pa.DataType = LABEL_KINDS[0],
) -> Table:
    """Arrow columns as a ``Table``, every problem named by column and row (``first_row``: the number of
    ``table``'s first row in its file; ``kind``: as for ``typed_labels``)."""
    if table.num_rows == 0:
        raise DatasetError(f"{name} has no rows")
    y, _ = typed_labels(table.column(target), target, name, first_row, kind)
    X = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for index, feature in enumerate(features):
        X[:, index] = feature_values(table.column(feature), feature, name, first_row)
    return Table(X=X, y=y, feature_names=list(features))
