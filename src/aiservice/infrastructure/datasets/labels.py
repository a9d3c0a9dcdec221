"""A dataset's distinct target values, read at submission so that labels the model does not declare are a
422, not a job that fails minutes later.

Only the target is read: csv files parse that one column (pyarrow still tokenises each row), parquet
files decode that column alone, npz files decompress their ``y`` array alone, and image folders are
listed (their class folders are the labels). The read stops after ``scan_bytes`` (csv: bytes of the
file; parquet and npz: bytes of the column) or once more than ``max_distinct`` values are seen: the
values then come from the first rows only (``complete`` is False), and a label first seen further down
fails the job at its ``dataset`` stage, as any data problem past the checked part does.

Values are typed as ``read_table`` types them (text that is all integers becomes integers), so the
check and the job compare the same labels.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from aiservice.domain.training import TargetValues
from aiservice.infrastructure.datasets.folders import file_name
from aiservice.infrastructure.datasets.images import image_files
from aiservice.infrastructure.datasets.listing import data_files, is_folder
from aiservice.infrastructure.datasets.npz import npz_members
from aiservice.infrastructure.datasets.tables import (
    LABEL_KINDS,
    DatasetError,
    display_name,
    filesystem,
    is_text,
    reading,
    typed_labels,
)
from aiservice.infrastructure.datasets.tabular import open_parquet, parquet_file

SCAN_BYTES = 64 * 1024**2  # how much of a file (csv) or of its target (parquet, npz) a submission reads
MAX_DISTINCT = 1000  # more distinct targets than this are not labels of any declared class list
_CSV_BLOCK = 1 << 20
_PARQUET_BATCH_ROWS = 1 << 16
_NPY_SLICE = 4 << 20  # bytes of an npz's y decompressed at a time


def target_values(
    uri: str,
    format: str,
    target: str | None,
    storage_options: dict[str, Any],
    scan_bytes: int = SCAN_BYTES,
    max_distinct: int = MAX_DISTINCT,
) -> TargetValues:
    """The distinct targets of one dataset file or folder; ``DatasetError`` when it cannot be read."""
    name = display_name(uri)
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        if format == "imagefolder":
            found = image_files(fs, path, name)
            labels = sorted({relative.split("/", 1)[0] for relative, _ in found})
            return TargetValues(f"the class folders of {name}", tuple(labels), len(found), True)
        if format == "npz":
            return _npz_values(fs, path, name, scan_bytes, max_distinct)
        if target is None:
            raise DatasetError(f"{name}: a target column is needed")
        files = [(path, name)]
        if is_folder(fs, path):  # a folder's files one after another, within the same bounds
            parts = data_files(fs, path, name, format)
            files = [(part.path, file_name(name, part)) for part in parts if part.size]
        chunks = (
            chunk
            for each, shown in files
            for chunk in (
                _csv_chunks(fs, each, shown, target)
                if format == "csv"
                else _parquet_chunks(fs, each, shown, target)
            )
        )
        return _distinct(chunks, f"column {target!r} of {name}", scan_bytes, max_distinct, target, name)


def _distinct(
    chunks: Iterable[tuple[pa.Array, int]],
    column: str,
    scan_bytes: int,
    max_distinct: int,
    target: str,
    name: str,
) -> TargetValues:
    """Distinct non-empty values of ``(values, bytes)`` chunks, until a bound; then typed as the job would."""
    seen: pa.Array | None = None
    rows = read = 0
    complete = True
    for values, size in chunks:
        found = pc.unique(_present(values))
        seen = found if seen is None else pc.unique(_together(seen, found))
        rows, read = rows + len(values), read + size
        if read >= scan_bytes or len(seen) > max_distinct:
            complete = False
            break
    if seen is None or len(seen) == 0:
        return TargetValues(column, (), rows, complete)
    typed, _ = typed_labels(pa.chunked_array([seen]), target, name, 1, LABEL_KINDS[0])
    return TargetValues(column, tuple(np.unique(typed).tolist()), rows, complete)


def _together(seen: pa.Array, found: pa.Array) -> pa.Array:
    """Two files' values in one array: as text when the files store them as different types."""
    if seen.type != found.type:
        seen, found = pc.cast(seen, pa.string()), pc.cast(found, pa.string())
    return pa.concat_arrays([seen, found])


def _present(values: pa.Array) -> pa.Array:
    """The values, without missing or empty ones (the job reports those with their row)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    values = pc.drop_null(values)
    return pc.filter(values, pc.not_equal(values, "")) if is_text(values.type) else values


def _csv_chunks(fs: Any, path: str, name: str, target: str) -> Iterator[tuple[pa.Array, int]]:
    """The target column, one block of the file at a time, read as text (as ``read_table`` reads it),
    with the bytes of the file read for it (at most a block, and pyarrow's read-ahead)."""
    read = pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False)
    convert = pacsv.ConvertOptions(column_types={target: pa.string()}, include_columns=[target])
    with fs.open(path, "rb") as handle:
        done = 0
        try:
            for batch in pacsv.open_csv(handle, read_options=read, convert_options=convert):
                position = handle.tell()
                yield batch.column(0), max(position - done, 1)
                done = position
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{name} is not a readable csv file: {exc}") from exc


def _parquet_chunks(fs: Any, path: str, name: str, target: str) -> Iterator[tuple[pa.Array, int]]:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name, pre_buffer=False)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[target]):
            yield batch.column(0), batch.nbytes


def _npz_values(fs: Any, path: str, name: str, scan_bytes: int, max_distinct: int) -> TargetValues:
    """The distinct values of an npz's ``y``, read from its member in slices (never the whole array)."""
    with fs.open(path, "rb") as handle:
        npz_members(handle, name)
        with zipfile.ZipFile(handle) as archive:
            member_name = "y.npy" if "y.npy" in archive.namelist() else "y"
            return _npy_values(archive, member_name, name, scan_bytes, max_distinct)


def _npy_values(
    archive: zipfile.ZipFile, member_name: str, name: str, scan_bytes: int, max_distinct: int
) -> TargetValues:
    column = f"array 'y' of {name}"
    seen: set[Any] = set()
    rows = 0
    with archive.open(member_name) as member:
        count, dtype = _npy_header(member, name)
        width = max(dtype.itemsize, 1)
        while rows < count:
            want = min(max(1, _NPY_SLICE // width), count - rows)
            data = member.read(want * width)
            if len(data) < want * width:
                raise DatasetError(f"{name}: array 'y' is shorter than its header says")
            seen.update(np.unique(np.frombuffer(data, dtype=dtype)).tolist())
            rows += want
            if rows < count and (rows * width >= scan_bytes or len(seen) > max_distinct):
                return TargetValues(column, tuple(_sorted(seen)), rows, False)
    return TargetValues(column, tuple(_sorted(seen)), rows, True)


def _npy_header(member: Any, name: str) -> tuple[int, np.dtype[Any]]:
    """How many values an ``.npy`` member holds, and their type; object arrays are refused, as the job
    refuses them (loading them would unpickle)."""
    try:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
    except ValueError as exc:
        raise DatasetError(f"{name}: array 'y' is not a readable npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetError(f"{name}: arrays must hold numbers or text, not Python objects")
    return int(np.prod(shape)), dtype


def _sorted(values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)
