"""Artifacts in an S3 bucket (AWS, MinIO or any S3 API), through s3fs; selected by ``ARTIFACT_STORE_URL``.

Writes stream: bytes are hashed and counted as they arrive and sent as a multipart upload, one part of
``part_bytes`` at a time (the most held in memory); an artifact smaller than one part goes in a single
PUT at commit. Past the limit, on abort or on any failure the multipart upload is aborted, so neither
an object nor parts remain; parts a dead process left are aborted by ``sweep_stale``. The object only
appears on commit (completing an upload is atomic), as the local store's rename.

Reads are verified as the local store's: ``open`` hashes the object through and hands out the same
handle rewound, whose reads are ranged GETs pinned to the ETag the bytes were verified under (an
object replaced meanwhile fails the read instead of serving other bytes). ``local_path`` downloads
into a cache folder on this host, one file per digest, hashing as it writes; a copy appears only once
it matched, so the same bytes are fetched once per host, and ``open`` serves a cached copy too. The
cache keeps the least recently handed-out copies under ``cache_max_bytes``, never evicting one a
loader still unpacks or links beside (``.<name>.*``). Names starting with a dot, in the bucket and in
the cache folder, are the store's own (probes, downloads in progress, the encrypted store's files).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from aiservice.application.artifact_keys import is_artifact_key
from aiservice.application.leftovers import StoredKey, Swept
from aiservice.application.ports import StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, DomainError, PayloadTooLarge, Unavailable
from aiservice.infrastructure.stale_files import remove_stale
from aiservice.infrastructure.storage.local import SIDECAR_SUFFIX

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024**2  # S3's smallest part but the last
_CHUNK = 8 * 1024**2
_DIGEST = re.compile(r"[0-9a-f]{64}")
_COPY = re.compile(r"[0-9a-f]{64}(\.onnx)?")
_TEMPORARY = re.compile(r"\.([0-9a-f]{64}(?:\.onnx)?)\..+")
_KEYS = ".keys"  # which copy each key was last handed out as, so ``delete`` removes it
_DOWNLOAD = ".download-"
_PROBE = ".probe-"


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    return parts.netloc, parts.path.strip("/")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The artifact is larger than the limit of {limit} bytes.", extra={"limit": limit})


def _corrupt(digest: str) -> ArtifactCorrupt:
    return ArtifactCorrupt(
        "The stored artifact does not match the checksum recorded at upload; it was not served.",
        extra={"expectedDigest": digest},
    )


class S3ArtifactWriter:
    """A multipart upload in progress; hashed and bounded on what it was given."""

    def __init__(
        self, fs: Any, bucket: str, object_key: str, key: str, max_bytes: int, part_bytes: int
    ) -> None:
        self._fs = fs
        self._target = {"Bucket": bucket, "Key": object_key}
        self._key = key
        self._max = max_bytes
        self._part = part_bytes
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, chunk: bytes | memoryview) -> None:
        if self._done:
            raise ValueError("the artifact writer is closed")
        self._size += len(chunk)
        if self._size > self._max:
            self.abort()
            raise _too_large(self._max)
        self._hash.update(chunk)
        self._buffer += chunk
        try:
            while len(self._buffer) >= self._part:
                self._send(bytes(self._buffer[: self._part]))
                del self._buffer[: self._part]
        except BaseException:
            self.abort()
            raise

    def commit(self) -> StoredArtifact:
        if self._done:
            raise ValueError("the artifact writer is closed")
        try:
            if self._upload_id is None:
                _call(self._fs, "put_object", Body=bytes(self._buffer), **self._target)
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                _call(
                    self._fs,
                    "complete_multipart_upload",
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    **self._target,
                )
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._buffer = bytearray()
        return StoredArtifact(key=self._key, digest=self._hash.hexdigest(), size_bytes=self._size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            _call(self._fs, "abort_multipart_upload", UploadId=self._upload_id, **self._target)
        except Exception:  # its parts are aborted by the next sweep of stale uploads
            log.warning("aborting the upload of %s failed", self._key, exc_info=True)

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = str(_call(self._fs, "create_multipart_upload", **self._target)["UploadId"])
        number = len(self._parts) + 1
        sent = _call(
            self._fs, "upload_part", UploadId=self._upload_id, PartNumber=number, Body=part, **self._target
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})


class S3ArtifactStore:
    """Implements ``ArtifactStore`` (and ``ArtifactInventory``, ``WorkArea``) on ``s3://bucket/prefix``.

    ``storage_options`` are s3fs's keyword arguments (``S3Options.storage_options()``: endpoint,
    credentials, timeouts), passed explicitly; ``cache_dir`` is a folder on this host."""

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any],
        cache_dir: Path,
        *,
        cache_max_bytes: int = 20 * 1024**3,
        part_bytes: int = 8 * 1024**2,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"a part must be at least {MIN_PART_BYTES} bytes")
        self.bucket, self.prefix = parse_store_url(url)
        self._key_prefix = f"{self.prefix}/" if self.prefix else ""  # of every object key in the bucket
        self._root = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        self._fs = _filesystem(storage_options)
        self._part = part_bytes
        self._cache_max = cache_max_bytes
        self.cache_dir = cache_dir.resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @property
    def work_dir(self) -> Path:
        """The folder on this host where a wrapping store may keep its own files (hidden names)."""
        return self.cache_dir

    # -- names ---------------------------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        """``prefix/key`` in the bucket; a key that could name something outside the prefix is refused."""
        segments = key.split("/")
        if not key or "\\" in key or any(s in ("", ".", "..") for s in segments):
            raise ValueError(f"artifact key {key!r} escapes the store")
        return self._key_prefix + key

    def _object(self, key: str) -> str:
        """``bucket/prefix/key``, as s3fs names it."""
        return f"{self.bucket}/{self._object_key(key)}"

    # -- writes --------------------------------------------------------------------------------------

    def writer(self, key: str, max_bytes: int) -> S3ArtifactWriter:
        return S3ArtifactWriter(self._fs, self.bucket, self._object_key(key), key, max_bytes, self._part)

    def write_bytes(self, key: str, data: bytes) -> None:
        """A small object, written whole in one PUT (atomic in S3)."""
        _call(self._fs, "put_object", Bucket=self.bucket, Key=self._object_key(key), Body=data)

    def delete(self, key: str) -> None:
        """Remove the object (absent already is fine) and the copy this host last handed out for it."""
        _call(self._fs, "delete_object", Bucket=self.bucket, Key=self._object_key(key))
        marker = self._marker(key)
        with contextlib.suppress(FileNotFoundError):
            name = marker.read_text(encoding="utf-8")
            if _COPY.fullmatch(name):
                (self.cache_dir / name).unlink(missing_ok=True)
            marker.unlink()

    def check_writable(self) -> None:
        """A probe object written and removed, and the cache folder writable."""
        probe = self._object_key(f"{_PROBE}{uuid.uuid4().hex}")
        _call(self._fs, "put_object", Bucket=self.bucket, Key=probe, Body=b"")
        _call(self._fs, "delete_object", Bucket=self.bucket, Key=probe)
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, prefix=_PROBE):
            pass

    # -- reads ---------------------------------------------------------------------------------------

    def open_raw(self, key: str) -> BinaryIO:
        """The object unverified: a seekable handle whose reads are ranged GETs pinned to its ETag."""
        try:
            with _s3_errors():
                handle = self._fs.open(self._object(key), "rb", block_size=_CHUNK, cache_type="readahead")
        except FileNotFoundError as exc:
            raise ArtifactCorrupt(f"The artifact {key!r} is missing from the store.") from exc
        return cast(BinaryIO, handle)

    def read_bytes(self, key: str) -> bytes:
        """A small object whole; ``FileNotFoundError`` when there is none."""
        with _s3_errors():
            return bytes(self._fs.cat_file(self._object(key)))

    def open(self, key: str, digest: str) -> BinaryIO:
        cached = self._open_copy(key, digest)
        if cached is not None:
            return cached
        handle = self.open_raw(key)
        try:
            with _s3_errors():
                actual = _hash_of(handle)
            if actual != digest:
                raise _corrupt(digest)
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return handle

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        """The cached copy of these bytes, downloaded (and checked) the first time this host needs them.

        A copy already here is hashed again unless ``verify`` is false; a download is always checked."""
        copy = self._copy(key, digest)
        if copy.is_file() and (not verify or _file_digest(copy) == digest):
            os.utime(copy)  # handed out again: the last to be evicted
            self._remember(key, copy)
            return copy
        with self.open_raw(key) as remote:
            self._download(remote, digest, copy)
        self._remember(key, copy)
        self._evict(keep=copy)
        return copy

    def exists(self, key: str) -> bool:
        with _s3_errors():
            return bool(self._fs.exists(self._object(key)))

    # -- leftovers -----------------------------------------------------------------------------------

    def files(self) -> Iterator[StoredKey]:
        """Every object under the prefix outside the store's hidden names, sidecars included."""
        with _s3_errors():
            found: dict[str, dict[str, Any]] = self._fs.find(self._root, detail=True)
        for name, info in sorted(found.items()):
            key = name.removeprefix(f"{self._root}/")
            if key == name or any(part.startswith(".") for part in key.split("/")):
                continue
            yield StoredKey(key, _utc(info["LastModified"]), int(info["size"]))

    def stored_keys(self) -> Iterator[StoredKey]:
        """Every committed artifact (``ArtifactInventory``)."""
        return (f for f in self.files() if not f.key.endswith(SIDECAR_SUFFIX))

    def sweep_stale(self, cutoff: datetime) -> Swept:
        """What writers that died left (``WorkArea``): multipart uploads of artifact keys begun before
        ``cutoff`` are aborted (counted, not sized), and on this host downloads in progress, probes and
        loaders' temporaries whose copy is gone, last modified before ``cutoff``."""
        swept = Swept()
        listed = _call(self._fs, "list_multipart_uploads", Bucket=self.bucket, Prefix=self._key_prefix)
        for upload in listed.get("Uploads", []):
            ours = is_artifact_key(str(upload["Key"]).removeprefix(self._key_prefix))
            if ours and _utc(upload["Initiated"]) < cutoff:
                _call(
                    self._fs,
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
                swept += Swept(1, 0)
        names = {entry.name for entry in self.cache_dir.iterdir()}
        local = [
            self.cache_dir / name
            for name in names
            if name.startswith((_DOWNLOAD, _PROBE)) or _orphaned_temporary(name, names)
        ]
        return swept + remove_stale(local, cutoff)

    # -- the cache on this host ----------------------------------------------------------------------

    def _copy(self, key: str, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ArtifactCorrupt(f"The artifact {key!r} has no valid recorded checksum.")
        return self.cache_dir / f"{digest}{'.onnx' if key.endswith('.onnx') else ''}"

    def _open_copy(self, key: str, digest: str) -> BinaryIO | None:
        """This host's copy of the bytes, verified, when there is one (a damaged one is removed)."""
        copy = self._copy(key, digest)
        try:
            handle = copy.open("rb")
        except FileNotFoundError:
            return None
        try:
            if _hash_of(handle) == digest:
                handle.seek(0)
                return handle
        except BaseException:
            handle.close()
            raise
        handle.close()
        copy.unlink(missing_ok=True)
        return None

    def _marker(self, key: str) -> Path:
        return self.cache_dir / _KEYS / hashlib.sha256(key.encode()).hexdigest()

    def _remember(self, key: str, copy: Path) -> None:
        marker = self._marker(key)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(copy.name, encoding="utf-8")

    def _download(self, remote: BinaryIO, digest: str, copy: Path) -> None:
        fd, staging = tempfile.mkstemp(dir=self.cache_dir, prefix=_DOWNLOAD)
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while chunk := _read(remote):
                    sha.update(chunk)
                    out.write(chunk)
            if sha.hexdigest() != digest:
                raise _corrupt(digest)
            os.replace(staging, copy)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

    def _evict(self, keep: Path) -> None:
        """Least recently handed-out copies go while the cache is over its bound."""
        names = {entry.name for entry in self.cache_dir.iterdir()}
        copies: list[tuple[float, int, Path]] = []
        for name in names:
            if _COPY.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    stat = (self.cache_dir / name).stat()
                    copies.append((stat.st_mtime, stat.st_size, self.cache_dir / name))
        total = sum(size for _, size, _ in copies)
        for _, size, path in sorted(copies):
            if total <= self._cache_max:
                return
            if path == keep or _in_use(path.name, names):
                continue
            path.unlink(missing_ok=True)
            total -= size


def _filesystem(storage_options: Mapping[str, Any]) -> Any:
    try:
        import s3fs  # type: ignore[import-untyped]
    except ImportError as exc:  # the optional extra
        raise RuntimeError("An s3:// artifact store needs s3fs: install aiservice[s3].") from exc
    return s3fs.S3FileSystem(**storage_options)


@contextlib.contextmanager
def _s3_errors() -> Iterator[None]:
    """S3's failures as the service's: an object replaced while read is corrupt for this read, and
    anything else but a missing object (which callers handle) means the store cannot be used now."""
    try:
        yield
    except (DomainError, FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # botocore, aiohttp and s3fs errors alike
        if type(exc).__name__ == "FileExpired":  # s3fs: the ETag the read was pinned to is gone
            raise ArtifactCorrupt(
                "The stored artifact was replaced while it was read; it was not served."
            ) from exc
        raise Unavailable(f"The artifact store could not be used: {exc}") from exc


def _call(fs: Any, method: str, **kwargs: Any) -> dict[str, Any]:
    with _s3_errors():
        answer: dict[str, Any] = fs.call_s3(method, **kwargs)
        return answer


def _read(remote: BinaryIO) -> bytes:
    with _s3_errors():
        return remote.read(_CHUNK)


def _hash_of(handle: BinaryIO) -> str:
    sha = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return ""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _in_use(copy: str, names: set[str]) -> bool:
    """Whether a loader keeps something beside the copy (``.<copy>.*``: a link, an unpacked archive)."""
    return any(name.startswith(f".{copy}.") for name in names)


def _orphaned_temporary(name: str, names: set[str]) -> bool:
    """Whether ``name`` is a loader's temporary (``.<copy>.<random>``) whose copy is gone."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and match.group(1) not in names
