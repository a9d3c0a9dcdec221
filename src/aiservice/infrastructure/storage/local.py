"""Artifacts on the local file system: written to a staging file while hashed, then renamed into place.

A reader gets bytes only after they were hashed again and matched the digest recorded at upload.
Names starting with a dot are the store's own: ``.staging/``, temporaries beside artifacts, and what
the encrypted store keeps; they are never listed as artifacts.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from aiservice.application.leftovers import StoredKey, Swept
from aiservice.application.ports import StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.stale_files import remove_stale

_READ_CHUNK = 1 << 20
STAGING = ".staging"
SIDECAR_SUFFIX = ".envelope"  # the encrypted store's key file beside each artifact; never an artifact
# Temporaries written beside artifacts: a sidecar on its way in, and what a loader makes next to an
# artifact (``.<artifact name>.<random>``: a link under another name, an unpacked archive).
_TEMPORARY = re.compile(r"\.envelope-.*|\.[0-9a-f]{32}(\.onnx)?\..+")


class LocalArtifactWriter:
    def __init__(self, root: Path, key: str, max_bytes: int) -> None:
        self._target = root / key
        self._key = key
        self._max = max_bytes
        staging = root / STAGING
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

    @property
    def work_dir(self) -> Path:
        """The folder on this host where a wrapping store may keep its own files (hidden names)."""
        return self.root

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

    def open_raw(self, key: str) -> BinaryIO:
        """The stored bytes as they are, unverified (for a wrapping store that checks them itself)."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactCorrupt(f"The artifact {key!r} is missing from the store.") from exc

    def read_bytes(self, key: str) -> bytes:
        """A small entry written by ``write_bytes``; ``FileNotFoundError`` when there is none."""
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a small entry whole and atomically (the encrypted store's key envelope)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=".envelope-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

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

    def files(self) -> Iterator[StoredKey]:
        """Every file outside the store's hidden entries, relative to the root, sidecars included."""
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith("."):
                    continue
                path = Path(folder, name)
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                yield StoredKey(path.relative_to(self.root).as_posix(), modified, stat.st_size)

    def stored_keys(self) -> Iterator[StoredKey]:
        """Every committed artifact (``ArtifactInventory``)."""
        return (f for f in self.files() if not f.key.endswith(SIDECAR_SUFFIX))

    def sweep_stale(self, cutoff: datetime) -> Swept:
        """Remove what writers and loaders that died left (``WorkArea``): staging files, probes, and
        temporaries beside artifacts, last modified before ``cutoff``. A loader's folder beside an
        artifact that still exists stays (an unpacked model may be serving from it)."""
        staging = self.root / STAGING
        found = list(staging.iterdir()) if staging.is_dir() else []
        found += self.root.glob(".probe-*")
        for folder, dirs, names in os.walk(self.root):
            hidden = [d for d in dirs if d.startswith(".")]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += (
                Path(folder, entry)
                for entry in [*hidden, *names]
                if _TEMPORARY.fullmatch(entry) and not _owner_exists(entry, names)
            )
        return remove_stale(found, cutoff)


def _owner_exists(temporary: str, names: list[str]) -> bool:
    return any(temporary.startswith(f".{name}.") for name in names if not name.startswith("."))
