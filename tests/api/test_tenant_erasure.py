"""GDPR erasure: a superadmin erases everything a tenant stored, bytes included; the tenant, its audit
chain (with the erasure recorded) and every other tenant stay."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.settings import Settings
from tests.api.test_training import (
    FINISHED,
    iris_model,
    slow_torch_job,
    train_body,
    training_workers,
    wait_for,
    wait_for_epoch,
    write_iris_csv,
)
from tests.conftest import Auth, make_settings
from tests.helpers import iris_model_bytes, stored_files, upload, wait_until

API = "/api/v1/ai"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """Encryption on: the key envelopes and decrypted copies must go with the artifacts. Webhooks may
    point at this machine (a closed port: their deliveries fail, and are logged)."""
    return make_settings(
        database_url,
        tmp_path / "data",
        artifact_encryption_key=base64.b64encode(os.urandom(32)).decode(),
        webhook_allow_private=True,
    )


@pytest.fixture
def root(auth: Auth) -> dict[str, str]:
    return auth("superadmin", tenant="platform")


def _files(container: Container) -> set[Path]:
    return set(stored_files(container.settings.artifact_path)) | set(stored_files(container.datasets.root))


def _erase(client: TestClient, root: dict[str, str], tenant: str = "acme") -> dict[str, Any]:
    response = client.delete(f"{API}/tenants/{tenant}/data", headers=root)
    assert response.status_code == 200, response.text
    erased: dict[str, int] = response.json()["erased"]
    return erased


def _fill(client: TestClient, auth: Auth, tmp_path: Path, tenant: str) -> str:
    """A model with a trained and an uploaded version, an alias, a dataset, an API key and a pinged
    webhook; the key."""
    headers = auth(tenant=tenant)
    dataset = write_iris_csv(tmp_path / f"{tenant}.csv").read_bytes()
    posted = client.post(
        f"{API}/datasets", data={"name": "iris"}, files={"file": ("iris.csv", dataset)}, headers=headers
    )
    assert posted.status_code == 201, posted.text
    iris_model(client, headers)
    job = client.post(f"{API}/models/iris/train", json=train_body("dataset://iris"), headers=headers).json()
    assert wait_for(client, headers, job["id"], *FINISHED)["status"] == "succeeded"
    assert upload(client, headers, "iris").status_code == 201
    client.put(f"{API}/models/iris/aliases/champion", json={"version": 2}, headers=headers)
    assert client.post(f"{API}/models/iris/predict", json={"input": ROW}, headers=headers).status_code == 200
    key = client.post(f"{API}/api-keys", json={"name": "scorer", "roles": ["viewer"]}, headers=headers)
    hook = client.post(
        f"{API}/webhooks", json={"url": "http://127.0.0.1:9/", "eventTypes": ["*"]}, headers=headers
    )
    assert client.post(f"{API}/webhooks/{hook.json()['id']}/ping", headers=headers).status_code == 200
    dev = {"deploymentName": "iris-dev", "environment": "dev", "minReplicas": 0, "version": 1}
    assert client.post(f"{API}/models/iris/deploy", json=dev, headers=headers).status_code == 202
    reference = {"rows": [ROW] * 5}
    profile = client.put(f"{API}/models/iris/versions/2/reference-profile", json=reference, headers=headers)
    assert profile.status_code == 200, profile.text
    client.put(f"{API}/models/iris/monitoring", json={"scheduleMinutes": 60}, headers=headers)
    assert client.post(f"{API}/models/iris/drift", json={"version": 2}, headers=headers).status_code == 200
    return str(key.json()["key"])


def test_erasure_removes_the_tenants_data_and_leaves_the_other_tenant_alone(
    client: TestClient, auth: Auth, root: dict[str, str], container: Container, engine: Engine, tmp_path: Path
) -> None:
    globex_key = _fill(client, auth, tmp_path, "globex")
    globex_files = _files(container)
    acme_key = _fill(client, auth, tmp_path, "acme")
    assert _files(container) > globex_files

    erased = _erase(client, root)

    assert erased == {
        "models": 1,
        "versions": 2,
        "aliases": 1,
        "artifacts": 2,
        "trainingJobs": 1,
        "trainingJobEvents": erased["trainingJobEvents"],
        "deployments": 1,
        "datasets": 1,
        "apiKeys": 1,
        "webhooks": 1,
        "webhookDeliveries": erased["webhookDeliveries"],
        "outboxEvents": erased["outboxEvents"],
        "predictionFeedback": 0,
        "predictionLogs": 0,
        "payloadLogFiles": 0,
        "payloadLogPolicies": 0,
        "experiments": 0,
        "experimentObservations": 0,
        "driftReports": 1,
        "referenceProfiles": 2,  # the trained version's (its validation data) and the PUT one
        "monitoringPolicies": 1,
        "monitoringActions": 0,
        "automlStudies": 0,
    }
    assert erased["trainingJobEvents"] > 0 and erased["outboxEvents"] > 0
    assert erased["webhookDeliveries"] >= 1  # the ping, and any event delivered by then
    assert _files(container) == globex_files  # bodies, key envelopes, decrypted copies, datasets: gone
    acme = auth(tenant="acme")
    assert client.get(f"{API}/models", headers=acme).json()["items"] == []
    assert client.get(f"{API}/training-jobs", headers=acme).json()["items"] == []
    assert client.get(f"{API}/datasets", headers=acme).json()["items"] == []
    assert client.get(f"{API}/webhooks", headers=acme).json()["items"] == []
    assert client.get(f"{API}/models/iris/versions/1/artifact", headers=acme).status_code == 404
    assert client.post(f"{API}/models/iris/predict", json={"input": ROW}, headers=acme).status_code == 404
    assert client.get(f"{API}/models", headers={"Authorization": f"ApiKey {acme_key}"}).status_code == 401

    globex = auth(tenant="globex")
    assert client.get(f"{API}/models/iris/versions/2/artifact", headers=globex).content == iris_model_bytes()
    assert client.post(f"{API}/models/iris/predict", json={"input": ROW}, headers=globex).status_code == 200
    assert client.get(f"{API}/models", headers={"Authorization": f"ApiKey {globex_key}"}).status_code == 200
    assert len(client.get(f"{API}/webhooks", headers=globex).json()["items"]) == 1
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT event_type FROM outbox WHERE tenant_id = 'acme'")).scalars().all()
    assert set(left) == {"ModelDeleted"}  # only the notice that makes every replica forget the model


def test_erasure_stops_the_tenants_running_job_and_its_model_is_never_registered(
    client: TestClient, auth: Auth, root: dict[str, str], container: Container
) -> None:
    headers = auth("editor")
    datasets = container.settings.dataset_root_paths[0]
    datasets.mkdir(parents=True, exist_ok=True)
    job = slow_torch_job(client, headers, datasets)
    wait_for_epoch(client, headers, job["id"])
    workers = training_workers()
    assert workers, "the running job has a worker process"

    assert _erase(client, root)["trainingJobs"] == 1
    wait_until(lambda: not workers & training_workers(), 15, what="the worker process to end")
    assert container.training_runner.running == []
    assert _files(container) == set()  # nothing the job wrote, and no version registered from it
    assert client.get(f"{API}/models", headers=headers).json()["items"] == []


def test_the_erasure_is_recorded_in_the_tenants_audit_chain(
    client: TestClient, auth: Auth, root: dict[str, str], container: Container
) -> None:
    iris_model(client, auth())
    _erase(client, root)
    records = client.get(f"{API}/audit", headers=auth("admin")).json()["items"]
    erase = records[0]
    assert (erase["action"], erase["outcome"], erase["subject"]) == ("tenant.erase", "success", "tester")
    assert erase["changes"]["models"] == [1, 0]
    assert [r["action"] for r in records][-1] == "model.create"  # the chain before it is kept
    assert all(report.broken is None for report in container.audit.verify("acme"))


def test_a_second_erasure_is_harmless(client: TestClient, auth: Auth, root: dict[str, str]) -> None:
    iris_model(client, auth())
    assert upload(client, auth(), "iris").status_code == 201
    _erase(client, root)
    again = _erase(client, root)
    # Nothing but the one ModelDeleted notice the first erasure left (the relay never deletes rows).
    assert {kind: n for kind, n in again.items() if n} == {"outboxEvents": 1}
    assert client.get(f"{API}/tenants/acme", headers=root).json()["status"] == "active"
    assert iris_model(client, auth())["name"] == "iris"  # the tenant goes on, empty


@pytest.mark.parametrize(
    ("role", "tenant", "status"), [("admin", "acme", 403), ("superadmin", "platform", 404)]
)
def test_only_superadmins_erase_and_only_tenants_that_exist(
    client: TestClient, auth: Auth, role: str, tenant: str, status: int
) -> None:
    target = "acme" if role == "admin" else "nobody"
    response = client.delete(f"{API}/tenants/{target}/data", headers=auth(role, tenant=tenant))
    assert response.status_code == status
