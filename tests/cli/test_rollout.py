"""``aiservice deploy``/``deployments`` and ``aiservice experiments`` against a live service. Deployments run
under the stand-in deployer of tests/deployments/fakes.py (replicas are "ready" when asked for), as in the
SDK's tests, so the API, the reconcile loop's decisions and the CLI are real while no replica is started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from aiservice.bootstrap import Container
from aiservice.domain.deployments import DeploymentTarget
from tests.cli.conftest import Run, error_line
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
def iris(cli: Run, tmp_path: Path) -> str:
    """A model with two versions, the first in production and the champion."""
    cli("models", "create", "iris", "--framework", "sklearn")
    for number, estimator in enumerate(
        [LogisticRegression(max_iter=500), DecisionTreeClassifier(max_depth=2, random_state=0)]
    ):
        path = tmp_path / f"v{number}.skops"
        sio.dump(estimator.fit(X, Y), path)
        assert cli("versions", "upload", "iris", str(path)).exit_code == 0
    promoted = cli("versions", "promote", "iris", "1", "--stage", "production", "--alias", "champion")
    assert promoted.exit_code == 0, promoted.stderr
    return "iris"


def test_a_deployment_is_created_shown_rolled_back_and_deleted(
    cli: Run, iris: str, fake: FakeDeployer, container: Container
) -> None:
    created = cli("deploy", iris, "iris-prod", "--min-replicas", "2", "--max-replicas", "3", "-o", "json")
    assert created.exit_code == 0, created.stderr
    deployment = json.loads(created.stdout)
    assert (deployment["name"], deployment["status"]) == ("iris-prod", "pending")

    container.deployment_reconcile._task()  # one pass now (its loop does the same every 2 s)
    listed = json.loads(cli("deployments", "list", "-o", "json").stdout)
    assert [(d["name"], d["status"]) for d in listed] == [("iris-prod", "available")]
    sheet = cli("deployments", "show", deployment["id"][:8])  # by a prefix of its id
    assert "iris-prod" in sheet.stdout and "available" in sheet.stdout and deployment["id"] in sheet.stdout

    second = cli("deployments", "create", iris, "iris-next", "--version", "2", "-o", "json")
    assert second.exit_code == 0, second.stderr
    rolled = cli("deployments", "rollback", "iris-next")
    assert rolled.exit_code == 1 and error_line(rolled).startswith("error: 409 ")  # nothing to go back to

    assert cli("deployments", "delete", "iris-prod", "--yes").exit_code == 0
    gone = cli("deployments", "show", "iris-prod")
    assert gone.exit_code == 1 and error_line(gone).startswith("error: 404 ")


def test_an_experiment_is_created_started_measured_and_promoted(cli: Run, iris: str) -> None:
    created = cli(
        "experiments", "create", "tree-vs-linear", "--model", iris, "--arm", "A=@champion", "--arm", "B=2",
        "-o", "json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    experiment = json.loads(created.stdout)
    assert (experiment["status"], experiment["champion"]) == ("draft", "A")

    assert "A=@champion, B=2" in cli("experiments", "show", "tree-vs-linear").stdout
    listed = cli("experiments", "list", "--model", iris)
    assert experiment["id"] in listed.stdout and "draft" in listed.stdout
    started = cli("experiments", "start", "tree-vs-linear")  # by its name
    assert started.exit_code == 0 and "running" in started.stdout
    cli("predict", iris, "--input", json.dumps({"features": X[0].tolist()}))

    results = cli("experiments", "results", experiment["id"][:8], "-o", "json")
    assert results.exit_code == 0, results.stderr
    assert "verdict" in json.loads(results.stdout)
    table = cli("experiments", "results", experiment["id"][:8])
    assert "A" in table.stdout and "B" in table.stdout and "verdict:" in table.stdout

    promoted = cli("experiments", "promote", experiment["id"][:8], "--arm", "B", "-o", "json")
    assert promoted.exit_code == 0, promoted.stderr
    assert (json.loads(promoted.stdout)["status"], json.loads(promoted.stdout)["winner"]) == (
        "completed",
        "B",
    )
    assert json.loads(cli("models", "show", iris, "-o", "json").stdout)["aliases"] == {"champion": 2}

    shown = json.loads(cli("experiments", "show", experiment["id"], "-o", "json").stdout)
    assert shown["winner"] == "B"


def test_an_experiment_is_stopped_and_a_bad_arm_is_a_usage_error(cli: Run, iris: str) -> None:
    created = cli(
        "experiments", "create", "stop-me", "--model", iris, "--arm", "A=1", "--arm", "B=2", "-o", "json"
    )
    experiment = json.loads(created.stdout)
    cli("experiments", "start", experiment["id"])
    stopped = json.loads(cli("experiments", "stop", experiment["id"], "-o", "json").stdout)
    assert (stopped["status"], stopped["winner"]) == ("stopped", None)

    bad = cli("experiments", "create", "x", "--model", iris, "--arm", "A=latest")
    assert bad.exit_code == 2 and "--arm" in error_line(bad)
