"""Artifacts on the local file system: written to a staging file while hashed, then renamed into place.

A reader gets bytes only after they were hashed again and matched the digest recorded at upload.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from aiservice.application.ports import StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge

_READ_CHUNK = 1 << 20


class LocalArtifactWriter:
    def __init__(self, root: Path, key: str, max_bytes: int) -> None:
        self._target = root / key
        self._key = key
        self._max = max_bytes
        staging = root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, prefix="upload-")
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, chunk: bytes | memoryview) -> None:
        self._size += len(chunk)
        if self._size > self._max:
            self.abort()
            raise PayloadTooLarge(
                f"The artifact is larger than the limit of {self._max} bytes.", extra={"limit": self._max}
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> StoredArtifact:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, self._target)
        self._done = True
        return StoredArtifact(key=self._key, digest=self._hash.hexdigest(), size_bytes=self._size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        self._path.unlink(missing_ok=True)


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"artifact key {key!r} escapes the store")
        return path

    def writer(self, key: str, max_bytes: int) -> LocalArtifactWriter:
        self._path(key)
        return LocalArtifactWriter(self.root, key, max_bytes)

    def open(self, key: str, digest: str) -> BinaryIO:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactCorrupt(f"The artifact {key!r} is missing from the store.") from exc
        try:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
            if sha != digest:
                raise ArtifactCorrupt(
                    "The stored artifact does not match the checksum recorded at upload; it was not served.",
                    extra={"expectedDigest": digest},
                )
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return handle

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        if verify:
            self.open(key, digest).close()
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check_writable(self) -> None:
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
            pass
