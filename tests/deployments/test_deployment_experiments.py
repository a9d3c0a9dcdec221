"""Experiments on a deployment: created with ``deployment`` instead of ``model`` (422s naming the field),
pools of replicas for the arms that the serving revision does not serve, the fronts' routing decision
(unit tests with a stand-in replica client), and one live run with real local replicas: traffic through
``/deployments/{name}/predict`` split by key, sticky, answers naming the arm and coming from its
version, counted in the results, and promotion rolling the deployment out to the winner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from aiservice.application.deploying.experiment_pools import arm_key, pool_revision, pool_size
from aiservice.application.deploying.ports import Forwarded, ReplicaUnreachable
from aiservice.application.experimenting.deployment_arms import DeploymentArms, deployment_of_experiment
from aiservice.application.experimenting.ports import Observation
from aiservice.application.experimenting.recorder import ObservationRecorder
from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.serving.results import PredictOptions
from aiservice.bootstrap import Container
from aiservice.domain.deployments import (
    Deployment,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Revision,
    Scaling,
)
from aiservice.domain.errors import InvalidInput
from aiservice.domain.experiments import Arm, Experiment, ExperimentMode, KeySource, RoutingKeySpec
from aiservice.domain.tenancy import Principal, Role
from tests.conftest import Auth
from tests.deployments.fakes import FakeDeployer
from tests.helpers import create_model, upload, wait_until

API = "/api/v1/ai"
ROW = {"features": [5.1, 3.5, 1.4, 0.2]}
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def reconcile(container: Container) -> None:
    container.deployment_reconcile._task()  # one pass of the reconcile loop, now


@pytest.fixture
def fake(container: Container) -> Iterator[FakeDeployer]:
    deployer = FakeDeployer()
    real = container.deployers.get(DeploymentTarget.LOCAL)
    container.deployers[DeploymentTarget.LOCAL] = deployer  # type: ignore[index]
    yield deployer
    if real is not None:
        real.close()


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


def deploy(client: TestClient, auth: Auth, name: str = "iris-prod") -> dict[str, Any]:
    body = {"deploymentName": name, "environment": "staging", "minReplicas": 1, "version": 1}
    response = client.post(f"{API}/models/iris/deploy", json=body, headers=auth("deployer"))
    assert response.status_code == 202, response.text
    deployed: dict[str, Any] = response.json()
    return deployed


def experiment_body(**changes: Any) -> dict[str, Any]:
    return {
        "name": "deployed-ab",
        "deployment": "iris-prod",
        "arms": [{"name": "A", "version": 1}, {"name": "B", "version": 2}],
        "routingKey": {"header": "X-User-Id"},
        **changes,
    }


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"model": "iris"}, "body.deployment"),  # both a model and a deployment
        ({"deployment": None}, "body.model"),  # neither
        ({"deployment": "no-such-thing"}, "body.deployment"),
        ({"routingKey": {"input": "user_id"}}, "body.routingKey.input"),
        ({"arms": [{"name": "A", "version": 1}, {"name": "B", "version": 7}]}, "body.arms.1.version"),
    ],
)
def test_a_bad_deployment_experiment_is_a_422_naming_the_field(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, changes: dict[str, Any], field_name: str
) -> None:
    deploy(client, auth)
    response = client.post(f"{API}/experiments", json=experiment_body(**changes), headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert field_name in [e["field"] for e in response.json()["errors"]]


def test_a_deployment_experiment_is_stored_on_the_deployments_model(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    deploy(client, auth)
    created = client.post(f"{API}/experiments", json=experiment_body(), headers=auth("editor"))
    assert created.status_code == 201, created.text
    read = client.get(f"{API}/experiments/{created.json()['id']}", headers=auth("viewer")).json()
    assert (read["deployment"], read["modelId"]) == ("iris-prod", iris)


# -- pools of the arms' versions ------------------------------------------------------------------------


def test_a_running_experiment_gets_a_pool_for_the_arm_the_serving_revision_does_not_serve(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer, container: Container
) -> None:
    deployed = deploy(client, auth)
    reconcile(container)
    experiment = client.post(f"{API}/experiments", json=experiment_body(), headers=auth("editor")).json()
    assert (
        client.post(f"{API}/experiments/{experiment['id']}/start", headers=auth("editor")).status_code == 200
    )
    reconcile(container)
    pool = fake.running[(deployed["id"], pool_revision(2))]
    assert (pool.version, pool.replicas) == (2, 1)
    shown = client.get(f"{API}/deployments/iris-prod", headers=auth("viewer")).json()
    assert sorted((a["arm"], a["version"], a["pool"]) for a in shown["experimentArms"]) == [
        ("A", 1, False),
        ("B", 2, True),
    ]
    client.post(f"{API}/experiments/{experiment['id']}/stop", headers=auth("editor"))
    reconcile(container)
    assert client.get(f"{API}/deployments/iris-prod", headers=auth("viewer")).json()["experimentArms"] == []
    reconciler = container.deployment_reconcile._task.__self__  # type: ignore[attr-defined]
    reconciler._now = lambda: time.monotonic() + 3600  # past the pool's drain
    reconcile(container)
    assert (deployed["id"], pool_revision(2)) in fake.retired


def test_a_pool_takes_its_arms_share_of_the_serving_replicas_and_at_least_one() -> None:
    assert [pool_size(4, share) for share in (0.0, 0.05, 0.5, 1.0)] == [1, 1, 2, 4]
    assert pool_size(0, 0.5) == 1  # a dev deployment scaled to zero still has its pool warm


# -- the fronts' routing decision (unit) -------------------------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.rows: list[Observation] = []

    def write(self, observations: Any) -> None:
        self.rows.extend(observations)


class _NoDirectory:
    def running(self) -> list[Experiment]:
        return []


@dataclass
class _Replicas:
    """Answers as a replica of the version in the path would, and records what was sent where."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)

    async def send(self, endpoint: str, path: str, body: bytes, headers: dict[str, str]) -> Forwarded:
        self.sent.append((endpoint, path))
        if endpoint in self.down:
            raise ReplicaUnreachable("refused")
        version = int(path.split("/versions/")[1].split("/")[0] if ":" not in path else path.split(":")[1][0])
        return Forwarded(200, "application/json", orjson.dumps({"prediction": "setosa", "version": version}))

    async def close(self) -> None:
        return None


