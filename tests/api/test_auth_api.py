"""Authentication, roles, and tenant isolation on every endpoint."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import TEST_SECRET, Auth
from tests.helpers import create_model, row_count, upload

API = "/api/v1/ai"

# One concrete request per API endpoint: (method, path template, JSON body or None).
ENDPOINTS: list[tuple[str, str, object]] = [
    ("GET", "/models", None),
    ("POST", "/models", {"name": "new-one", "framework": "onnx"}),
    ("GET", "/models/{model}", None),
    ("PATCH", "/models/{model}", {"description": "changed"}),
    ("DELETE", "/models/{model}", None),
    ("POST", "/models/{model}/versions", "upload"),
    ("GET", "/models/{model}/versions", None),
    ("GET", "/models/{model}/versions/{version}", None),
    ("GET", "/models/{model}/versions/{version}/artifact", None),
    ("POST", "/models/{model}/versions/{version}/stage", {"stage": "staging"}),
    ("GET", "/models/{model}/aliases", None),
    ("PUT", "/models/{model}/aliases/{alias}", {"version": 1}),
    ("DELETE", "/models/{model}/aliases/{alias}", None),
    ("GET", "/resolve/{reference}", None),
    ("POST", "/models/{model}/predict", {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}),
    ("POST", "/models/{model}/batch-predict", {"inputs": [{"features": [5.1, 3.5, 1.4, 0.2]}]}),
    ("POST", "/models/{model}/versions/{version}/load", None),
    ("POST", "/models/{model}/versions/{version}/unload", None),
    (
        "POST",
        "/models/{model}/train",
        {
            "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression"},
            "datasetConfig": {"trainPath": "/nowhere.csv", "format": "csv", "target": "y"},
        },
    ),
    ("POST", "/datasets", "dataset-upload"),
    ("GET", "/datasets", None),
    ("GET", "/datasets/{name}", None),
    ("DELETE", "/datasets/{name}", None),
]
# Jobs are addressed by their own ids: tests/api/test_training.py covers these for tenancy and roles.
JOB_ENDPOINTS = {
    ("GET", "/training-jobs"),
    ("GET", "/training-jobs/{job}"),
    ("GET", "/training-jobs/{job}/events"),
    ("POST", "/training-jobs/{job}/cancel"),
}
TARGETED = [e for e in ENDPOINTS if "{" in e[1]]
PREDICTING = [e for e in ENDPOINTS if e[1].endswith("predict")]
READING = [e for e in ENDPOINTS if e[0] == "GET"] + PREDICTING
MUTATING = [e for e in ENDPOINTS if e not in READING]


def call(client: TestClient, headers: dict[str, str], method: str, template: str, body: object, model: str):  # type: ignore[no-untyped-def]
    path = API + template.format(
        model=model, version=1, alias="champion", reference=f"{model}:1", name="secret-data"
    )
    if body == "upload":
        return client.post(path, files={"file": ("m.bin", b"other tenant bytes")}, headers=headers)
    if body == "dataset-upload":
        return client.post(path, files={"file": ("other.csv", b"a,b\n1,2\n")}, headers=headers)
    return client.request(method, path, json=body, headers=headers)


@pytest.fixture
def acme_model(client: TestClient, auth: Auth) -> dict[str, object]:
    model = create_model(client, auth(tenant="acme"), "secret-model")
    upload(client, auth(tenant="acme"), "secret-model")
    client.put(
        f"{API}/models/secret-model/aliases/champion", json={"version": 1}, headers=auth(tenant="acme")
    )
    dataset = client.post(
        f"{API}/datasets", files={"file": ("secret-data.csv", b"x,y\n1,2\n")}, headers=auth(tenant="acme")
    )
    assert dataset.status_code == 201, dataset.text
    return model


def test_endpoint_table_covers_every_api_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path.removeprefix(API))
        for path, operations in paths.items()
        if path.startswith(API)
        for method in operations
    }
    assert routes == {(method, template) for method, template, _ in ENDPOINTS} | JOB_ENDPOINTS


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize(("method", "template", "body"), TARGETED)
def test_other_tenant_gets_404_on_every_endpoint_and_changes_nothing(
    client: TestClient,
    auth: Auth,
    engine: Engine,
    acme_model: dict[str, str],
    by: str,
    method: str,
    template: str,
    body: object,
) -> None:
    intruder = auth("admin", tenant="globex")
    response = call(client, intruder, method, template, body, acme_model[by])
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    owner = auth(tenant="acme")
    after = client.get(f"{API}/models/secret-model", headers=owner).json()
    assert (after["description"], after["latestVersion"], after["aliases"]) == ("", 1, {"champion": 1})
    assert client.get(f"{API}/models/secret-model/versions/1", headers=owner).json()["stage"] == "none"
    assert row_count(engine, "model_versions") == 1
    assert client.get(f"{API}/datasets/secret-data", headers=owner).status_code == 200


def test_other_tenant_lists_see_nothing(client: TestClient, auth: Auth, acme_model: dict[str, str]) -> None:
    assert client.get(f"{API}/models", headers=auth(tenant="globex")).json()["items"] == []
    assert (
        client.get(f"{API}/models", params={"q": "secret"}, headers=auth(tenant="globex")).json()["items"]
        == []
    )


@pytest.mark.parametrize(("method", "template", "body"), MUTATING)
def test_viewer_cannot_change_anything(
    client: TestClient, auth: Auth, acme_model: dict[str, str], method: str, template: str, body: object
) -> None:
    response = call(client, auth("viewer"), method, template, body, "secret-model")
    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")


@pytest.mark.parametrize(("method", "template", "body"), READING)
def test_viewer_can_read_and_predict_everything(
    client: TestClient, auth: Auth, acme_model: dict[str, str], method: str, template: str, body: object
) -> None:
    response = call(client, auth("viewer"), method, template, body, "secret-model")
    assert response.status_code == 200, response.text


def test_editor_writes_but_only_admin_deletes_models(client: TestClient, auth: Auth) -> None:
    create_model(client, auth("editor"), "m")
    assert client.delete(f"{API}/models/m", headers=auth("editor")).status_code == 403
    assert client.delete(f"{API}/models/m", headers=auth("admin")).status_code == 204


def test_token_without_known_roles_may_do_nothing(client: TestClient, auth: Auth) -> None:
    assert client.get(f"{API}/models", headers=auth("superhero")).status_code == 403


def _token(key: str = TEST_SECRET, drop: str | None = None, **claims: object) -> str:
    base: dict[str, object] = {
        "sub": "u",
        "tenant": "acme",
        "roles": ["admin"],
        "exp": int(time.time()) + 600,
    }
    payload = {k: v for k, v in {**base, **claims}.items() if k != drop}
    return jwt.encode(payload, key, algorithm="HS256")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not-a-jwt",
        f"Bearer {_token(exp=int(time.time()) - 3600)}",
        f"Bearer {_token(key='another-secret-0123456789-0123456789')}",
        f"Bearer {_token(drop='exp')}",
        f"Bearer {_token(roles='admin')}",
    ],
    ids=["missing", "basic", "empty", "garbage", "expired", "wrong-key", "no-exp", "roles-not-list"],
)
def test_bad_credentials_are_401(client: TestClient, authorization: str | None) -> None:
    headers = {"X-Tenant-ID": "acme", **({"Authorization": authorization} if authorization else {})}
    response = client.get(f"{API}/models", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"].endswith("/unauthenticated")


def test_tenant_header_must_match_the_token(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token()}", "X-Tenant-ID": "globex"}
    response = client.get(f"{API}/models", headers=headers)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/tenant-mismatch")


def test_tenant_header_is_required(client: TestClient) -> None:
    response = client.get(f"{API}/models", headers={"Authorization": f"Bearer {_token()}"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.X-Tenant-ID"


def test_token_for_an_unknown_tenant_is_refused(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(tenant='initech')}", "X-Tenant-ID": "initech"}
    response = client.get(f"{API}/models", headers=headers)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/unknown-tenant")


def test_cli_and_service_tokens_agree(client: TestClient, container: Container) -> None:
    token = container.tokens.issue("ci", "acme", ["viewer"], 60)
    response = client.get(
        f"{API}/models", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
    )
    assert response.status_code == 200
