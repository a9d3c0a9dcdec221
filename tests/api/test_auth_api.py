"""Authentication, the role matrix, and tenant isolation on every endpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db.engine import create_engine
from aiservice.interfaces.http.app import create_app
from tests.conftest import TEST_SECRET, Auth, empty_database, make_settings
from tests.helpers import create_model, row_count, upload

API = "/api/v1/ai"
INFER_BODY = {
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


@dataclass(frozen=True)
class Endpoint:
    """One concrete, valid request per endpoint: request validation runs before any permission check,
    so an invalid body would hide the answer the role matrix looks for."""

    method: str
    template: str  # as in the OpenAPI document, relative to /api/v1/ai unless it starts with /v2
    body: object = None  # JSON, or "upload" / "dataset-upload" for multipart
    when: str | None = None  # the conditional rule of the published table this request exercises

    @property
    def path(self) -> str:
        return self.template if self.template.startswith("/v2/") else API + self.template

    def __str__(self) -> str:
        return f"{self.method} {self.template}" + (f" [{self.when}]" if self.when else "")


PRODUCTION = "the version moves into or out of production"
PROD_DEPLOY = "the deployment's environment is production"
_TRAIN_BODY = {
    "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression"},
    "datasetConfig": {"trainPath": "/nowhere.csv", "format": "csv", "target": "y"},
}
_EXPERIMENT_BODY = {
    "name": "e1",
    "model": "ghost-model",
    "arms": [{"name": "A", "version": 1}, {"name": "B", "version": 2}],
}
ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/permissions"),
    Endpoint("GET", "/models"),
    Endpoint("POST", "/models", {"name": "new-one", "framework": "onnx"}),
    Endpoint("GET", "/models/{model}"),
    Endpoint("PATCH", "/models/{model}", {"description": "changed"}),
    Endpoint("DELETE", "/models/{model}"),
    Endpoint("POST", "/models/{model}/versions", "upload"),
    Endpoint("POST", "/models/{model}/import", "upload"),
    Endpoint("GET", "/models/{model}/versions"),
    Endpoint("GET", "/models/{model}/versions/{version}"),
    Endpoint("GET", "/models/{model}/versions/{version}/artifact"),
    Endpoint("GET", "/models/{model}/versions/{version}/export"),
    Endpoint("POST", "/models/{model}/versions/{version}/stage", {"stage": "staging"}),
    Endpoint("POST", "/models/{model}/versions/{version}/stage", {"stage": "production"}, PRODUCTION),
    Endpoint("GET", "/models/{model}/aliases"),
    Endpoint("PUT", "/models/{model}/aliases/{alias}", {"version": 1}),
    Endpoint("DELETE", "/models/{model}/aliases/{alias}"),
    Endpoint("GET", "/resolve/{reference}"),
    Endpoint("POST", "/models/{model}/predict", {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}),
    Endpoint("POST", "/models/{model}/batch-predict", {"inputs": [{"features": [5.1, 3.5, 1.4, 0.2]}]}),
    Endpoint("POST", "/models/{model}/versions/{version}/load"),
    Endpoint("POST", "/models/{model}/versions/{version}/unload"),
    Endpoint("POST", "/models/{model}/train", _TRAIN_BODY),
    Endpoint(
        "POST",
        "/models/{model}/automl",
        {
            "datasetConfig": _TRAIN_BODY["datasetConfig"],
            "task": "classification",
            "metric": "accuracy",
            "budget": {"maxTrials": 2},
        },
    ),
    Endpoint("GET", "/models/{model}/automl"),
    Endpoint("GET", "/models/{model}/automl/{study}"),
    Endpoint("GET", "/models/{model}/automl/{study}/events"),
    Endpoint("POST", "/models/{model}/automl/{study}/cancel"),
    Endpoint(
        "POST",
        "/models/{model}/versions/{version}/optimize",
        {"method": "float16", "validation": {"rows": [[5.1, 3.5, 1.4, 0.2]], "labels": [0]}},
    ),
    Endpoint("GET", "/training-jobs"),
    Endpoint("GET", "/training-jobs/{job}"),
    Endpoint("GET", "/training-jobs/{job}/events"),
    Endpoint("POST", "/training-jobs/{job}/cancel"),
    Endpoint("POST", "/models/{model}/deploy", {"deploymentName": "d1", "environment": "staging"}),
    Endpoint(
        "POST", "/models/{model}/deploy", {"deploymentName": "d1", "environment": "production"}, PROD_DEPLOY
    ),
    Endpoint("GET", "/deployments"),
    Endpoint("GET", "/deployments/{name}"),
    Endpoint("PATCH", "/deployments/{name}", {"minReplicas": 1}),
    Endpoint("POST", "/deployments/{name}/rollback"),
    Endpoint("DELETE", "/deployments/{name}"),
    Endpoint("POST", "/deployments/{name}/predict", {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}),
    Endpoint("POST", "/deployments/{name}/batch-predict", {"inputs": [{"features": [5.1, 3.5, 1.4, 0.2]}]}),
    Endpoint("POST", "/experiments", _EXPERIMENT_BODY),
    Endpoint("GET", "/experiments"),
    Endpoint("GET", "/experiments/{experiment_id}"),
    Endpoint("GET", "/experiments/{experiment_id}/results"),
    Endpoint("POST", "/experiments/{experiment_id}/start"),
    Endpoint("POST", "/experiments/{experiment_id}/pause"),
    Endpoint("POST", "/experiments/{experiment_id}/resume"),
    Endpoint("POST", "/experiments/{experiment_id}/stop"),
    Endpoint("POST", "/experiments/{experiment_id}/promote", {"arm": "B"}),
    Endpoint("DELETE", "/experiments/{experiment_id}"),
    Endpoint("GET", "/models/{model}/payload-logging"),
    Endpoint("PUT", "/models/{model}/payload-logging", {"enabled": True, "sampleRate": 0.5}),
    Endpoint("GET", "/models/{model}/predictions"),
    Endpoint("DELETE", "/models/{model}/predictions"),
    Endpoint("GET", "/predictions/{request_id}"),
    Endpoint("POST", "/predictions/{request_id}/feedback", {"label": 1}),
    Endpoint("POST", "/predictions/feedback", {"items": [{"requestId": "r-1", "reward": 1.0}]}),
    Endpoint(
        "PUT",
        "/models/{model}/versions/{version}/reference-profile",
        {"rows": [{"features": [5.1, 3.5, 1.4, 0.2]}]},
    ),
    Endpoint("GET", "/models/{model}/versions/{version}/reference-profile"),
    Endpoint("GET", "/models/{model}/monitoring"),
    Endpoint("GET", "/models/{model}/monitoring/actions"),
    Endpoint("PUT", "/models/{model}/monitoring", {"thresholds": {"psi": 0.25}, "scheduleMinutes": 60}),
    Endpoint("POST", "/models/{model}/drift", {"version": 1}),
    Endpoint("GET", "/models/{model}/drift"),
    Endpoint("GET", "/models/{model}/performance"),
    Endpoint("POST", "/datasets", "dataset-upload"),
    Endpoint("GET", "/datasets"),
    Endpoint("GET", "/datasets/{name}"),
    Endpoint("DELETE", "/datasets/{name}"),
    Endpoint("POST", "/api-keys", {"name": "ci", "roles": ["predictor"]}),
    Endpoint("GET", "/api-keys"),
    Endpoint("DELETE", "/api-keys/{key_id}"),
    Endpoint("GET", "/audit"),
    Endpoint(
        "POST", "/webhooks", {"url": "https://93.184.215.14/hook", "eventTypes": ["ai.model.deleted.v1"]}
    ),
    Endpoint("GET", "/webhooks"),
    Endpoint("GET", "/webhooks/{webhook_id}"),
    Endpoint("PATCH", "/webhooks/{webhook_id}", {"active": False}),
    Endpoint("DELETE", "/webhooks/{webhook_id}"),
    Endpoint("POST", "/webhooks/{webhook_id}/rotate-secret"),
    Endpoint("POST", "/webhooks/{webhook_id}/ping"),
    Endpoint("GET", "/webhooks/{webhook_id}/deliveries"),
    Endpoint("GET", "/admin/outbox"),
    Endpoint("GET", "/admin/workers"),
    Endpoint("POST", "/tenants", {"id": "initech"}),
    Endpoint("GET", "/tenants"),
    Endpoint("GET", "/tenants/{tenant}"),
    Endpoint("PATCH", "/tenants/{tenant}", {"name": "Acme Corp"}),
    Endpoint("GET", "/tenants/{tenant}/usage"),
    Endpoint("DELETE", "/tenants/{tenant}/data"),
    Endpoint("GET", "/v2/models/{name}"),
    Endpoint("GET", "/v2/models/{name}/versions/{version}"),
    Endpoint("GET", "/v2/models/{name}/ready"),
    Endpoint("GET", "/v2/models/{name}/versions/{version}/ready"),
    Endpoint("POST", "/v2/models/{name}/infer", INFER_BODY),
    Endpoint("POST", "/v2/models/{name}/versions/{version}/infer", INFER_BODY),
]
# Addressed by a model (by id or name) or a dataset: another tenant gets a 404 on each. Jobs, API keys,
# webhooks, deployments and experiments have their own ids or names (tests/api/test_training.py,
# test_api_keys.py, tests/webhooks, tests/deployments and tests/experiments cover them); tenants are
# the platform's, and /tenants/{id}/usage is covered in tests/api/test_tenants_api.py.
TARGETED = [
    e
    for e in ENDPOINTS
    if "{" in e.template
    and not e.template.startswith(
        ("/training-jobs", "/api-keys", "/webhooks", "/tenants", "/deployments", "/experiments")
    )
]
# Predictions of a model (a deployment's own are proven in tests/deployments and tests/e2e).
PREDICTING = [
    e
    for e in ENDPOINTS
    if e.template.endswith(("predict", "infer")) and not e.template.startswith("/deployments")
]
# Logged payloads need prediction:read, which neither a viewer nor a predictor has (tests/monitoring).
PAYLOADS = ("/predictions", "/predictions/{request_id}")
# A version's reference profile is a 404 until one is set (tests/monitoring reads one back).
PAYLOADS += ("/reference-profile",)
# An AutoML study is a 404 until one is started (tests/automl starts them).
PAYLOADS += ("/automl/{study}", "/automl/{study}/events")
READING = [e for e in TARGETED if e.method == "GET" and not e.template.endswith(PAYLOADS)] + PREDICTING


def call(client: TestClient, headers: dict[str, str], endpoint: Endpoint, model: str) -> httpx2.Response:
    path = endpoint.path.format(
        model=model,
        version=1,
        alias="champion",
        reference=f"{model}:1",
        name=model if endpoint.template.startswith("/v2/") else "secret-data",
        job=str(uuid.uuid4()),
        study=str(uuid.uuid4()),
        key_id="0" * 32,
        webhook_id="0" * 32,
        tenant="acme",
        request_id="no-such-request",
        experiment_id="00000000-0000-0000-0000-000000000000",
    )
    if endpoint.body == "upload":
        return client.post(path, files={"file": ("m.bin", b"other tenant bytes")}, headers=headers)
    if endpoint.body == "dataset-upload":
        return client.post(path, files={"file": ("other.csv", b"a,b\n1,2\n")}, headers=headers)
    return client.request(endpoint.method, path, json=endpoint.body, headers=headers)


def test_endpoint_table_covers_every_authenticated_route(client: TestClient, auth: Auth) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith((API, "/v2/models"))
        for method in operations
    }
    published = client.get(f"{API}/permissions", headers=auth("viewer")).json()["endpoints"]
    assert routes == {(e.method, e.path) for e in ENDPOINTS}
    assert routes == {(rule["method"], rule["path"]) for rule in published}


def test_permissions_publish_every_role(client: TestClient, auth: Auth) -> None:
    matrix = client.get(f"{API}/permissions", headers=auth("predictor")).json()
    assert set(matrix["roles"]) == {"viewer", "predictor", "editor", "deployer", "admin", "superadmin"}
    assert matrix["roles"]["viewer"] == ["model:read"]
    assert matrix["roles"]["predictor"] == ["model:predict"]
    assert (matrix["platformTenant"], matrix["platformRoles"]) == ("platform", ["superadmin"])


# -- the role matrix ---------------------------------------------------------------------------
# Every (role x endpoint) pair, its expected answer derived from the published matrix. Requests name
# objects that do not exist, so a permitted call passes the permission check and then meets a 404
# (or succeeds harmlessly); a refused one is a 403 naming the missing permission.

CALLERS: list[tuple[str, tuple[str, ...]]] = [
    ("acme", ("viewer",)),
    ("acme", ("predictor",)),
    ("acme", ("viewer", "predictor")),
    ("acme", ("editor",)),
    ("acme", ("deployer",)),
    ("acme", ("admin",)),
    ("acme", ("superadmin",)),  # a platform role in a tenant's token counts for nothing
    ("platform", ("superadmin",)),
]


@dataclass
class MatrixApp:
    client: TestClient
    container: Container
    published: dict[str, Any]


@pytest.fixture(scope="module")
def matrix_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixApp]:
    """One service for all pairs (a service per pair would cost minutes)."""
    container = bootstrap(make_settings(database_url, Path(tmp_path_factory.mktemp("matrix"))))
    with TestClient(create_app(container)) as client:
        container.tenants.ensure("acme")
        token = container.tokens.issue("reader", "acme", ["viewer"], 600)
        published = client.get(
            f"{API}/permissions", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
        ).json()
        yield MatrixApp(client, container, published)
    engine = create_engine(database_url)
    empty_database(engine)
    engine.dispose()


def granted_by(published: dict[str, Any], tenant: str, roles: tuple[str, ...]) -> set[str]:
    """Platform roles count in a token for the platform tenant only, tenant roles everywhere else."""
    on_platform = tenant == published["platformTenant"]
    counted = [r for r in roles if (r in published["platformRoles"]) == on_platform]
    return {p for r in counted for p in published["roles"][r]}


def rule_for(published: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    (rule,) = [
        r
        for r in published["endpoints"]
        if (r["method"], r["path"], r.get("when")) == (endpoint.method, endpoint.path, endpoint.when)
    ]
    return rule


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize(("tenant", "roles"), CALLERS, ids=[f"{t}:{'+'.join(r)}" for t, r in CALLERS])
def test_role_matrix(matrix_app: MatrixApp, tenant: str, roles: tuple[str, ...], endpoint: Endpoint) -> None:
    app = matrix_app
    app.container.tenants.ensure("acme")  # other tests of this module empty the database
    token = app.container.tokens.issue("matrix", tenant, list(roles), 600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    granted = granted_by(app.published, tenant, roles)
    rule = rule_for(app.published, endpoint)
    allowed = any(set(needed) <= granted for needed in rule["anyOf"])

    response = call(app.client, headers, endpoint, "ghost-model")

    if allowed:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text
        problem = response.json()
        assert problem["type"].endswith("/forbidden")
        assert problem["permission"] not in granted
        assert any(problem["permission"] in needed for needed in rule["anyOf"])


# -- tenant isolation ----------------------------------------------------------------------------


@dataclass
class AcmeWorld:
    """A service where acme owns a model (version 1, alias ``champion``) and a dataset."""

    client: TestClient
    container: Container
    model: dict[str, str]

    def auth(self, *roles: str, tenant: str = "acme") -> dict[str, str]:
        token = self.container.tokens.issue("tester", tenant, list(roles) or ["admin"], 600)
        return {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}


@pytest.fixture(scope="module")
def acme_world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeWorld]:
    """One service for the isolation tests below, which only read acme's objects or are refused: each
    of them checks afterwards that acme's objects are as they were (a service per test cost minutes)."""
    container = bootstrap(make_settings(database_url, Path(tmp_path_factory.mktemp("isolation"))))
    with TestClient(create_app(container)) as client:
        for tenant in ("acme", "globex"):
            container.tenants.ensure(tenant)
        world = AcmeWorld(client, container, {})
        world.model.update(create_model(client, world.auth(), "secret-model"))
        assert upload(client, world.auth(), "secret-model").status_code == 201
        alias = client.put(
            f"{API}/models/secret-model/aliases/champion", json={"version": 1}, headers=world.auth()
        )
        assert alias.status_code == 200, alias.text
        dataset = client.post(
            f"{API}/datasets", files={"file": ("secret-data.csv", b"x,y\n1,2\n")}, headers=world.auth()
        )
        assert dataset.status_code == 201, dataset.text
        yield world
    container.close()
    engine = create_engine(database_url)
    empty_database(engine)
    engine.dispose()


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize("endpoint", TARGETED, ids=str)
def test_other_tenant_gets_404_on_every_endpoint_and_changes_nothing(
    acme_world: AcmeWorld, by: str, endpoint: Endpoint
) -> None:
    client, auth = acme_world.client, acme_world.auth
    intruder = auth("admin", tenant="globex")
    response = call(client, intruder, endpoint, acme_world.model[by])
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    owner = auth(tenant="acme")
    after = client.get(f"{API}/models/secret-model", headers=owner).json()
    assert (after["description"], after["latestVersion"], after["aliases"]) == ("", 1, {"champion": 1})
    assert client.get(f"{API}/models/secret-model/versions/1", headers=owner).json()["stage"] == "none"
    assert row_count(acme_world.container.engine, "model_versions") == 1
    assert client.get(f"{API}/datasets/secret-data", headers=owner).status_code == 200


