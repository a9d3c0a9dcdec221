"""Deployments and experiments through the SDK against a live service. Deployments run under a stand-in
deployer (tests/deployments/fakes.py: replicas are "ready" when asked for), so the API, the reconcile loop's
decisions and the SDK are real while no replica process is started; the real deployers have their own
tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from aiservice.bootstrap import Container
from aiservice.client import ConflictError, Deployment, Experiment, ExperimentResults, NotFoundError
from aiservice.domain.deployments import DeploymentTarget
from tests.deployments.fakes import FakeDeployer

X, Y = load_iris(return_X_y=True)


@pytest.fixture
def fake(container: Container) -> Iterator[FakeDeployer]:
    deployer = FakeDeployer()
    real = container.deployers.get(DeploymentTarget.LOCAL)
    container.deployers[DeploymentTarget.LOCAL] = deployer  # type: ignore[index]
    yield deployer
    if real is not None:
        real.close()


@pytest.fixture
def iris(sdk: Any) -> str:
    sdk.models.create("iris", "sklearn")
    sdk.models.upload_version("iris", LogisticRegression(max_iter=500).fit(X, Y))
    sdk.models.upload_version("iris", DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, Y))
    sdk.versions.promote("iris", 1, stage="production", alias="champion")
    return "iris"


def reconcile(container: Container) -> None:
    container.deployment_reconcile._task()  # one pass now (its loop does the same every 2 s)


def test_a_deployment_is_created_listed_updated_rolled_back_and_deleted(
    sdk: Any, iris: str, fake: FakeDeployer, container: Container
) -> None:
    created = sdk.deployments.create(iris, "iris-prod", min_replicas=2, max_replicas=4)
    assert isinstance(created, Deployment)
    assert (created.name, created.status, created.version, created.replicas["min"]) == (
        "iris-prod",
        "pending",
        1,
        2,
    )
    reconcile(container)
    assert sdk.deployments.get("iris-prod").status == "available"
    assert [d.name for d in sdk.deployments.list(model=iris)] == ["iris-prod"]

    updated = sdk.deployments.update("iris-prod", version=2)
    assert updated.version == 2
    reconcile(container)
    assert sdk.deployments.get("iris-prod").serving_version == 2

    back = sdk.deployments.rollback("iris-prod")
    assert back.version == 1
    sdk.deployments.delete("iris-prod")
    with pytest.raises(NotFoundError):
        sdk.deployments.get("iris-prod")


def test_an_experiment_runs_shows_results_is_promoted_and_deleted(sdk: Any, iris: str) -> None:
    arms = [{"name": "A", "alias": "champion"}, {"name": "B", "version": 2}]
    created = sdk.experiments.create("tree-vs-linear", iris, arms)
    assert isinstance(created, Experiment)
    assert (created.status, created.champion, created.mode) == ("draft", "A", "ab")
    assert [e.id for e in sdk.experiments.list(model=iris)] == [created.id]

    assert sdk.experiments.start(created.id).status == "running"
    assert sdk.experiments.pause(created.id).status == "paused"
    assert sdk.experiments.resume(created.id).status == "running"
    sdk.predict(iris, X[0].tolist())  # routed by the experiment
    results = sdk.experiments.results(created.id)
    assert isinstance(results, ExperimentResults) and set(results.arms) == {"A", "B"}
    with pytest.raises(ConflictError):
        sdk.experiments.delete(created.id)  # running

    promoted = sdk.experiments.promote(created.id, arm="B")
    assert (promoted.status, promoted.winner) == ("completed", "B")
    assert sdk.models.get(iris).aliases == {"champion": 2}
    sdk.experiments.delete(created.id)
    with pytest.raises(NotFoundError):
        sdk.experiments.get(created.id)


def test_a_stopped_experiment_ends_without_a_winner(sdk: Any, iris: str) -> None:
    experiment = sdk.experiments.create(
        "stop-me", iris, [{"name": "A", "version": 1}, {"name": "B", "version": 2}]
    )
    sdk.experiments.start(experiment.id)
    stopped = sdk.experiments.stop(experiment.id)
    assert (stopped.status, stopped.winner) == ("stopped", None)
