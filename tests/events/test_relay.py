"""The relay: one publisher at a time across replicas (the lease, on SQLite and PostgreSQL), retries with
backoff and the error kept on the outbox row, and in-process subscribers served as before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from aiservice.application.outbox import EventBus, OutboxRelay
from aiservice.application.ports import CloudEvent, OutboxMessage, PublishFailed
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyOutbox
from aiservice.infrastructure.events.database import SqlAlchemyOutboxLease, SqlAlchemyOutboxMonitor
from tests.events.conftest import changes, commit
from tests.events.scenarios import pending
from tests.helpers import wait_until


class RecordingPublisher:
    """A broker that keeps what it was given; it fails while ``down`` is set."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.events: list[CloudEvent] = []
        self.attempts = 0
        self.down = threading.Event()
        self.closed = False

    def publish(self, events: list[CloudEvent]) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise PublishFailed(0, "ConnectionError: broker unreachable")
        self.events.extend(events)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def relays(engine: Engine) -> Iterator[list[OutboxRelay]]:
    started: list[OutboxRelay] = []
    yield started
    for relay in started:
        relay.stop()


def start_relay(
    engine: Engine, relays: list[OutboxRelay], publisher: RecordingPublisher, bus: EventBus | None = None
) -> OutboxRelay:
    lease = SqlAlchemyOutboxLease(engine, utcnow, ttl_s=2.0, holder=publisher.name)
    outbox = SqlAlchemyOutbox(engine, utcnow)
    relay = OutboxRelay(
        outbox, bus or EventBus(), interval=0.02, publisher=publisher, lease=lease, max_backoff=0.3
    )
    relays.append(relay)
    relay.start()
    return relay


def test_two_relays_on_one_database_publish_each_event_once(
    engine: Engine, relays: list[OutboxRelay]
) -> None:
    first, second = RecordingPublisher("replica-1"), RecordingPublisher("replica-2")
    start_relay(engine, relays, first)
    start_relay(engine, relays, second)
    events = changes(["m1", "m2"], 10)
    for event in events:
        commit(engine, event)
    wait_until(lambda: len(first.events) + len(second.events) >= len(events), what="every event")
    time.sleep(0.3)  # a second publisher would have published by now
    published = first.events or second.events
    assert not (first.events and second.events)
    assert [e.id for e in published] == [e.event_id for e in events]


def test_the_lease_passes_to_another_relay_when_its_holder_stops(
    engine: Engine, relays: list[OutboxRelay]
) -> None:
    first, second = RecordingPublisher("replica-1"), RecordingPublisher("replica-2")
    holder = start_relay(engine, relays, first)
    commit(engine, *changes(["m1"], 1))
    wait_until(lambda: len(first.events) == 1, what="the first relay to publish")
    start_relay(engine, relays, second)
    holder.stop()  # releases the lease
    commit(engine, *changes(["m1"], 1, start=1))
    wait_until(lambda: len(second.events) == 1, what="the second relay to take over")
    assert len(first.events) == 1 and first.closed
    assert SqlAlchemyOutboxMonitor(engine).report(0).lease_holder == "replica-2"


def test_a_lease_whose_holder_died_expires(engine: Engine) -> None:
    dead = SqlAlchemyOutboxLease(engine, utcnow, ttl_s=0.3, holder="dead")
    alive = SqlAlchemyOutboxLease(engine, utcnow, ttl_s=0.3, holder="alive")
    assert dead.acquire()
    assert not alive.acquire()
    time.sleep(0.4)  # the dead holder never renews
    assert alive.acquire()


def test_a_down_broker_is_retried_with_backoff_and_the_error_kept_on_the_event(
    engine: Engine, relays: list[OutboxRelay]
) -> None:
    broker = RecordingPublisher()
    broker.down.set()
    relay = start_relay(engine, relays, broker)
    events = changes(["m1", "m2"], 2)
    for event in events:
        commit(engine, event)
        relay.notify()
    time.sleep(1.5)
    # At one try per 0.02 s poll it would be about 75 tries; doubling pauses up to 0.3 s allow about 10.
    assert broker.attempts <= 15
    # The relay may be mid-try (the broker counted it, the row not yet): compare at a pause between tries.
    wait_until(
        lambda: [f.attempts for f in SqlAlchemyOutboxMonitor(engine).report(5).failures] == [broker.attempts],
        what="the failure on the row to count every try",
    )
    (failure,) = SqlAlchemyOutboxMonitor(engine).report(5).failures
    assert failure.event_id == events[0].event_id
    assert "broker unreachable" in failure.error
    assert relay.lag_seconds() > 1.0

    broker.down.clear()
    wait_until(lambda: pending(engine) == 0, what="the outbox to drain")
    assert [e.id for e in broker.events] == [e.event_id for e in events]
    assert SqlAlchemyOutboxMonitor(engine).report(5).failures == []
    assert relay.lag_seconds() == 0.0


def test_in_process_subscribers_get_every_event_after_the_broker_took_it(
    engine: Engine, relays: list[OutboxRelay]
) -> None:
    broker = RecordingPublisher()
    bus = EventBus()
    seen: list[OutboxMessage] = []
    bus.subscribe("*", seen.append)
    start_relay(engine, relays, broker, bus)
    events = changes(["m1"], 3)
    commit(engine, *events)
    wait_until(lambda: len(seen) == 3, what="the subscriber")
    assert [m.event_id for m in seen] == [e.id for e in broker.events] == [e.event_id for e in events]


def test_a_failing_subscriber_holds_the_event_back_from_being_marked_published(engine: Engine) -> None:
    broker = RecordingPublisher()
    bus = EventBus()
    calls = {"n": 0}

    def flaky(message: OutboxMessage) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("subscriber down")

    bus.subscribe("*", flaky)
    relay = OutboxRelay(SqlAlchemyOutbox(engine, utcnow), bus, publisher=broker)
    events = changes(["m1"], 3)
    commit(engine, *events)
    assert relay.run_once() == 1  # the broker took all three, the second failed in process
    assert relay.run_once() == 2  # published again from the second: consumers deduplicate
    assert [e.id for e in broker.events] == [e.event_id for e in (*events, *events[1:])]
