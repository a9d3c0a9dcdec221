"""Artifacts encrypted at rest: the envelope format, the encrypted store and master key rotation."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.infrastructure.storage.encrypted import EncryptedArtifactStore
from aiservice.infrastructure.storage.envelope import HEADER_BYTES, TAG_BYTES
from aiservice.infrastructure.storage.keys import (
    KeyConfigError,
    Keyring,
    MasterKey,
    fingerprint,
    load_keyring,
    read_key_file,
)
from aiservice.infrastructure.storage.local import LocalArtifactStore

SEGMENT = 64
MARKER = b"PLAINTEXT-MARKER-0123456789"
OLD = MasterKey("old", os.urandom(32))
NEW = MasterKey("new", os.urandom(32))


def _store(root: Path, keys: Keyring) -> EncryptedArtifactStore:
    return EncryptedArtifactStore(LocalArtifactStore(root), keys, segment_bytes=SEGMENT)


def _put(store: EncryptedArtifactStore | LocalArtifactStore, key: str, data: bytes) -> str:
    writer = store.writer(key, 10_000)
    for start in range(0, len(data), 50):  # chunks that straddle segment boundaries
        writer.write(data[start : start + 50])
    stored = writer.commit()
    assert stored.size_bytes == len(data)
    return stored.digest


def _read(store: EncryptedArtifactStore, key: str, digest: str) -> bytes:
    with store.open(key, digest) as handle:
        return handle.read()


@pytest.fixture
def payload() -> bytes:
    return (MARKER + os.urandom(300)) * 3


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 5 * SEGMENT, 5 * SEGMENT + 7])
def test_round_trip_returns_the_plaintext_and_records_its_digest(tmp_path: Path, size: int) -> None:
    store = _store(tmp_path, Keyring(NEW))
    data = os.urandom(size)
    digest = _put(store, "t/m/a", data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert _read(store, "t/m/a", digest) == data


def test_bytes_on_disk_hold_no_plaintext(tmp_path: Path, payload: bytes) -> None:
    store = _store(tmp_path, Keyring(NEW))
    _put(store, "t/m/a", payload)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert MARKER not in on_disk
    assert (tmp_path / "t/m/a").stat().st_size == HEADER_BYTES + len(
        payload
    ) + 16 * TAG_BYTES  # 981 bytes: 16 segments


@pytest.mark.parametrize(("start", "length"), [(0, 10), (60, 10), (SEGMENT * 3 + 5, 200), (900, 500)])
def test_ranges_read_the_right_plaintext_bytes(
    tmp_path: Path, payload: bytes, start: int, length: int
) -> None:
    store = _store(tmp_path, Keyring(NEW))
    digest = _put(store, "t/m/a", payload)
    with store.open("t/m/a", digest) as handle:
        handle.seek(start)
        assert handle.read(length) == payload[start : start + length]
        assert handle.seek(0, io.SEEK_END) == len(payload)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset", [3, 10, HEADER_BYTES + 5, -1])
def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path, payload: bytes, offset: int) -> None:
    store = _store(tmp_path, Keyring(NEW))
    digest = _put(store, "t/m/a", payload)
    path = tmp_path / "t/m/a"
    _flip(path, offset % path.stat().st_size)
    with pytest.raises(ArtifactCorrupt):
        _read(store, "t/m/a", digest)


@pytest.mark.parametrize("cut", [SEGMENT + TAG_BYTES, 1])  # at a segment boundary, and mid-segment
def test_a_truncated_artifact_is_refused(tmp_path: Path, payload: bytes, cut: int) -> None:
    store = _store(tmp_path, Keyring(NEW))
    digest = _put(store, "t/m/a", payload)
    path = tmp_path / "t/m/a"
    path.write_bytes(path.read_bytes()[:-cut] if cut == 1 else path.read_bytes()[: HEADER_BYTES + 2 * cut])
    with pytest.raises(ArtifactCorrupt, match="authentication"):
        _read(store, "t/m/a", digest)


def test_swapped_segments_are_refused(tmp_path: Path, payload: bytes) -> None:
    store = _store(tmp_path, Keyring(NEW))
    digest = _put(store, "t/m/a", payload)
    path = tmp_path / "t/m/a"
    raw, sealed = path.read_bytes(), SEGMENT + TAG_BYTES
    first, second = (
        raw[HEADER_BYTES : HEADER_BYTES + sealed],
        raw[HEADER_BYTES + sealed : HEADER_BYTES + 2 * sealed],
    )
    path.write_bytes(raw[:HEADER_BYTES] + second + first + raw[HEADER_BYTES + 2 * sealed :])
    with pytest.raises(ArtifactCorrupt):
        _read(store, "t/m/a", digest)


def test_a_wrong_master_key_is_refused(tmp_path: Path, payload: bytes) -> None:
    digest = _put(_store(tmp_path, Keyring(NEW)), "t/m/a", payload)
    impostor = _store(tmp_path, Keyring(MasterKey("new", os.urandom(32))))
    with pytest.raises(ArtifactCorrupt, match="does not unwrap"):
        _read(impostor, "t/m/a", digest)


def test_a_key_that_is_not_configured_is_named(tmp_path: Path, payload: bytes) -> None:
    digest = _put(_store(tmp_path, Keyring(OLD)), "t/m/a", payload)
    with pytest.raises(ArtifactCorrupt, match="'old', which is not configured"):
        _read(_store(tmp_path, Keyring(NEW)), "t/m/a", digest)


def test_a_digest_other_than_the_recorded_one_is_refused(tmp_path: Path, payload: bytes) -> None:
    store = _store(tmp_path, Keyring(NEW))
    _put(store, "t/m/a", payload)
    with pytest.raises(ArtifactCorrupt, match="checksum"):
        _read(store, "t/m/a", "0" * 64)


def test_plaintext_artifacts_written_before_encryption_still_read(tmp_path: Path, payload: bytes) -> None:
    digest = _put(LocalArtifactStore(tmp_path), "t/m/old", payload)
    assert _read(_store(tmp_path, Keyring(NEW)), "t/m/old", digest) == payload


def test_the_limit_counts_plaintext_bytes(tmp_path: Path) -> None:
    writer = _store(tmp_path, Keyring(NEW)).writer("t/m/a", 100)
    writer.write(b"x" * 100)
    with pytest.raises(PayloadTooLarge):
        writer.write(b"x")
    assert not (tmp_path / "t/m/a").exists()


def test_rotation_rewraps_keys_without_rewriting_bodies(tmp_path: Path, payload: bytes) -> None:
    digests = {
        key: _put(_store(tmp_path, Keyring(OLD)), key, payload + key.encode()) for key in ("t/a", "u/b")
    }
    bodies = {key: (tmp_path / key).read_bytes() for key in digests}
    report = _store(tmp_path, Keyring(NEW, [OLD])).rotate()
    assert (report.rewrapped, report.current, report.failed) == (2, 0, [])
    assert {key: (tmp_path / key).read_bytes() for key in digests} == bodies
    without_old = _store(tmp_path, Keyring(NEW))
    for key, digest in digests.items():
        assert _read(without_old, key, digest) == payload + key.encode()
    assert without_old.rotate().current == 2


def test_rotation_reports_what_it_cannot_unwrap(tmp_path: Path, payload: bytes) -> None:
    _put(_store(tmp_path, Keyring(OLD)), "t/a", payload)
    assert _store(tmp_path, Keyring(NEW)).rotate().failed == ["t/a"]


def test_a_decrypted_copy_is_private_and_goes_with_its_artifact(tmp_path: Path, payload: bytes) -> None:
    store = _store(tmp_path, Keyring(NEW))
    digest = _put(store, "t/m/a.onnx", payload)
    copy = store.local_path("t/m/a.onnx", digest)
    assert copy.read_bytes() == payload
    assert copy.suffix == ".onnx"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    store.delete("t/m/a.onnx")
    assert not copy.exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_stale_decrypted_copies_are_swept(tmp_path: Path, payload: bytes) -> None:
    store = EncryptedArtifactStore(LocalArtifactStore(tmp_path), Keyring(NEW), plaintext_ttl_seconds=0)
    first = store.local_path("t/a", _put(store, "t/a", payload))
    store.local_path("t/b", _put(store, "t/b", payload[:10]))
    assert not first.exists()


def _b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def test_key_list_makes_the_first_key_current_and_names_unnamed_keys_by_fingerprint() -> None:
    keys = load_keyring(None, f"new:{_b64(NEW.secret)}, {_b64(OLD.secret)}", None)
    assert keys is not None
    assert keys.current.id == "new"
    assert keys.ids == sorted(["new", fingerprint(OLD.secret)])


def test_key_file_in_json_names_its_current_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        json.dumps({"current": "new", "keys": {"old": _b64(OLD.secret), "new": _b64(NEW.secret)}})
    )
    keys = read_key_file(path)
    assert (keys.current, keys.ids) == (NEW, ["new", "old"])


@pytest.mark.parametrize(
    ("single", "listed"),
    [
        ("not base64!", None),
        (_b64(b"short"), None),
        (None, f"a:{_b64(OLD.secret)},a:{_b64(NEW.secret)}"),
        ("x", "y"),
    ],
    ids=["not-base64", "short", "duplicate-id", "both-settings"],  # the keys are random: never in ids
)
def test_unusable_key_settings_are_refused_without_echoing_keys(
    single: str | None, listed: str | None
) -> None:
    with pytest.raises(KeyConfigError) as caught:
        load_keyring(single, listed, None)
    assert _b64(OLD.secret) not in str(caught.value)


def test_no_key_means_encryption_is_off() -> None:
    assert load_keyring(None, None, None) is None
    assert repr(NEW) == "MasterKey(id='new')"
