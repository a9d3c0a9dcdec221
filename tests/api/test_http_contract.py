"""What every response shares: problem+json errors, body limits, request ids, logs, metrics, health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from tests.conftest import Auth, make_settings
from tests.helpers import create_model

API = "/api/v1/ai"


def test_oversize_json_body_is_413_problem(client: TestClient, auth: Auth, container: Container) -> None:
    big = {
        "name": "big",
        "framework": "sklearn",
        "description": "x" * (container.settings.max_json_body_bytes + 1),
    }
    response = client.post(f"{API}/models", json=big, headers=auth())
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/models", headers=auth()).json()["items"] == []


def test_oversize_chunked_body_without_length_is_413(
    client: TestClient, auth: Auth, container: Container
) -> None:
    limit = container.settings.max_json_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = client.post(
        f"{API}/models", content=chunks(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("body", [b'{"name": "x", "framework": ', b"[1, 2", b"\xff\xfe"])
def test_malformed_json_is_400_problem(client: TestClient, auth: Auth, body: bytes) -> None:
    response = client.post(
        f"{API}/models", content=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    problem = response.json()
    assert set(problem) >= {"type", "title", "status", "detail"}
    assert problem["status"] == response.status_code


def test_unknown_route_and_method_are_problems(client: TestClient, auth: Auth) -> None:
    missing = client.get(f"{API}/nothing-here", headers=auth())
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/problem+json")
    wrong = client.put(f"{API}/models", json={}, headers=auth())
    assert (wrong.status_code, wrong.headers["content-type"]) == (405, "application/problem+json")


def test_server_fault_is_a_problem_without_a_traceback(container: Container, auth: Auth) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("secret internal detail")

    container.registry.list_models = explode  # type: ignore[method-assign]
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        response = client.get(f"{API}/models", headers={**auth(), "X-Request-ID": "req-123"})
    assert response.status_code == 500
    problem = response.json()
    assert problem["type"].endswith("/internal-error")
    assert problem["requestId"] == "req-123"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"] != (
        "bad id\twith spaces"
    )


def test_request_log_is_json_with_the_request_context(
    client: TestClient, auth: Auth, capsys: pytest.CaptureFixture[str]
) -> None:
    client.get(f"{API}/models", headers={**auth(), "X-Request-ID": "log-me"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (entry,) = [line for line in lines if line.get("requestId") == "log-me" and line["message"] == "request"]
    assert entry["level"] == "info"
    assert entry["service"] == "aiservice"
    assert entry["tenantId"] == "acme"
    assert entry["status"] == 200
    assert isinstance(entry["duration"], float)
    assert entry["timestamp"].endswith("Z")


def test_metrics_count_requests_by_route_template(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "m1")
    client.get(f"{API}/models/m1", headers=auth())
    client.get(f"{API}/models/nope", headers=auth())
    text = client.get("/metrics").text
    assert 'ai_service_requests_total{method="POST",route="/api/v1/ai/models",status="201"} 1.0' in text
    assert (
        'ai_service_requests_total{method="GET",route="/api/v1/ai/models/{model}",status="200"} 1.0' in text
    )
    assert (
        'ai_service_requests_total{method="GET",route="/api/v1/ai/models/{model}",status="404"} 1.0' in text
    )
    assert "ai_service_request_duration_ms_bucket{" in text


def test_health_needs_no_auth_and_detailed_reports_dependencies(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    detailed = client.get("/health/detailed")
    assert detailed.status_code == 200
    checks = detailed.json()["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "database": "up",
        "artifactStore": "up",
        "migrations": "up",
    }
    assert detailed.json()["uptimeSeconds"] >= 0


def test_detailed_health_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1", tmp_path)
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        response = client.get("/health/detailed")
        assert client.get("/health").status_code == 200
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "down"
    assert body["checks"]["artifactStore"]["status"] == "up"


def test_detailed_health_reports_pending_migrations(tmp_path: Path) -> None:
    container = bootstrap(make_settings(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path))
    with TestClient(create_app(container)) as client:
        response = client.get("/health/detailed")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"]["status"] == "down"


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert f"{API}/models" in spec["paths"]
    upload = spec["paths"][f"{API}/models/{{model}}/versions"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
