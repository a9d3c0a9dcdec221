"""Domain events: written to the outbox with the change, delivered by the relay, never for a failure."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.ports import OutboxMessage
from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, upload, wait_until

API = "/api/v1/ai"


def outbox(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_type, aggregate_id FROM outbox ORDER BY position"))
        return [(r[0], r[1]) for r in rows]


def test_each_change_writes_its_event_in_order(client: TestClient, auth: Auth, engine: Engine) -> None:
    model = create_model(client, auth(), "evented")
    upload(client, auth(), "evented")
    client.patch(f"{API}/models/evented", json={"description": "d"}, headers=auth())
    client.post(f"{API}/models/evented/versions/1/stage", json={"stage": "production"}, headers=auth())
    client.put(f"{API}/models/evented/aliases/champion", json={"version": 1}, headers=auth())
    client.delete(f"{API}/models/evented/aliases/champion", headers=auth())
    client.delete(f"{API}/models/evented", headers=auth())
    assert outbox(engine) == [
        (name, model["id"])
        for name in (
            "ModelCreated",
            "ModelVersionCreated",
            "ModelUpdated",
            "ModelStageChanged",
            "ModelAliasSet",
            "ModelAliasDeleted",
            "ModelDeleted",
        )
    ]


def test_failed_or_no_op_requests_write_no_event(client: TestClient, auth: Auth, engine: Engine) -> None:
    create_model(client, auth(), "quiet")
    before = outbox(engine)
    client.post(f"{API}/models", json={"name": "quiet", "framework": "onnx"}, headers=auth())
    client.patch(f"{API}/models/quiet", json={"description": ""}, headers=auth())
    client.put(f"{API}/models/quiet/aliases/x", json={"version": 5}, headers=auth())
    client.post(
        f"{API}/models/quiet/versions", data={"metadata": "{"}, files={"file": ("f", b"1")}, headers=auth()
    )
    assert outbox(engine) == before


def test_relay_delivers_committed_events_to_subscribers(
    client: TestClient, auth: Auth, container: Container
) -> None:
    received: list[OutboxMessage] = []
    arrived = threading.Event()

    def handler(message: OutboxMessage) -> None:
        received.append(message)
        arrived.set()

    container.bus.subscribe("ModelVersionCreated", handler)
    create_model(client, auth(), "relayed")
    upload(client, auth(), "relayed")
    assert arrived.wait(5)
    (message,) = received
    assert message.tenant_id == "acme"
    assert message.data["version"] == 1
    assert message.data["size_bytes"] == len(iris_model_bytes())


def test_failing_subscriber_is_retried_and_order_is_kept(
    container: Container, client: TestClient, auth: Auth
) -> None:
    seen: list[str] = []
    failures = {"left": 2}

    def flaky(message: OutboxMessage) -> None:
        if message.event_type == "ModelCreated" and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("subscriber down")
        seen.append(message.event_type)

    container.bus.subscribe("*", flaky)
    create_model(client, auth(), "flaky")
    upload(client, auth(), "flaky")
    wait_until(lambda: len(seen) >= 2, 5, 0.02, "the subscriber to get both events, after two failures")
    assert seen == ["ModelCreated", "ModelVersionCreated"]
