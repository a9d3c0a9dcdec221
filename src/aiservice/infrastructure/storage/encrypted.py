"""Artifacts encrypted at rest: a decorator over a ``SealedBodies`` store (the local or the S3 store).

Each new artifact gets a random AES-256 data key; its bytes are sealed segment by segment (see
``envelope``) while being written, and the data key, wrapped by the current master key, goes to a
sidecar ``<key>.envelope``. The digest and size recorded on the version stay those of the plaintext,
and ``open`` decrypts and hashes every segment before handing out a reader, as the plaintext store
does. Artifacts written before encryption was turned on (no magic) are read as they are.

Runtimes load from a path, so ``local_path`` decrypts into ``<work dir>/.decrypted/`` (a 0700 folder of
0600 files; the local store's root, on the same volume as the ciphertext, or the S3 store's cache
folder, which then holds no ciphertext at all). The body is read once: segments are authenticated,
hashed and written out in one pass. A copy is removed with its artifact, and any copy
not handed out for ``plaintext_ttl_seconds`` is swept the next time one is made, and by the service's
``PlaintextSweeper`` at start-up and in between, so plaintext does not outlive its use on an idle
replica or a crash.

For the sweeper of leftovers, a sidecar whose artifact body is gone (a crash between writing the two)
is listed as an artifact of its own, so an unreferenced one is removed like any orphan.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from aiservice.application.leftovers import StoredKey, Swept
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import ArtifactWriter, StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.storage.envelope import (
    DEFAULT_SEGMENT_BYTES,
    HEADER_BYTES,
    TAG_BYTES,
    DecryptingReader,
    SegmentSealer,
    starts_sealed,
)
from aiservice.infrastructure.storage.keys import Keyring
from aiservice.infrastructure.storage.local import SIDECAR_SUFFIX

_FORMAT = "aiservice-envelope/1"
_PLAIN_DIR = ".decrypted"


class SealedBodies(Protocol):
    """What the encrypted store needs of the store it wraps (``LocalArtifactStore``, ``S3ArtifactStore``)."""

    @property
    def work_dir(self) -> Path:
        """A folder on this host for the wrapper's own files (hidden names)."""
        ...

    def writer(self, key: str, max_bytes: int) -> ArtifactWriter: ...
    def open(self, key: str, digest: str) -> BinaryIO: ...
    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path: ...
    def open_raw(self, key: str) -> BinaryIO:
        """The stored bytes unverified and seekable; ``ArtifactCorrupt`` when missing."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """A small entry; ``FileNotFoundError`` when missing."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """A small entry, written whole and atomically."""
        ...

    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def check_writable(self) -> None: ...
    def files(self) -> Iterator[StoredKey]:
        """Every stored entry outside the store's hidden ones, sidecars included."""
        ...

    def sweep_stale(self, cutoff: datetime) -> Swept: ...


@dataclass
class RotationReport:
    rewrapped: int = 0
    current: int = 0
    failed: list[str] = field(default_factory=list)


class EncryptedArtifactWriter:
    """Plaintext in, sealed segments out to the wrapped store's writer; hashed and bounded on the
    plaintext."""

    def __init__(
        self,
        inner: ArtifactWriter,
        store: SealedBodies,
        wrap: Callable[[bytes], tuple[str, bytes]],
        sealer: SegmentSealer,
        key: str,
        max_bytes: int,
    ) -> None:
        self._inner = inner
        self._store = store
        self._key = key
        self._max = max_bytes
        self._envelope = _envelope(wrap, sealer.data_key)
        self._sealer = sealer
        self._hash = hashlib.sha256()
        self._size = 0
        inner.write(self._sealer.header)

    def write(self, chunk: bytes | memoryview) -> None:
        if self._size + len(chunk) > self._max:  # the plaintext's limit, as without encryption
            self.abort()
            raise _too_large(self._max)
        self._size += len(chunk)
        self._hash.update(chunk)
        for sealed in self._sealer.feed(chunk):
            self._inner.write(sealed)

    def commit(self) -> StoredArtifact:
        self._inner.write(self._sealer.finish())
        # The sidecar first: a body that is in place always has its key beside it.
        sidecar = self._key + SIDECAR_SUFFIX
        try:
            self._store.write_bytes(sidecar, self._envelope)
        except BaseException:
            self._inner.abort()
            raise
        try:
            self._inner.commit()
        except BaseException:
            self._store.delete(sidecar)
            raise
        return StoredArtifact(key=self._key, digest=self._hash.hexdigest(), size_bytes=self._size)

    def abort(self) -> None:
        self._inner.abort()


