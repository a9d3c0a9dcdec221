"""Where a training job may read its data: a user's dataset reference becomes a URI the worker can open,
or is refused.

A tenant names data three ways: a local path under one of the operator's dataset roots, ``dataset://NAME``
(something this tenant uploaded) or ``s3://bucket/key`` (when the operator configured S3). Everything else
is refused, and refusals never tell a tenant whether a path outside the roots exists.

A path may name a file or a folder: a local folder, or an S3 prefix (``s3://bucket/train/``, resolved
without its trailing slash); the readers decide what a folder holds (``listing.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from aiservice.domain.errors import FieldError, InvalidInput, Unavailable
from aiservice.infrastructure.datasets.listing import dataset_files
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.datasets.tables import DatasetError, display_name, filesystem

_CHUNK = 1 << 20
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_ALLOWED = "is not an existing file or folder inside the dataset folders this server allows"


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 (or an S3-compatible server such as MinIO or moto)."""

    endpoint_url: str | None = None  # None: AWS itself
    key: str | None = None  # None: botocore's usual credential chain (AWS_* variables, profiles, roles)
    secret: str | None = None
    region: str | None = None

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` / ``fsspec.open``.

        Listings are not cached: a long-lived worker must see objects uploaded after its first look.
        Connecting gives up after 5 s and 3 attempts: botocore's defaults (60 s, 5 attempts, each retried
        again by s3fs) would hold a submit request for minutes when S3 is unreachable.
        """
        options: dict[str, Any] = {
            "use_listings_cache": False,
            "config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 3, "mode": "standard"}},
        }
        if self.endpoint_url is not None:
            options["endpoint_url"] = self.endpoint_url
        if self.key is not None:
            options["key"] = self.key
        if self.secret is not None:
            options["secret"] = self.secret
        if self.region is not None:
            options["client_kwargs"] = {"region_name": self.region}
        return options


class DatasetLocator:
    """Turns a user's dataset reference into a URI the worker may read, refusing anything outside the
    operator's roots."""

    def __init__(self, roots: Sequence[Path], store: DatasetStore, s3: S3Options | None = None) -> None:
        self._roots = tuple(root.resolve() for root in roots)
        self._store = store
        self._s3 = s3

    def resolve(self, tenant_id: str, reference: str, field: str) -> str:
        """The resolved absolute local path, or ``s3://bucket/key``; raises ``InvalidInput`` naming ``field``.

        Local paths must exist and, after symlinks and ``..`` are resolved, lie under a root. S3 objects must
        exist; an S3 server that cannot be reached raises ``Unavailable``.
        """
        if reference.startswith("dataset://"):
            return self._uploaded(tenant_id, reference.removeprefix("dataset://"), field)
        if reference.startswith("s3://"):
            return self._s3_object(reference, field)
        if reference.startswith("file://"):
            parts = urlsplit(reference)
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise _refused(field, "must be a file:// URI of this server, like file:///data/train.csv")
            return self._local(unquote(parts.path), field)
        if reference.startswith("/"):
            return self._local(reference, field)
        raise _refused(field, "must be an absolute path, a file:// URI, dataset://NAME or s3://bucket/key")

    def fingerprint(self, uri: str) -> dict[str, Any]:
        """``{"uri", "sha256", "sizeBytes"}`` of a file, or of a folder (the sha256 of its sorted
        ``relative path, file sha256`` lines, and the total size). Streams in 1 MiB chunks."""
        fs, root = self._filesystem(uri)
        try:
            if not fs.isdir(root):
                digest, size = _sha256(fs.open(root, "rb", block_size=_CHUNK))
                return {"uri": uri, "sha256": digest, "sizeBytes": size}
            listing = hashlib.sha256()
            total = 0
            for relative, path in dataset_files(fs, root, display_name(uri)):
                digest, size = _sha256(fs.open(path, "rb", block_size=_CHUNK))
                listing.update(f"{relative}\0{digest}\n".encode())
                total += size
            return {"uri": uri, "sha256": listing.hexdigest(), "sizeBytes": total}
        except DatasetError:
            raise
        except Exception as exc:  # OSError, botocore and aiohttp errors: the data went away or S3 is down
            raise DatasetError(f"could not read {display_name(uri)} to fingerprint it: {exc}") from exc

    def storage_options(self, uri: str) -> dict[str, Any]:
        """What the readers pass to fsspec for ``uri``: nothing for local files, the S3 options for S3."""
        if not uri.startswith("s3://"):
            return {}
        if self._s3 is None:
            raise ValueError("S3 is not configured on this server")
        return self._s3.storage_options()

    def _local(self, raw: str, field: str) -> str:
        if "\0" in raw:
            raise _refused(field, _NOT_ALLOWED)
        try:
            path = Path(raw).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreadable, a symlink loop
            # Saying "does not exist" is only safe where the path would have been allowed.
            raise _refused(field, "does not exist" if self._would_be_inside(raw) else _NOT_ALLOWED) from None
        if not self._allowed(path) or not (path.is_file() or path.is_dir()):
            raise _refused(field, _NOT_ALLOWED)
        return str(path)

    def _would_be_inside(self, raw: str) -> bool:
        try:
            return self._allowed(Path(raw).resolve(strict=False))
        except (OSError, RuntimeError):
            return False

    def _allowed(self, path: Path) -> bool:
        # Uploads are reached through dataset://NAME only: a root above the store must not let one tenant
        # name another's upload by its path.
        if path.is_relative_to(self._store.root):
            return False
        return any(path.is_relative_to(root) for root in self._roots)

    def _uploaded(self, tenant_id: str, name: str, field: str) -> str:
        dataset = self._store.get(tenant_id, name)
        if dataset is None:
            raise _refused(field, f"there is no uploaded dataset named {name!r}")
        return str(dataset.path)

    def _s3_object(self, reference: str, field: str) -> str:
        if self._s3 is None:
            raise _refused(field, "s3:// datasets are not enabled on this server")
        bucket, _, key = reference.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket) or not key.strip("/"):
            raise _refused(field, "must look like s3://bucket/path/to/data")
        uri = f"s3://{bucket}/{key.rstrip('/')}"
        fs, path = self._filesystem(uri)
        try:
            exists = fs.exists(path)
        except PermissionError:
            exists = False
        except Exception as exc:  # botocore/aiohttp errors: S3 cannot be reached or answers nonsense
            raise Unavailable(f"S3 could not be reached to check {uri}: {exc}") from exc
        if not exists and reference.endswith("/"):
            message = f"{reference} is an empty prefix: no objects under it, or none this server may read"
            raise _refused(field, message)
        if not exists:
            raise _refused(field, f"{uri} does not exist or this server may not read it")
        return uri

    def _filesystem(self, uri: str) -> tuple[Any, str]:
        try:
            return filesystem(uri, self.storage_options(uri))
        except ImportError as exc:
            raise Unavailable("S3 support is not installed: install aiservice[s3]") from exc


def _refused(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[FieldError(field, message)])


def _sha256(handle: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
