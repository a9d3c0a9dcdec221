"""A seeded uniform sample of an uploaded csv or parquet dataset's chosen columns, as rows of named
values (``reference.DatasetSamples``: a reference profile's rows).

The file is read batch by batch (csv in blocks, parquet a row group at a time, only the chosen columns)
and each row gets a random key from the seeded generator; the ``rows`` rows with the smallest keys are
kept (bottom-k sampling, a uniform sample without replacement). Memory is bounded by the sample and one
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
    """A uniform sample of at most ``rows`` rows of ``batches`` (bottom-k of seeded random keys), in
    the order they were read."""
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
        if kept is not None and len(keys) >= rows:
            # only rows with a smaller key than the largest kept one can enter the sample
            entering = batch_keys < keys.max()
            if not entering.any():
                continue
            batch = batch.filter(pa.array(entering))
            batch_keys, batch_positions = batch_keys[entering], batch_positions[entering]
        table = pa.Table.from_batches([batch])
        kept = table if kept is None else pa.concat_tables([kept, table])
        keys = np.concatenate([keys, batch_keys])
        positions = np.concatenate([positions, batch_positions])
        if len(keys) > rows:
            chosen = np.argpartition(keys, rows - 1)[:rows]
            kept, keys, positions = kept.take(pa.array(chosen)), keys[chosen], positions[chosen]
    if kept is None:
        return []
    order = np.argsort(positions, kind="stable")
    result: list[dict[str, Any]] = kept.take(pa.array(order)).to_pylist()
    return result


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
