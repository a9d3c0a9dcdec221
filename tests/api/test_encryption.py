"""Artifacts encrypted at rest, seen through the API: uploads, predictions and downloads work as before,
while the files on disk hold ciphertext only; tampering and key changes are reported, not served."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from aiservice.bootstrap import ConfigurationError, Container, artifact_store, bootstrap
from aiservice.infrastructure.db.tables import webhooks
from aiservice.infrastructure.db.webhook_repositories import SecretCipher
from aiservice.infrastructure.storage.keys import load_keyring
from aiservice.interfaces.cli.main import app as cli_app
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, iris_model_bytes, upload, wait_until

API = "/api/v1/ai/models"
OLD_KEY = base64.b64encode(os.urandom(32)).decode()
NEW_KEY = base64.b64encode(os.urandom(32)).decode()
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = dict.fromkeys(FEATURES, 1.0)
MARKER = iris_model_bytes()[200:240]  # bytes of the uploaded artifact, unlikely anywhere else


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", artifact_encryption_keys=f"old:{OLD_KEY}")


def _files(root: Path) -> list[Path]:
    """Artifact bodies and envelopes: everything but the private folder of decrypted copies."""
    return [p for p in root.rglob("*") if p.is_file() and ".decrypted" not in p.parts]


def _iris(client: TestClient, auth: Auth, name: str = "iris") -> None:
    create_model(
        client,
        auth(),
        name,
        inputSchema={"type": "tabular", "features": [{"name": f, "type": "number"} for f in FEATURES]},
    )
    response = upload(client, auth(), name)
    assert response.status_code == 201, response.text


@pytest.fixture
def reopen(settings: Settings) -> Iterator[object]:
    """A second app over the same database and artifacts, with other settings."""
    opened: list[Container] = []

    def start(**overrides: object) -> TestClient:
        container = bootstrap(make_settings(settings.resolved_database_url, settings.data_dir, **overrides))
        opened.append(container)
        return TestClient(create_app(container, manage_lifecycle=False))

    yield start
    for container in opened:
        container.close()


def test_upload_predict_and_download_round_trip_with_ciphertext_on_disk(
    client: TestClient, auth: Auth, settings: Settings
) -> None:
    _iris(client, auth)
    bodies = _files(settings.artifact_path)
    assert len(bodies) == 2  # the body and its key envelope
    assert not any(MARKER in p.read_bytes() for p in bodies)

    predicted = client.post(f"{API}/iris/predict", json={"input": ROW}, headers=auth())
    assert predicted.status_code == 200, predicted.text

    download = client.get(f"{API}/iris/versions/1/artifact", headers=auth())
    assert download.content == iris_model_bytes()
    assert (
        download.headers["x-checksum-sha256"] == hashlib.sha256(iris_model_bytes()).hexdigest()
    )  # plaintext


def test_a_range_download_returns_the_plaintext_slice(client: TestClient, auth: Auth) -> None:
    _iris(client, auth)
    partial = client.get(f"{API}/iris/versions/1/artifact", headers={**auth(), "Range": "bytes=100-1099"})
    assert partial.status_code == 206
    assert partial.content == iris_model_bytes()[100:1100]


def test_tampered_ciphertext_is_a_clear_problem_not_a_crash(
    client: TestClient, auth: Auth, settings: Settings
) -> None:
    _iris(client, auth)
    body = max(_files(settings.artifact_path), key=lambda p: p.stat().st_size)
    data = bytearray(body.read_bytes())
    data[len(data) // 2] ^= 0xFF
    body.write_bytes(bytes(data))
    response = client.get(f"{API}/iris/versions/1/artifact", headers=auth())
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("artifact-corrupt")
    assert "authentication" in response.json()["detail"]
    assert "Traceback" not in response.text


def test_a_wrong_master_key_is_refused(client: TestClient, auth: Auth, reopen) -> None:  # type: ignore[no-untyped-def]
    _iris(client, auth)
    other = reopen(artifact_encryption_keys=f"old:{NEW_KEY}")  # same id, other key
    response = other.get(f"{API}/iris/versions/1/artifact", headers=auth())
    assert response.json()["type"].endswith("artifact-corrupt")
    assert "does not unwrap" in response.json()["detail"]


def test_plaintext_artifacts_from_before_encryption_keep_working(
    auth: Auth,
    reopen,
    settings: Settings,  # type: ignore[no-untyped-def]
) -> None:
    plain = reopen()  # no key: encryption off
    create_model(plain, auth(), "legacy")
    assert upload(plain, auth(), "legacy").status_code == 201
    assert any(MARKER in p.read_bytes() for p in _files(settings.artifact_path))

    encrypted = reopen(artifact_encryption_key=NEW_KEY)
    assert encrypted.get(f"{API}/legacy/versions/1/artifact", headers=auth()).content == iris_model_bytes()
    assert upload(encrypted, auth(), "legacy").status_code == 201
    assert encrypted.get(f"{API}/legacy/versions/2/artifact", headers=auth()).content == iris_model_bytes()
    assert sum(MARKER in p.read_bytes() for p in _files(settings.artifact_path)) == 1  # the old one only


def test_rotation_lets_the_old_key_go(  # type: ignore[no-untyped-def]
    client: TestClient, auth: Auth, settings: Settings, reopen, engine: Engine
) -> None:
    _iris(client, auth)
    _iris(client, auth, "second")
    env = {
        "DATABASE_URL": settings.resolved_database_url,
        "DATA_DIR": str(settings.data_dir),
        "JWT_SECRET": "cli-secret-0123456789-0123456789-0123456789",
        "ARTIFACT_ENCRYPTION_KEYS": f"new:{NEW_KEY},old:{OLD_KEY}",
    }
    webhook = {"url": "http://93.184.216.34/hook", "eventTypes": ["*"]}  # public: no private opt-in needed
    made = client.post("/api/v1/ai/webhooks", json=webhook, headers=auth("admin"))
    assert made.status_code == 201, made.text
    result = CliRunner().invoke(cli_app, ["keys", "rotate"], env=env)
    assert result.exit_code == 0, result.output
    assert "2 re-wrapped" in result.output
    assert "webhook secrets: 1 re-wrapped" in result.output
    with engine.connect() as conn:
        stored, key_id = conn.execute(sa.select(webhooks.c.secret, webhooks.c.secret_key_id)).one()
    only_new = load_keyring(None, f"new:{NEW_KEY}", None)
    assert only_new is not None
    assert key_id == "new" and SecretCipher(only_new).open(stored, key_id) == made.json()["secret"]

    rotated = reopen(artifact_encryption_keys=f"new:{NEW_KEY}")
    for name in ("iris", "second"):
        assert rotated.get(f"{API}/{name}/versions/1/artifact", headers=auth()).content == iris_model_bytes()
        assert rotated.post(f"{API}/{name}/predict", json={"input": ROW}, headers=auth()).status_code == 200


def test_rotation_without_the_old_key_fails_and_says_so(
    client: TestClient, auth: Auth, settings: Settings
) -> None:
    _iris(client, auth)
    env = {
        "DATABASE_URL": settings.resolved_database_url,
        "DATA_DIR": str(settings.data_dir),
        "ARTIFACT_ENCRYPTION_KEY": NEW_KEY,
    }
    result = CliRunner().invoke(cli_app, ["keys", "rotate"], env=env)
    assert result.exit_code == 1
    assert "1 failed" in result.output


def test_a_generated_key_switches_encryption_on(database_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["keys", "generate"])
    assert result.exit_code == 0
    secret = result.stdout.strip()
    settings = make_settings(database_url, tmp_path / "data", artifact_encryption_key=secret)
    writer = artifact_store(settings).writer("t/a", 100)
    writer.write(MARKER)
    digest = writer.commit().digest
    assert MARKER not in (settings.artifact_path / "t/a").read_bytes()
    with artifact_store(settings).open("t/a", digest) as handle:
        assert handle.read() == MARKER


def test_a_malformed_key_stops_the_service_without_echoing_it(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        bootstrap(make_settings(database_url, tmp_path / "data", artifact_encryption_key="c2hvcnQ="))
    assert "32 bytes" in str(caught.value)
    assert "c2hvcnQ=" not in str(caught.value)


def test_decrypted_copies_are_swept_after_their_ttl_without_further_requests(
    engine: Engine, database_url: str, tmp_path: Path, auth: Auth
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", artifact_encryption_key=NEW_KEY, artifact_plaintext_ttl_seconds=1
    )
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    plain = settings.artifact_path / ".decrypted"
    # Upload and load first, the sweeper not yet running: a TTL this short is shorter than an upload's
    # inspection, which would lose its copy mid-way (see ARTIFACT_PLAINTEXT_TTL_SECONDS in the README).
    with TestClient(create_app(container, manage_lifecycle=False)) as client:
        _iris(client, auth)
        assert client.post(f"{API}/iris/predict", json={"input": ROW}, headers=auth()).status_code == 200
    assert any(MARKER in p.read_bytes() for p in plain.iterdir())  # the runtime's plaintext copy
    assert container.plaintext_sweeper is not None
    container.start()  # the service as it runs: idle from now on
    try:
        wait_until(lambda: not any(plain.iterdir()), 10, 0.1, "the sweeper to remove the decrypted copy")
    finally:
        container.close()
