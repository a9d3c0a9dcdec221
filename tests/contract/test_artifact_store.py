"""The ArtifactStore contract, for every adapter: bytes in, the same bytes out, or a refusal."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiservice.application.ports import ArtifactStore
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.storage.local import LocalArtifactStore
from tests.fakes import InMemoryArtifactStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    yield LocalArtifactStore(tmp_path / "artifacts") if request.param == "local" else InMemoryArtifactStore()


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
