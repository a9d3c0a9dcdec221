"""A publisher that cannot reach its broker says so (PublishFailed, nothing acknowledged) within its
timeout, and works once the broker is there: the relay's retries rely on both."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiservice.application.events import to_cloud_event
from aiservice.application.ports import EventPublisher, PublishFailed
from aiservice.domain.events import ModelDeleted
from aiservice.infrastructure.events.kafka import KafkaEventPublisher
from aiservice.infrastructure.events.nats_jetstream import NatsEventPublisher
from aiservice.infrastructure.events.redis_streams import RedisStreamsEventPublisher, redis_client
from tests.events.brokers import BrokerProcess, nats_server, redis_server, tansu_broker
from tests.events.conftest import outbox_message

Broker = Callable[[Path], BrokerProcess]
Publisher = Callable[[int], EventPublisher]

CASES: dict[str, tuple[Broker, Publisher]] = {
    "redis": (
        redis_server,
        lambda port: RedisStreamsEventPublisher(redis_client("127.0.0.1", port, timeout_s=1)),
    ),
    "nats": (nats_server, lambda port: NatsEventPublisher(f"nats://127.0.0.1:{port}", timeout_s=1)),
    "kafka": (
        tansu_broker,
        lambda port: KafkaEventPublisher(f"127.0.0.1:{port}", idempotent=False, timeout_s=1),
    ),
}


@pytest.mark.parametrize("bus", sorted(CASES))
def test_a_publisher_reports_a_missing_broker_and_recovers_when_it_comes(bus: str, tmp_path: Path) -> None:
    make_broker, make_publisher = CASES[bus]
    broker = make_broker(tmp_path)  # on a free port, not started yet
    publisher = make_publisher(broker.port)
    event = to_cloud_event(outbox_message(ModelDeleted(tenant_id="acme", aggregate_id="m-1", name="x")))
    try:
        started = time.monotonic()
        with pytest.raises(PublishFailed) as failed:
            publisher.publish([event])
        assert failed.value.published == 0
        assert time.monotonic() - started < 10
        broker.start()
        publisher.publish([event])
    finally:
        publisher.close()
        broker.stop()
