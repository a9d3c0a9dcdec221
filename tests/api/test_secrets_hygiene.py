"""Secrets (the JWT signing secret, AWS and database passwords, API keys, callers' tokens) never appear in a
log line, an error, an audit record or the OpenAPI document; an API key shows once, when it is made."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from tests.conftest import make_settings

API = "/api/v1/ai"
JWT_SECRET = "jwt-Secret-never-logged-7f3a9c2e5b8d1f4a6c0e2b9d"
AWS_SECRET = "aws-Secret-never-logged-wJalrXUtnFEMI-K7MDENG"
REDIS_PASSWORD = "redis-Secret-never-logged-1d2c3b4a"
FOREIGN_KEY = "foreign-Secret-never-logged-0123456789abcdef"


@pytest.fixture
def service(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Container]]:
    """``engine`` empties the database afterwards: the key and model made here must not reach later tests."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        jwt_secret=JWT_SECRET,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=AWS_SECRET,
        s3_endpoint_url="http://127.0.0.1:9",  # nothing listens: S3 calls fail, and say so
        redis_password=REDIS_PASSWORD,
    )
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        yield client, container
    container.close()


def _headers(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}", "X-Tenant-ID": "acme"}


def test_secrets_never_reach_logs_responses_audit_or_openapi(
    service: tuple[TestClient, Container],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, container = service
    caplog.set_level("DEBUG")
    admin = _headers(container.tokens.issue("root", "acme", ["admin"], 600))
    claims = {"sub": "x", "tenant": "acme", "roles": ["admin"], "exp": int(time.time()) + 600}
    foreign_token = jwt.encode(claims, FOREIGN_KEY, "HS256")
    made = client.post(f"{API}/api-keys", json={"name": "ci", "roles": ["viewer"]}, headers=admin)
    assert made.status_code == 201, made.text
    api_key = made.json()["key"]
    assert made.headers["cache-control"] == "no-store"
    guessed_key = api_key[:-6] + "XXXXXX"
    s3_training = {  # S3 is configured with the secret and unreachable: the error must not carry it
        "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression"},
        "datasetConfig": {"trainPath": "s3://bucket/rows.csv", "format": "csv", "target": "y"},
    }

    responses: list[httpx2.Response] = [
        client.get(f"{API}/models", headers=_headers(foreign_token)),
        client.get(f"{API}/models", headers=_headers(f"{foreign_token}x")),
        client.get(f"{API}/models", headers=_headers(guessed_key, "ApiKey")),
        client.get(f"{API}/models", headers=_headers(api_key, "ApiKey")),
        client.get(f"{API}/api-keys", headers=admin),
        client.post(
            f"{API}/models/none/train",
            json=s3_training,
            headers=admin,
        ),
        client.post(f"{API}/models", json={"name": "m", "framework": "sklearn"}, headers=admin),
        client.post(
            f"{API}/models/m/train",
            json=s3_training,
            headers=admin,
        ),
        client.delete(f"{API}/api-keys/{made.json()['id']}", headers=admin),
        client.get(f"{API}/models", headers=_headers(api_key, "ApiKey")),
        client.get(f"{API}/audit", params={"limit": 200}, headers=admin),
        client.get("/openapi.json"),
    ]
    assert [r.status_code for r in responses[:4]] == [401, 401, 401, 200]
    revoked, refused, audit_page = responses[8:11]
    assert (revoked.status_code, refused.status_code) == (204, 401)  # revoked at once
    audit = audit_page.json()["items"]
    assert {"api-key.create", "api-key.revoke"} <= {e["action"] for e in audit}, audit

    captured = capsys.readouterr()
    logs = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err])
    assert "api-key" in logs or "/api-keys" in logs  # the calls above were logged at all
    for secret in (JWT_SECRET, AWS_SECRET, REDIS_PASSWORD, FOREIGN_KEY, foreign_token, api_key, guessed_key):
        assert secret not in logs
        for response in responses:
            assert secret not in response.text, (response.request.url, response.text)
            assert all(secret not in value for value in response.headers.values())
    for hashed in (api_key.split("_", 2)[2], api_key[-16:]):  # no recognisable part of the key either
        assert hashed not in logs
        assert hashed not in audit_page.text


def test_settings_never_show_their_secrets(service: tuple[TestClient, Container]) -> None:
    settings = service[1].settings
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in (JWT_SECRET, AWS_SECRET, REDIS_PASSWORD):
            assert secret not in shown


def test_openapi_examples_hold_no_secret_looking_values(service: tuple[TestClient, Container]) -> None:
    document = service[0].get("/openapi.json").text
    token = service[1].tokens.issue("root", "acme", ["admin"], 600)
    assert token.split(".")[0] not in document  # no real JWT header, so no pasted token
    assert "ApiKey " in document or "apiKey" in document  # the schemes are described...
    for secret in (JWT_SECRET, AWS_SECRET, REDIS_PASSWORD):
        assert secret not in document  # ...without the values