def _deployment(endpoints: dict[str, str]) -> Deployment:
    revision = Revision(1, 1, "1", NOW)
    return Deployment(
        tenant_id="acme",
        name="iris-prod",
        model_id="m1",
        environment=Environment.STAGING,
        target=DeploymentTarget.LOCAL,
        scaling=Scaling(1, 1),
        resources=ResourceLimits(),
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
        serving=revision,
        endpoints={"1": "http://serving", **endpoints},
    )


def _experiment(mode: ExperimentMode = ExperimentMode.AB, deployment: str | None = "iris-prod") -> Experiment:
    experiment = Experiment.create(
        tenant_id="acme",
        name="e",
        model_id="m1",
        mode=mode,
        arms=[Arm("A", 1), Arm("B", 2)],
        now=NOW,
        deployment=deployment,
        routing_key=RoutingKeySpec(KeySource.HEADER, "X-User-Id"),
    )
    experiment.start(NOW)
    return experiment


ARMS = {arm_key("A", 1): "http://serving", arm_key("B", 2): "http://pool-b"}
CALLER = Principal("user", "acme", frozenset({Role.PREDICTOR}))


def _front(experiment: Experiment | None) -> tuple[DeploymentArms, _Store]:
    store = _Store()
    traffic = ExperimentTraffic(_NoDirectory(), ObservationRecorder(store))
    if experiment is not None:
        traffic.follow(experiment)
    return DeploymentArms(traffic), store


def _call(front: DeploymentArms, replicas: _Replicas, deployment: Deployment, user: str) -> Forwarded | None:
    async def go() -> Forwarded | None:
        answer = await front.forward(
            replicas, CALLER, deployment, "predict", b"{}", {"x-request-id": f"r-{user}"}, {"x-user-id": user}
        )
        await front.drain()
        return answer

    return asyncio.run(go())


