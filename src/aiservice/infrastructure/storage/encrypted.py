"""Artifacts encrypted at rest: a decorator over ``LocalArtifactStore``.

Each new artifact gets a random AES-256 data key; its bytes are sealed segment by segment (see
``envelope``) while being written, and the data key, wrapped by the current master key, goes to a
sidecar ``<key>.envelope``. The digest and size recorded on the version stay those of the plaintext,
and ``open`` decrypts and hashes every segment before handing out a reader, as the plaintext store
does. Artifacts written before encryption was turned on (no magic) are read as they are.

Runtimes load from a path, so ``local_path`` decrypts into ``<root>/.decrypted/`` (a 0700 folder of
0600 files, on the same volume as the ciphertext). A copy is removed with its artifact, and any copy
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
from typing import BinaryIO

from aiservice.application.leftovers import StoredKey, Swept
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.storage.envelope import (
    DEFAULT_SEGMENT_BYTES,
    HEADER_BYTES,
    TAG_BYTES,
    DecryptingReader,
    SegmentSealer,
    is_encrypted,
)
from aiservice.infrastructure.storage.keys import Keyring
from aiservice.infrastructure.storage.local import SIDECAR_SUFFIX, LocalArtifactStore, LocalArtifactWriter

_FORMAT = "aiservice-envelope/1"
_PLAIN_DIR = ".decrypted"


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
        inner: LocalArtifactWriter,
        sidecar: Path,
        wrap: Callable[[bytes], tuple[str, bytes]],
        sealer: SegmentSealer,
        key: str,
        max_bytes: int,
    ) -> None:
        self._inner = inner
        self._sidecar = sidecar
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
        _write_atomically(self._sidecar, self._envelope)
        try:
            self._inner.commit()
        except BaseException:
            self._sidecar.unlink(missing_ok=True)
            raise
        return StoredArtifact(key=self._key, digest=self._hash.hexdigest(), size_bytes=self._size)

    def abort(self) -> None:
        self._inner.abort()


class EncryptedArtifactStore:
    """Implements ``ArtifactStore`` over a ``LocalArtifactStore``."""

    def __init__(
        self,
        inner: LocalArtifactStore,
        keys: Keyring,
        *,
        plaintext_ttl_seconds: float = 600.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.inner = inner
        self.keys = keys
        self.root = inner.root
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
        return EncryptedArtifactWriter(inner, self._sidecar(key), self.keys.wrap, sealer, key, max_bytes)

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self._sidecar(key).unlink(missing_ok=True)
        self._plain_copy(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        self.inner.check_writable()

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    # -- leftovers -------------------------------------------------------------------------------

    def stored_keys(self) -> Iterator[StoredKey]:
        """Every artifact, and every sidecar left without its artifact (``ArtifactInventory``)."""
        for stored in self.inner.files():
            if not stored.key.endswith(SIDECAR_SUFFIX):
                yield stored
            elif not self.inner.exists(key := stored.key.removesuffix(SIDECAR_SUFFIX)):
                yield StoredKey(key, stored.modified_at, stored.size_bytes)

    def sweep_stale(self, cutoff: datetime) -> Swept:
        return self.inner.sweep_stale(cutoff)

    # -- reads -----------------------------------------------------------------------------------

    def open(self, key: str, digest: str) -> BinaryIO:
        path = self._body(key)
        if not is_encrypted(path):
            return self.inner.open(key, digest)
        reader = DecryptingReader(path, self._data_key(key))
        try:
            _verify(reader, digest)
            reader.seek(0)
        except BaseException:
            reader.close()
            raise
        return io.BufferedReader(reader, buffer_size=self._segment)

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        path = self._body(key)
        if not is_encrypted(path):
            return self.inner.local_path(key, digest, verify=verify)
        copy = self._plain_copy(key)
        if copy.is_file() and (not verify or _file_digest(copy) == digest):
            os.utime(copy)  # handed out again: the sweep counts from now
            return copy
        self._sweep()
        with self.open(key, digest) as plain:
            fd, staging = tempfile.mkstemp(dir=self._plain, prefix=".tmp-")  # created 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := plain.read(self._segment):
                        out.write(chunk)
                os.replace(staging, copy)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise
        return copy

    # -- rotation --------------------------------------------------------------------------------

    def rotate(self) -> RotationReport:
        """Re-wrap every data key not under the current master key; artifact bodies stay as they are."""
        report = RotationReport()
        for sidecar in sorted(self.root.rglob(f"*{SIDECAR_SUFFIX}")):
            if sidecar.parent == self._plain or ".staging" in sidecar.parts:
                continue
            try:
                stored = json.loads(sidecar.read_text(encoding="utf-8"))
                if stored["keyId"] == self.keys.current.id:
                    report.current += 1
                    continue
                data_key = self.keys.unwrap(stored["keyId"], b64decode(stored["wrappedKey"]))
                _write_atomically(sidecar, _envelope(self.keys.wrap, data_key))
                report.rewrapped += 1
            except (ArtifactCorrupt, ValueError, KeyError, TypeError):
                report.failed.append(str(sidecar.relative_to(self.root))[: -len(SIDECAR_SUFFIX)])
        return report

    # -- internals -------------------------------------------------------------------------------

    def _body(self, key: str) -> Path:
        path = self.inner.local_path(key, "", verify=False)
        if not path.is_file():
            raise ArtifactCorrupt(f"The artifact {key!r} is missing from the store.")
        return path

    def _sidecar(self, key: str) -> Path:
        body = self.inner.local_path(key, "", verify=False)
        return body.with_name(body.name + SIDECAR_SUFFIX)

    def _plain_copy(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self._plain / (name + Path(key).suffix)

    def _data_key(self, key: str) -> bytes:
        try:
            stored = json.loads(self._sidecar(key).read_text(encoding="utf-8"))
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


def _write_atomically(path: Path, data: bytes) -> None:
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


def _verify(reader: DecryptingReader, digest: str) -> None:
    sha = hashlib.sha256()
    for index in range(reader.segment_count):
        sha.update(reader.segment(index))
    if sha.hexdigest() != digest:
        raise ArtifactCorrupt(
            "The stored artifact does not match the checksum recorded at upload; it was not served.",
            extra={"expectedDigest": digest},
        )


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
