"""Experiments through the API: create and read with problems naming fields, the lifecycle and its
conflicts, roles, events and audit records, promotion, and tenant erasure."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.experiments.conftest import API, act, body, create, give_feedback, observe, started
from tests.helpers import row_count


def _events(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_type FROM outbox ORDER BY position")).scalars().all()
    return [r for r in rows if r.startswith("Experiment")]


def test_create_answers_201_and_the_experiment_reads_back(client: TestClient, auth: Auth, iris: str) -> None:
    created = create(client, auth)
    assert (created["status"], created["modelId"], created["mode"]) == ("draft", iris, "ab")
    assert created["arms"][1] == {"name": "B", "reference": 2, "weight": 1.0}
    assert created["routingKey"] == {"header": "X-User-Id"}
    got = client.get(f"{API}/experiments/{created['id']}", headers=auth("viewer"))
    assert got.status_code == 200 and got.json() == created


def test_list_filters_and_pages(client: TestClient, auth: Auth, iris: str) -> None:
    ids = [create(client, auth, name=f"e{i}")["id"] for i in range(3)]
    viewer = auth("viewer")
    first = client.get(f"{API}/experiments", params={"limit": 2, "model": "iris"}, headers=viewer).json()
    second = client.get(
        f"{API}/experiments", params={"limit": 2, "cursor": first["nextCursor"]}, headers=auth("viewer")
    ).json()
    assert [e["id"] for e in first["items"] + second["items"]] == ids[::-1]
    assert second["nextCursor"] is None
    act(client, auth, ids[0], "start")
    running = client.get(f"{API}/experiments", params={"status": "running"}, headers=auth("viewer")).json()
    assert [e["id"] for e in running["items"]] == [ids[0]]


def test_an_arm_naming_no_version_is_a_422_naming_its_field(
    client: TestClient, auth: Auth, iris: str
) -> None:
    arms = [{"name": "A", "version": 1}, {"name": "B", "version": 9}, {"name": "C", "alias": "nope"}]
    response = client.post(f"{API}/experiments", json=body(arms=arms), headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.arms.1.version", "body.arms.2.alias"]


def test_invalid_fields_are_named_in_one_problem(client: TestClient, auth: Auth, iris: str) -> None:
    arms = [{"name": "A", "version": 1, "weight": -1}, {"name": "B", "version": 2}]
    response = client.post(
        f"{API}/experiments", json=body(arms=arms, champion="Z", confidence=2), headers=auth("editor")
    )
    assert response.status_code == 422, response.text
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.arms.0.weight", "body.champion", "body.confidence"} <= fields


def test_a_plan_of_another_mode_and_a_bad_routing_key_are_refused(
    client: TestClient, auth: Auth, iris: str
) -> None:
    canary = client.post(f"{API}/experiments", json=body(canary={"steps": [0.1]}), headers=auth("editor"))
    assert canary.status_code == 422 and canary.json()["errors"][0]["field"] == "body.canary"
    key = client.post(f"{API}/experiments", json=body(routingKey={"cookie": "x"}), headers=auth("editor"))
    assert key.status_code == 422 and key.json()["errors"][0]["field"] == "body.routingKey"


def test_an_unknown_model_is_a_404(client: TestClient, auth: Auth, iris: str) -> None:
    response = client.post(f"{API}/experiments", json=body(model="ghost"), headers=auth("editor"))
    assert response.status_code == 404


def test_lifecycle_moves_and_refuses_what_its_state_forbids(
    client: TestClient, auth: Auth, engine: Engine, iris: str
) -> None:
    experiment_id = started(client, auth)["id"]
    assert act(client, auth, experiment_id, "start").status_code == 409
    assert act(client, auth, experiment_id, "pause").json()["status"] == "paused"
    assert act(client, auth, experiment_id, "pause").status_code == 409
    assert act(client, auth, experiment_id, "resume").json()["status"] == "running"
    assert client.delete(f"{API}/experiments/{experiment_id}", headers=auth("editor")).status_code == 409
    stopped = act(client, auth, experiment_id, "stop")
    assert stopped.json()["status"] == "stopped" and stopped.json()["endedAt"] is not None
    assert act(client, auth, experiment_id, "resume").status_code == 409
    assert client.delete(f"{API}/experiments/{experiment_id}", headers=auth("editor")).status_code == 204
    assert client.get(f"{API}/experiments/{experiment_id}", headers=auth()).status_code == 404
    assert _events(engine) == [
        "ExperimentCreated",
        "ExperimentStarted",
        "ExperimentPaused",
        "ExperimentStarted",
        "ExperimentStopped",
    ]


def test_one_running_experiment_per_model(client: TestClient, auth: Auth, iris: str) -> None:
    started(client, auth, name="first")
    second = create(client, auth, name="second")
    response = act(client, auth, second["id"], "start")
    assert response.status_code == 409
    assert response.json()["type"].endswith("/experiment-running")


def test_a_conflict_names_the_state(client: TestClient, auth: Auth, iris: str) -> None:
    experiment = create(client, auth)
    response = act(client, auth, experiment["id"], "pause")
    assert response.status_code == 409 and "it is draft" in response.json()["detail"]


def test_viewers_read_and_editors_write(client: TestClient, auth: Auth, iris: str) -> None:
    refused = client.post(f"{API}/experiments", json=body(), headers=auth("viewer"))
    assert refused.status_code == 403 and refused.json()["permission"] == "experiment:write"
    experiment = create(client, auth, role="editor")
    assert act(client, auth, experiment["id"], "start", role="predictor").status_code == 403
    assert client.get(f"{API}/experiments/{experiment['id']}", headers=auth("predictor")).status_code == 403
    read = client.get(f"{API}/experiments/{experiment['id']}/results", headers=auth("viewer"))
    assert read.status_code == 200


def test_another_tenant_sees_no_experiment(client: TestClient, auth: Auth, iris: str) -> None:
    experiment = create(client, auth)
    intruder = auth("admin", tenant="globex")
    assert client.get(f"{API}/experiments/{experiment['id']}", headers=intruder).status_code == 404
    assert act(client, auth, experiment["id"], "start", role="admin").status_code == 200
    assert client.post(f"{API}/experiments/{experiment['id']}/stop", headers=intruder).status_code == 404
    assert client.get(f"{API}/experiments", headers=intruder).json()["items"] == []


def test_changes_are_audited(client: TestClient, auth: Auth, iris: str) -> None:
    experiment = create(client, auth)
    act(client, auth, experiment["id"], "start")
    records = client.get(f"{API}/audit", headers=auth("admin")).json()["items"]
    actions = {(r["action"], r["outcome"]) for r in records}
    assert {("experiment.create", "success"), ("experiment.start", "success")} <= actions


def test_promote_moves_the_champions_alias_to_the_verdicts_winner(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    experiment_id = started(client, auth)["id"]
    # B is truly better: 85% correct against A's 55%, over 400 labelled requests each.
    labels: dict[str, int] = {}
    for arm, right in (("A", 220), ("B", 340)):
        ids = observe(container, experiment_id, arm, 400, prefix="p", predictions=[1] * 400)
        labels.update({rid: 1 if i < right else 0 for i, rid in enumerate(ids)})
    give_feedback(engine, iris, labels, {})

    promoted = client.post(f"{API}/experiments/{experiment_id}/promote", headers=auth("editor"))

    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["status"], promoted.json()["winner"]) == ("completed", "B")
    aliases = client.get(f"{API}/models/iris/aliases", headers=auth()).json()
    assert {a["alias"]: a["version"] for a in aliases}["champion"] == 2
    assert _events(engine)[-1] == "ExperimentPromoted"


def test_promote_without_a_winner_is_a_409_and_an_arm_may_be_named(
    client: TestClient, auth: Auth, iris: str
) -> None:
    experiment_id = started(client, auth)["id"]
    response = client.post(f"{API}/experiments/{experiment_id}/promote", headers=auth("editor"))
    assert response.status_code == 409 and response.json()["type"].endswith("/no-winner")
    unknown = client.post(f"{API}/experiments/{experiment_id}/promote", json={"arm": "Z"}, headers=auth())
    assert unknown.status_code == 422
    named = client.post(f"{API}/experiments/{experiment_id}/promote", json={"arm": "B"}, headers=auth())
    assert named.status_code == 200 and named.json()["winner"] == "B"


def test_tenant_erasure_takes_experiments_and_observations(
    client: TestClient, auth: Auth, container: Container, engine: Engine, iris: str
) -> None:
    experiment_id = started(client, auth)["id"]
    observe(container, experiment_id, "A", 3)
    root = auth("superadmin", tenant="platform")
    erased = client.delete(f"{API}/tenants/acme/data", headers=root).json()["erased"]
    assert (erased["experiments"], erased["experimentObservations"]) == (1, 3)
    assert row_count(engine, "experiments") == row_count(engine, "experiment_observations") == 0
