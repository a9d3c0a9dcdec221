"""Removing abandoned work files and folders by age, for every store that stages work on disk."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from aiservice.application.leftovers import Swept


class StaleEntries:
    """A folder's entries named like ``pattern`` (a glob) as a ``WorkArea``: each is one piece of work."""

    def __init__(self, folder: Path, pattern: str) -> None:
        self._folder = folder
        self._pattern = pattern

    def sweep_stale(self, cutoff: datetime) -> Swept:
        return remove_stale(self._folder.glob(self._pattern), cutoff)


def last_modified(path: Path) -> float:
    """When a file, or a folder or one of its direct entries, last changed (epoch seconds)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for entry in os.scandir(path):
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale(paths: Iterable[Path], cutoff: datetime) -> Swept:
    """Remove each file or folder (with its contents) last modified before ``cutoff``."""
    swept = Swept()
    limit = cutoff.timestamp()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile: its own writer cleaned up
            if last_modified(path) >= limit:
                continue
            size = _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            swept += Swept(1, size)
    return swept


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(folder) / name).lstat().st_size
    return total
