"""The tenants API: superadmins create, list, suspend and configure tenants; settings take effect."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from aiservice.bootstrap import ConfigurationError, bootstrap
from aiservice.interfaces.cli.main import app as cli
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import TEST_SECRET, Auth, make_settings
from tests.helpers import create_model, upload

API = "/api/v1/ai"
TENANTS = f"{API}/tenants"
UNLIMITED = {
    "maxModels": None,
    "maxVersionsPerModel": None,
    "maxArtifactBytes": None,
    "maxConcurrentTrainingJobs": None,
    "maxLoadedModels": None,
    "maxDeployments": None,
}


@pytest.fixture
def root(auth: Auth) -> dict[str, str]:
    """A platform operator: the superadmin role in a token for the reserved tenant 'platform'."""
    return auth("superadmin", tenant="platform")


def test_superadmin_creates_a_tenant_whose_tokens_work_at_once(
    client: TestClient, auth: Auth, root: dict[str, str]
) -> None:
    body = {
        "id": "initech",
        "name": "Initech",
        "settings": {"allowedFrameworks": ["onnx", "sklearn"]},
        "quotas": {"maxModels": 10, "maxArtifactBytes": 1_000_000},
    }
    response = client.post(TENANTS, json=body, headers=root)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{TENANTS}/initech"
    created = response.json()
    assert created["status"] == "active"
    assert created["settings"] == {"allowPickle": False, "allowedFrameworks": ["onnx", "sklearn"]}
    assert created["quotas"] == {**UNLIMITED, "maxModels": 10, "maxArtifactBytes": 1_000_000}
    assert client.get(f"{TENANTS}/initech", headers=root).json() == created
    assert client.get(f"{API}/models", headers=auth("viewer", tenant="initech")).status_code == 200


def test_tenants_list_in_pages_by_id(client: TestClient, root: dict[str, str]) -> None:
    first = client.get(TENANTS, params={"limit": 2}, headers=root).json()
    rest = client.get(TENANTS, params={"limit": 2, "cursor": first["nextCursor"]}, headers=root).json()
    assert [t["id"] for t in first["items"] + rest["items"]] == ["acme", "default", "globex"]
    assert rest["nextCursor"] is None


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        ({"id": "acme"}, 409, "conflict"),
        ({"id": "platform"}, 422, "validation-error"),
        ({"id": "Bad Id"}, 422, "validation-error"),
        ({"id": "x", "settings": {"allowedFrameworks": ["cobol"]}}, 422, "validation-error"),
        ({"id": "x", "quotas": {"maxModels": -1}}, 422, "validation-error"),
        ({"id": "x", "quotas": {"maxWidgets": 1}}, 422, "validation-error"),
    ],
    ids=["existing", "reserved", "bad-id", "unknown-framework", "negative-quota", "unknown-quota"],
)
def test_bad_tenants_are_refused(
    client: TestClient, root: dict[str, str], body: dict[str, object], status: int, problem: str
) -> None:
    response = client.post(TENANTS, json=body, headers=root)
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(f"/{problem}")


def test_a_missing_tenant_is_404(client: TestClient, root: dict[str, str]) -> None:
    assert client.get(f"{TENANTS}/nobody", headers=root).status_code == 404
    assert client.patch(f"{TENANTS}/nobody", json={"name": "x"}, headers=root).status_code == 404


def test_a_tenant_admin_cannot_manage_tenants(client: TestClient, auth: Auth) -> None:
    response = client.patch(f"{TENANTS}/acme", json={"status": "active"}, headers=auth("admin"))
    assert response.status_code == 403
    assert response.json()["permission"] == "tenants:manage"


def test_platform_token_reaches_no_tenant_data(client: TestClient, root: dict[str, str]) -> None:
    response = client.get(f"{API}/models", headers=root)
    assert response.status_code == 403
    assert response.json()["permission"] == "model:read"


def test_suspended_tenant_is_refused_at_once_and_reactivated(
    client: TestClient, auth: Auth, root: dict[str, str]
) -> None:
    assert client.get(f"{API}/models", headers=auth("admin")).status_code == 200  # status now cached
    suspended = client.patch(f"{TENANTS}/acme", json={"status": "suspended"}, headers=root)
    assert suspended.json()["status"] == "suspended"
    for call in (
        lambda: client.get(f"{API}/models", headers=auth("admin")),
        lambda: client.post(f"{API}/models", json={"name": "m", "framework": "onnx"}, headers=auth()),
        lambda: client.post(f"{API}/models/m/predict", json={"input": {}}, headers=auth()),
        lambda: client.get(f"{API}/permissions", headers=auth("viewer")),
    ):
        response = call()
        assert response.status_code == 403
        assert response.json()["type"] == "https://aiservice.dev/problems/tenant-suspended"
    assert client.get(f"{API}/models", headers=auth(tenant="globex")).status_code == 200
    client.patch(f"{TENANTS}/acme", json={"status": "active"}, headers=root)
    assert client.get(f"{API}/models", headers=auth("admin")).status_code == 200


def test_patch_changes_only_what_it_sends(client: TestClient, root: dict[str, str]) -> None:
    client.patch(f"{TENANTS}/acme", json={"quotas": {"maxModels": 5, "maxDeployments": 2}}, headers=root)
    changed = client.patch(
        f"{TENANTS}/acme",
        json={"name": "Acme Corp", "quotas": {"maxModels": None}, "settings": {"allowPickle": True}},
        headers=root,
    ).json()
    assert changed["name"] == "Acme Corp"
    assert changed["quotas"] == {**UNLIMITED, "maxDeployments": 2}
    assert changed["settings"] == {"allowPickle": True, "allowedFrameworks": None}


def test_models_of_a_framework_the_tenant_does_not_allow_are_refused(
    client: TestClient, auth: Auth, root: dict[str, str]
) -> None:
    client.patch(f"{TENANTS}/acme", json={"settings": {"allowedFrameworks": ["onnx"]}}, headers=root)
    refused = client.post(f"{API}/models", json={"name": "m", "framework": "pytorch"}, headers=auth())
    assert refused.status_code == 403
    problem = refused.json()
    assert problem["type"].endswith("/framework-not-allowed")
    assert (problem["framework"], problem["allowedFrameworks"]) == ("pytorch", ["onnx"])
    assert "pytorch" in problem["detail"]
    assert (
        client.post(f"{API}/models", json={"name": "m", "framework": "onnx"}, headers=auth()).status_code
        == 201
    )


def test_allow_pickle_set_through_the_api_lets_pickled_artifacts_in(
    client: TestClient, auth: Auth, root: dict[str, str]
) -> None:
    x, y = load_iris(return_X_y=True)
    blob = pickle.dumps(LogisticRegression(max_iter=500).fit(x, y))
    create_model(client, auth(), "pickled")
    assert upload(client, auth(), "pickled", blob, filename="model.pkl").status_code == 422
    client.patch(f"{TENANTS}/acme", json={"settings": {"allowPickle": True}}, headers=root)
    assert upload(client, auth(), "pickled", blob, filename="model.pkl").status_code == 201


def test_new_tenants_start_with_the_configured_default_quotas(
    database_url: str, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(database_url, tmp_path, tenant_default_quotas={"maxModels": 3})
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        token = container.tokens.issue("ops", "platform", ["superadmin"], 60)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "platform"}
        created = client.post(TENANTS, json={"id": "umbrella"}, headers=headers).json()
        own = client.post(TENANTS, json={"id": "wayne", "quotas": {"maxModels": None}}, headers=headers)
    assert created["quotas"] == {**UNLIMITED, "maxModels": 3}
    assert own.json()["quotas"] == UNLIMITED


def test_an_unknown_default_quota_stops_the_service_from_starting(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(database_url, tmp_path, tenant_default_quotas={"maxWidgets": 3})
    with pytest.raises(ConfigurationError, match="maxWidgets"):
        bootstrap(settings)


def test_the_cli_makes_a_superadmin_token_for_the_platform_tenant(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["token", "create", "--tenant", "platform", "--role", "superadmin"])
    assert result.exit_code == 0, result.output
    headers = {"Authorization": f"Bearer {result.stdout.strip()}", "X-Tenant-ID": "platform"}
    assert client.get(TENANTS, headers=headers).status_code == 200
