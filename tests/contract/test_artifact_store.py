"""The ArtifactStore contract, for every adapter: bytes in, the same bytes out, or a refusal.

Run on the local store, on S3 (a real moto server) and on the encrypted store over each of them."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiservice.application.ports import ArtifactStore
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.storage.encrypted import EncryptedArtifactStore
from aiservice.infrastructure.storage.keys import Keyring, MasterKey
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.infrastructure.storage.s3 import MIN_PART_BYTES, S3ArtifactStore
from tests.fakes import InMemoryArtifactStore
from tests.moto_s3 import MotoServer

BACKENDS = ["local", "memory", "s3", "local-encrypted", "s3-encrypted"]


def new_bucket(server: MotoServer) -> str:
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return bucket


def s3_store(server: MotoServer, folder: Path, **options: int) -> S3ArtifactStore:
    url = f"s3://{new_bucket(server)}/models"
    return S3ArtifactStore(url, server.options.storage_options(), folder / "cache", **options)


def keyring() -> Keyring:
    return Keyring(MasterKey("test", os.urandom(32)))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    backend: str = request.param
    if backend == "memory":
        yield InMemoryArtifactStore()
        return
    inner: LocalArtifactStore | S3ArtifactStore
    if backend.startswith("s3"):
        inner = s3_store(request.getfixturevalue("moto_server"), tmp_path, part_bytes=MIN_PART_BYTES)
    else:
        inner = LocalArtifactStore(tmp_path / "artifacts")
    yield EncryptedArtifactStore(inner, keyring()) if backend.endswith("-encrypted") else inner


def put(store: ArtifactStore, key: str, data: bytes, max_bytes: int = 1 << 30) -> str:
    writer = store.writer(key, max_bytes)
    for i in range(0, len(data), 7000):
        writer.write(data[i : i + 7000])
    return writer.commit().digest


def test_bytes_come_back_verified(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 300
    digest = put(store, "t/m/a", data)
    assert digest == hashlib.sha256(data).hexdigest()
    with store.open("t/m/a", digest) as handle:
        assert handle.read() == data


def test_wrong_digest_is_refused(store: ArtifactStore) -> None:
    put(store, "t/m/a", b"abc")
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/a", hashlib.sha256(b"abd").hexdigest())


def test_missing_artifact_is_corrupt_not_a_crash(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/never", "0" * 64)


def test_writes_past_the_limit_are_refused(store: ArtifactStore) -> None:
    writer = store.writer("t/m/big", 10)
    writer.write(b"12345")
    with pytest.raises(PayloadTooLarge):
        writer.write(b"123456")


def test_deleted_artifact_is_gone_and_delete_is_idempotent(store: ArtifactStore) -> None:
    digest = put(store, "t/m/a", b"abc")
    store.delete("t/m/a")
    store.delete("t/m/a")
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/a", digest)


def test_aborted_artifact_is_never_readable(store: ArtifactStore) -> None:
    writer = store.writer("t/m/a", 100)
    writer.write(b"partial")
    writer.abort()
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/a", hashlib.sha256(b"partial").hexdigest())


def test_an_artifact_of_several_parts_comes_back_whole(store: ArtifactStore) -> None:
    data = os.urandom(2 * MIN_PART_BYTES + 12_345)  # three parts of an S3 multipart upload
    digest = put(store, "t/m/big", data)
    with store.open("t/m/big", digest) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == digest == hashlib.sha256(data).hexdigest()


def test_an_opened_artifact_reads_any_byte_range(store: ArtifactStore) -> None:
    data = os.urandom(300_000)
    digest = put(store, "t/m/a", data)
    with store.open("t/m/a", digest) as handle:
        handle.seek(123_456)
        assert handle.read(1000) == data[123_456:124_456]
        handle.seek(-10, io.SEEK_END)
        assert handle.read() == data[-10:]


@pytest.mark.parametrize("store", [b for b in BACKENDS if b != "memory"], indirect=True)
def test_local_path_holds_the_verified_bytes(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 100
    digest = put(store, "t/m/a", data)
    assert store.local_path("t/m/a", digest).read_bytes() == data
    with pytest.raises(ArtifactCorrupt):
        store.local_path("t/m/a", hashlib.sha256(b"other").hexdigest())


def test_local_store_leaves_no_staging_file_after_abort_or_refusal(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    aborted = store.writer("t/m/a", 100)
    aborted.write(b"partial")
    aborted.abort()
    refused = store.writer("t/m/b", 3)
    with pytest.raises(PayloadTooLarge):
        refused.write(b"toolong")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_local_store_detects_bytes_changed_on_disk(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = put(store, "t/m/a", b"original")
    (tmp_path / "t/m/a").write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/a", digest)


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "t/../../x"])
def test_local_store_refuses_keys_that_escape_its_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalArtifactStore(tmp_path / "root").writer(key, 10)
