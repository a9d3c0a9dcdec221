"""csv and parquet training data read batch by batch, for data larger than memory.

``stream_table`` checks the columns from the header (csv) or schema (parquet) at once, as ``read_table``
does, then hands back a ``TableStream``: each call to ``batches()`` reads the file afresh, from the top,
in ``Table`` batches of at most ``batch_rows`` rows, with ``read_table``'s checks and messages (file,
column, row numbered in the whole file). ``stats()`` is one such pass that keeps only running sums.

Memory stays bounded by a batch: csv is parsed in small blocks; parquet is decoded one row group at a
time (pyarrow's unit), so a file written as one huge row group costs that row group. npz files and
image folders are not streamed: ``read_table`` reads them whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from aiservice.infrastructure.datasets.folders import columns_differ, file_name
from aiservice.infrastructure.datasets.listing import data_files, is_folder, tabular_bytes
from aiservice.infrastructure.datasets.tables import (
    LABEL_KINDS,
    DatasetError,
    NoRows,
    Table,
    display_name,
    feature_values,
    filesystem,
    is_text,
    pick_columns,
    reading,
    to_table,
    typed_labels,
)
from aiservice.infrastructure.datasets.tabular import csv_head, head_columns, open_parquet, parquet_file

STREAM_FORMATS = ("csv", "parquet")
DEFAULT_BATCH_ROWS = 8192
MAX_LABELS = 10_000  # more distinct targets than this are not classes: stats().labels is None
# pyarrow parses csv a block at a time and reads up to 32 blocks ahead in the background: small blocks
# keep that readahead small; a row must fit in one block, so wide files get larger ones.
_CSV_BLOCK_MIN, _CSV_BLOCK_MAX = 1 << 16, 1 << 20
_CSV_CELL_BYTES = 32  # a generous guess at one printed number and its comma


@dataclass(frozen=True)
class TableStats:
    """What a trainer needs before its first epoch, from one pass over the data."""

    rows: int
    mean: np.ndarray  # float64, per feature (one row's shape)
    std: np.ndarray  # float64 population standard deviation, per feature
    target_mean: float | None  # None when the target is not numeric
    target_std: float | None
    labels: np.ndarray | None  # the distinct targets, sorted; None when more than MAX_LABELS


class Batches(Protocol):
    """Data read batch by batch, as many times as asked: what a network trainer can take for a table."""

    def batches(self) -> Iterator[Table]:
        """One pass over every row, in the same order each time, as ``Table`` batches."""
        ...

    def stats(self) -> TableStats:
        """``TableStats`` of every row (a pass of its own the first time; kept)."""
        ...


class Measured(ABC):
    """A ``Batches`` whose ``stats()`` is measured by one pass over ``batches()``, then kept."""

    _stats: TableStats | None = None

    @abstractmethod
    def batches(self) -> Iterator[Table]: ...

    def stats(self) -> TableStats:
        if self._stats is None:
            self._stats = measure(self.batches())
        return self._stats


def stream_table(
    uri: str,
    format: str,
    target: str | None,
    features: list[str] | None,
    storage_options: dict[str, Any],
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> TableStream:
    """A csv or parquet dataset (a file, or a folder of them read one after another) as a ``TableStream``;
    its columns are checked now, its values as it is read. ``target`` -> ``y`` and ``features`` (default:
    every other column) -> ``X``, as ``read_table``."""
    name = display_name(uri)
    if format not in STREAM_FORMATS:
        raise DatasetError(f"{name}: {format} data is read whole, not streamed (streamed: csv, parquet)")
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        if not is_folder(fs, path):
            return TableStream([_source(fs, path, name, format, target, features)], batch_rows, name)
        sources: list[_CsvSource | _ParquetSource] = []
        for file in data_files(fs, path, name, format):
            shown = file_name(name, file)
            try:
                source = _source(fs, file.path, shown, format, target, features)
            except NoRows:  # an empty part of the folder: nothing to read
                continue
            except DatasetError:
                if sources:  # a file without the first one's columns: say so
                    _same_columns(shown, head_columns(fs, file.path, shown, format) or [], sources[0])
                raise
            if sources:
                _same_columns(shown, source.columns, sources[0])
            target, features = source.target, source.features  # later files in the first one's order
            sources.append(source)
    if not sources:
        raise DatasetError(f"{name} has no rows: every {format} file in it is empty")
    return TableStream(sources, batch_rows, name)


def _source(
    fs: Any, path: str, name: str, format: str, target: str | None, features: list[str] | None
) -> _CsvSource | _ParquetSource:
    if format == "csv":
        return _CsvSource(fs, path, name, target, features)
    return _ParquetSource(fs, path, name, target, features)


def _same_columns(shown: str, columns: list[str], first: _CsvSource | _ParquetSource) -> None:
    if set(columns) != set(first.columns):
        raise DatasetError(columns_differ(shown, columns, first.name, first.columns))


def dataset_bytes(uri: str, storage_options: dict[str, Any]) -> int:
    """The size of a dataset file, or of a folder's csv and parquet files: what decides whether a job
    streams it."""
    name = display_name(uri)
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        info = fs.info(path)
        return tabular_bytes(fs, path, name) if info["type"] == "directory" else int(info["size"])


class TableStream(Measured):
    """csv or parquet files read in batches, one after another, as often as asked: one pass per epoch.
    A batch holds rows of one file; messages name that file, and rows are numbered within it."""

    def __init__(self, sources: list[_CsvSource | _ParquetSource], batch_rows: int, name: str) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, not {batch_rows}")
        self._sources = sources
        self._rows = batch_rows
        self._kind: pa.DataType | None = None
        self.name = name
        self.feature_names = list(sources[0].features)

    def batches(self) -> Iterator[Table]:
        """Every row once, in file order, as ``Table`` batches of at most ``batch_rows`` rows."""
        kind = self._label_kind()
        rows = 0
        for source in self._sources:
            first_row = 1
            with reading(source.name):
                for table in source.tables(self._rows, [source.target, *source.features]):
                    yield to_table(table, source.name, source.target, source.features, first_row, kind)
                    first_row += table.num_rows
            rows += first_row - 1
        if rows == 0:
            raise DatasetError(f"{self.name} has no rows")

    def _label_kind(self) -> pa.DataType:
        """How text targets are typed in every batch: the most specific kind all of them parse as, as
        ``read_table`` types a whole column; found the first time by a pass over the target column alone."""
        if self._kind is None:
            text = [source for source in self._sources if source.text_target]
            self._kind = self._text_label_kind(text) if text else LABEL_KINDS[0]
            numbers = [source for source in self._sources if not source.text_target]
            if self._kind == LABEL_KINDS[-1] and numbers:
                raise DatasetError(
                    f"{text[0].name}: target column {text[0].target!r} holds text labels where "
                    f"{numbers[0].name} holds numbers: every file of a folder must label its rows alike"
                )
        return self._kind

    def _text_label_kind(self, sources: list[_CsvSource | _ParquetSource]) -> pa.DataType:
        kind = LABEL_KINDS[0]
        for source in sources:
            first_row = 1
            with reading(source.name):
                for table in source.tables(self._rows, [source.target]):
                    column = table.column(source.target)
                    kind = typed_labels(column, source.target, source.name, first_row, kind)[1]
                    first_row += table.num_rows
        return kind


class MappedStream(Measured):
    """Another stream's batches passed through ``change(batch, index of its first row)``; batches left
    empty are skipped. How a job holds rows out for validation or relabels them without a second copy."""

    def __init__(self, source: Batches, change: Callable[[Table, int], Table]) -> None:
        self._source = source
        self._change = change

    def batches(self) -> Iterator[Table]:
        first = 0
        for batch in self._source.batches():
            changed = self._change(batch, first)
            first += len(batch.y)
            if len(changed.y):
                yield changed


class TableBatches(Measured):
    """A table in memory behaving as a stream, for a trainer given one stream and one table."""

    def __init__(self, table: Table, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self._table = table
        self._rows = batch_rows

    def batches(self) -> Iterator[Table]:
        table = self._table
        for start in range(0, len(table.y), self._rows):
            end = start + self._rows
            yield Table(table.X[start:end], table.y[start:end], table.feature_names)


def split_stream(stream: Batches, fraction: float, seed: int) -> tuple[MappedStream, MappedStream]:
    """``(train, validation)``: about ``fraction`` of the rows held out, chosen by a hash of each row's
    index and ``seed``, so every pass holds out the same rows without keeping a list of them."""

    def keep(held: bool) -> Callable[[Table, int], Table]:
        def rows(batch: Table, first: int) -> Table:
            chosen = held_out(first, len(batch.y), fraction, seed) == held
            return Table(batch.X[chosen], batch.y[chosen], batch.feature_names)

        return rows

    return MappedStream(stream, keep(False)), MappedStream(stream, keep(True))


def held_out(first: int, rows: int, fraction: float, seed: int) -> np.ndarray:
    """Whether each of rows ``first .. first + rows - 1`` is held out: splitmix64 of the index and seed,
    read as a number in [0, 1), below ``fraction``."""
    offset = np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    z = np.arange(first, first + rows, dtype=np.uint64) + offset  # arrays wrap silently, as wanted
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return np.asarray((z >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction)


# --- one pass of running sums --------------------------------------------------------------------------


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.), in float64."""

    count: int = 0
    mean: Any = 0.0
    squares: Any = 0.0

    def add(self, values: np.ndarray) -> None:
        count = len(values)
        mean = values.mean(axis=0)
        squares = ((values - mean) ** 2).sum(axis=0)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.squares = self.squares + squares + delta**2 * (self.count * count / total)
        self.count = total

    @property
    def std(self) -> Any:
        return np.sqrt(self.squares / self.count)


