"""The files of a dataset folder (a local folder or an S3 prefix), and what format they are.

A folder of tabular data is read as every ``.csv`` file, or every ``.parquet``/``.pq`` file, anywhere
under it (recursively, so Hive-style ``date=2024-01-01/`` partitions are found; the partition values in
the path are not read as columns), sorted by their path in the folder. Entries whose name starts with
``.`` or ``_`` are skipped, in any part of the path: Hadoop and Spark write ``_SUCCESS`` markers,
``_temporary/`` folders and ``.crc`` files next to the data. One folder holds one format: csv and
parquet files together are refused rather than guessed at.

A folder with no tabular files but class folders of images is an image folder (``images.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiservice.infrastructure.datasets.tables import DatasetError

TABULAR_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SHOWN = 3  # files a message names as examples


@dataclass(frozen=True)
class DataFile:
    """One file of a folder: its path relative to the folder (posix), its full path, and its size."""

    relative: str
    path: str
    size: int


def is_folder(fs: Any, path: str) -> bool:
    """Whether ``path`` is a folder (locally) or a prefix with objects under it (S3)."""
    return bool(fs.info(path)["type"] == "directory")


def dataset_files(fs: Any, root: str, name: str) -> list[tuple[str, str]]:
    """``(relative posix path, path)`` of every file under a folder, sorted, hidden entries skipped.

    Locally, symlinked folders are not entered and a symlinked file must stay inside the folder: the
    locator confined the folder, not what its links point at.
    """
    return [(found.relative, found.path) for found in _files(fs, root, name)]


def data_files(fs: Any, root: str, name: str, format: str) -> list[DataFile]:
    """The ``format`` files (csv or parquet) a folder holds, sorted by relative path; a ``DatasetError``
    when it holds none, or holds files of the other tabular format too."""
    found = _tabular(fs, root, name)
    files = found.get(format, [])
    others = sorted(kind for kind in found if kind != format)
    if files and others:
        raise DatasetError(_mixed(name, found))
    if not files and others:
        raise DatasetError(
            f"{name} holds {others[0]} files ({_examples(found[others[0]])}), not {format} files: "
            f"name the format {others[0]}"
        )
    if not files:
        raise DatasetError(f"{name} is a folder with no {_suffixes(format)} files in it{_skipped()}")
    return files


def folder_format(fs: Any, root: str, name: str) -> str:
    """The format a folder's files are in: csv or parquet (its tabular files), else imagefolder (class
    folders of images); a ``DatasetError`` when they are neither, or both csv and parquet."""
    found = _tabular(fs, root, name)
    if len(found) > 1:
        raise DatasetError(_mixed(name, found))
    if found:
        return next(iter(found))
    if any(
        "/" in file.relative and file.relative.lower().endswith(_IMAGE_SUFFIXES)
        for file in _files(fs, root, name)
    ):
        return "imagefolder"
    raise DatasetError(
        f"{name} is a folder with no .csv or .parquet files in it, nor class folders of images "
        f"({name}/<class>/<image>.png){_skipped()}"
    )


def tabular_bytes(fs: Any, root: str, name: str) -> int:
    """The total size of a folder's csv and parquet files."""
    return sum(file.size for files in _tabular(fs, root, name).values() for file in files)


def _tabular(fs: Any, root: str, name: str) -> dict[str, list[DataFile]]:
    """A folder's data files by format, each list sorted; formats with no files are left out."""
    found: dict[str, list[DataFile]] = {}
    for file in _files(fs, root, name):
        if any(part.startswith("_") for part in file.relative.split("/")):
            continue
        suffix = file.relative[file.relative.rfind(".") :].lower() if "." in file.relative else ""
        if suffix in TABULAR_SUFFIXES:
            found.setdefault(TABULAR_SUFFIXES[suffix], []).append(file)
    return found


def _files(fs: Any, root: str, name: str) -> list[DataFile]:
    if "file" not in _protocols(fs):
        prefix = root.rstrip("/") + "/"
        listed = fs.find(root, detail=True)
        files = [
            DataFile(path.removeprefix(prefix), path, int(info.get("size") or 0))
            for path, info in listed.items()
            if path.startswith(prefix) and info.get("type") != "directory"
        ]
        return sorted(
            (file for file in files if file.relative and not _hidden(file.relative)), key=lambda f: f.relative
        )
    base = Path(root).resolve()
    local = []
    for folder, subfolders, names in os.walk(base):  # followlinks=False
        subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
        for file_name in names:
            path = Path(folder, file_name)
            relative = path.relative_to(base).as_posix()
            if file_name.startswith("."):
                continue
            if not path.resolve().is_relative_to(base):
                raise DatasetError(f"{name}: {relative} links outside the dataset folder")
            local.append(DataFile(relative, str(path), path.stat().st_size))
    return sorted(local, key=lambda f: f.relative)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _mixed(name: str, found: dict[str, list[DataFile]]) -> str:
    listed = "; ".join(f"{kind}: {_examples(files)}" for kind, files in sorted(found.items()))
    return f"{name} holds both csv and parquet files ({listed}): a folder is read as one format, keep one"


def _examples(files: list[DataFile]) -> str:
    shown = ", ".join(file.relative for file in files[:_SHOWN])
    return shown + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")


def _suffixes(format: str) -> str:
    return " or ".join(suffix for suffix, kind in TABULAR_SUFFIXES.items() if kind == format)


def _skipped() -> str:
    return " (names starting with . or _ are skipped)"
