"""What every broker must do, written once: a round trip, deduplication, and surviving an outage."""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy.engine import Engine

from aiservice.application.outbox import OutboxRelay
from aiservice.application.ports import CloudEvent
from aiservice.domain.events import DomainEvent
from aiservice.infrastructure.events.database import SqlAlchemyOutboxMonitor
from tests.events.brokers import BrokerProcess
from tests.events.conftest import ConsumerSide, changes, commit, expected_order
from tests.helpers import wait_until

AGGREGATES = ["model-a", "model-b", "model-c"]


class Ready(Protocol):
    @property
    def ready(self) -> bool: ...


def wait_ready(consumer: Ready) -> None:
    wait_until(lambda: consumer.ready, what="the consumer to be ready")


def failures_recorded(engine: Engine) -> bool:
    return bool(SqlAlchemyOutboxMonitor(engine).report(5).failures)


def pending(engine: Engine) -> int:
    return SqlAlchemyOutboxMonitor(engine).report(0).pending


def assert_each_once_in_order(side: ConsumerSide, events: list[DomainEvent]) -> None:
    """Every event handled exactly once, none missing, and each aggregate's events in commit order."""
    handled = side.handled
    assert sorted(handled.ids()) == sorted(e.event_id for e in events)
    assert handled.per_aggregate() == expected_order(events)


def round_trip(engine: Engine, relay: OutboxRelay, side: ConsumerSide) -> list[CloudEvent]:
    events = changes(AGGREGATES, 3)
    for event in events:
        commit(engine, event)
    relay.start()
    received = side.handled.wait_for(len(events))
    wait_until(lambda: pending(engine) == 0, what="the outbox to drain")
    assert_each_once_in_order(side, events)
    return received


def outage(engine: Engine, relay: OutboxRelay, side: ConsumerSide, broker: BrokerProcess) -> None:
    """Events keep being committed while the broker is down; once it is back, every one arrives."""
    relay.start()
    before = changes(AGGREGATES, 2)
    for event in before:
        commit(engine, event)
    side.handled.wait_for(len(before))

    broker.stop()
    during = changes(AGGREGATES, 3, start=2)
    for event in during:
        commit(engine, event)
        relay.notify()
    wait_until(lambda: failures_recorded(engine), what="a failed publish to be recorded")
    assert pending(engine) == len(during)

    broker.start()
    after = changes(AGGREGATES, 1, start=5)
    for event in after:
        commit(engine, event)
    everything = before + during + after
    side.handled.wait_for(len(everything), timeout=60)
    wait_until(lambda: pending(engine) == 0, what="the outbox to drain")
    time.sleep(0.5)  # a late duplicate would show up by now
    assert_each_once_in_order(side, everything)