def measure(batches: Iterable[Table]) -> TableStats:
    """``TableStats`` of every row of ``batches``, holding one batch at a time."""
    features, target = _Moments(), _Moments()
    numeric = True
    labels: set[Any] | None = set()
    for batch in batches:
        if not len(batch.y):
            continue
        features.add(batch.X.astype(np.float64))
        numeric = numeric and batch.y.dtype.kind in "biuf"
        if numeric:
            target.add(batch.y.astype(np.float64))
        if labels is not None:
            labels.update(np.unique(batch.y).tolist())
            labels = labels if len(labels) <= MAX_LABELS else None
    if features.count == 0:
        return TableStats(0, np.zeros(0), np.zeros(0), None, None, np.zeros(0))
    return TableStats(
        rows=features.count,
        mean=np.asarray(features.mean),
        std=np.asarray(features.std),
        target_mean=float(target.mean) if numeric else None,
        target_std=float(target.std) if numeric else None,
        labels=None if labels is None else np.unique(np.asarray(list(labels))),
    )


# --- sources: arrow tables of a file's columns, batch by batch ------------------------------------------


class _CsvSource:
    """A csv file's chosen columns: features parsed as float64 by pyarrow, the target read as text."""

    text_target = True

    def __init__(self, fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> None:
        self.fs, self.path, self.name = fs, path, name
        columns = self.columns = list(csv_head(fs, path, name).schema.names)
        self.target, self.features = pick_columns(columns, name, target, features)
        rows_of_text = 64 * _CSV_CELL_BYTES * len(columns)  # room for 64 rows or more per block
        self.block = min(max(rows_of_text, _CSV_BLOCK_MIN), _CSV_BLOCK_MAX)

    def tables(self, rows: int, columns: list[str]) -> Iterator[pa.Table]:
        types = {column: pa.float64() for column in columns} | {self.target: pa.string()}
        try:
            yield from self._read(rows, columns, types)
        except pa.ArrowInvalid as exc:
            self._raise_for_bad_numbers(rows)
            raise DatasetError(f"{self.name} is not a readable csv file: {exc}") from exc

    def _read(self, rows: int, columns: list[str], types: dict[str, pa.DataType]) -> Iterator[pa.Table]:
        read = pacsv.ReadOptions(block_size=self.block, use_threads=False)
        convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
        with self.fs.open(self.path, "rb") as handle:
            yield from _rebatched(pacsv.open_csv(handle, read_options=read, convert_options=convert), rows)

    def _raise_for_bad_numbers(self, rows: int) -> None:
        """Name the column and row pyarrow refused, reading the features again as text, batch by batch.
        Returns when the file's shape is the problem, which pyarrow's own message describes."""
        first_row = 1
        try:
            for table in self._read(rows, self.features, dict.fromkeys(self.features, pa.string())):
                for feature in self.features:
                    feature_values(table.column(feature), feature, self.name, first_row)
                first_row += table.num_rows
        except pa.ArrowInvalid:
            return


def _rebatched(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """pyarrow's batches (one per csv block) regrouped into tables of ``rows`` rows, the last shorter."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


class _ParquetSource:
    """A parquet file's chosen columns, decoded one row group at a time."""

    def __init__(self, fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> None:
        self.fs, self.path, self.name = fs, path, name
        with open_parquet(fs, path, name) as handle:
            parquet = parquet_file(handle, name)
            schema = parquet.schema_arrow
            if parquet.metadata.num_rows == 0:
                raise NoRows(f"{name} has no rows")
        self.columns = list(schema.names)
        self.target, self.features = pick_columns(self.columns, name, target, features)
        self.text_target = is_text(schema.field(self.target).type)

    def tables(self, rows: int, columns: list[str]) -> Iterator[pa.Table]:
        with open_parquet(self.fs, self.path, self.name) as handle:
            # No pre-buffering: it would fetch whole column chunks ahead of the batch being read.
            parquet = parquet_file(handle, self.name, pre_buffer=False)
            for batch in parquet.iter_batches(batch_size=rows, columns=columns):
                yield pa.Table.from_batches([batch])
