"""Uploads are bounded in time (UPLOAD_TIMEOUT_SECONDS): one that takes longer is a 408 and leaves
nothing, which is what lets the sweeper treat older staging files as abandoned."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, stored_files, upload


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """A timeout no upload can meet."""
    return make_settings(database_url, tmp_path / "data", upload_timeout_seconds=1e-9)


def test_a_version_upload_past_the_timeout_is_408_and_leaves_nothing(
    client: TestClient, container: Container, auth: Auth
) -> None:
    create_model(client, auth(), "iris")
    response = upload(client, auth(), "iris")
    assert (response.status_code, response.json()["type"].rsplit("/", 1)[1]) == (408, "upload-timeout")
    assert stored_files(container.settings.artifact_path) == []


def test_a_dataset_upload_past_the_timeout_is_408_and_leaves_nothing(
    client: TestClient, container: Container, auth: Auth
) -> None:
    response = client.post("/api/v1/ai/datasets", files={"file": ("iris.csv", b"a,b\n1,2\n")}, headers=auth())
    assert response.status_code == 408
    assert stored_files(container.datasets.root) == []
