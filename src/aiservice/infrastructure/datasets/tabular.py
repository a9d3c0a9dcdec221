"""One csv or parquet file: its columns, the check made at submission from its header (csv: its first
block; parquet: its schema) and the whole read a job makes.

A csv's features parse straight to float64 and its target is read as text, typed afterwards as
``tables.typed_labels`` types it; a parquet file's columns keep their stored types.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from aiservice.infrastructure.datasets.tables import (
    DatasetError,
    NoRows,
    Table,
    column_problems,
    feature_columns,
    feature_values,
    file_size,
    pick_columns,
    to_table,
)

TABULAR_FORMATS = ("csv", "parquet")
CSV_BLOCK = 1 << 20  # the header check reads one block: a header longer than this is refused
HEAD_BLOCK = 1 << 16  # what a folder's other files are read of to compare their columns


class FileColumns(NamedTuple):
    """What ``read_columns`` read of one file."""

    table: pa.Table  # the target, then the features
    target: str
    features: list[str]
    columns: list[str]  # every column of the file, in file order


def head_columns(fs: Any, path: str, name: str, format: str) -> list[str] | None:
    """A file's column names, in file order, read from its header (csv: a small first block; parquet: its
    schema); None when it has no rows (empty, a header alone, a parquet file of 0 rows)."""
    try:
        if format == "csv":
            try:
                return list(csv_head(fs, path, name, HEAD_BLOCK).schema.names)
            except NoRows:
                raise
            except DatasetError:  # a header or first row longer than the small block: read a full one
                return list(csv_head(fs, path, name).schema.names)
        with open_parquet(fs, path, name) as handle:
            parquet = parquet_file(handle, name)
            return list(parquet.schema_arrow.names) if parquet.metadata.num_rows else None
    except NoRows:
        return None


def check_file(
    fs: Any, path: str, name: str, format: str, target: str | None, features: list[str] | None
) -> list[str]:
    """What stops a job reading the file, from its header alone; empty when it looks usable."""
    return (_check_csv if format == "csv" else _check_parquet)(fs, path, name, target, features)


def read_file(
    fs: Any, path: str, name: str, format: str, target: str | None, features: list[str] | None
) -> Table:
    """The whole file as a ``Table``."""
    read = read_columns(fs, path, name, format, target, features)
    return to_table(read.table, name, read.target, read.features)


def read_columns(
    fs: Any, path: str, name: str, format: str, target: str | None, features: list[str] | None
) -> FileColumns:
    """The file's target and feature columns as arrow (not yet checked value by value)."""
    return (_csv_columns if format == "csv" else _parquet_columns)(fs, path, name, target, features)


# --- csv -------------------------------------------------------------------------------------------------


def csv_head(fs: Any, path: str, name: str, block: int = CSV_BLOCK) -> pa.RecordBatch:
    """The first block of rows (with the header's column names); refuses an empty or header-only file."""
    file_size(fs, path, name, "csv")
    options = pacsv.ReadOptions(block_size=block, use_threads=False)
    with fs.open(path, "rb", block_size=block) as handle:
        try:
            reader = pacsv.open_csv(handle, read_options=options)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                raise NoRows(f"{name} has no rows") from exc
            raise DatasetError(f"{name} is not a readable csv file: {exc}") from exc
        for batch in reader:
            if batch.num_rows:
                return batch
    raise NoRows(f"{name} has no rows")


def _check_csv(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    head = csv_head(fs, path, name)
    columns = head.schema.names
    problems = column_problems(columns, target, features)
    if problems or target is None:
        return [f"{name}: {problem}" for problem in problems]
    to_table(pa.Table.from_batches([head]), name, target, feature_columns(columns, target, features))
    return []


def _csv_columns(
    fs: Any, path: str, name: str, target: str | None, features: list[str] | None
) -> FileColumns:
    columns = list(csv_head(fs, path, name).schema.names)
    target, chosen = pick_columns(columns, name, target, features)
    # Feature columns parse straight to float64; the target as text, typed afterwards by typed_labels.
    types = {feature: pa.float64() for feature in chosen} | {target: pa.string()}
    try:
        return FileColumns(_read_csv_columns(fs, path, [target, *chosen], types), target, chosen, columns)
    except pa.ArrowInvalid as exc:
        _raise_for_bad_numbers(fs, path, name, chosen)
        raise DatasetError(f"{name} is not a readable csv file: {exc}") from exc


def _raise_for_bad_numbers(fs: Any, path: str, name: str, features: list[str]) -> None:
    """Name the column and row pyarrow refused, reading the features as text. Returns when the file's
    shape is the problem (a row with too many fields), which pyarrow's own message describes."""
    try:
        text = _read_csv_columns(fs, path, features, dict.fromkeys(features, pa.string()))
    except pa.ArrowInvalid:
        return
    for feature in features:
        feature_values(text.column(feature), feature, name)


def _read_csv_columns(fs: Any, path: str, columns: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
    with fs.open(path, "rb") as handle:
        return pacsv.read_csv(handle, convert_options=convert)


# --- parquet ---------------------------------------------------------------------------------------------


def open_parquet(fs: Any, path: str, name: str) -> Any:
    """The file, opened for reading; refuses a folder or an empty file."""
    file_size(fs, path, name, "parquet")
    return fs.open(path, "rb")


def parquet_file(handle: Any, name: str, **options: Any) -> pq.ParquetFile:
    """``handle`` as a ``pyarrow.parquet.ParquetFile`` (``options`` are its own), or a ``DatasetError``."""
    try:
        return pq.ParquetFile(handle, **options)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{name} is not a valid parquet file") from exc


def _check_parquet(
    fs: Any, path: str, name: str, target: str | None, features: list[str] | None
) -> list[str]:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name)
        problems = [
            f"{name}: {problem}" for problem in column_problems(parquet.schema_arrow.names, target, features)
        ]
        if parquet.metadata.num_rows == 0:
            problems.append(f"{name} has no rows")
    return problems


def _parquet_columns(
    fs: Any, path: str, name: str, target: str | None, features: list[str] | None
) -> FileColumns:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name)
        columns = list(parquet.schema_arrow.names)
        target, chosen = pick_columns(columns, name, target, features)
        return FileColumns(parquet.read(columns=[target, *chosen]), target, chosen, columns)
