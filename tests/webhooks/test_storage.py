"""What the database keeps: signing secrets wrapped under the artifact master key, and deliveries that one
worker at a time may claim, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import base64
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.ports import AttemptResult, ClaimedDelivery
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.domain.events import ModelCreated
from aiservice.domain.webhooks import DeliveryStatus, generate_secret
from aiservice.infrastructure.db.webhook_repositories import SecretCipher, SqlAlchemyWebhookDeliveryQueue
from aiservice.infrastructure.storage.keys import parse_key_list
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.events.conftest import outbox_message
from tests.webhooks.conftest import FAST_DELIVERY, WEBHOOKS, Receiver, expected_signature, subscribe

KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """Encryption at rest on."""
    return make_settings(database_url, tmp_path / "data", artifact_encryption_key=KEY, **FAST_DELIVERY)


def test_the_secret_is_stored_wrapped_under_the_master_key_and_still_signs(
    client: TestClient, auth: Auth, engine: Engine, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret, secret_key_id FROM webhooks")).one()

    assert stored.secret_key_id.startswith("fp-")
    assert webhook["secret"] not in stored.secret
    assert webhook["secret"].removeprefix("whsec_") not in stored.secret
    client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth())
    (request,) = receiver.received()
    assert request.headers["x-aiservice-signature"] == expected_signature(webhook["secret"], request)


def test_a_secret_wrapped_under_a_key_no_longer_configured_cannot_be_opened() -> None:
    secret = generate_secret()
    old, new = (parse_key_list(base64.b64encode(os.urandom(32)).decode()) for _ in range(2))
    stored, key_id = SecretCipher(old).seal(secret)

    assert SecretCipher(old).open(stored, key_id) == secret
    assert SecretCipher(new).open(stored, key_id) is None
    assert SecretCipher(None).open(stored, key_id) is None
    assert SecretCipher(None).seal(secret) == (secret, None)  # without encryption at rest: as it is


@pytest.fixture
def queue(container: Container, auth: Auth, engine: Engine) -> SqlAlchemyWebhookDeliveryQueue:
    """One pending delivery, queued while no worker runs (the container is not started: the test alone
    claims), and the queue to claim it from."""
    from aiservice.interfaces.http.app import create_app

    subscribe(TestClient(create_app(container, manage_lifecycle=False)), auth(), "http://127.0.0.1:9/hook")
    event = ModelCreated(tenant_id="acme", aggregate_id="m", name="m", framework="onnx")
    container.webhook_dispatcher.on_event(outbox_message(event))
    return SqlAlchemyWebhookDeliveryQueue(engine, SecretCipher(None))


def test_a_claimed_delivery_is_held_until_its_claim_expires(
    queue: SqlAlchemyWebhookDeliveryQueue, engine: Engine
) -> None:
    now = utcnow()

    first = queue.claim_next(now, now + timedelta(seconds=60))

    assert first is not None and first.delivery.status is DeliveryStatus.PENDING
    assert queue.claim_next(now, now + timedelta(seconds=60)) is None
    assert queue.claim("acme", first.delivery.id, now, now + timedelta(seconds=60)) is None
    later = now + timedelta(seconds=61)  # the first worker died: its claim lapses
    second = queue.claim_next(later, later + timedelta(seconds=60))
    assert second is not None and second.delivery.id == first.delivery.id and second.token != first.token
    queue.finish(first, _succeeded())  # the stale claim records nothing
    assert _status(engine) == "pending"
    queue.finish(second, _succeeded())
    assert _status(engine) == "succeeded"


def test_of_workers_claiming_one_delivery_at_once_exactly_one_wins(
    queue: SqlAlchemyWebhookDeliveryQueue,
) -> None:
    now = utcnow()
    start = threading.Barrier(6)
    won: list[ClaimedDelivery | None] = []

    def worker() -> None:
        start.wait()
        won.append(queue.claim_next(now, now + timedelta(seconds=60)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len([c for c in won if c is not None]) == 1


def _succeeded() -> AttemptResult:
    return AttemptResult(DeliveryStatus.SUCCEEDED, 1, 200, None, 1.0, None, utcnow())


def _status(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT status FROM webhook_deliveries")).scalar_one())


def test_finished_deliveries_leave_the_log_after_the_retention_and_pending_ones_stay(
    queue: SqlAlchemyWebhookDeliveryQueue, container: Container, engine: Engine
) -> None:
    event = ModelCreated(tenant_id="acme", aggregate_id="m2", name="m2", framework="onnx")
    container.webhook_dispatcher.on_event(outbox_message(event))  # a second delivery, still pending
    now = utcnow()
    claimed = queue.claim_next(now, now + timedelta(seconds=60))
    assert claimed is not None
    queue.finish(claimed, _succeeded())
    assert queue.prune(now - timedelta(days=1)) == 0  # both younger than the cut-off: kept

    assert queue.prune(utcnow() + timedelta(seconds=1)) == 1  # the finished one only
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM webhook_deliveries")).scalars().all() == ["pending"]
