"""The sweeper of leftovers, on SQLite and PostgreSQL with the real local and encrypted stores: what a
crash leaves goes once it is old enough; what a version, or an upload still in flight, refers to stays."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.artifact_keys import InFlightKeys, new_artifact_key
from aiservice.application.compilation import COMPILE_FOLDER
from aiservice.application.leftovers import ORPHANS, LeftoverSweeper, Swept
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.domain.models import CompiledForm, ServingRecord
from aiservice.domain.tenancy import Principal, Role
from aiservice.infrastructure.db.artifact_references import SqlAlchemyArtifactReferences
from aiservice.infrastructure.jobs.supervisor import JOB_FOLDER
from aiservice.infrastructure.storage.encrypted import EncryptedArtifactStore
from aiservice.infrastructure.storage.keys import generate_key, load_keyring
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, slow_pickled_model, upload, wait_until

GRACE_S = 600.0
UPLOAD_TIMEOUT_S = 300.0
OLD = 2 * GRACE_S  # seconds in the past: older than every bound the sweeper applies
MODELS = "/api/v1/ai/models"
MODEL_ID = "0e6b1c1e-5f1d-4a39-9c43-6f1d2f0a9b11"  # a model id's shape, for bytes no model needs
ADMIN = Principal("tester", "acme", frozenset({Role.ADMIN}))


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        artifact_orphan_grace_seconds=GRACE_S,
        upload_timeout_seconds=UPLOAD_TIMEOUT_S,
        training_timeout_seconds=60,
    )


@pytest.fixture
def sweeper(client: TestClient, container: Container) -> LeftoverSweeper:
    """The service's own sweeper, run by the test alone (its background loop stopped)."""
    container.leftover_sweeps.stop()
    return container.leftovers


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    """A second handle on the service's artifact folder, for bytes no upload recorded."""
    return LocalArtifactStore(settings.artifact_path)


def put(store: LocalArtifactStore | EncryptedArtifactStore, key: str, data: bytes = b"x" * 1000) -> Path:
    writer = store.writer(key, 1 << 20)
    writer.write(data)
    writer.commit()
    return store.root / key


def age(path: Path, seconds: float = OLD) -> Path:
    """Make a file, or a folder and everything in it, look last modified ``seconds`` ago."""
    stamp = time.time() - seconds
    for entry in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(entry, (stamp, stamp))
    return path


def artifact_path(container: Container, model: str, number: int = 1) -> Path:
    found = container.versions.get_version(ADMIN, model, number)
    return container.settings.artifact_path / found.artifact.key


@pytest.mark.parametrize("suffix", ["", ".onnx"], ids=["artifact", "compiled-form"])
def test_an_artifact_no_version_refers_to_goes_once_past_the_grace(
    sweeper: LeftoverSweeper, store: LocalArtifactStore, client: TestClient, auth: Auth, suffix: str
) -> None:
    model = create_model(client, auth())
    orphan = age(put(store, new_artifact_key("acme", model["id"], suffix)))
    assert sweeper.sweep()[ORPHANS] == Swept(1, 1000)
    assert not orphan.exists()


def test_an_orphan_younger_than_the_grace_stays(
    sweeper: LeftoverSweeper, store: LocalArtifactStore, client: TestClient, auth: Auth
) -> None:
    model = create_model(client, auth())
    orphan = age(put(store, new_artifact_key("acme", model["id"])), GRACE_S / 2)
    sweeper.sweep()
    assert orphan.exists()


def test_a_version_artifact_is_never_swept(
    sweeper: LeftoverSweeper, container: Container, client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(), "iris")
    created = upload(client, auth(), "iris")
    assert created.status_code == 201, created.text
    age(artifact_path(container, "iris"))
    sweeper.sweep()
    downloaded = client.get(f"{MODELS}/iris/versions/1/artifact", headers=auth())
    assert downloaded.status_code == 200


def test_a_compiled_onnx_form_recorded_on_a_version_is_never_swept(
    sweeper: LeftoverSweeper, container: Container, store: LocalArtifactStore, client: TestClient, auth: Auth
) -> None:
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    key = new_artifact_key("acme", model["id"], ".onnx")
    compiled = put(store, key)
    with container.versions._uow("acme") as uow:  # recorded as OnnxCompilation records it
        version = uow.versions.get(model["id"], 1)
        assert version is not None
        version.serving = ServingRecord("onnx", onnx=CompiledForm(key, "0" * 64, 1000))
        uow.versions.set_serving(version)
        uow.commit()
    age(compiled)
    sweeper.sweep()
    assert compiled.exists()


