"""Dataset use cases: upload training data (kept only once it reads as its format), list, look at and
delete a tenant's uploads. A training request names one as ``dataset://NAME``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Protocol

from aiservice.application.ports import UnitOfWorkFactory
from aiservice.application.upload_deadline import UploadDeadline
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.pagination import Page, decode_cursor, encode_cursor
from aiservice.domain.tenancy import Permission, Principal

EXTENSION_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
_NAME_LIMIT = 128
_NOT_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


class DatasetInfo(Protocol):
    """What is recorded of a stored dataset."""

    @property
    def name(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


class StagedDataset(Protocol):
    """Bytes on their way in: written, then committed (visible under the name) or aborted (gone)."""

    @property
    def staged_path(self) -> Path: ...
    def write(self, chunk: bytes | memoryview) -> None:
        """Raises ``PayloadTooLarge`` past the limit, having aborted."""
        ...

    def commit(self) -> DatasetInfo:
        """Raises ``Conflict`` when the name was taken meanwhile, having aborted."""
        ...

    def abort(self) -> None:
        """Idempotent."""
        ...


class DatasetCatalog(Protocol):
    """Uploaded datasets, kept apart per tenant."""

    def writer(self, tenant_id: str, name: str, format: str, max_bytes: int) -> StagedDataset:
        """Start an upload; ``InvalidInput`` for a bad name or format, ``Conflict`` for a name in use."""
        ...

    def get(self, tenant_id: str, name: str) -> DatasetInfo | None: ...
    def list(self, tenant_id: str) -> Sequence[DatasetInfo]:
        """Sorted by name."""
        ...

    def delete(self, tenant_id: str, name: str) -> bool:
        """``False`` when there was none."""
        ...


# The problems that stop a file being read as a format (from its header alone); empty when it reads.
FormatCheck = Callable[[Path, str], list[str]]


@dataclass
class DatasetUpload:
    """An upload in progress: who sends it, and where its bytes go; bytes past the deadline are refused."""

    principal: Principal
    staged: StagedDataset
    format: str
    deadline: UploadDeadline = field(default_factory=UploadDeadline)

    def write_all(self, chunks: list[memoryview]) -> None:
        """Write buffered chunks in one call, so a caller on an event loop hops to a thread once."""
        self.check_deadline()
        for chunk in chunks:
            self.staged.write(chunk)

    def abort(self) -> None:
        self.staged.abort()

    def check_deadline(self) -> None:
        """Past the deadline: ``UploadTimedOut``, and the bytes staged so far go."""
        self.deadline.check(self.abort)


class Datasets:
    def __init__(
        self,
        catalog: DatasetCatalog,
        check: FormatCheck,
        max_bytes: int,
        uow: UnitOfWorkFactory,
        *,
        upload_timeout_s: float = float("inf"),
    ) -> None:
        self._catalog = catalog
        self._check = check
        self.max_bytes = max_bytes
        self._uow = uow
        self._upload_timeout_s = upload_timeout_s

    def authorize_upload(self, principal: Principal) -> None:
        """Refuse a caller who may not upload before any byte of the upload is read."""
        principal.require(Permission.DATASET_WRITE)

    def start_upload(
        self, principal: Principal, filename: str, name: str | None, format: str | None
    ) -> DatasetUpload:
        """Open a writer for the bytes. ``name`` defaults to the file name's stem (made a valid name),
        ``format`` to the file name's extension."""
        principal.require(Permission.DATASET_WRITE)
        deadline = UploadDeadline(self._upload_timeout_s)
        format = format or format_of(filename)
        staged = self._catalog.writer(principal.tenant_id, name or name_of(filename), format, self.max_bytes)
        return DatasetUpload(principal, staged, format, deadline)

    def finish_upload(self, upload: DatasetUpload) -> DatasetInfo:
        """Keep the bytes if they read as their format; otherwise remove them and raise ``InvalidInput``."""
        upload.check_deadline()
        try:
            problems = self._check(upload.staged.staged_path, upload.format)
            if problems:
                message = f"cannot be read as {upload.format}: {'; '.join(problems)}"
                raise InvalidInput(f"file: {message}", errors=[FieldError("file", message)])
        except BaseException:
            upload.abort()
            raise
        return upload.staged.commit()

    def list(self, principal: Principal, limit: int, cursor: str | None) -> Page[DatasetInfo]:
        """By name; ``cursor`` comes from the previous page."""
        principal.require(Permission.MODEL_READ)  # the tenant's read permission, which every role has
        after = str(decode_cursor(cursor).get("after", "")) if cursor else ""
        following = [d for d in self._catalog.list(principal.tenant_id) if d.name > after]
        items = following[:limit]
        more = len(following) > limit
        return Page(items, encode_cursor({"after": items[-1].name}) if more else None)

    def get(self, principal: Principal, name: str) -> DatasetInfo:
        principal.require(Permission.MODEL_READ)
        dataset = self._catalog.get(principal.tenant_id, name)
        if dataset is None:
            raise _not_found(name)
        return dataset

    def delete(self, principal: Principal, name: str) -> None:
        """Refused (409) while a queued or running job names it; afterwards new training requests naming
        it are refused (a job submitted in the same instant fails when it reads it)."""
        principal.require(Permission.DATASET_WRITE)
        with self._uow(principal.tenant_id, writes=False) as uow:
            users = [job.id for job in uow.jobs.unfinished() if job.dataset.names_dataset(name)]
        if users:
            raise Conflict(
                f"Dataset {name!r} is read by {len(users)} queued or running training job(s): "
                f"{', '.join(users)}. Cancel them, or wait for them to end, then delete it.",
                code="dataset-in-use",
                extra={"dataset": name, "trainingJobs": users},
            )
        if not self._catalog.delete(principal.tenant_id, name):
            raise _not_found(name)


def name_of(filename: str) -> str:
    """A dataset name from an uploaded file's name: its stem, other characters made '-', trimmed of dots
    and dashes at either end."""
    stem = PureWindowsPath(PurePosixPath(filename).name).stem  # clients send either kind of path
    name = _NOT_NAME_CHARACTERS.sub("-", stem).strip(".-")[:_NAME_LIMIT]
    if not name:
        message = "is needed: the file's name gives none"
        raise InvalidInput(f"name: {message}", errors=[FieldError("name", message)])
    return name


def format_of(filename: str) -> str:
    """The format a file name's extension implies."""
    extension = PurePosixPath(filename.lower()).suffix
    if extension not in EXTENSION_FORMATS:
        known = ", ".join(sorted(EXTENSION_FORMATS))
        message = f"is needed: the file's name does not end in {known}"
        raise InvalidInput(f"format: {message}", errors=[FieldError("format", message)])
    return EXTENSION_FORMATS[extension]


def _not_found(name: str) -> NotFound:
    return NotFound(f"There is no dataset named {name!r}.")
