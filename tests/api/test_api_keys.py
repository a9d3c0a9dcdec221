"""API keys for machines: made by a tenant's admin and shown once, stored as a hash, bound to a tenant,
roles and optionally some models, refused once revoked or expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.infrastructure.db.tables import api_keys
from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai"
KEYS = f"{API}/api-keys"
IRIS_ROW = {"features": [5.1, 3.5, 1.4, 0.2]}


def make_key(client: TestClient, auth: Auth, tenant: str = "acme", **body: Any) -> dict[str, Any]:
    response = client.post(
        KEYS, json={"name": "scorer", "roles": ["viewer"], **body}, headers=auth(tenant=tenant)
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def key_headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}", **extra}


def test_a_key_is_shown_once_and_stored_only_as_a_hash(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    created = client.post(KEYS, json={"name": "scorer", "roles": ["viewer"]}, headers=auth("admin"))
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = created.json()["key"]
    assert key.startswith(f"aisk_{created.json()['id']}_")
    secret = key.split("_", 2)[2]  # after "aisk_<id>_"; base64url, so it may hold "_" itself
    listed = client.get(KEYS, headers=auth("admin"))
    assert secret not in listed.text
    assert "key" not in listed.json()["items"][0]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().one()
    assert not any(secret in str(value) for value in row.values())


def test_a_key_authenticates_as_its_tenant_and_roles(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    key = make_key(client, auth)["key"]
    listed = client.get(f"{API}/models", headers=key_headers(key))
    assert listed.status_code == 200, listed.text
    assert [m["name"] for m in listed.json()["items"]] == ["churn"]
    refused = client.post(f"{API}/models", json={"name": "x", "framework": "onnx"}, headers=key_headers(key))
    assert refused.status_code == 403


def test_a_tenant_header_must_agree_with_the_key(client: TestClient, auth: Auth) -> None:
    key = make_key(client, auth)["key"]
    assert client.get(f"{API}/models", headers=key_headers(key, **{"X-Tenant-ID": "acme"})).status_code == 200
    response = client.get(f"{API}/models", headers=key_headers(key, **{"X-Tenant-ID": "globex"}))
    assert response.status_code == 403
    assert response.json()["type"].endswith("/tenant-mismatch")


def test_a_revoked_key_is_refused_on_the_next_request(client: TestClient, auth: Auth) -> None:
    created = make_key(client, auth)
    assert client.get(f"{API}/models", headers=key_headers(created["key"])).status_code == 200
    assert client.delete(f"{KEYS}/{created['id']}", headers=auth("admin")).status_code == 204
    response = client.get(f"{API}/models", headers=key_headers(created["key"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "ApiKey"
    assert response.json()["detail"] == "The API key has been revoked."
    listed = client.get(KEYS, headers=auth("admin")).json()["items"]
    assert [(k["id"], k["status"]) for k in listed] == [(created["id"], "revoked")]


def test_an_expired_key_is_refused(client: TestClient, auth: Auth, engine: Engine) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    created = make_key(client, auth, expiresAt=expires.isoformat())
    assert created["expiresAt"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
    assert client.get(f"{API}/models", headers=key_headers(created["key"])).status_code == 200
    with engine.begin() as conn:  # the hour has passed
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(api_keys.update().values(expires_at=past))
    response = client.get(f"{API}/models", headers=key_headers(created["key"]))
    assert response.status_code == 401
    assert response.json()["detail"] == "The API key has expired."
    assert client.get(KEYS, headers=auth("admin")).json()["items"][0]["status"] == "expired"


@pytest.mark.parametrize(
    "credential",
    ["aisk_0123456789abcdef_" + "A" * 43, "not-a-key", "", "{real}-tampered"],
    ids=["unknown-id", "garbage", "empty", "wrong-secret"],
)
def test_bad_keys_are_401_with_an_apikey_challenge(client: TestClient, auth: Auth, credential: str) -> None:
    if credential == "{real}-tampered":
        real = make_key(client, auth)["key"]
        credential = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    response = client.get(f"{API}/models", headers=key_headers(credential))
    assert response.status_code == 401
    assert response.json()["type"] == "https://aiservice.dev/problems/unauthenticated"
    if credential:
        assert response.headers["www-authenticate"] == "ApiKey"
        assert credential not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"roles": ["root"]}, "body.roles.0"),
        ({"roles": []}, "body.roles"),
        ({"expiresAt": "2001-01-01T00:00:00Z"}, "body.expiresAt"),
        ({"expiresAt": "2999-01-01T00:00:00"}, "body.expiresAt"),
        ({"modelIds": ["no-such-model"]}, "body.modelIds.0"),
        ({"modelIds": []}, "body.modelIds"),
    ],
    ids=["unknown-role", "no-roles", "past-expiry", "naive-expiry", "unknown-model", "empty-models"],
)
def test_invalid_key_requests_are_422(
    client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    response = client.post(KEYS, json={"name": "k", "roles": ["viewer"], **body}, headers=auth("admin"))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", KEYS), ("GET", KEYS), ("DELETE", f"{KEYS}/0123456789abcdef")]
)
def test_only_admins_manage_keys(client: TestClient, auth: Auth, method: str, path: str) -> None:
    body = {"name": "k", "roles": ["viewer"]} if method == "POST" else None
    response = client.request(method, path, json=body, headers=auth("editor"))
    assert response.status_code == 403
    assert response.json()["permission"] == "apikey:manage"


def test_a_key_cannot_manage_keys_unless_it_is_an_admin_key(client: TestClient, auth: Auth) -> None:
    viewer_key = make_key(client, auth)["key"]
    admin_key = make_key(client, auth, roles=["admin"])["key"]
    assert client.get(KEYS, headers=key_headers(viewer_key)).status_code == 403
    assert client.get(KEYS, headers=key_headers(admin_key)).status_code == 200


def test_another_tenant_can_neither_see_nor_revoke_a_key(client: TestClient, auth: Auth) -> None:
    created = make_key(client, auth)
    intruder = auth("admin", tenant="globex")
    assert client.get(KEYS, headers=intruder).json()["items"] == []
    assert client.delete(f"{KEYS}/{created['id']}", headers=intruder).status_code == 404
    assert client.get(f"{API}/models", headers=key_headers(created["key"])).status_code == 200


def test_a_key_limited_to_one_model_sees_no_other(client: TestClient, auth: Auth) -> None:
    allowed = create_model(client, auth(), "allowed")
    create_model(client, auth(), "hidden")
    for name in ("allowed", "hidden"):
        assert upload(client, auth(), name).status_code == 201
    # the admin's prediction leaves "hidden" resolved in the service's routing memory
    assert (
        client.post(f"{API}/models/hidden/predict", json={"input": IRIS_ROW}, headers=auth()).status_code
        == 200
    )
    key = make_key(client, auth, roles=["editor"], modelIds=[allowed["id"]])["key"]
    headers = key_headers(key)
    predicted = client.post(f"{API}/models/allowed/predict", json={"input": IRIS_ROW}, headers=headers)
    assert predicted.status_code == 200, predicted.text
    assert [m["name"] for m in client.get(f"{API}/models", headers=headers).json()["items"]] == ["allowed"]
    for method, path in [
        ("POST", f"{API}/models/hidden/predict"),
        ("GET", f"{API}/models/hidden"),
        ("GET", f"{API}/models/hidden/versions/1"),
        ("GET", f"{API}/resolve/hidden:1"),
    ]:
        body = {"input": IRIS_ROW} if method == "POST" else None
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (path, response.text)


def test_model_ids_may_be_given_by_name_and_are_stored_as_ids(client: TestClient, auth: Auth) -> None:
    model = create_model(client, auth(), "churn")
    assert make_key(client, auth, modelIds=["churn"])["modelIds"] == [model["id"]]


def test_keys_never_reach_the_logs(
    client: TestClient, auth: Auth, capsys: pytest.CaptureFixture[str]
) -> None:
    created = make_key(client, auth)
    client.get(f"{API}/models", headers=key_headers(created["key"]))
    client.delete(f"{KEYS}/{created['id']}", headers=auth("admin"))
    client.get(f"{API}/models", headers=key_headers(created["key"]))
    assert created["key"].split("_", 2)[2] not in capsys.readouterr().out