def test_the_front_sends_each_key_to_its_arms_replicas_stickily_and_names_the_arm() -> None:
    experiment = _experiment()
    front, store = _front(experiment)
    replicas, deployment = _Replicas(), _deployment(ARMS)
    arms: dict[str, set[str]] = {}
    for user in [f"u{i}" for i in range(40)] * 2:
        answer = _call(front, replicas, deployment, user)
        assert answer is not None
        document = orjson.loads(answer.body)
        arm = document["experiment"]["arm"]
        assert document["version"] == {"A": 1, "B": 2}[arm]
        assert dict(answer.headers)["X-Aiservice-Experiment"] == f"{experiment.id}; arm={arm}"
        arms.setdefault(user, set()).add(arm)
    assert all(len(seen) == 1 for seen in arms.values())  # sticky
    assert {a for seen in arms.values() for a in seen} == {"A", "B"}  # split
    assert {endpoint for endpoint, _ in replicas.sent} == {"http://serving", "http://pool-b"}
    store.rows.clear()
    front._traffic.recorder.flush()
    assert len(store.rows) == 80 and {r.arm for r in store.rows} == {"A", "B"}


def test_without_a_running_experiment_or_a_ready_pool_the_serving_revision_answers_unrouted() -> None:
    replicas = _Replicas()
    assert _call(_front(None)[0], replicas, _deployment(ARMS), "u1") is None
    on_model = _front(_experiment(deployment=None))[0]
    assert _call(on_model, replicas, _deployment(ARMS), "u1") is None
    front = _front(_experiment())[0]
    assert all(_call(front, replicas, _deployment({}), f"u{i}") is None for i in range(10))
    assert replicas.sent == []


def test_an_arm_that_does_not_answer_is_observed_as_an_error_and_the_caller_is_served_unrouted() -> None:
    experiment = _experiment()
    front, store = _front(experiment)
    replicas = _Replicas(down={"http://pool-b"})
    routed = [_call(front, replicas, _deployment(ARMS), f"u{i}") for i in range(20)]
    front._traffic.recorder.flush()
    failed = [r for r in store.rows if r.error]
    assert failed and {r.arm for r in failed} == {"B"}
    assert routed.count(None) == len(failed)


def test_shadow_copies_go_to_the_challengers_pool_and_never_answer() -> None:
    front, store = _front(_experiment(ExperimentMode.SHADOW))
    replicas = _Replicas()
    answers = [_call(front, replicas, _deployment(ARMS), f"u{i}") for i in range(5)]
    assert all(a is not None and orjson.loads(a.body)["version"] == 1 for a in answers)
    front._traffic.recorder.flush()
    assert sum(r.shadow and r.arm == "B" for r in store.rows) == 5
    assert sum(endpoint == "http://pool-b" for endpoint, _ in replicas.sent) == 5


def test_a_v2_call_goes_to_the_arms_version_and_is_named_by_the_header_only() -> None:
    experiment = _experiment()
    front = _front(experiment)[0]
    replicas = _Replicas()

    async def go() -> Forwarded | None:
        return await front.forward(
            replicas, CALLER, _deployment(ARMS), "v2", b"{}", {"x-request-id": "r"}, {"x-user-id": "u7"}
        )

    answer = asyncio.run(go())
    assert answer is not None
    arm = dict(answer.headers)["X-Aiservice-Experiment"].rpartition("arm=")[2]
    version = {"A": 1, "B": 2}[arm]
    assert replicas.sent[-1][1] == f"/v2/models/m1/versions/{version}/infer"
    assert "experiment" not in orjson.loads(answer.body)


def test_an_experiment_on_a_kubernetes_deployment_is_refused_naming_the_field() -> None:
    deployment = _deployment({})
    deployment.target = DeploymentTarget.KUBERNETES

    class _Deployments:
        def get_by_name(self, name: str) -> Deployment | None:
            return deployment if name == "iris-prod" else None

    class _Uow:
        deployments = _Deployments()

    with pytest.raises(InvalidInput) as refused:
        deployment_of_experiment(_Uow(), "iris-prod", None)  # type: ignore[arg-type]
    assert [e.field for e in refused.value.errors] == ["body.deployment"]


