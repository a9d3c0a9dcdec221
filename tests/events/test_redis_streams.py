"""Redis Streams for real: this machine's Redis for the round trips, a redis-server of the test's own
(stopped and started again) for the outage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import Engine

from aiservice.application.events import to_cloud_event
from aiservice.application.ports import EventPublisher
from aiservice.domain.events import ModelDeleted
from aiservice.infrastructure.events.base import decode
from aiservice.infrastructure.events.redis_streams import (
    RedisStreamsEventConsumer,
    RedisStreamsEventPublisher,
    redis_client,
)
from tests.events.brokers import BrokerProcess, forget_streams, redis_server, require_listening
from tests.events.conftest import ConsumerSide, MakeRelay, outbox_message
from tests.events.scenarios import outage, round_trip, wait_ready

SHARED_PORT = 6379


@pytest.fixture
def shared_redis(prefix: str) -> Iterator[redis.Redis]:
    require_listening(SHARED_PORT, "Redis")
    client = redis_client("127.0.0.1", SHARED_PORT, timeout_s=2.0)
    yield client
    client.close()
    forget_streams(prefix)


def start_consumer(
    port: int, prefix: str, side: ConsumerSide, group: str = "replica-1"
) -> RedisStreamsEventConsumer:
    client = redis_client("127.0.0.1", port, timeout_s=2.0)
    consumer = RedisStreamsEventConsumer(client, group, prefix=prefix, block_ms=200, max_backoff=0.5)
    consumer.start(side.process)
    wait_ready(consumer)
    return consumer


def publisher(port: int, prefix: str) -> EventPublisher:
    return RedisStreamsEventPublisher(redis_client("127.0.0.1", port, timeout_s=1.0), prefix=prefix)


def test_events_reach_a_consumer_group_in_order_per_aggregate(
    shared_redis: redis.Redis,
    sqlite_engine: Engine,
    prefix: str,
    consumer_side: ConsumerSide,
    make_relay: MakeRelay,
) -> None:
    consumer = start_consumer(SHARED_PORT, prefix, consumer_side)
    try:
        round_trip(sqlite_engine, make_relay(publisher(SHARED_PORT, prefix)), consumer_side)
    finally:
        consumer.stop()


def test_each_stream_entry_is_the_cloudevent_json(shared_redis: redis.Redis, prefix: str) -> None:
    event = to_cloud_event(outbox_message(ModelDeleted(tenant_id="acme", aggregate_id="m-1", name="old")))
    publisher(SHARED_PORT, prefix).publish([event])
    ((_, fields),) = shared_redis.xrange(f"{prefix}.model")
    assert fields[b"id"] == event.id.encode() and fields[b"type"] == b"ai.model.deleted.v1"
    assert decode(fields[b"event"]) == event


def test_no_event_is_lost_or_doubled_when_redis_is_down_for_a_while(
    tmp_path: Path,
    sqlite_engine: Engine,
    prefix: str,
    consumer_side: ConsumerSide,
    make_relay: MakeRelay,
) -> None:
    server: BrokerProcess = redis_server(tmp_path)
    server.start()
    consumer = start_consumer(server.port, prefix, consumer_side)
    try:
        outage(sqlite_engine, make_relay(publisher(server.port, prefix)), consumer_side, server)
    finally:
        consumer.stop()
        server.stop()
