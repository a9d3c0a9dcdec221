"""Training data from csv, parquet, npz files, folders of csv or parquet files, and image folders, local
or on S3, as arrays.

``check_readable`` runs at submit time and reads only headers, so a bad column name fails the request,
not a worker minutes later. ``read_table`` runs in the worker and turns every problem it can name (file,
column, row) into a ``DatasetError`` with that message; I/O failures become ``DatasetError`` too.

Rows are numbered from 1, the first row of data (a csv's header is not a row).

csv and parquet data too large to hold is read batch by batch by ``streaming.stream_table``, with the
same checks and messages (``to_table`` with the batch's first row number); npz files and image folders
are always read whole here. A csv or parquet dataset may be a folder (or S3 prefix) of such files:
``listing.py`` says which files, ``folders.py`` reads them as one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiservice.infrastructure.datasets import listing
from aiservice.infrastructure.datasets.folders import check_folder, file_name, read_folder
from aiservice.infrastructure.datasets.images import check_images, read_images
from aiservice.infrastructure.datasets.listing import data_files, dataset_files, is_folder
from aiservice.infrastructure.datasets.npz import check_npz, read_npz
from aiservice.infrastructure.datasets.tables import (
    DatasetError,
    Table,
    display_name,
    filesystem,
    reading,
)
from aiservice.infrastructure.datasets.tabular import TABULAR_FORMATS, check_file, head_columns, read_file

FORMATS = ("csv", "parquet", "npz", "imagefolder")

__all__ = [
    "FORMATS",
    "DatasetError",
    "Table",
    "check_readable",
    "columns",
    "dataset_files",
    "display_name",
    "filesystem",
    "folder_format",
    "read_table",
    "reading",
]


def check_readable(
    uri: str, format: str, target: str | None, features: list[str] | None, storage_options: dict[str, Any]
) -> list[str]:
    """Problems a job would hit, found from headers only (csv: its first block; parquet: its schema; npz:
    its member names; image folder: its listing and one image's header; a folder of csv or parquet
    files: its listing and its files' headers). Empty when the data looks usable."""
    name = display_name(uri)
    if format not in FORMATS:
        return [f"unknown format {format!r}: use one of {', '.join(FORMATS)}"]
    try:
        fs, path = filesystem(uri, storage_options)
        if format in TABULAR_FORMATS:
            if is_folder(fs, path):
                return check_folder(fs, path, name, format, target, features)
            return check_file(fs, path, name, format, target, features)
        return _CHECKS[format](fs, path, name, target, features)
    except DatasetError as exc:
        return [str(exc)]
    except Exception as exc:  # OSError, botocore/aiohttp errors: the data is gone or S3 is down
        return [f"could not read {name}: {exc}"]


def read_table(
    uri: str,
    format: str,
    target: str | None,
    features: list[str] | None,
    storage_options: dict[str, Any],
    image_size: tuple[int, int] | None = None,
) -> Table:
    """The whole dataset as arrays. csv/parquet: ``target`` -> ``y`` as stored (numbers stay numbers, text
    stays text), ``features`` (default: every other column, in file order) -> ``X``; a folder's files
    one after another. npz: arrays ``X``/``x`` and ``y``. Image folder: ``root/<class>/*.{jpg,jpeg,png}``
    as RGB, resized to ``image_size`` (H, W; default the first image's size), labels the class folder
    names."""
    name = display_name(uri)
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        if format == "imagefolder":
            return read_images(fs, path, name, image_size)
        if format == "npz":
            return read_npz(fs, path, name, target, features)
        if is_folder(fs, path):
            return read_folder(fs, path, name, format, target, features)
        return read_file(fs, path, name, format, target, features)


def folder_format(uri: str, storage_options: dict[str, Any]) -> str | None:
    """The format of a folder's files (csv, parquet or imagefolder; ``listing.folder_format``), None when
    ``uri`` is not a folder; a ``DatasetError`` when the folder holds no data, or mixes csv and parquet."""
    name = display_name(uri)
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        return listing.folder_format(fs, path, name) if is_folder(fs, path) else None


def columns(uri: str, format: str, storage_options: dict[str, Any]) -> list[str]:
    """A csv or parquet dataset's column names: a file's, or those of a folder's first file with rows;
    empty when they cannot be read (``check_readable`` says why)."""
    name = display_name(uri)
    try:
        fs, path = filesystem(uri, storage_options)
        if not is_folder(fs, path):
            return head_columns(fs, path, name, format) or []
        for file in data_files(fs, path, name, format):
            found = head_columns(fs, file.path, file_name(name, file), format) if file.size else None
            if found:
                return found
    except Exception:  # unreadable: check_readable reports why, with the same reads
        return []
    return []


_CHECKS: dict[str, Callable[[Any, str, str, str | None, list[str] | None], list[str]]] = {
    "npz": check_npz,
    "imagefolder": check_images,
}
