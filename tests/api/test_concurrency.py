"""Parallel writers: version numbers stay dense and unique, names stay unique."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.conftest import Auth
from tests.helpers import create_model, row_count, upload


def test_twenty_parallel_uploads_get_versions_one_to_twenty(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    create_model(client, auth(), "raced")
    headers = auth("editor")
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: upload(client, headers, "raced"), range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 21))
    assert row_count(engine, "model_versions") == 20
    assert client.get("/api/v1/ai/models/raced", headers=headers).json()["latestVersion"] == 20


def test_parallel_creates_of_one_name_make_exactly_one_model(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    headers = auth("editor")
    body = {"name": "contested", "framework": "onnx"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: client.post("/api/v1/ai/models", json=body, headers=headers).status_code, range(8)
            )
        )
    assert sorted(statuses) == [201] + [409] * 7
    assert row_count(engine, "models") == 1
