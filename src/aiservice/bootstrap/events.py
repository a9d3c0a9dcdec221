"""Where events go (EVENT_BUS): one factory per broker, each importing its client only when chosen."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiservice.application.event_handlers import EventProcessor
from aiservice.application.ports import (
    CloudEvent,
    EventConsumer,
    EventPublisher,
    OutboxMessage,
    Tracer,
    WorkerPeers,
)
from aiservice.application.tracing import NO_TRACER
from aiservice.infrastructure.events.inprocess import InProcessEventPublisher
from aiservice.infrastructure.observability.tracing import TracedEventPublisher
from aiservice.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("aiservice.events")


def log_event(message: OutboxMessage) -> None:
    log.info(
        "event %s",
        message.event_type,
        extra={
            "eventId": message.event_id,
            "aggregateId": message.aggregate_id,
            "tenantId": message.tenant_id,
        },
    )


def traced(publisher: EventPublisher, tracer: Tracer) -> EventPublisher:
    return publisher if tracer is NO_TRACER else TracedEventPublisher(publisher, tracer)


def consumer_group(settings: Settings) -> str:
    """This replica's durable consumer: EVENT_CONSUMER_GROUP, else one named after the host."""
    return settings.event_consumer_group or f"aiservice-{socket.gethostname()}"


def _redis_publisher(s: Settings) -> EventPublisher:
    from aiservice.infrastructure.events.redis_streams import RedisStreamsEventPublisher

    maxlen = s.redis_stream_maxlen or None
    return RedisStreamsEventPublisher(redis_for_events(s), prefix=s.event_destination_prefix, maxlen=maxlen)


def _nats_publisher(s: Settings) -> EventPublisher:
    from aiservice.infrastructure.events.nats_jetstream import NatsEventPublisher

    return NatsEventPublisher(
        s.nats_url,
        prefix=s.event_destination_prefix,
        stream=s.nats_stream,
        timeout_s=s.event_publish_timeout_seconds,
    )


def _kafka_publisher(s: Settings) -> EventPublisher:
    from aiservice.infrastructure.events.kafka import KafkaEventPublisher

    return KafkaEventPublisher(
        s.kafka_broker,
        prefix=s.event_destination_prefix,
        idempotent=s.kafka_idempotent,
        partitions=s.kafka_topic_partitions,
        replication=s.kafka_topic_replication,
        timeout_s=s.event_publish_timeout_seconds,
    )


def _redis_consumer(s: Settings, group: str) -> EventConsumer:
    from aiservice.infrastructure.events.redis_streams import RedisStreamsEventConsumer

    return RedisStreamsEventConsumer(redis_for_events(s), group, prefix=s.event_destination_prefix)


def _nats_consumer(s: Settings, group: str) -> EventConsumer:
    from aiservice.infrastructure.events.nats_jetstream import NatsEventConsumer

    return NatsEventConsumer(s.nats_url, group, prefix=s.event_destination_prefix, stream=s.nats_stream)


def _kafka_consumer(s: Settings, group: str) -> EventConsumer:
    from aiservice.infrastructure.events.kafka import KafkaEventConsumer

    return KafkaEventConsumer(
        s.kafka_broker,
        group,
        prefix=s.event_destination_prefix,
        partitions=s.kafka_topic_partitions,
        replication=s.kafka_topic_replication,
    )


# A broker is a publisher and a consumer factory; a new one is a pair of functions and one line here.
BROKERS: dict[str, tuple[Callable[[Settings], EventPublisher], Callable[[Settings, str], EventConsumer]]] = {
    "redis": (_redis_publisher, _redis_consumer),
    "nats": (_nats_publisher, _nats_consumer),
    "kafka": (_kafka_publisher, _kafka_consumer),
}


def event_publisher(
    settings: Settings, processor: EventProcessor, peers: WorkerPeers | None = None
) -> EventPublisher:
    """Where the relay publishes (EVENT_BUS). In-process, the host worker hands each event to its own
    processor and then to its sibling workers."""
    broker = BROKERS.get(settings.event_bus)
    if broker is not None:
        return broker[0](settings)
    if peers is None or peers.count == 1:
        return InProcessEventPublisher(processor.process)
    siblings = peers

    def handle_here_then_siblings(event: CloudEvent) -> None:
        processor.process(event)
        siblings.publish(event)

    return InProcessEventPublisher(handle_here_then_siblings)


def event_consumer(settings: Settings, group: str) -> EventConsumer | None:
    """This replica's durable consumer of the broker; None in-process (the relay hands events over)."""
    broker = BROKERS.get(settings.event_bus)
    return None if broker is None else broker[1](settings, group)


def redis_for_events(settings: Settings) -> Redis:
    from aiservice.infrastructure.events.redis_streams import redis_client

    if not settings.redis_host:
        raise ConfigurationError("EVENT_BUS=redis needs REDIS_HOST (and REDIS_PORT) of the Redis to use.")
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis_client(settings.redis_host, settings.redis_port, password=password, db=settings.redis_db)
