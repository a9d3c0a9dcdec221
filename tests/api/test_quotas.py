"""Tenant quotas: each refuses the write past its limit with a problem naming quota, limit and use,
the usage report agrees, and concurrent writes cannot overshoot a limit."""

from __future__ import annotations

import csv
import threading
from typing import Any

from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sqlalchemy.engine import Engine

from aiservice.application.registry import NewModel
from aiservice.bootstrap import Container
from aiservice.domain.errors import QuotaExceeded
from aiservice.domain.models import Framework
from aiservice.domain.tenancy import Principal, Role
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, row_count, stored_files, upload

API = "/api/v1/ai"
FEATURES = [5.1, 3.5, 1.4, 0.2]


def set_quotas(client: TestClient, auth: Auth, **quotas: int | None) -> None:
    response = client.patch(
        f"{API}/tenants/acme", json={"quotas": quotas}, headers=auth("superadmin", tenant="platform")
    )
    assert response.status_code == 200, response.text


def assert_quota_problem(response: Any, quota: str, limit: int, current: int) -> None:
    assert response.status_code == 429, response.text
    problem = response.json()
    assert problem["type"] == "https://aiservice.dev/problems/quota-exceeded"
    assert (problem["quota"], problem["limit"], problem["current"]) == (quota, limit, current)
    assert quota in problem["detail"]


def usage(client: TestClient, auth: Auth) -> dict[str, dict[str, Any]]:
    response = client.get(f"{API}/tenants/acme/usage", headers=auth("admin"))
    assert response.status_code == 200, response.text
    quotas: dict[str, dict[str, Any]] = response.json()["quotas"]
    return quotas


def test_max_models_refuses_the_next_model_and_a_delete_frees_a_place(client: TestClient, auth: Auth) -> None:
    set_quotas(client, auth, maxModels=2)
    create_model(client, auth(), "a")
    create_model(client, auth(), "b")
    refused = client.post(f"{API}/models", json={"name": "c", "framework": "onnx"}, headers=auth())
    assert_quota_problem(refused, "maxModels", 2, 2)
    assert client.delete(f"{API}/models/a", headers=auth("admin")).status_code == 204
    assert (
        client.post(f"{API}/models", json={"name": "c", "framework": "onnx"}, headers=auth()).status_code
        == 201
    )


