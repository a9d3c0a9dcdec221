"""Datasets uploaded through the API: one folder per tenant, one folder per dataset.

Layout: ``root/<tenant>/<name>/`` holds the bytes (a file named like the dataset, so reader messages name
what the tenant uploaded) and ``.meta.json``. An upload is staged in a hidden folder beside it and renamed
into place on commit: readers never see half a dataset, and renaming a folder onto an existing one fails,
so two uploads of one name cannot both win. A deleted dataset is renamed to a hidden folder, then
removed. Hidden folders a crash left behind go with ``sweep_stale``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiservice.application.leftovers import Swept
from aiservice.application.tenants import TENANT_ID
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, PayloadTooLarge
from aiservice.infrastructure.stale_files import remove_stale

# Like the contract's [A-Za-z0-9._-]{1,128}, but never starting with a dot: '.', '..' and our hidden
# staging and metadata entries can then never be a dataset's name.
DATASET_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
UPLOAD_FORMATS = ("csv", "parquet", "npz")
_META = ".meta.json"
_WORK_PREFIXES = (".upload-", ".deleted-")  # an upload being staged, a deleted dataset being removed


@dataclass(frozen=True)
class StoredDataset:
    name: str
    format: str
    size_bytes: int
    sha256: str
    created_at: datetime
    path: Path  # the data file itself, ready for the readers


def _tenant_dir(root: Path, tenant_id: str) -> Path:
    # Tenant ids come from an authenticated principal; a bad one is a programming error, not user input.
    if not TENANT_ID.fullmatch(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    return root / tenant_id


def _check_name(name: str) -> None:
    if not DATASET_NAME.fullmatch(name):
        message = "must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        raise InvalidInput(f"name: {message}", errors=[FieldError("name", message)])


class DatasetWriter:
    """One upload in progress: ``write`` chunks, then ``commit`` or ``abort`` (also a context manager
    that aborts unless committed)."""

    def __init__(self, tenant_dir: Path, name: str, format: str, max_bytes: int) -> None:
        self._target = tenant_dir / name
        self._name = name
        self._format = format
        self._max = max_bytes
        tenant_dir.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(dir=tenant_dir, prefix=_WORK_PREFIXES[0]))
        self._file = (self._staging / name).open("wb", buffering=0)
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    @property
    def staged_path(self) -> Path:
        """The bytes written so far, for a check before ``commit``; gone after ``commit`` or ``abort``."""
        return self._staging / self._name

    def write(self, chunk: bytes | memoryview) -> None:
        if self._done:
            raise RuntimeError("the upload is already committed or aborted")
        self._size += len(chunk)
        if self._size > self._max:
            self.abort()
            raise PayloadTooLarge(
                f"The dataset is larger than the limit of {self._max} bytes.", extra={"limit": self._max}
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> StoredDataset:
        if self._done:
            raise RuntimeError("the upload is already committed or aborted")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        stored = StoredDataset(
            name=self._name,
            format=self._format,
            size_bytes=self._size,
            sha256=self._hash.hexdigest(),
            created_at=datetime.now(UTC),
            path=self._target / self._name,
        )
        (self._staging / _META).write_text(json.dumps(_to_json(stored)), encoding="utf-8")
        try:
            os.rename(self._staging, self._target)
        except OSError as exc:
            self.abort()
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise _conflict(self._name) from exc
            raise
        self._done = True
        return stored

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class DatasetStore:
    """Datasets uploaded through the API, kept apart per tenant under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def writer(self, tenant_id: str, name: str, format: str, max_bytes: int) -> DatasetWriter:
        """Start an upload; refuses a bad name or format and a name this tenant already uses."""
        tenant_dir = _tenant_dir(self.root, tenant_id)
        _check_name(name)
        if format not in UPLOAD_FORMATS:
            message = f"must be one of {', '.join(UPLOAD_FORMATS)}"
            raise InvalidInput(f"format: {message}", errors=[FieldError("format", message)])
        if (tenant_dir / name).exists():  # early, before any bytes; commit checks again atomically
            raise _conflict(name)
        return DatasetWriter(tenant_dir, name, format, max_bytes)

    def get(self, tenant_id: str, name: str) -> StoredDataset | None:
        tenant_dir = _tenant_dir(self.root, tenant_id)
        if not DATASET_NAME.fullmatch(name):
            return None
        return _read_meta(tenant_dir / name)

    def list(self, tenant_id: str) -> list[StoredDataset]:
        tenant_dir = _tenant_dir(self.root, tenant_id)
        if not tenant_dir.is_dir():
            return []
        found = (
            _read_meta(entry) for entry in sorted(tenant_dir.iterdir()) if not entry.name.startswith(".")
        )
        return [dataset for dataset in found if dataset is not None]

    def delete(self, tenant_id: str, name: str) -> bool:
        """Remove a dataset; ``False`` if there was none. Renamed away first: no reader sees it half gone."""
        tenant_dir = _tenant_dir(self.root, tenant_id)
        if not DATASET_NAME.fullmatch(name):
            return False
        trash = tenant_dir / f"{_WORK_PREFIXES[1]}{uuid.uuid4().hex}"
        try:
            os.rename(tenant_dir / name, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def sweep_stale(self, cutoff: datetime) -> Swept:
        """Remove staging and deleted folders last modified before ``cutoff``: their process died
        (``WorkArea``)."""
        found = [
            entry
            for tenant_dir in self.root.iterdir()
            if tenant_dir.is_dir()
            for entry in tenant_dir.iterdir()
            if entry.name.startswith(_WORK_PREFIXES)
        ]
        return remove_stale(found, cutoff)


def _conflict(name: str) -> Conflict:
    return Conflict(
        f"A dataset named {name!r} already exists.", errors=[FieldError("name", "is already used")]
    )


def _to_json(dataset: StoredDataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "format": dataset.format,
        "sizeBytes": dataset.size_bytes,
        "sha256": dataset.sha256,
        "createdAt": dataset.created_at.isoformat(),
    }


def _read_meta(folder: Path) -> StoredDataset | None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        data = json.loads((folder / _META).read_text(encoding="utf-8"))
        return StoredDataset(
            name=data["name"],
            format=data["format"],
            size_bytes=int(data["sizeBytes"]),
            sha256=data["sha256"],
            created_at=datetime.fromisoformat(data["createdAt"]),
            path=folder / data["name"],
        )
    return None
