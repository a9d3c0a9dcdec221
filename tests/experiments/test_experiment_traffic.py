"""Experiments on the prediction path: sticky weighted routing that names the arm, pinned references
left alone, shadow copies that never change the caller's answer, observations, results with their
verdict, and the controller: a canary rolled back, a bandit's shift towards the better arm."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.experiments.conftest import (
    API,
    ROWS,
    act,
    give_feedback,
    observe,
    predict,
    results,
    started,
)
from tests.helpers import wait_until


def test_the_same_user_always_lands_on_the_same_arm_and_users_split_by_weight(
    client: TestClient, auth: Auth, iris: str
) -> None:
    experiment = started(client, auth)
    arms: dict[str, str] = {}
    for user in range(120):
        first = predict(client, auth, X_User_Id=f"user-{user}")
        again = predict(client, auth, X_User_Id=f"user-{user}")
        assert first["experiment"] == again["experiment"]
        assert first["experiment"]["id"] == experiment["id"]
        arms[f"user-{user}"] = first["experiment"]["arm"]
        assert first["version"] == (1 if first["experiment"]["arm"] == "A" else 2)
    share = Counter(arms.values())["B"] / len(arms)
    assert 0.3 < share < 0.7


def test_an_input_field_may_be_the_routing_key(client: TestClient, auth: Auth, iris: str) -> None:
    started(client, auth, routingKey={"input": "features"})
    answers = {predict(client, auth, ROWS[1])["experiment"]["arm"] for _ in range(10)}
    assert len(answers) == 1


def test_a_pinned_version_and_a_stopped_experiment_are_not_routed(
    client: TestClient, auth: Auth, iris: str
) -> None:
    experiment = started(client, auth)
    pinned = client.post(
        f"{API}/models/iris/predict",
        json={"input": {"features": ROWS[0]}, "options": {"version": 2}},
        headers=auth("predictor"),
    ).json()
    assert "experiment" not in pinned and pinned["version"] == 2
    assert (
        "experiment"
        not in client.post(
            f"{API}/models/iris:1/predict", json={"input": {"features": ROWS[0]}}, headers=auth("predictor")
        ).json()
    )
    act(client, auth, experiment["id"], "stop")
    assert "experiment" not in predict(client, auth, X_User_Id="u1")


def test_a_batch_is_routed_per_request_and_observed_per_row(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    response = client.post(
        f"{API}/models/iris/batch-predict",
        json={"inputs": [{"features": row} for row in ROWS]},
        headers={**auth("predictor"), "X-User-Id": "batcher"},
    )
    outputs = response.json()["outputs"]
    assert len({o["experiment"]["arm"] for o in outputs}) == 1
    container.experiments.recorder.flush()
    found = results(client, auth, experiment["id"])
    assert sum(arm["requests"] for arm in found["arms"]) == len(ROWS)


def test_shadow_traffic_never_changes_the_answer_and_records_the_challenger(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth, mode="shadow", routingKey=None)
    for row in ROWS * 3:
        routed = predict(client, auth, row)
        own = client.post(
            f"{API}/models/iris/predict",
            json={"input": {"features": row}, "options": {"version": 1}},
            headers=auth("predictor"),
        ).json()
        assert routed["experiment"]["arm"] == "A" and routed["version"] == 1
        assert routed["prediction"] == own["prediction"]

    def shadowed() -> bool:
        container.experiments.recorder.flush()
        found = {a["arm"]: a for a in results(client, auth, experiment["id"])["arms"]}
        return found["B"]["shadowRequests"] == len(ROWS) * 3 and found["A"]["requests"] == len(ROWS) * 3

    wait_until(shadowed, what="the challenger's shadow observations")


def test_results_report_per_arm_figures_and_the_verdict(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    experiment = started(client, auth)
    labels: dict[str, int] = {}
    for arm, right in (("A", 200), ("B", 200)):
        ids = observe(container, experiment["id"], arm, 400, errors=4, prefix="r", predictions=[1] * 400)
        labels.update({rid: 1 if i < right else 0 for i, rid in enumerate(ids)})
    give_feedback(engine, iris, labels, {})

    found = results(client, auth, experiment["id"])

    a = found["arms"][0]
    assert (a["arm"], a["requests"], a["errors"], a["errorRate"]) == ("A", 400, 4, 0.01)
    assert set(a["latencyMs"]) == {"count", "p50", "p95", "p99"} and a["predictions"] == {"1": 396}
    assert a["outcome"]["n"] == 396 and a["ci"] is not None
    verdict = found["verdict"]
    assert found["metric"] == "accuracy" and verdict["test"] == "two-proportion z-test"
    assert "mSPRT" in verdict["method"] and verdict["minSampleSize"] > 0
    assert verdict["verdict"] == "keep running" and verdict["winner"] is None
    assert verdict["pValue"] is not None and verdict["ci"] is not None


def test_feedback_through_the_api_is_joined_by_request_id(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    policy = {"enabled": True, "sampleRate": 1.0}
    enabled = client.put(f"{API}/models/iris/payload-logging", json=policy, headers=auth("editor"))
    assert enabled.status_code == 200, enabled.text
    answer = predict(client, auth, ROWS[0], X_Request_ID="fb-exp-1", X_User_Id="u-1")
    container.payload_logging.recorder.flush()
    container.experiments.recorder.flush()
    label = {"label": answer["prediction"]}
    given = client.post(f"{API}/predictions/fb-exp-1/feedback", json=label, headers=auth("predictor"))
    assert given.status_code == 200, given.text
    arm = {a["arm"]: a for a in results(client, auth, experiment["id"])["arms"]}[answer["experiment"]["arm"]]
    assert arm["outcome"] == {"n": 1, "successes": 1, "rate": 1.0}


def test_a_canary_rolls_back_when_the_challengers_error_rate_spikes(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    canary = {"steps": [0.1, 0.5, 1.0], "minRequests": 50, "minSeconds": 0, "maxErrorRate": 0.05}
    experiment = started(client, auth, mode="canary", canary=canary, routingKey=None)
    assert experiment["weights"] == {"A": 0.9, "B": 0.1}
    observe(container, experiment["id"], "A", 60)
    observe(container, experiment["id"], "B", 40, errors=20)

    (running,) = container.experiments.traffic._directory.running()
    assert container.experiments.controller.look(running) == "rolled_back"

    after = client.get(f"{API}/experiments/{experiment['id']}", headers=auth()).json()
    assert after["status"] == "stopped" and after["reason"].startswith("rolled back: challenger error rate")
    assert all("experiment" not in predict(client, auth) for _ in range(5))  # the champion answers alone
    with engine.connect() as conn:
        types = conn.execute(sa.text("SELECT event_type FROM outbox")).scalars().all()
    assert "ExperimentRolledBack" in types
    records = client.get(f"{API}/audit", headers=auth("admin")).json()["items"]
    automatic = [r for r in records if r["action"] == "experiment.roll_back"]
    assert automatic and automatic[0]["subject"] == "system:experiment-controller"


def test_a_canary_advances_while_its_guards_hold(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    canary = {"steps": [0.1, 0.5, 1.0], "minRequests": 50, "minSeconds": 0}
    experiment = started(client, auth, mode="canary", canary=canary, routingKey=None)
    observe(container, experiment["id"], "A", 60)
    observe(container, experiment["id"], "B", 60)
    (running,) = container.experiments.traffic._directory.running()
    assert container.experiments.controller.look(running) == "advanced"
    after = client.get(f"{API}/experiments/{experiment['id']}", headers=auth()).json()
    assert (after["canaryStep"], after["weights"]) == (1, {"A": 0.5, "B": 0.5})


def test_a_bandit_shifts_traffic_to_the_better_arm(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    experiment = started(client, auth, mode="bandit", bandit={"minExploration": 0.05}, routingKey=None)
    assert experiment["weights"] == {"A": 1.0, "B": 1.0}
    rng = random.Random(7)
    rewards: dict[str, float] = {}
    for arm, rate in (("A", 0.2), ("B", 0.6)):
        for rid in observe(container, experiment["id"], arm, 60, prefix="bandit"):
            rewards[rid] = 1.0 if rng.random() < rate else 0.0
    give_feedback(engine, iris, {}, rewards)

    (running,) = container.experiments.traffic._directory.running()
    container.experiments.controller.look(running)

    weights = client.get(f"{API}/experiments/{experiment['id']}", headers=auth()).json()["weights"]
    assert weights["B"] > 0.9 and weights["A"] >= 0.05
    served = Counter(predict(client, auth)["experiment"]["arm"] for _ in range(40))
    assert served["B"] > served["A"]
    found = results(client, auth, experiment["id"])
    assert found["verdict"]["test"] == "posterior probability of being best"


def test_auto_promotion_moves_the_alias_once_the_verdict_names_a_winner(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    experiment = started(client, auth, autoPromote=True)
    labels: dict[str, int] = {}
    for arm, right in (("A", 200), ("B", 340)):
        ids = observe(container, experiment["id"], arm, 400, prefix="auto", predictions=[1] * 400)
        labels.update({rid: 1 if i < right else 0 for i, rid in enumerate(ids)})
    give_feedback(engine, iris, labels, {})

    (running,) = container.experiments.traffic._directory.running()
    assert container.experiments.controller.look(running) == "promoted"

    after = client.get(f"{API}/experiments/{experiment['id']}", headers=auth()).json()
    assert (after["status"], after["winner"]) == ("completed", "B")
    assert after["reason"].startswith("auto-promoted: B better at 95%")
    aliases = client.get(f"{API}/models/iris/aliases", headers=auth()).json()
    assert {a["alias"]: a["version"] for a in aliases}["champion"] == 2


def test_the_controller_stops_an_experiment_whose_model_was_deleted(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    assert client.delete(f"{API}/models/iris", headers=auth("admin")).status_code == 204
    (running,) = container.experiments.traffic._directory.running()
    assert container.experiments.controller.look(running) == "stopped"
    after = container.experiments.experiments.get(_admin(), experiment["id"])
    assert (after.status.value, after.reason) == ("stopped", "the model was deleted")


def _admin() -> Any:
    from aiservice.domain.tenancy import Principal, Role

    return Principal("tester", "acme", frozenset({Role.ADMIN}))


def test_the_v2_protocol_is_routed_and_names_the_arm_in_its_parameters(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    infer = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[1]}]}
    headers = {**auth("predictor"), "X-User-Id": "v2-user"}
    answers = [client.post("/v2/models/iris/infer", json=infer, headers=headers) for _ in range(3)]
    parameters = [a.json()["parameters"] for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert len({(p["experiment"], p["arm"]) for p in parameters}) == 1
    assert parameters[0]["experiment"] == experiment["id"]
    assert answers[0].json()["model_version"] == ("1" if parameters[0]["arm"] == "A" else "2")
    container.experiments.recorder.flush()
    assert sum(a["requests"] for a in results(client, auth, experiment["id"])["arms"]) == 3
