"""Two replicas on one database and one Redis: a change made through one reaches the other's caches
through the broker (a promoted version is warmed there, a deleted model is forgotten there at once),
and the in-process bus still serves a single replica."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from aiservice.application.ports import CloudEvent
from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from tests.conftest import empty_database, make_settings
from tests.events.brokers import forget_streams, require_listening
from tests.helpers import create_model, upload, wait_until

API = "/api/v1/ai"
FEATURES = {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}


@pytest.fixture
def replicas(sqlite_database: str, tmp_path: Path, prefix: str) -> Iterator[tuple[TestClient, TestClient]]:
    require_listening(6379, "Redis")
    containers: list[Container] = []
    for name in ("replica-a", "replica-b"):
        settings = make_settings(
            sqlite_database,
            tmp_path / "data",  # one artifact store, as replicas share one (a volume or S3)
            event_bus="redis",
            redis_host="127.0.0.1",
            event_destination_prefix=prefix,
            event_consumer_group=name,
        )
        containers.append(bootstrap(settings))
    containers[0].tenants.ensure("acme")
    try:
        with TestClient(create_app(containers[0])) as a, TestClient(create_app(containers[1])) as b:
            wait_until(lambda: all(_ready(c) for c in containers), what="both consumers")
            yield a, b
    finally:
        empty_database(containers[0].engine)
        forget_streams(prefix)


def _ready(container: Container) -> bool:
    consumer: Any = container.events.consumer
    return bool(consumer.ready)


def _headers(client: TestClient) -> dict[str, str]:
    container: Container = client.app.state.container  # type: ignore[attr-defined]
    token = container.tokens.issue("tester", "acme", ["admin"], 3600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}


def test_a_change_on_one_replica_reaches_the_caches_of_the_other(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    other: Container = b.app.state.container  # type: ignore[attr-defined]
    deleted = threading.Event()

    def saw_deletion(event: CloudEvent) -> None:  # runs after the built-in handlers
        deleted.set()

    other.events.subscribe("ai.model.deleted.v1", saw_deletion)
    create_model(a, _headers(a), "shared")
    assert upload(a, _headers(a), "shared").status_code == 201
    promote = {"stage": "production"}
    assert (
        a.post(f"{API}/models/shared/versions/1/stage", json=promote, headers=_headers(a)).status_code == 200
    )
    wait_until(lambda: other.inference.loaded_models("acme") == 1, timeout=60, what="the warm-up on b")

    assert b.post(f"{API}/models/shared/predict", json=FEATURES, headers=_headers(b)).status_code == 200
    assert a.delete(f"{API}/models/shared", headers=_headers(a)).status_code == 204
    assert deleted.wait(30)
    # Without the event, b would answer from its cached resolution for a few more seconds.
    assert b.post(f"{API}/models/shared/predict", json=FEATURES, headers=_headers(b)).status_code == 404


def test_each_replica_handles_each_event_once_as_its_own_consumer(
    replicas: tuple[TestClient, TestClient], sqlite_database: str
) -> None:
    a, _ = replicas
    create_model(a, _headers(a), "counted")
    engine = sa.create_engine(sqlite_database)
    try:

        def consumers() -> list[str]:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT consumer FROM processed_events ORDER BY consumer"))
                return [r[0] for r in rows]

        wait_until(lambda: consumers() == ["replica-a", "replica-b"], what="both replicas")
    finally:
        engine.dispose()