def test_other_tenant_lists_see_nothing(acme_world: AcmeWorld) -> None:
    client, auth = acme_world.client, acme_world.auth
    assert client.get(f"{API}/models", headers=auth(tenant="acme")).json()["items"] != []
    assert client.get(f"{API}/models", headers=auth(tenant="globex")).json()["items"] == []
    assert (
        client.get(f"{API}/models", params={"q": "secret"}, headers=auth(tenant="globex")).json()["items"]
        == []
    )


@pytest.mark.parametrize("endpoint", READING, ids=str)
def test_viewer_with_predictor_reads_and_predicts_everything(
    acme_world: AcmeWorld, endpoint: Endpoint
) -> None:
    response = call(acme_world.client, acme_world.auth("viewer", "predictor"), endpoint, "secret-model")
    assert response.status_code == 200, response.text


def test_editor_writes_but_only_admin_deletes_models(client: TestClient, auth: Auth) -> None:
    create_model(client, auth("editor"), "m")
    assert client.delete(f"{API}/models/m", headers=auth("editor")).status_code == 403
    assert client.delete(f"{API}/models/m", headers=auth("admin")).status_code == 204


def test_only_a_deployer_takes_a_version_out_of_production(client: TestClient, auth: Auth) -> None:
    create_model(client, auth("editor"), "m")
    upload(client, auth("editor"), "m")
    stage = f"{API}/models/m/versions/1/stage"
    assert client.post(stage, json={"stage": "production"}, headers=auth("deployer")).status_code == 200
    refused = client.post(stage, json={"stage": "archived"}, headers=auth("editor"))
    assert refused.status_code == 403
    assert refused.json()["permission"] == "stage:production"
    assert (
        client.post(stage, json={"stage": "archived"}, headers=auth("deployer")).json()["stage"] == "archived"
    )


def test_token_without_known_roles_may_do_nothing(client: TestClient, auth: Auth) -> None:
    assert client.get(f"{API}/models", headers=auth("superhero")).status_code == 403


# -- authentication ------------------------------------------------------------------------------


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
