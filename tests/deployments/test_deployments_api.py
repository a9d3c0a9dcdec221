"""Deployments through the API: the spec's deploy body, listing and reading, PATCH and rollback, delete,
roles and quotas, and the reconcile loop's decisions (with a stand-in deployer; see fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.deploying.ports import RevisionState
from aiservice.bootstrap import Container
from aiservice.bootstrap.deployments import host_replicas
from aiservice.domain.deployments import DeploymentTarget
from tests.conftest import Auth
from tests.deployments.fakes import FakeDeployer
from tests.helpers import create_model, row_count, upload

API = "/api/v1/ai"
SPEC_BODY = {
    "deploymentName": "my-classifier-prod",
    "environment": "production",
    "minReplicas": 2,
    "maxReplicas": 10,
    "resourceLimits": {"cpu": "2", "memory": "4Gi"},
    "autoscaling": {"enabled": True, "targetCPUUtilization": 70},
}


@pytest.fixture
def fake(container: Container) -> Iterator[FakeDeployer]:
    deployer = FakeDeployer()
    real = container.deployers.get(DeploymentTarget.LOCAL)
    container.deployers[DeploymentTarget.LOCAL] = deployer  # type: ignore[index]
    yield deployer
    if real is not None:
        real.close()


def reconcile(container: Container) -> None:
    container.deployment_reconcile._task()  # one pass, now (the loop's thread does the same every 2 s)


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    model = create_model(client, auth(), "iris")
    for _ in range(2):
        assert upload(client, auth(), "iris").status_code == 201
    staged = client.post(
        f"{API}/models/iris/versions/1/stage", json={"stage": "production"}, headers=auth("admin")
    )
    assert staged.status_code == 200, staged.text
    return str(model["id"])


def deploy(client: TestClient, auth: Auth, body: dict[str, Any] | None = None, role: str = "deployer") -> Any:
    return client.post(f"{API}/models/iris/deploy", json=body or SPEC_BODY, headers=auth(role))


def test_the_spec_body_deploys_the_production_version(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    response = deploy(client, auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending" and body["revision"]["version"] == 1
    assert body["revision"]["reference"] == "production"
    assert body["replicas"] == {"desired": 2, "ready": 0, "min": 2, "max": 10}
    assert body["resourceLimits"] == {"cpu": "2", "memory": "4Gi"}
    assert body["autoscaling"]["targetCPUUtilization"] == 70
    assert body["endpoints"]["predict"] == f"{API}/deployments/my-classifier-prod/predict"
    reconcile(container)
    spec = fake.running[(body["id"], 1)]
    assert (spec.replicas, spec.cpu_millicores, spec.memory_bytes) == (2, 2000, 4 * 1024**3)
    shown = client.get(f"{API}/deployments/my-classifier-prod", headers=auth("viewer")).json()
    assert shown["status"] == "available" and shown["serving"]["version"] == 1
    assert shown["replicas"]["ready"] == 2 and shown["modelName"] == "iris"
    assert [e["type"] for e in shown["events"]] == ["ai.deployment.created.v1", "ai.deployment.rolled_out.v1"]


def test_bad_bodies_are_problems_naming_the_field_and_write_nothing(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, engine: Engine
) -> None:
    cases = [
        ({**SPEC_BODY, "resourceLimits": {"cpu": "lots"}}, "body.resourceLimits.cpu"),
        ({**SPEC_BODY, "deploymentName": "Not_A_Label"}, "body.deploymentName"),
        ({**SPEC_BODY, "minReplicas": 0}, "body.minReplicas"),
        ({**SPEC_BODY, "version": 9}, "body.version"),
        ({**SPEC_BODY, "alias": "nope"}, "body.alias"),
        ({**SPEC_BODY, "target": "kubernetes"}, "body.target"),
        ({**SPEC_BODY, "minReplicas": 3, "maxReplicas": 2}, "body.maxReplicas"),
    ]
    for body, field in cases:
        response = deploy(client, auth, body)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], response.text
    assert row_count(engine, "deployments") == 0


def test_production_needs_the_deployer_role_and_editors_deploy_to_staging(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    refused = deploy(client, auth, role="editor")
    assert refused.status_code == 403 and refused.json()["permission"] == "deployment:production"
    staging = {**SPEC_BODY, "deploymentName": "iris-staging", "environment": "staging"}
    assert deploy(client, auth, staging, role="editor").status_code == 202
    assert deploy(client, auth, {**staging, "deploymentName": "v"}, role="viewer").status_code == 403


def test_max_deployments_is_enforced_and_a_delete_frees_the_place(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    quota = client.patch(
        f"{API}/tenants/acme",
        json={"quotas": {"maxDeployments": 1}},
        headers=auth("superadmin", tenant="platform"),
    )
    assert quota.status_code == 200, quota.text
    assert deploy(client, auth).status_code == 202
    refused = deploy(client, auth, {**SPEC_BODY, "deploymentName": "second"})
    assert refused.status_code == 429 and refused.json()["quota"] == "maxDeployments"
    usage = client.get(f"{API}/tenants/acme/usage", headers=auth("admin")).json()["quotas"]
    assert usage["maxDeployments"]["current"] == 1 and usage["maxDeployments"]["enforced"] is True
    assert client.delete(f"{API}/deployments/my-classifier-prod", headers=auth("deployer")).status_code == 204
    assert deploy(client, auth, {**SPEC_BODY, "deploymentName": "second"}).status_code == 202


def test_a_name_is_taken_once_per_tenant(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    assert deploy(client, auth).status_code == 202
    again = deploy(client, auth)
    assert again.status_code == 409 and again.json()["type"].endswith("/deployment-exists")


def test_patch_rolls_out_rollback_returns_and_events_say_so(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    assert deploy(client, auth).status_code == 202
    reconcile(container)
    patched = client.patch(
        f"{API}/deployments/my-classifier-prod", json={"version": 2}, headers=auth("deployer")
    )
    assert patched.status_code == 202, patched.text
    assert patched.json()["status"] == "rolling_out" and patched.json()["serving"]["version"] == 1
    reconcile(container)
    shown = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()
    assert (shown["serving"]["version"], shown["previous"]["version"]) == (2, 1)
    back = client.post(f"{API}/deployments/my-classifier-prod/rollback", headers=auth("deployer"))
    assert back.status_code == 202 and back.json()["revision"]["version"] == 1
    reconcile(container)
    reconcile(container)
    shown = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()
    assert shown["serving"] == {**shown["revision"]} and shown["serving"]["rollbackOf"] == 2
    assert shown["events"][-1]["type"] == "ai.deployment.rolled_back.v1"


def test_a_revision_that_cannot_start_leaves_traffic_where_it_was(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    assert deploy(client, auth).status_code == 202
    reconcile(container)
    fake.failing[2] = "replica exited while loading: invalid artifact"
    client.patch(f"{API}/deployments/my-classifier-prod", json={"version": 2}, headers=auth("deployer"))
    reconcile(container)
    shown = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()
    assert shown["status"] == "degraded" and "invalid artifact" in shown["reason"]
    assert shown["serving"]["version"] == 1
    assert shown["events"][-1]["type"] == "ai.deployment.failed.v1"
    reconcile(container)
    assert (shown["id"], 2) in fake.retired  # the failed revision's replicas are stopped


def test_autoscaling_follows_cpu_within_bounds_after_the_cool_down(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    body = {
        **SPEC_BODY,
        "minReplicas": 1,
        "maxReplicas": 3,
        "autoscaling": {"targetCPUUtilization": 50, "cooldownSeconds": 0},
    }
    deployment_id = deploy(client, auth, body).json()["id"]
    reconcile(container)
    fake.load[deployment_id] = RevisionState(1, 1, 1, cpu_percent=100.0)
    reconcile(container)
    shown = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()
    assert shown["replicas"]["desired"] == 2
    assert shown["events"][-1]["type"] == "ai.deployment.scaled.v1"
    fake.load[deployment_id] = RevisionState(1, 1, 1, cpu_percent=400.0)
    reconcile(container)
    reconcile(container)
    desired = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()["replicas"][
        "desired"
    ]
    assert desired == min(3, host_replicas(container.settings))  # never more than the host's cores
    fake.load[deployment_id] = RevisionState(1, 1, 1, cpu_percent=5.0)
    reconcile(container)
    assert (
        client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()["replicas"]["desired"] == 1
    )


def test_a_deployment_shows_the_load_and_latency_its_replicas_report(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    deployment_id = deploy(client, auth).json()["id"]
    assert client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()["load"] is None
    fake.load[deployment_id] = RevisionState(1, 2, 2, in_flight=3.0, cpu_percent=41.5, p95_ms=12.25)
    reconcile(container)
    reconcile(container)  # rolled out on the first pass, observed as serving on the second
    load = client.get(f"{API}/deployments/my-classifier-prod", headers=auth()).json()["load"]
    assert (load["p95Ms"], load["inFlight"], load["cpuPercent"]) == (12.25, 3.0, 41.5)
    assert load["observedAt"]
    listed = client.get(f"{API}/deployments", headers=auth()).json()["items"]
    assert listed[0]["load"]["p95Ms"] == 12.25


def test_deleted_deployments_stop_and_their_name_is_not_found(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    deployment_id = deploy(client, auth).json()["id"]
    reconcile(container)
    assert client.delete(f"{API}/deployments/my-classifier-prod", headers=auth("deployer")).status_code == 204
    reconcile(container)
    assert (deployment_id, 1) in fake.retired
    missing = client.get(f"{API}/deployments/my-classifier-prod", headers=auth())
    assert missing.status_code == 404
    assert (
        client.post(f"{API}/deployments/my-classifier-prod/predict", json={}, headers=auth()).status_code
        == 404
    )


def test_listing_filters_and_pages(client: TestClient, auth: Auth, iris: str, fake: FakeDeployer) -> None:
    for n in range(3):
        env = "staging" if n else "production"
        assert (
            deploy(client, auth, {**SPEC_BODY, "deploymentName": f"d{n}", "environment": env}).status_code
            == 202
        )
    page = client.get(f"{API}/deployments?limit=2", headers=auth("viewer")).json()
    assert len(page["items"]) == 2 and page["nextCursor"]
    rest = client.get(f"{API}/deployments?limit=2&cursor={page['nextCursor']}", headers=auth()).json()
    assert len(rest["items"]) == 1
    staging = client.get(f"{API}/deployments?environment=staging", headers=auth()).json()["items"]
    assert sorted(d["name"] for d in staging) == ["d1", "d2"]
    other = client.get(f"{API}/deployments", headers=auth(tenant="globex")).json()["items"]
    assert other == []


def test_restart_reconciles_from_the_database(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    deployment_id = deploy(client, auth).json()["id"]
    reconcile(container)
    fake.running.clear()  # the service restarted: no replica runs
    reconcile(container)
    assert (deployment_id, 1) in fake.running and fake.running[(deployment_id, 1)].replicas == 2


def test_a_deployed_model_cannot_be_deleted_until_its_deployments_are(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    assert deploy(client, auth).status_code == 202
    refused = client.delete(f"{API}/models/iris", headers=auth("admin"))
    assert refused.status_code == 409 and refused.json()["deployments"] == ["my-classifier-prod"]
    assert client.delete(f"{API}/deployments/my-classifier-prod", headers=auth("admin")).status_code == 204
    assert client.delete(f"{API}/models/iris", headers=auth("admin")).status_code == 204


def test_every_change_is_audited_with_its_action(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    assert deploy(client, auth).status_code == 202
    reconcile(container)
    name = "my-classifier-prod"
    client.patch(f"{API}/deployments/{name}", json={"maxReplicas": 4}, headers=auth("deployer"))
    client.post(f"{API}/deployments/{name}/rollback", headers=auth("deployer"))  # 409: nothing before
    client.delete(f"{API}/deployments/{name}", headers=auth("deployer"))
    records = client.get(f"{API}/audit?limit=50", headers=auth("admin")).json()["items"]
    actions = [(r["action"], r["outcome"]) for r in records if r["action"].startswith("deployment.")]
    assert sorted(actions) == [
        ("deployment.create", "success"),
        ("deployment.delete", "success"),
        ("deployment.rollback", "failed"),
        ("deployment.update", "success"),
    ]


def test_another_tenant_meets_404_on_every_deployment_route(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    assert deploy(client, auth).status_code == 202
    reconcile(container)
    intruder = auth("admin", tenant="globex")
    name = f"{API}/deployments/my-classifier-prod"
    calls = [
        client.get(name, headers=intruder),
        client.patch(name, json={"version": 2}, headers=intruder),
        client.post(f"{name}/rollback", headers=intruder),
        client.post(f"{name}/predict", json={"input": {"features": [1, 2, 3, 4]}}, headers=intruder),
        client.post(f"{name}/batch-predict", json={"inputs": []}, headers=intruder),
        client.delete(name, headers=intruder),
    ]
    assert [r.status_code for r in calls] == [404] * len(calls)
    shown = client.get(name, headers=auth()).json()
    assert (shown["status"], shown["revision"]["revision"]) == ("available", 1)
