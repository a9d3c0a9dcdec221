"""The encrypted artifact format: a fixed header, then AES-256-GCM segments.

Body (the artifact file)::

    header   = MAGIC (8) | segment size (4, big endian) | file id (16 random bytes)      = 28 bytes
    segment  = AES-256-GCM(data key, nonce = counter (12, big endian),
                           aad = header | final flag (1)) -> ciphertext | tag (16)

Every segment holds ``segment size`` plaintext bytes but the last, which holds 0..size (0 only for an
empty artifact). The counter in the nonce fixes each segment's place, the final flag in the AAD
marks the last one: reordered, dropped, truncated or appended segments fail authentication. The
data key is random per artifact, so a counter nonce never repeats under one key.

The data key itself is not in the body: it lies wrapped under a master key in a small sidecar
(``<key>.envelope``, JSON: format, master key id, wrapped key) that rotation replaces atomically
without touching the body.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aiservice.domain.errors import ArtifactCorrupt

MAGIC = b"AISVENC\x01"
_HEADER = struct.Struct(">8sI16s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
DEFAULT_SEGMENT_BYTES = 1 << 20


def new_header(segment_bytes: int) -> bytes:
    return _HEADER.pack(MAGIC, segment_bytes, os.urandom(16))


def is_encrypted(path: Path) -> bool:
    """Whether the file starts with the envelope's magic (a plaintext artifact from before does not)."""
    with path.open("rb") as handle:
        return starts_sealed(handle)


def starts_sealed(handle: BinaryIO) -> bool:
    """Whether a seekable body starts with the envelope's magic; the handle is left at its start."""
    handle.seek(0)
    magic = handle.read(len(MAGIC))
    handle.seek(0)
    return magic == MAGIC


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header: bytes, final: bool) -> bytes:
    return header + (b"\x01" if final else b"\x00")


def seal_segment(cipher: AESGCM, header: bytes, index: int, plain: bytes, final: bool) -> bytes:
    return cipher.encrypt(_nonce(index), plain, _aad(header, final))


class SegmentSealer:
    """Turns a stream of plaintext chunks into the body's bytes, one segment at a time.

    A full segment is held back until more bytes arrive, so the last one can be marked final."""

    def __init__(self, data_key: bytes, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.data_key = data_key
        self._cipher = AESGCM(data_key)
        self._size = segment_bytes
        self.header = new_header(segment_bytes)
        self._buffer = bytearray()
        self._index = 0

    def feed(self, chunk: bytes | memoryview) -> list[bytes]:
        self._buffer += chunk
        out: list[bytes] = []
        while len(self._buffer) > self._size:
            out.append(self._seal(bytes(self._buffer[: self._size]), final=False))
            del self._buffer[: self._size]
        return out

    def finish(self) -> bytes:
        sealed = self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()
        return sealed

    def _seal(self, plain: bytes, final: bool) -> bytes:
        sealed = seal_segment(self._cipher, self.header, self._index, plain, final)
        self._index += 1
        return sealed


class DecryptingReader(io.RawIOBase):
    """A seekable plaintext view of an encrypted body; reads open only the segments they touch.

    ``body`` is a file, or any seekable handle on the body (an object store's ranged reader), which the
    reader then owns and closes."""

    def __init__(self, body: Path | BinaryIO, data_key: bytes) -> None:
        super().__init__()
        self._file: BinaryIO = body.open("rb") if isinstance(body, Path) else body
        try:
            self._header = self._file.read(HEADER_BYTES)
            if len(self._header) < HEADER_BYTES:
                raise ArtifactCorrupt("The encrypted artifact is truncated.")
            magic, segment, _ = _HEADER.unpack(self._header)
            self._segment: int = segment
            if magic != MAGIC or self._segment <= 0:
                raise ArtifactCorrupt("The encrypted artifact's header is damaged.")
            body_bytes = self._file.seek(0, io.SEEK_END) - HEADER_BYTES
            sealed = self._segment + TAG_BYTES
            self._count: int = max(1, -(-body_bytes // sealed))
            self.size = body_bytes - self._count * TAG_BYTES
            if self.size < 0:
                raise ArtifactCorrupt("The encrypted artifact is truncated.")
        except BaseException:
            self._file.close()
            raise
        self._cipher = AESGCM(data_key)
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def segment(self, index: int) -> bytes:
        """The plaintext of one segment, authenticated; ``ArtifactCorrupt`` if it was altered."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        sealed = self._segment + TAG_BYTES
        self._file.seek(HEADER_BYTES + index * sealed)
        data = self._file.read(sealed)
        final = index == self._count - 1
        try:
            plain = self._cipher.decrypt(_nonce(index), data, _aad(self._header, final))
        except InvalidTag:
            raise ArtifactCorrupt(
                "The encrypted artifact failed authentication (tampered, truncated or a wrong key); "
                "it was not served.",
                extra={"segment": index},
            ) from None
        self._cached = (index, plain)
        return plain

    @property
    def segment_count(self) -> int:
        return self._count

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self.size or len(buffer) == 0:
            return 0
        index, skip = divmod(self._pos, self._segment)
        piece = self.segment(index)[skip : skip + len(buffer)]
        buffer[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._cached = None
        super().close()
