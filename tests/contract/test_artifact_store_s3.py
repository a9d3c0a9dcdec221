"""What only the S3 artifact store does, against a real S3 API (moto's server): multipart uploads that
leave nothing behind, a cache that fetches each digest once, reads pinned to the bytes verified,
encryption at rest over S3, and the store chosen by ``ARTIFACT_STORE_URL``."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.artifact_keys import new_artifact_key
from aiservice.bootstrap import ConfigurationError, artifact_store, bootstrap
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge, Unavailable
from aiservice.infrastructure.storage.encrypted import EncryptedArtifactStore
from aiservice.infrastructure.storage.keys import Keyring, MasterKey
from aiservice.infrastructure.storage.s3 import MIN_PART_BYTES, S3ArtifactStore
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import make_settings
from tests.contract.test_artifact_store import new_bucket, put
from tests.helpers import create_model, iris_model_bytes, upload
from tests.moto_s3 import CREDENTIALS, MotoServer

PART = MIN_PART_BYTES


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    return new_bucket(moto_server)


@pytest.fixture
def store(moto_server: MotoServer, bucket: str, tmp_path: Path) -> S3ArtifactStore:
    return S3ArtifactStore(
        f"s3://{bucket}/models", moto_server.options.storage_options(), tmp_path / "cache", part_bytes=PART
    )


def objects(server: MotoServer, bucket: str) -> dict[str, bytes]:
    client = server.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def uploads(server: MotoServer, bucket: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return found


# -- writes --------------------------------------------------------------------------------------------


def test_a_large_artifact_goes_up_in_parts_while_it_is_written(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    writer = store.writer("t/m/a", 1 << 30)
    writer.write(os.urandom(PART + 10))
    (pending,) = uploads(moto_server, bucket)
    parts = moto_server.client().list_parts(Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"])
    assert [p["Size"] for p in parts["Parts"]] == [PART]  # sent; only the 10 bytes over are held
    assert objects(moto_server, bucket) == {}  # nothing visible before the commit
    writer.commit()
    assert uploads(moto_server, bucket) == []
    assert [len(body) for body in objects(moto_server, bucket).values()] == [PART + 10]


def test_a_small_artifact_is_one_object_under_the_prefix(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    put(store, "t/m/a", b"abc")
    assert objects(moto_server, bucket) == {"models/t/m/a": b"abc"}


def test_past_the_limit_the_multipart_upload_is_aborted(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    writer = store.writer("t/m/a", PART + 100)
    writer.write(os.urandom(PART + 50))
    assert len(uploads(moto_server, bucket)) == 1
    with pytest.raises(PayloadTooLarge):
        writer.write(b"x" * 51)
    assert uploads(moto_server, bucket) == []
    assert objects(moto_server, bucket) == {}


def test_an_aborted_multipart_upload_leaves_nothing(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    writer = store.writer("t/m/a", 1 << 30)
    writer.write(os.urandom(2 * PART))
    writer.abort()
    writer.abort()
    assert uploads(moto_server, bucket) == []
    assert objects(moto_server, bucket) == {}


def test_uploads_a_dead_writer_left_are_aborted_once_stale(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    key = new_artifact_key("acme", str(uuid.uuid4()))
    store.writer(key, 1 << 30).write(os.urandom(PART))  # never committed nor aborted
    moto_server.client().create_multipart_upload(Bucket=bucket, Key="models/not-the-services")
    # moto says every upload began on 2010-11-10: a cutoff before that finds it still in progress
    assert store.sweep_stale(datetime(2010, 1, 1, tzinfo=UTC)).files == 0
    assert store.sweep_stale(utcnow()).files == 1
    assert [u["Key"] for u in uploads(moto_server, bucket)] == ["models/not-the-services"]


# -- reads ---------------------------------------------------------------------------------------------


def test_bytes_changed_in_the_bucket_are_refused(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    digest = put(store, "t/m/a", b"original")
    moto_server.client().put_object(Bucket=bucket, Key="models/t/m/a", Body=b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.open("t/m/a", digest)
    with pytest.raises(ArtifactCorrupt):
        store.local_path("t/m/a", digest)
    assert not list(store.cache_dir.glob("[0-9a-f]*"))  # nothing unverified is cached


def test_reads_after_verification_are_pinned_to_the_verified_object(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    digest = put(store, "t/m/a", os.urandom(4 * PART + 1))  # more than the read-ahead keeps
    with store.open("t/m/a", digest) as handle:
        moto_server.client().put_object(Bucket=bucket, Key="models/t/m/a", Body=b"replaced")
        handle.seek(PART)  # outside what the verification pass left in the read-ahead
        with pytest.raises(OSError, match="no longer exists"):
            handle.read(100)


def test_local_path_fetches_each_digest_once(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    data = b"model bytes" * 1000
    digest = put(store, "t/m/a", data)
    first = store.local_path("t/m/a", digest)
    moto_server.client().delete_object(Bucket=bucket, Key="models/t/m/a")  # S3 cannot serve it now
    assert store.local_path("t/m/a", digest) == first
    assert first.read_bytes() == data
    with store.open("t/m/a", digest) as handle:  # downloads use the host's copy too
        assert handle.read() == data


def test_a_damaged_cached_copy_is_fetched_again(store: S3ArtifactStore) -> None:
    digest = put(store, "t/m/a", b"original")
    copy = store.local_path("t/m/a", digest)
    copy.write_bytes(b"damaged!")
    assert store.local_path("t/m/a", digest).read_bytes() == b"original"


def test_delete_removes_the_object_and_this_hosts_copy(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    digest = put(store, "t/m/a", b"abc")
    copy = store.local_path("t/m/a", digest)
    store.delete("t/m/a")
    assert not copy.exists()
    assert objects(moto_server, bucket) == {}
    with pytest.raises(ArtifactCorrupt):
        store.local_path("t/m/a", digest)


def test_the_cache_evicts_the_least_recently_used_copy_but_not_one_in_use(
    moto_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    store = S3ArtifactStore(
        f"s3://{bucket}", moto_server.options.storage_options(), tmp_path / "cache", cache_max_bytes=2500
    )
    copies = [store.local_path(key, put(store, key, key.encode() * 200)) for key in ("t/m/a", "t/m/b")]
    (store.cache_dir / f".{copies[0].name}.link").mkdir()  # a loader works beside the oldest
    newest = store.local_path("t/m/c", put(store, "t/m/c", b"c" * 1000))  # 3000 bytes: one must go
    assert [c.exists() for c in [*copies, newest]] == [True, False, True]


def test_keys_that_could_leave_the_prefix_are_refused(store: S3ArtifactStore) -> None:
    for key in ["../outside", "/abs", "t/../../x", "t//x", "t/./x", ""]:
        with pytest.raises(ValueError, match="escapes"):
            store.writer(key, 10)


def test_an_unreachable_store_is_unavailable(tmp_path: Path) -> None:
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    store = S3ArtifactStore("s3://nowhere/x", options, tmp_path / "cache")
    with pytest.raises(Unavailable):
        store.open("t/m/a", "0" * 64)


# -- the sweeper's view --------------------------------------------------------------------------------


def test_stored_keys_are_artifacts_only(store: S3ArtifactStore, moto_server: MotoServer, bucket: str) -> None:
    assert list(store.files()) == []  # nothing under the prefix yet
    put(store, "t/m/a", b"abc")
    store.write_bytes("t/m/a.envelope", b"{}")
    moto_server.client().put_object(Bucket=bucket, Key="models/.probe-1", Body=b"")
    moto_server.client().put_object(Bucket=bucket, Key="models2/t/m/b", Body=b"not ours")
    store.check_writable()
    assert [s.key for s in store.files()] == ["t/m/a", "t/m/a.envelope"]
    (stored,) = store.stored_keys()
    assert (stored.key, stored.size_bytes) == ("t/m/a", 3)
    assert abs(stored.modified_at - utcnow()) < timedelta(minutes=5)


def test_downloads_and_loader_temporaries_a_crash_left_on_this_host_are_swept(store: S3ArtifactStore) -> None:
    digest = put(store, "t/m/a", b"abc")
    copy = store.local_path("t/m/a", digest)
    kept = store.cache_dir / f".{copy.name}.unpacked"  # a loader's folder beside a copy still here
    left = [store.cache_dir / ".download-x", store.cache_dir / f".{'0' * 64}.unpacked"]
    for path in [kept, *left]:
        path.mkdir()
    assert store.sweep_stale(utcnow() + timedelta(seconds=5)).files == 2
    assert kept.exists() and copy.exists() and not any(p.exists() for p in left)


# -- the whole service on S3 ---------------------------------------------------------------------------


@pytest.fixture
def s3_service(
    engine: Engine, database_url: str, tmp_path: Path, moto_server: MotoServer, bucket: str
) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        artifact_store_url=f"s3://{bucket}/artifacts",
        s3_endpoint_url=moto_server.endpoint,
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
        aws_default_region=CREDENTIALS["region"],
    )
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        yield client, settings
    container.close()


def test_the_service_uploads_predicts_and_serves_ranges_from_s3(
    s3_service: tuple[TestClient, Settings], moto_server: MotoServer, bucket: str
) -> None:
    client, settings = s3_service
    token = client.app.state.container.tokens.issue("tester", "acme", ["admin"], 3600)  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
    features = [{"name": f"f{i}", "type": "number"} for i in range(4)]
    create_model(client, headers, "iris", inputSchema={"type": "tabular", "features": features})
    assert upload(client, headers, "iris").status_code == 201
    predicted = client.post(
        "/api/v1/ai/models/iris/predict", json={"input": {f"f{i}": 1.0 for i in range(4)}}, headers=headers
    )
    assert predicted.status_code == 200, predicted.text
    data = iris_model_bytes()
    (stored,) = objects(moto_server, bucket).values()
    assert stored == data
    ranged = client.get(
        "/api/v1/ai/models/iris/versions/1/artifact", headers={**headers, "Range": "bytes=100-199"}
    )
    assert (ranged.status_code, ranged.content) == (206, data[100:200])
    assert not settings.artifact_path.exists()  # nothing on this host but the cache
    assert [p.read_bytes() for p in settings.artifact_cache_path.glob("[0-9a-f]*")] == [data]


# -- encryption at rest over S3 ------------------------------------------------------------------------


def test_encrypted_on_s3_the_bucket_holds_ciphertext_only(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    encrypted = EncryptedArtifactStore(store, Keyring(MasterKey("k1", os.urandom(32))), segment_bytes=4096)
    data = b"PLAINTEXT-MARKER" * 2000
    digest = put(encrypted, "t/m/a", data)
    stored = objects(moto_server, bucket)
    assert sorted(stored) == ["models/t/m/a", "models/t/m/a.envelope"]
    assert not any(b"PLAINTEXT-MARKER" in body for body in stored.values())
    with encrypted.open("t/m/a", digest) as handle:
        handle.seek(16 * 1000)
        assert handle.read(16) == b"PLAINTEXT-MARKER"
    copy = encrypted.local_path("t/m/a", digest)
    assert copy.read_bytes() == data and copy.parent == store.cache_dir / ".decrypted"
    encrypted.delete("t/m/a")
    assert objects(moto_server, bucket) == {} and not copy.exists()


def test_encrypted_on_s3_keys_rotate_without_touching_bodies(
    store: S3ArtifactStore, moto_server: MotoServer, bucket: str
) -> None:
    old, new = MasterKey("old", os.urandom(32)), MasterKey("new", os.urandom(32))
    digest = put(EncryptedArtifactStore(store, Keyring(old)), "t/m/a", b"secret bytes")
    body = objects(moto_server, bucket)["models/t/m/a"]
    report = EncryptedArtifactStore(store, Keyring(new, [old])).rotate()
    assert (report.rewrapped, report.current, report.failed) == (1, 0, [])
    assert objects(moto_server, bucket)["models/t/m/a"] == body
    with EncryptedArtifactStore(store, Keyring(new)).open("t/m/a", digest) as handle:
        assert handle.read() == b"secret bytes"


# -- chosen by the settings ----------------------------------------------------------------------------


def s3_settings(server: MotoServer, tmp_path: Path, **values: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        s3_endpoint_url=server.endpoint,
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
        aws_default_region=CREDENTIALS["region"],
        **values,
    )


def test_artifact_store_url_selects_s3_with_the_s3_settings(
    moto_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    chosen = artifact_store(s3_settings(moto_server, tmp_path, artifact_store_url=f"s3://{bucket}/a/b/"))
    assert isinstance(chosen, S3ArtifactStore)
    assert (chosen.bucket, chosen.prefix, chosen.cache_dir) == (bucket, "a/b", tmp_path / "artifact-cache")
    digest = put(chosen, "t/m/a", b"abc")
    assert objects(moto_server, bucket) == {"a/b/t/m/a": b"abc"}
    assert chosen.local_path("t/m/a", digest).read_bytes() == b"abc"


def test_an_encryption_key_wraps_the_s3_store(moto_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    settings = s3_settings(
        moto_server,
        tmp_path,
        artifact_store_url=f"s3://{bucket}",
        artifact_encryption_key=base64.b64encode(os.urandom(32)).decode(),
    )
    chosen = artifact_store(settings)
    assert isinstance(chosen, EncryptedArtifactStore) and isinstance(chosen.inner, S3ArtifactStore)


def test_without_a_store_url_artifacts_stay_on_this_host(tmp_path: Path) -> None:
    chosen = artifact_store(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert not isinstance(chosen, S3ArtifactStore)


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://Bad_Bucket/x"])
def test_a_store_url_that_is_not_s3_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises((ValueError, ConfigurationError)):
        artifact_store(Settings(_env_file=None, data_dir=tmp_path, artifact_store_url=url))  # type: ignore[call-arg]
