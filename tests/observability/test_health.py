"""Health: every configured dependency is reported; readiness follows migrations and the broker."""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.health import HealthCheck
from aiservice.bootstrap import bootstrap
from aiservice.domain.clock import utcnow
from aiservice.interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.fakes import InMemoryArtifactStore


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again once the block ends: nothing listens


def test_detailed_health_reports_a_configured_redis_that_is_down(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, redis_host="127.0.0.1", redis_port=_closed_port())
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        response = client.get("/health/detailed")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "up"
    assert {"broker", "ray", "kubernetes"} <= set(body["notConfigured"])


def test_detailed_health_gives_each_dependency_a_latency(client: TestClient) -> None:
    checks = client.get("/health/detailed").json()["checks"]
    assert all(check["latencyMs"] >= 0 for check in checks.values())


def test_ready_while_the_schema_is_current(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["ready"] is True


def test_not_ready_while_migrations_are_pending(tmp_path: Path) -> None:
    container = bootstrap(make_settings(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path))
    with TestClient(create_app(container)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert "migrations is down" in response.json()["reasons"]


class _Db:
    def ping(self) -> float:
        return 0.1

    def migrations_current(self) -> bool:
        return True


class _Broker:
    up = True

    def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("refused")


def test_readiness_fails_only_once_the_broker_is_down_past_its_grace_period() -> None:
    now = [0.0]
    broker = _Broker()
    health = HealthCheck(
        _Db(),
        InMemoryArtifactStore(),
        "1",
        utcnow,
        dependencies={"broker": broker},
        broker="broker",
        broker_grace_s=30,
        monotonic=lambda: now[0],
    )
    assert health.ready().healthy
    broker.up = False
    assert health.ready().healthy  # just went down: within the grace period
    now[0] = 29.0
    assert health.ready().healthy
    now[0] = 31.0
    report = health.ready()
    assert not report.healthy
    assert report.body["reasons"] == ["broker is down"]
    broker.up = True
    assert health.ready().healthy