def test_max_versions_per_model_refuses_the_upload_and_keeps_no_bytes(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    set_quotas(client, auth, maxVersionsPerModel=1)
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    assert_quota_problem(upload(client, auth(), "iris"), "maxVersionsPerModel", 1, 1)
    assert row_count(engine, "model_versions") == 1
    assert len(stored_files(container.settings.artifact_path)) == 1
    create_model(client, auth(), "other")  # the limit is per model
    assert upload(client, auth(), "other").status_code == 201


def test_max_artifact_bytes_counts_the_upload_being_added(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    size = len(iris_model_bytes())
    set_quotas(client, auth, maxArtifactBytes=size + size // 2)
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    refused = upload(client, auth(), "iris")
    assert_quota_problem(refused, "maxArtifactBytes", size + size // 2, size)
    assert refused.json()["requested"] == size
    assert row_count(engine, "model_versions") == 1
    assert len(stored_files(container.settings.artifact_path)) == 1


def test_max_concurrent_training_jobs_counts_queued_jobs(
    client: TestClient, auth: Auth, container: Container
) -> None:
    container.training_runner.stop()  # jobs stay queued, so they keep counting
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    data = root / "iris.csv"
    x, y = load_iris(return_X_y=True)
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d", "species"])
        writer.writerows([*row, target] for row, target in zip(x, y, strict=True))
    set_quotas(client, auth, maxConcurrentTrainingJobs=1)
    create_model(client, auth(), "iris")
    body = {
        "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression"},
        "datasetConfig": {"trainPath": str(data), "format": "csv", "target": "species"},
    }
    first = client.post(f"{API}/models/iris/train", json=body, headers=auth())
    assert first.status_code == 202, first.text
    assert_quota_problem(
        client.post(f"{API}/models/iris/train", json=body, headers=auth()), "maxConcurrentTrainingJobs", 1, 1
    )
    client.post(f"{API}/training-jobs/{first.json()['id']}/cancel", headers=auth())
    assert client.post(f"{API}/models/iris/train", json=body, headers=auth()).status_code == 202


def test_max_loaded_models_refuses_an_explicit_load_and_evicts_for_a_prediction(
    client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    upload(client, auth(), "iris")
    set_quotas(client, auth, maxLoadedModels=1)
    assert client.post(f"{API}/models/iris/versions/1/load", headers=auth()).status_code == 200
    assert_quota_problem(
        client.post(f"{API}/models/iris/versions/2/load", headers=auth()), "maxLoadedModels", 1, 1
    )
    predicted = client.post(
        f"{API}/models/iris/predict",
        json={"input": {"features": FEATURES}, "options": {"version": 2}},
        headers=auth(),
    )
    assert predicted.status_code == 200, predicted.text
    assert usage(client, auth)["maxLoadedModels"] == {
        "limit": 1,
        "current": 1,
        "enforced": True,
        "scope": "replica",
    }
    ready = client.get("/v2/models/iris/versions/1/ready", headers=auth()).json()
    assert ready["parameters"]["loaded"] is False  # version 1 made room for version 2


def test_loaded_models_of_other_tenants_do_not_count(client: TestClient, auth: Auth) -> None:
    for tenant in ("acme", "globex"):
        create_model(client, auth(tenant=tenant), "iris")
        upload(client, auth(tenant=tenant), "iris")
    set_quotas(client, auth, maxLoadedModels=1)
    assert client.post(f"{API}/models/iris/versions/1/load", headers=auth(tenant="globex")).status_code == 200
    assert client.post(f"{API}/models/iris/versions/1/load", headers=auth()).status_code == 200


def test_usage_reports_use_against_limit_for_every_quota(client: TestClient, auth: Auth) -> None:
    set_quotas(client, auth, maxModels=5, maxDeployments=3)
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    upload(client, auth(), "iris")
    create_model(client, auth(), "empty")
    report = usage(client, auth)
    size = len(iris_model_bytes())
    assert {name: (q["limit"], q["current"]) for name, q in report.items()} == {
        "maxModels": (5, 2),
        "maxVersionsPerModel": (None, 2),
        "maxArtifactBytes": (None, 2 * size),
        "maxConcurrentTrainingJobs": (None, 0),
        "maxLoadedModels": (None, 0),
        "maxDeployments": (3, 0),
    }
    assert all(q["enforced"] for q in report.values())


def test_usage_is_for_the_tenants_own_admin_or_a_superadmin(client: TestClient, auth: Auth) -> None:
    assert client.get(f"{API}/tenants/acme/usage", headers=auth("editor")).status_code == 403
    other = client.get(f"{API}/tenants/acme/usage", headers=auth("admin", tenant="globex"))
    assert other.status_code == 404  # another tenant's existence is not revealed
    root = auth("superadmin", tenant="platform")
    assert client.get(f"{API}/tenants/globex/usage", headers=root).status_code == 200
    assert client.get(f"{API}/tenants/nobody/usage", headers=root).status_code == 404


def test_concurrent_creates_cannot_overshoot_max_models(
    client: TestClient, auth: Auth, container: Container, engine: Engine
) -> None:
    attempts = 8
    set_quotas(client, auth, maxModels=3)
    caller = Principal("racer", "acme", frozenset({Role.EDITOR}))
    start = threading.Barrier(attempts)
    outcomes: list[str] = []

    def create(i: int) -> None:
        start.wait()
        try:
            container.registry.create_model(caller, NewModel(f"m{i}", Framework.ONNX))
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * (attempts - 3)
    assert row_count(engine, "models") == 3