def test_the_model_endpoint_is_not_routed_by_a_deployment_experiment() -> None:
    traffic = ExperimentTraffic(_NoDirectory(), ObservationRecorder(_Store()))
    traffic.follow(_experiment())
    options = PredictOptions(headers={"X-User-Id": "u1"})
    assert traffic.assign("acme", "m1", "m1", options, [{}]) is None


# -- live: real local replicas --------------------------------------------------------------------


def _wait(client: TestClient, auth: Auth, container: Container, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        reconcile(container)
        shown = client.get(f"{API}/deployments/iris-prod", headers=auth("viewer")).json()
        if check(shown):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # one live run is enough
def test_live_traffic_is_split_by_key_named_counted_and_promotion_rolls_the_deployment_out(
    client: TestClient, auth: Auth, iris: str, container: Container
) -> None:
    container.deployment_reconcile.stop()  # the test reconciles by hand
    container.experiments.background.stop()
    deploy(client, auth)
    _wait(client, auth, container, lambda d: d["status"] == "available")
    experiment = client.post(f"{API}/experiments", json=experiment_body(), headers=auth("editor")).json()
    assert (
        client.post(f"{API}/experiments/{experiment['id']}/start", headers=auth("editor")).status_code == 200
    )
    _wait(client, auth, container, lambda d: len(d["experimentArms"]) == 2)

    arms: dict[str, set[str]] = {}
    for user in [f"user-{i}" for i in range(12)] * 2:
        response = client.post(
            f"{API}/deployments/iris-prod/predict",
            json={"input": ROW},
            headers={**auth("predictor"), "X-User-Id": user},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        arm = answer["experiment"]["arm"]
        assert answer["version"] == {"A": 1, "B": 2}[arm]
        assert response.headers["x-aiservice-experiment"] == f"{experiment['id']}; arm={arm}"
        arms.setdefault(user, set()).add(arm)
    assert all(len(seen) == 1 for seen in arms.values())
    assert {a for seen in arms.values() for a in seen} == {"A", "B"}

    container.experiments.recorder.flush()
    results = client.get(f"{API}/experiments/{experiment['id']}/results", headers=auth("viewer")).json()
    counts = {a["arm"]: a["requests"] for a in results["arms"]}
    expected = {arm: 2 * sum(arm in seen for seen in arms.values()) for arm in ("A", "B")}
    assert counts == expected

    promoted = client.post(
        f"{API}/experiments/{experiment['id']}/promote", json={"arm": "B"}, headers=auth("editor")
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "completed"
    shown = _wait(client, auth, container, lambda d: d["serving"]["version"] == 2, timeout=180)
    assert shown["experimentArms"] == []
    plain = client.post(
        f"{API}/deployments/iris-prod/predict", json={"input": ROW}, headers=auth("predictor")
    )
    assert plain.status_code == 200 and plain.json()["version"] == 2
    assert "experiment" not in plain.json() and "x-aiservice-experiment" not in plain.headers


def test_deleting_the_deployment_stops_its_experiment_with_the_reason(
    client: TestClient, auth: Auth, iris: str, fake: FakeDeployer
) -> None:
    deploy(client, auth)
    experiment = client.post(f"{API}/experiments", json=experiment_body(), headers=auth("editor")).json()
    client.post(f"{API}/experiments/{experiment['id']}/start", headers=auth("editor"))
    assert client.delete(f"{API}/deployments/iris-prod", headers=auth("deployer")).status_code == 204

    def stopped() -> dict[str, Any] | None:
        read = client.get(f"{API}/experiments/{experiment['id']}", headers=auth("viewer")).json()
        return read if read["status"] == "stopped" else None

    read = wait_until(stopped, what="the experiment to stop once the deployment is gone")
    assert "iris-prod" in str(read.get("stopReason") or read)
    # a new deployment of that name starts clean: a new experiment on it may start
    deploy(client, auth)
    again = client.post(f"{API}/experiments", json=experiment_body(name="again"), headers=auth("editor"))
    assert (
        client.post(f"{API}/experiments/{again.json()['id']}/start", headers=auth("editor")).status_code
        == 200
    )
