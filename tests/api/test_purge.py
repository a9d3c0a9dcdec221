"""Soft-deleted models keep their artifacts until an operator purges them."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, row_count, stored_files, upload


def test_delete_keeps_artifacts_and_purge_erases_them(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    create_model(client, auth(), "doomed")
    upload(client, auth(), "doomed")
    upload(client, auth(), "doomed")
    client.put("/api/v1/ai/models/doomed/aliases/a", json={"version": 1}, headers=auth())
    create_model(client, auth(tenant="globex"), "kept")
    upload(client, auth(tenant="globex"), "kept", iris_model_bytes("forest"))
    client.delete("/api/v1/ai/models/doomed", headers=auth())
    assert len(stored_files(container.settings.artifact_path)) == 3

    assert container.versions.purge_deleted(timedelta(days=30)).models == 0
    assert len(stored_files(container.settings.artifact_path)) == 3

    report = container.versions.purge_deleted(timedelta(0))
    assert (report.models, report.artifacts) == (1, 2)
    assert len(stored_files(container.settings.artifact_path)) == 1
    assert (
        row_count(engine, "models"),
        row_count(engine, "model_versions"),
        row_count(engine, "model_aliases"),
    ) == (
        1,
        1,
        0,
    )
    kept = client.get("/api/v1/ai/models/kept/versions/1/artifact", headers=auth(tenant="globex"))
    assert kept.content == iris_model_bytes("forest")


def test_purge_erases_a_versions_compiled_onnx_form_too(
    client: TestClient, auth: Auth, container: Container
) -> None:
    model = create_model(client, auth(), "doomed")
    assert upload(client, auth(), "doomed").status_code == 201
    compiled = container.compilation.compile_version("acme", model["id"], 1)
    assert compiled is not None and "onnx" in compiled  # a kept compiled form, stored beside the artifact
    client.delete("/api/v1/ai/models/doomed", headers=auth())
    container.versions.purge_deleted(timedelta(0))
    assert stored_files(container.settings.artifact_path) == []
