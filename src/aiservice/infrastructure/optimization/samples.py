"""A seeded uniform sample of a csv or parquet dataset's feature columns (and target), as arrays for
the optimizer (``optimization.TableSamples``).

Files are read batch by batch (csv in blocks, parquet a row group at a time, only the columns asked; a
folder's files one after another) and every row gets a random key from the seeded generator; the rows
with the ``rows`` smallest keys are kept (bottom-k, as ``datasets.samples`` samples a reference
profile's rows). Memory is bounded by the sample and one batch, whatever the dataset's size; one
dataset and seed always give one sample, returned in file order. Values are checked once sampled:
features must be numbers, with no missing value; the target is typed as training types it (csv text
that reads as integers becomes integers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from aiservice.application.optimization import SampledTable
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.infrastructure.datasets.folders import file_name
from aiservice.infrastructure.datasets.listing import data_files, is_folder
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.samples import bottom_k
from aiservice.infrastructure.datasets.tables import (
    LABEL_KINDS,
    DatasetError,
    display_name,
    filesystem,
    reading,
    typed_labels,
)
from aiservice.infrastructure.datasets.tabular import open_parquet, parquet_file

BATCH_ROWS = 8192
_CSV_BLOCK_MIN, _CSV_BLOCK_MAX = 1 << 16, 1 << 20  # a row must fit in one block
_CSV_CELL_BYTES = 32


class LocatedSamples:
    """``TableSamples`` over what the locator resolved (local files, uploads, S3)."""

    def __init__(self, locator: DatasetLocator) -> None:
        self._locator = locator

    def sample(
        self,
        uri: str,
        format: str,
        features: Sequence[str],
        target: str | None,
        rows: int,
        seed: int,
        field: str,
    ) -> SampledTable:
        name = display_name(uri)
        columns = [*features, *([target] if target is not None else [])]
        try:
            with reading(name):
                fs, path = filesystem(uri, self._locator.storage_options(uri))
                folder = is_folder(fs, path)
                files = (
                    [
                        (file.path, file_name(name, file))
                        for file in data_files(fs, path, name, format)
                        if file.size  # an empty part of a folder: nothing to read
                    ]
                    if folder
                    else [(path, name)]
                )
                batches = _batches(fs, files, format, list(features), target)
                table, positions, seen = _bottom_k(batches, columns, rows, seed)
            where = " (rows counted over the folder's files in order)" if folder else ""
            X = np.empty((table.num_rows, len(features)), dtype=np.float32)
            for index, feature in enumerate(features):
                X[:, index] = _numbers(table.column(feature), feature, name, positions, where)
            labels = None if target is None else _labels(table.column(target), target, name, positions, where)
        except DatasetError as exc:
            raise InvalidInput(f"{field}: {exc}", errors=[FieldError(field, str(exc))]) from exc
        return SampledTable(X, labels, seen)


def _batches(
    fs: Any, files: list[tuple[str, str]], format: str, features: list[str], target: str | None
) -> Iterator[pa.RecordBatch]:
    for path, shown in files:
        if format == "csv":
            yield from _csv(fs, path, shown, features, target)
        else:
            yield from _parquet(fs, path, shown, [*features, *([target] if target else [])])


def _csv(fs: Any, path: str, name: str, features: list[str], target: str | None) -> Iterator[pa.RecordBatch]:
    """Features parsed as numbers by pyarrow; the target read as text (typed once sampled)."""
    columns = [*features, *([target] if target else [])]
    block = min(max(64 * _CSV_CELL_BYTES * len(columns), _CSV_BLOCK_MIN), _CSV_BLOCK_MAX)
    read = pacsv.ReadOptions(block_size=block, use_threads=False)
    types = dict.fromkeys(features, pa.float64()) | ({target: pa.string()} if target else {})
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=types)
    with fs.open(path, "rb") as handle:
        try:
            yield from pacsv.open_csv(handle, read_options=read, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{name} could not be read as numeric features: {exc}") from exc


def _parquet(fs: Any, path: str, name: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name, pre_buffer=False)
        try:
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{name} could not be read: {exc}") from exc


def _bottom_k(
    batches: Iterator[pa.RecordBatch], columns: list[str], rows: int, seed: int
) -> tuple[pa.Table, np.ndarray, int]:
    table, positions, seen = bottom_k(batches, rows, seed, columns)
    if table is None:
        return pa.table({column: pa.array([], pa.float64()) for column in columns}), positions, 0
    return table, positions, seen


def _numbers(column: pa.ChunkedArray, label: str, name: str, positions: np.ndarray, where: str) -> np.ndarray:
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(f"{name}: column {label!r} holds {column.type} values, not numbers") from exc
    array: np.ndarray = values.to_numpy(zero_copy_only=False)
    missing = np.flatnonzero(np.isnan(array))
    if missing.size:
        row = int(positions[missing[0]]) + 1
        raise DatasetError(f"{name}: column {label!r} has a missing value at row {row}{where}")
    return array


def _labels(column: pa.ChunkedArray, label: str, name: str, positions: np.ndarray, where: str) -> np.ndarray:
    empty = pc.is_null(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        empty = pc.or_(empty, pc.equal(column, ""))
    if pc.any(empty).as_py():
        row = int(positions[pc.index(empty, True).as_py()]) + 1
        raise DatasetError(f"{name}: target column {label!r} is empty at row {row}{where}")
    return typed_labels(column, label, name, 1, LABEL_KINDS[0])[0]