def test_a_soft_deleted_models_artifacts_stay_until_it_is_purged(
    sweeper: LeftoverSweeper, container: Container, client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    stored = age(artifact_path(container, "iris"))
    assert client.delete(f"{MODELS}/iris", headers=auth()).status_code == 204
    sweeper.sweep()
    assert stored.exists()


def test_files_the_service_did_not_name_are_never_swept(
    sweeper: LeftoverSweeper, settings: Settings, client: TestClient, auth: Auth
) -> None:
    model = create_model(client, auth())
    root = settings.artifact_path
    strangers = [root / "notes.txt", root / "acme" / "README", root / "acme" / model["id"] / "model.bin"]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep me")
        age(path)
    sweeper.sweep()
    assert all(path.exists() for path in strangers)


def test_an_upload_being_inspected_is_never_swept(
    sweeper: LeftoverSweeper, container: Container, client: TestClient, auth: Auth
) -> None:
    container.tenants.configure("acme", allow_pickle=True)
    model = create_model(client, auth(), "iris")
    folder = container.settings.artifact_path / "acme" / model["id"]
    answers: list[httpx2.Response] = []
    uploading = threading.Thread(
        target=lambda: answers.append(
            upload(client, auth(), "iris", slow_pickled_model(4), filename="model.pkl")
        )
    )
    uploading.start()
    try:
        in_inspection = wait_until(
            lambda: list(folder.glob("*")), what="the upload to be stored for inspection"
        )
        age(in_inspection[0])
        sweeper.sweep()
        assert in_inspection[0].exists()
    finally:
        uploading.join(timeout=60)
    assert answers[0].status_code == 201, answers[0].text


def test_work_older_than_the_longest_it_may_take_goes_and_newer_stays(
    sweeper: LeftoverSweeper, container: Container, store: LocalArtifactStore
) -> None:
    """An upload that never committed (artifact or dataset), a job folder and a compilation's scratch
    folder, as a crash leaves them."""
    with ExitStack() as writers:  # a killed process's files close with it; these at the end
        fresh, stale = (_abandon_work(container, store, name, writers) for name in ("fresh", "stale"))
        for path in stale:
            age(path, UPLOAD_TIMEOUT_S + 300 + 30)  # past every bound: an upload's, a job's, a compilation's
        report = sweeper.sweep()
        left = [p.exists() for p in fresh], [p.exists() for p in stale]
    assert {name: swept.files for name, swept in report.items()} == {
        "artifact-staging": 1,
        "dataset-staging": 1,
        "training-folders": 1,
        "compile-folders": 1,
        ORPHANS: 0,
    }
    assert left == ([True] * 4, [False] * 4)


def test_what_was_swept_is_counted_in_the_metrics(
    sweeper: LeftoverSweeper, container: Container, store: LocalArtifactStore, client: TestClient, auth: Auth
) -> None:
    model = create_model(client, auth())
    age(put(store, new_artifact_key("acme", model["id"]), b"y" * 4321))
    sweeper.sweep()
    exported = container.metrics.render().decode()
    assert 'ai_service_swept_files_total{what="orphan-artifacts"} 1.0' in exported
    assert 'ai_service_swept_bytes_total{what="orphan-artifacts"} 4321.0' in exported


@pytest.fixture
def encrypted(tmp_path: Path) -> EncryptedArtifactStore:
    keys = load_keyring(generate_key()[0], None, None)
    assert keys is not None
    return EncryptedArtifactStore(LocalArtifactStore(tmp_path / "encrypted"), keys)


@pytest.fixture
def encrypted_sweeper(engine: Engine, encrypted: EncryptedArtifactStore) -> Iterator[LeftoverSweeper]:
    yield LeftoverSweeper(
        encrypted,
        SqlAlchemyArtifactReferences(engine),
        InFlightKeys(),
        utcnow,
        work=[],
        grace=timedelta(seconds=GRACE_S),
    )


def test_an_encrypted_orphan_goes_with_its_key_file(
    encrypted_sweeper: LeftoverSweeper, encrypted: EncryptedArtifactStore
) -> None:
    body = age(put(encrypted, new_artifact_key("acme", MODEL_ID)))
    sidecar = age(body.with_name(body.name + ".envelope"))
    encrypted_sweeper.sweep()
    assert not body.exists() and not sidecar.exists()


def test_a_key_file_left_without_its_artifact_goes(
    encrypted_sweeper: LeftoverSweeper, encrypted: EncryptedArtifactStore
) -> None:
    body = put(encrypted, new_artifact_key("acme", MODEL_ID))
    body.unlink()  # a crash between the key file and the artifact's rename into place
    sidecar = age(body.with_name(body.name + ".envelope"))
    encrypted_sweeper.sweep()
    assert not sidecar.exists()


def _abandon_work(
    container: Container, store: LocalArtifactStore, name: str, writers: ExitStack
) -> list[Path]:
    """One upload of each kind left half-written, and one job folder: the paths they occupy."""
    staging = store.root / ".staging"
    before = set(staging.iterdir()) if staging.is_dir() else set()
    writer = store.writer(new_artifact_key("acme", MODEL_ID), 1 << 20)
    writers.callback(writer.abort)
    writer.write(b"partial artifact")
    (staged_artifact,) = set(staging.iterdir()) - before
    staged = container.datasets.writer("acme", name, "csv", 1 << 20)
    writers.callback(staged.abort)
    staged.write(b"a,b\n1,2\n")
    job = container.settings.data_dir / "training" / f"{JOB_FOLDER}{name}"
    job.mkdir(parents=True)
    (job / "model.skops").write_bytes(b"half a model")
    compiling = container.settings.data_dir / "compile" / f"{COMPILE_FOLDER}{name}"
    compiling.mkdir(parents=True)
    (compiling / "model.onnx").write_bytes(b"half a compiled model")
    return [staged_artifact, staged.staged_path.parent, job, compiling]
