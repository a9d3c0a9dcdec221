"""One small world for the replica tests, made once: a SQLite database in a folder of its own, an iris
classifier uploaded through the API, a second one whose artifact bytes were then corrupted, and
deployment rows pointing at them. Replicas started from here read that database, as a service's do."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from aiservice.application.deploying.ports import ReplicaSpec, RevisionState
from aiservice.bootstrap import bootstrap
from aiservice.domain.clock import utcnow
from aiservice.domain.deployments import (
    Deployment,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Scaling,
)
from aiservice.domain.tenancy import Principal, Role
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory
from aiservice.infrastructure.deploy.local import LocalDeployer
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import make_settings
from tests.helpers import create_model, iris_model_bytes, upload

TENANT = "acme"
TOKEN = "replica-token-for-the-tests-0123456789"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
X, _Y = load_iris(return_X_y=True)
# Deployments of the good model, one per test that starts a group of its own.
DEPLOYMENTS = ("iris-pair", "iris-drain", "iris-direct", "iris-orphan")


def row(i: int) -> dict[str, float]:
    return dict(zip(FEATURES, map(float, X[i]), strict=True))


def sklearn_label(i: int) -> str:
    model: LogisticRegression = sio.loads(
        iris_model_bytes(), trusted=sio.get_untrusted_types(data=iris_model_bytes())
    )
    return CLASSES[int(model.predict(X[i : i + 1].astype(np.float32))[0])]


@dataclass(frozen=True)
class World:
    settings: Settings
    model_id: str  # the good iris model's
    broken_model_id: str  # the one whose artifact bytes were changed after the upload
    deployment_ids: dict[str, str]  # by name

    def spec(self, name: str, replicas: int, *, revision: int = 1, version: int = 1) -> ReplicaSpec:
        return ReplicaSpec(
            tenant_id=TENANT,
            deployment_id=self.deployment_ids[name],
            deployment=name,
            revision=revision,
            model_id=self.broken_model_id if name == "broken" else self.model_id,
            version=version,
            replicas=replicas,
        )


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("replicas")
    settings = make_settings(
        f"sqlite:///{folder / 'aiservice.db'}",
        folder / "data",
        replica_token=TOKEN,
        graceful_shutdown_seconds=20,
    )
    container = bootstrap(settings)
    container.prepare()
    container.tenants.ensure(TENANT)
    token = container.tokens.issue("tester", TENANT, ["admin"], 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    schema = {"type": "tabular", "features": [{"name": f, "type": "number"} for f in FEATURES]}
    with TestClient(create_app(container)) as client:
        ids = {}
        for name in ("iris", "broken"):
            ids[name] = create_model(
                client, headers, name, inputSchema=schema, outputSchema={"classes": CLASSES}
            )["id"]
            response = upload(client, headers, name, iris_model_bytes())
            assert response.status_code == 201, response.text
    reader = Principal("tester", TENANT, frozenset({Role.ADMIN}))
    broken = container.versions.get_version(reader, "broken", 1)
    (settings.artifact_path / broken.artifact.key).write_bytes(b"not the bytes that were uploaded")
    deployment_ids = {}
    uow = SqlAlchemyUnitOfWorkFactory(container.engine, utcnow)
    with uow(TENANT) as unit:
        for name in (*DEPLOYMENTS, "broken"):
            deployment = Deployment.create(
                tenant_id=TENANT,
                name=name,
                model_id=ids["broken" if name == "broken" else "iris"],
                environment=Environment.DEV,
                target=DeploymentTarget.LOCAL,
                scaling=Scaling(1, 4),
                resources=ResourceLimits(),
                version=1,
                reference="1",
                now=utcnow(),
            )
            unit.deployments.add(deployment)
            deployment_ids[name] = deployment.id
        unit.commit()
    container.close()
    yield World(settings, ids["iris"], ids["broken"], deployment_ids)


@pytest.fixture(scope="module")
def deployer(world: World) -> Iterator[LocalDeployer]:
    """A deployer as the service builds it, probing often so the tests need not wait."""
    settings = world.settings.model_copy(
        update={"replica_probe_seconds": 0.2, "replica_probe_timeout_seconds": 1.0, "replica_hung_probes": 3}
    )
    local = LocalDeployer.from_settings(settings, TOKEN)
    yield local
    local.close()


def wait_for(
    deployer: LocalDeployer,
    world: World,
    name: str,
    condition: Callable[[RevisionState], bool],
    timeout: float = 180.0,
) -> RevisionState:
    """The revision's state once ``condition`` holds (replicas import the whole service: seconds each)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = deployer.observe(world.deployment_ids[name], 1)
        if state is not None and condition(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"{name}: not within {timeout:g} s; last seen {state}")


def predict_path(world: World, version: int = 1) -> str:
    return f"/api/v1/ai/models/{world.model_id}:{version}/predict"