class EncryptedArtifactStore:
    """Implements ``ArtifactStore`` over a ``SealedBodies`` store."""

    def __init__(
        self,
        inner: SealedBodies,
        keys: Keyring,
        *,
        plaintext_ttl_seconds: float = 600.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.inner = inner
        self.keys = keys
        self.root = inner.work_dir  # the local store's root; an S3 store's cache folder
        self._ttl = plaintext_ttl_seconds
        self._segment = segment_bytes
        self._plain = self.root / _PLAIN_DIR
        self._plain.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self._plain, 0o700)

    # -- writes ----------------------------------------------------------------------------------

    def writer(self, key: str, max_bytes: int) -> EncryptedArtifactWriter:
        overhead = HEADER_BYTES + TAG_BYTES * (max_bytes // self._segment + 2)
        inner = self.inner.writer(key, max_bytes + overhead)
        sealer = SegmentSealer(os.urandom(32), self._segment)
        return EncryptedArtifactWriter(inner, self.inner, self.keys.wrap, sealer, key, max_bytes)

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self.inner.delete(key + SIDECAR_SUFFIX)
        self._plain_copy(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        self.inner.check_writable()

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    # -- leftovers -------------------------------------------------------------------------------

    def stored_keys(self) -> Iterator[StoredKey]:
        """Every artifact, and every sidecar left without its artifact (``ArtifactInventory``), from one
        listing (a sidecar is written before its body: one seen alone is young, which the grace spares)."""
        stored = list(self.inner.files())
        bodies = {f.key for f in stored if not f.key.endswith(SIDECAR_SUFFIX)}
        for entry in stored:
            if entry.key in bodies:
                yield entry
            elif (key := entry.key.removesuffix(SIDECAR_SUFFIX)) not in bodies:
                yield StoredKey(key, entry.modified_at, entry.size_bytes)

    def sweep_stale(self, cutoff: datetime) -> Swept:
        return self.inner.sweep_stale(cutoff)

    # -- reads -----------------------------------------------------------------------------------

    def open(self, key: str, digest: str) -> BinaryIO:
        reader = self._sealed(key)
        if reader is None:
            return self.inner.open(key, digest)
        try:
            _verify(reader, digest)
            reader.seek(0)
        except BaseException:
            reader.close()
            raise
        return io.BufferedReader(reader, buffer_size=self._segment)

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        reader = self._sealed(key)  # the body must still be there, even with a copy made before
        if reader is None:
            return self.inner.local_path(key, digest, verify=verify)
        with reader:
            copy = self._plain_copy(key)
            if copy.is_file() and (not verify or _file_digest(copy) == digest):
                os.utime(copy)  # handed out again: the sweep counts from now
                return copy
            self._sweep()
            _decrypt_into(reader, digest, self._plain, copy)
        return copy

    # -- rotation --------------------------------------------------------------------------------

    def rotate(self) -> RotationReport:
        """Re-wrap every data key not under the current master key; artifact bodies stay as they are."""
        report = RotationReport()
        sidecars = sorted(f.key for f in self.inner.files() if f.key.endswith(SIDECAR_SUFFIX))
        for sidecar in sidecars:
            try:
                stored = json.loads(self.inner.read_bytes(sidecar).decode("utf-8"))
                if stored["keyId"] == self.keys.current.id:
                    report.current += 1
                    continue
                data_key = self.keys.unwrap(stored["keyId"], b64decode(stored["wrappedKey"]))
                self.inner.write_bytes(sidecar, _envelope(self.keys.wrap, data_key))
                report.rewrapped += 1
            except (ArtifactCorrupt, ValueError, KeyError, TypeError, FileNotFoundError):
                report.failed.append(sidecar.removesuffix(SIDECAR_SUFFIX))
        return report

    # -- internals -------------------------------------------------------------------------------

    def _sealed(self, key: str) -> DecryptingReader | None:
        """A decrypting reader on the body, or None for a plaintext body from before encryption."""
        raw = self.inner.open_raw(key)
        try:
            if not starts_sealed(raw):
                raw.close()
                return None
            return DecryptingReader(raw, self._data_key(key))
        except BaseException:
            raw.close()
            raise

    def _plain_copy(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self._plain / (name + Path(key).suffix)

    def _data_key(self, key: str) -> bytes:
        try:
            stored = json.loads(self.inner.read_bytes(key + SIDECAR_SUFFIX).decode("utf-8"))
            if stored.get("format") != _FORMAT:
                raise ValueError(stored.get("format"))
            return self.keys.unwrap(str(stored["keyId"]), b64decode(stored["wrappedKey"]))
        except FileNotFoundError:
            raise ArtifactCorrupt(f"The encrypted artifact {key!r} has lost its key envelope.") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ArtifactCorrupt(f"The encrypted artifact {key!r} has a damaged key envelope.") from None

    def sweep(self) -> None:
        """Remove the decrypted copies not handed out for ``plaintext_ttl_seconds``."""
        self._sweep()

    def _sweep(self) -> None:
        cutoff = time.time() - self._ttl
        for entry in self._plain.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()


class PlaintextSweeper(PeriodicTask):
    """Sweeps a store's decrypted copies at start-up and every half TTL (at least every second), so
    copies go even when no new one is made, and copies a crash left go at the next start."""

    def __init__(self, store: EncryptedArtifactStore, ttl_seconds: float) -> None:
        super().__init__("plaintext-sweeper", max(1.0, ttl_seconds / 2), store.sweep)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The artifact is larger than the limit of {limit} bytes.", extra={"limit": limit})


def _envelope(wrap: Callable[[bytes], tuple[str, bytes]], data_key: bytes) -> bytes:
    key_id, wrapped = wrap(data_key)
    return json.dumps(
        {"format": _FORMAT, "keyId": key_id, "wrappedKey": b64encode(wrapped).decode()}
    ).encode()


def _verify(reader: DecryptingReader, digest: str) -> None:
    sha = hashlib.sha256()
    for index in range(reader.segment_count):
        sha.update(reader.segment(index))
    _check(sha.hexdigest(), digest)


def _check(actual: str, digest: str) -> None:
    if actual != digest:
        raise ArtifactCorrupt(
            "The stored artifact does not match the checksum recorded at upload; it was not served.",
            extra={"expectedDigest": digest},
        )


def _decrypt_into(reader: DecryptingReader, digest: str, folder: Path, copy: Path) -> None:
    """Authenticate, hash and write out every segment in one pass; the copy appears only if it matched."""
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # created 0600
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for index in range(reader.segment_count):
                plain = reader.segment(index)
                sha.update(plain)
                out.write(plain)
        _check(sha.hexdigest(), digest)
        os.replace(staging, copy)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
