"""A folder (or S3 prefix) of csv or parquet files read as one table: which files (``listing.py``), the
check made at submission, and the whole read a job makes.

Every file must have the same columns (in any order); the first that differs is named. Files with no
rows (empty, a header alone, a parquet file of 0 rows, as Spark writes for empty partitions) are
skipped. Rows are numbered within their file, and messages name the file (``train/part-1.csv``).

At submission the first file with rows gets the single-file check (its columns, and its first block of
values for csv) and the headers of the first ``CHECKED_FILES`` files are compared with it; the job
compares every file's columns as it reads them. Labels are typed alike across files, as one file's
are: text targets that all parse as integers (in every file) become integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiservice.infrastructure.datasets.listing import DataFile, data_files
from aiservice.infrastructure.datasets.tables import (
    LABEL_KINDS,
    DatasetError,
    NoRows,
    Table,
    is_text,
    to_table,
    typed_labels,
)
from aiservice.infrastructure.datasets.tabular import FileColumns, check_file, head_columns, read_columns

CHECKED_FILES = 1000  # files whose headers a submission compares (the job compares every file)


def file_name(name: str, file: DataFile) -> str:
    """How messages name one file of the folder ``name``: ``train/part-1.csv``, ``s3://b/train/part-1.csv``."""
    return f"{name}/{file.relative}"


def check_folder(
    fs: Any, root: str, name: str, format: str, target: str | None, features: list[str] | None
) -> list[str]:
    """What stops a job reading the folder, from headers alone; empty when it looks usable."""
    files = data_files(fs, root, name, format)
    reference: tuple[str, list[str]] | None = None
    for file in files[:CHECKED_FILES]:
        shown = file_name(name, file)
        columns = head_columns(fs, file.path, shown, format) if file.size else None
        if columns is None:
            continue
        if reference is None:
            problems = check_file(fs, file.path, shown, format, target, features)
            if problems:
                return problems
            reference = (shown, columns)
        elif set(columns) != set(reference[1]):
            return [columns_differ(shown, columns, *reference)]
    if reference is None:
        return [f"{name} has no rows: {_all_empty(files, format)}"]
    return []


def read_folder(
    fs: Any, root: str, name: str, format: str, target: str | None, features: list[str] | None
) -> Table:
    """Every file of the folder, in order, as one ``Table``."""
    pieces: list[tuple[str, FileColumns]] = []
    files = data_files(fs, root, name, format)
    for file in files:
        shown = file_name(name, file)
        try:
            read = read_columns(fs, file.path, shown, format, target, features) if file.size else None
        except NoRows:
            continue
        except DatasetError:
            if pieces:  # a file without the first one's columns: say so, rather than which one it lacks
                _same_columns(shown, head_columns(fs, file.path, shown, format) or [], *pieces[0])
            raise
        if read is None or read.table.num_rows == 0:
            continue
        if pieces:
            _same_columns(shown, read.columns, *pieces[0])
        else:  # every later file is read in the first one's column order
            target, features = read.target, read.features
        pieces.append((shown, read))
    if not pieces:
        raise DatasetError(f"{name} has no rows: {_all_empty(files, format)}")
    return _joined(pieces)


def _same_columns(shown: str, columns: list[str], first_name: str, first: FileColumns) -> None:
    if set(columns) != set(first.columns):
        raise DatasetError(columns_differ(shown, columns, first_name, first.columns))


def columns_differ(shown: str, columns: list[str], first_name: str, first: list[str]) -> str:
    """Why ``shown`` does not belong with the folder's first file."""
    missing = [column for column in first if column not in columns]
    extra = [column for column in columns if column not in first]
    said = [f"lacks {', '.join(missing)}" if missing else "", f"adds {', '.join(extra)}" if extra else ""]
    return (
        f"{shown}: its columns differ from those of {first_name}, the folder's first file "
        f"({'; '.join(part for part in said if part)}): every file of a folder must have the same columns"
    )


def _joined(pieces: list[tuple[str, FileColumns]]) -> Table:
    """The files' columns as one ``Table``: their labels typed alike, their features in one array."""
    target, features = pieces[0][1].target, pieces[0][1].features
    kind = LABEL_KINDS[0]
    for shown, read in pieces:
        column = read.table.column(target)
        if is_text(column.type):
            kind = typed_labels(column, target, shown, 1, kind)[1]
    rows = sum(read.table.num_rows for _, read in pieces)
    X = np.empty((rows, len(features)), dtype=np.float32)
    labels: list[tuple[str, np.ndarray]] = []
    start = 0
    while pieces:
        shown, read = pieces.pop(0)  # each file's arrow columns are let go once copied
        table = to_table(read.table, shown, target, features, 1, kind)
        X[start : start + len(table.y)] = table.X
        start += len(table.y)
        labels.append((shown, table.y))
    return Table(X=X, y=_labels(labels, target), feature_names=list(features))


def _labels(labels: list[tuple[str, np.ndarray]], target: str) -> np.ndarray:
    """The files' labels as one array; refused when some files hold text labels and others numbers."""
    text = [shown for shown, y in labels if y.dtype.kind in "USO"]
    numbers = [shown for shown, y in labels if y.dtype.kind not in "USO"]
    if text and numbers:
        raise DatasetError(
            f"{text[0]}: target column {target!r} holds text labels where {numbers[0]} holds numbers: "
            "every file of a folder must label its rows alike"
        )
    return np.concatenate([y for _, y in labels])


def _all_empty(files: list[DataFile], format: str) -> str:
    count = len(files)
    return f"its {count} {format} file{'s' if count != 1 else ''} {'are' if count != 1 else 'is'} empty"
