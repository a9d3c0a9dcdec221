"""Fixtures of the event tests: a database holding real outbox rows, names of a test's own on the brokers,
and a consumer side (processor with deduplication) that records what it handled."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import Engine

from aiservice.application.event_handlers import EventHandlers, EventProcessor
from aiservice.application.outbox import EventBus, OutboxRelay
from aiservice.application.ports import CloudEvent, EventPublisher, OutboxMessage
from aiservice.domain.clock import utcnow
from aiservice.domain.events import DomainEvent, ModelUpdated
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyOutbox, SqlAlchemyUnitOfWorkFactory
from aiservice.infrastructure.events.database import SqlAlchemyProcessedEvents
from tests.conftest import empty_database


@pytest.fixture
def sqlite_engine(sqlite_database: str) -> Iterator[Engine]:
    """The broker tests' database: SQLite only (the lease and admin tests cover PostgreSQL too)."""
    engine = create_engine(sqlite_database)
    yield engine
    empty_database(engine)
    engine.dispose()


@pytest.fixture
def prefix() -> str:
    """Streams, subjects and topics of this test alone: runs and tests never see each other's events."""
    return f"t{uuid.uuid4().hex[:12]}"


def commit(engine: Engine, *events: DomainEvent) -> None:
    """Write events to the outbox as a use case does: in a unit of work's commit."""
    factory = SqlAlchemyUnitOfWorkFactory(engine, utcnow)
    with factory(events[0].tenant_id) as uow:
        uow.record(*events)
        uow.commit()


def changes(aggregates: list[str], rounds: int, start: int = 0) -> list[DomainEvent]:
    """``rounds`` events for each aggregate, interleaved: ``changed_fields`` numbers them per aggregate."""
    return [
        ModelUpdated(tenant_id="acme", aggregate_id=aggregate, changed_fields=[str(n)])
        for n in range(start, start + rounds)
        for aggregate in aggregates
    ]


@dataclass
class Handled:
    """What the handlers saw, after deduplication, and every raw delivery before it."""

    events: list[CloudEvent] = field(default_factory=list)
    deliveries: Counter[str] = field(default_factory=Counter)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, event: CloudEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[CloudEvent]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.events) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.events)} of {count} events arrived within {timeout} s"
                self._changed.wait(left)
            return list(self.events)

    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def per_aggregate(self) -> dict[str, list[str]]:
        order: dict[str, list[str]] = {}
        for event in self.events:
            order.setdefault(event.subject, []).append(event.data["changed_fields"][0])
        return order


@dataclass
class ConsumerSide:
    handled: Handled
    process: Callable[[CloudEvent], bool]


@pytest.fixture
def consumer_side(sqlite_engine: Engine) -> ConsumerSide:
    return processing_side(sqlite_engine)


def processing_side(
    engine: Engine, consumer: str = "test-consumer", before: Callable[[CloudEvent], None] | None = None
) -> ConsumerSide:
    """A processor as a replica has one: handlers behind deduplication by event id (per ``consumer``);
    ``before`` is a handler that runs ahead of the one recording what was handled."""
    handled = Handled()
    handlers = EventHandlers()
    if before is not None:
        handlers.subscribe("*", before)
    handlers.subscribe("*", handled.handle)
    processor = EventProcessor(handlers, SqlAlchemyProcessedEvents(engine), consumer, utcnow)

    def process(event: CloudEvent) -> bool:
        handled.deliveries[event.id] += 1
        return processor.process(event)

    return ConsumerSide(handled, process)


@pytest.fixture
def make_relay(sqlite_engine: Engine) -> Iterator[Callable[[EventPublisher], OutboxRelay]]:
    """A relay over the test's database that polls fast and backs off briefly; stopped afterwards."""
    relays: list[OutboxRelay] = []

    def make(publisher: EventPublisher) -> OutboxRelay:
        outbox = SqlAlchemyOutbox(sqlite_engine, utcnow)
        relay = OutboxRelay(outbox, EventBus(), interval=0.05, publisher=publisher, max_backoff=0.5)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()


def expected_order(events: list[DomainEvent]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for event in events:
        assert isinstance(event, ModelUpdated)
        order.setdefault(event.aggregate_id, []).append(event.changed_fields[0])
    return order


MakeRelay = Callable[[EventPublisher], OutboxRelay]


def outbox_message(event: DomainEvent, position: int = 1) -> OutboxMessage:
    """An event as the relay reads it from the outbox."""
    return OutboxMessage(
        position,
        event.event_id,
        event.type,
        event.tenant_id,
        event.aggregate_type,
        event.aggregate_id,
        event.occurred_at,
        event.data(),
    )
