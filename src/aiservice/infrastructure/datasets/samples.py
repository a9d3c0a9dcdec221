"""A seeded uniform sample of an uploaded csv or parquet dataset's chosen columns, as rows of named
values (``reference.DatasetSamples``: a reference profile's rows).

The file is read batch by batch (csv in blocks, parquet a row group at a time, only the chosen columns)
and each row gets a random key from the seeded generator; the ``rows`` rows with the smallest keys are
kept (``bottom_k``: bottom-k sampling, a uniform sample without replacement; the optimiser's samples use
it too). Memory is bounded by the sample and one
batch whatever the file's size, and one file and seed always give one sample, returned in file order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from aiservice.application.monitoring.reference import ColumnKind, DatasetHeader
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.infrastructure.datasets.readers import columns as dataset_columns
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.datasets.tables import DatasetError, filesystem, reading
from aiservice.infrastructure.datasets.tabular import open_parquet, parquet_file

BATCH_ROWS = 8192
_CSV_BLOCK = 1 << 20
_CSV_TYPES: dict[ColumnKind, pa.DataType] = {
    "number": pa.float64(),
    "text": pa.string(),
    "boolean": pa.bool_(),
}


class StoredDatasetSamples:
    """``DatasetSamples`` over the datasets tenants uploaded (``DatasetStore``)."""

    def __init__(self, store: DatasetStore) -> None:
        self._store = store

    def header(self, tenant_id: str, name: str) -> DatasetHeader | None:
        stored = self._store.get(tenant_id, name)
        if stored is None:
            return None
        if stored.format not in ("csv", "parquet"):
            return DatasetHeader(stored.format, [])
        return DatasetHeader(stored.format, dataset_columns(str(stored.path), stored.format, {}))

    def sample(
        self, tenant_id: str, name: str, columns: Mapping[str, ColumnKind], rows: int, seed: int, field: str
    ) -> list[dict[str, Any]]:
        stored = self._store.get(tenant_id, name)
        if stored is None:
            raise _refused(field, f"there is no uploaded dataset named {name!r}")
        try:
            with reading(stored.path.name):
                fs, path = filesystem(str(stored.path), {})
                if stored.format == "csv":
                    batches = _csv_batches(fs, path, stored.path.name, columns)
                else:
                    batches = _parquet_batches(fs, path, stored.path.name, list(columns))
                return sample_rows(batches, rows, seed)
        except DatasetError as exc:
            raise _refused(field, str(exc)) from exc


def sample_rows(batches: Iterator[pa.RecordBatch], rows: int, seed: int) -> list[dict[str, Any]]:
    """A uniform sample of at most ``rows`` rows of ``batches``, in the order they were read."""
    table, _, _ = bottom_k(batches, rows, seed)
    return [] if table is None else list(table.to_pylist())


def bottom_k(
    batches: Iterator[pa.RecordBatch], rows: int, seed: int, columns: list[str] | None = None
) -> tuple[pa.Table | None, np.ndarray, int]:
    """The ``rows`` rows with the smallest seeded random keys (all of them when there are fewer), in
    the order read (None when there were no batches); their positions (from 0) among every row; and
    how many rows there were. ``columns`` selects and orders the columns kept; a column stored as
    integers in one batch and floats in another is promoted."""
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    keys = np.empty(0)
    positions = np.empty(0, dtype=np.int64)
    offset = 0
    for batch in batches:
        count = batch.num_rows
        batch_keys = rng.random(count)
        batch_positions = np.arange(offset, offset + count)
        offset += count
        if len(keys) >= rows:  # only rows with a smaller key than the largest kept one can enter
            entering = batch_keys < keys.max()
            if not entering.any():
                continue
            batch = batch.filter(pa.array(entering))
            batch_keys, batch_positions = batch_keys[entering], batch_positions[entering]
        table = pa.Table.from_batches([batch])
        if columns is not None:
            table = table.select(columns)
        try:  # a folder's files may store a column as integers in one, floats in another
            kept = table if kept is None else pa.concat_tables([kept, table], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DatasetError(f"the files hold the columns as different types: {exc}") from exc
        keys = np.concatenate([keys, batch_keys])
        positions = np.concatenate([positions, batch_positions])
        if len(keys) > rows:
            chosen = np.argpartition(keys, rows - 1)[:rows]
            kept, keys, positions = kept.take(pa.array(chosen)), keys[chosen], positions[chosen]
    if kept is None:
        return None, positions, 0
    order = np.argsort(positions, kind="stable")
    return kept.take(pa.array(order)), positions[order], offset


def _csv_batches(
    fs: Any, path: str, name: str, columns: Mapping[str, ColumnKind]
) -> Iterator[pa.RecordBatch]:
    """The chosen columns, each parsed as its kind, a block at a time."""
    read = pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False)
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={column: _CSV_TYPES[kind] for column, kind in columns.items()},
        strings_can_be_null=True,
    )
    with fs.open(path, "rb") as handle:
        try:
            reader = pacsv.open_csv(handle, read_options=read, convert_options=convert)
            yield from reader
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{name} could not be read as the version's features: {exc}") from exc


def _parquet_batches(fs: Any, path: str, name: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The chosen columns as stored, a row group at a time."""
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name)
        try:
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{name} could not be read: {exc}") from exc


def _refused(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[FieldError(field, message)])
