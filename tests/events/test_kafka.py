"""Kafka for real, against the Tansu broker (Kafka wire protocol, memory storage) that the tests start and
stop themselves.

Tansu 0.6 refuses the InitProducerId request aiokafka sends (version 0), so the producer here is not
idempotent (``idempotent=False``); the service's default stays idempotent for real Kafka clusters.
Order per aggregate does not depend on it: aiokafka keeps one batch in flight per partition.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import Engine

from aiservice.application.events import CONTENT_TYPE, to_cloud_event
from aiservice.domain.events import ModelDeleted
from aiservice.infrastructure.events.base import decode
from aiservice.infrastructure.events.kafka import KafkaEventConsumer, KafkaEventPublisher
from tests.events.brokers import BrokerProcess, tansu_broker
from tests.events.brokers import tansu as tansu  # the module's broker
from tests.events.conftest import ConsumerSide, MakeRelay, changes, commit, outbox_message
from tests.events.scenarios import (
    AGGREGATES,
    assert_each_once_in_order,
    failures_recorded,
    pending,
    round_trip,
    wait_ready,
)
from tests.helpers import wait_until


def address(broker: BrokerProcess) -> str:
    return f"127.0.0.1:{broker.port}"


def publisher(broker: BrokerProcess, prefix: str) -> KafkaEventPublisher:
    return KafkaEventPublisher(address(broker), prefix=prefix, idempotent=False, timeout_s=2.0)


def start_consumer(
    broker: BrokerProcess, prefix: str, side: ConsumerSide, group: str = "replica-1", from_start: bool = False
) -> KafkaEventConsumer:
    consumer = KafkaEventConsumer(
        address(broker),
        f"{prefix}-{group}",
        prefix=prefix,
        timeout_s=2.0,
        max_backoff=0.5,
        from_start=from_start,
    )
    consumer.start(side.process)
    wait_ready(consumer)
    return consumer


def test_events_reach_a_consumer_group_in_order_per_aggregate(
    tansu: BrokerProcess,
    sqlite_engine: Engine,
    prefix: str,
    consumer_side: ConsumerSide,
    make_relay: MakeRelay,
) -> None:
    consumer = start_consumer(tansu, prefix, consumer_side)
    try:
        round_trip(sqlite_engine, make_relay(publisher(tansu, prefix)), consumer_side)
    finally:
        consumer.stop()


def test_records_are_keyed_by_aggregate_and_carry_the_cloudevent(tansu: BrokerProcess, prefix: str) -> None:
    event = to_cloud_event(outbox_message(ModelDeleted(tenant_id="acme", aggregate_id="m-1", name="x")))
    kafka = publisher(tansu, prefix)
    try:
        kafka.publish([event])
    finally:
        kafka.close()
    (record,) = asyncio.run(_read_all(address(tansu), f"{prefix}.model", 1))
    assert record.key == b"m-1"
    assert dict(record.headers)["content-type"] == CONTENT_TYPE.encode()
    assert decode(record.value) == event


def test_events_committed_while_the_broker_is_down_are_published_once_it_is_back(
    tmp_path: Path, sqlite_engine: Engine, prefix: str, consumer_side: ConsumerSide, make_relay: MakeRelay
) -> None:
    """Tansu keeps its data in memory, so a restart loses what it held: the events published before
    are gone, and what this proves is the outbox's redelivery of every event committed since."""
    broker = tansu_broker(tmp_path)
    broker.start()
    relay = make_relay(publisher(broker, prefix))
    try:
        relay.start()
        commit(sqlite_engine, *changes(AGGREGATES, 1))
        wait_until(lambda: pending(sqlite_engine) == 0, what="the first events to be published")

        broker.stop()
        during = changes(AGGREGATES, 3, start=1)
        for event in during:
            commit(sqlite_engine, event)
        wait_until(lambda: failures_recorded(sqlite_engine), what="a failed publish to be recorded")
        assert pending(sqlite_engine) == len(during)

        broker.start()  # on the same port, empty
        after = changes(AGGREGATES, 1, start=4)
        for event in after:
            commit(sqlite_engine, event)
        wait_until(lambda: pending(sqlite_engine) == 0, timeout=60, what="the outbox to drain")
        consumer = start_consumer(broker, prefix, consumer_side, from_start=True)
        try:
            consumer_side.handled.wait_for(len(during + after))
            wait_until(lambda: _caught_up(consumer_side, during + after), what="no more deliveries")
        finally:
            consumer.stop()
    finally:
        relay.stop()
        broker.stop()
    assert_each_once_in_order(consumer_side, during + after)


def _caught_up(side: ConsumerSide, events: list[object]) -> bool:
    return sum(side.handled.deliveries.values()) >= len(events)


async def _read_all(broker: str, topic: str, count: int) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[object] = []
        while len(records) < count:
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, f"only {len(records)} of {count} records in {topic}"
            records.extend(r for batch in batches.values() for r in batch)
        return records
    finally:
        await consumer.stop()
