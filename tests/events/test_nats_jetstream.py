"""NATS JetStream for real: this machine's server for the round trips (a stream of the test's own, deleted
afterwards), a nats-server -js of the test's own (stopped and started again) for the outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from sqlalchemy.engine import Engine

from aiservice.application.events import to_cloud_event
from aiservice.application.ports import EventPublisher
from aiservice.domain.events import ModelDeleted, TrainingJobQueued
from aiservice.infrastructure.events.base import decode
from aiservice.infrastructure.events.nats_jetstream import NatsEventConsumer, NatsEventPublisher
from tests.events.brokers import delete_nats_stream, nats_server, require_listening
from tests.events.conftest import ConsumerSide, MakeRelay, outbox_message
from tests.events.scenarios import outage, round_trip, wait_ready

SHARED_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def stream(prefix: str) -> Iterator[str]:
    """A stream of the test's own on the shared server (the real one is AI_SERVICE)."""
    require_listening(4222, "NATS")
    name = prefix.upper()
    yield name
    delete_nats_stream(SHARED_URL, name)


async def _stored(url: str, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """(subject, payload, headers) of every message the stream holds."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        stored = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            stored.append((message.subject, message.data or b"", dict(message.headers or {})))
        return stored
    finally:
        await client.close()


def publisher(url: str, prefix: str, stream: str) -> EventPublisher:
    return NatsEventPublisher(url, prefix=prefix, stream=stream, timeout_s=1.0)


def start_consumer(url: str, prefix: str, stream: str, side: ConsumerSide) -> NatsEventConsumer:
    consumer = NatsEventConsumer(
        url, "replica-1", prefix=prefix, stream=stream, timeout_s=2.0, max_backoff=0.5
    )
    consumer.start(side.process)
    wait_ready(consumer)
    return consumer


def test_events_reach_a_durable_consumer_in_order_per_aggregate(
    stream: str, sqlite_engine: Engine, prefix: str, consumer_side: ConsumerSide, make_relay: MakeRelay
) -> None:
    consumer = start_consumer(SHARED_URL, prefix, stream, consumer_side)
    try:
        round_trip(sqlite_engine, make_relay(publisher(SHARED_URL, prefix, stream)), consumer_side)
    finally:
        consumer.stop()


def test_subjects_name_family_and_event_and_the_server_drops_a_retried_publish(
    stream: str, prefix: str
) -> None:
    deleted = to_cloud_event(outbox_message(ModelDeleted(tenant_id="acme", aggregate_id="m-1", name="x")))
    queued = TrainingJobQueued(tenant_id="acme", aggregate_id="job-1", model_id="m-1", algorithm="rf")
    job = to_cloud_event(outbox_message(queued))
    nats_publisher = publisher(SHARED_URL, prefix, stream)
    try:
        nats_publisher.publish([deleted, job])
        nats_publisher.publish([deleted])  # a retry of an event the server already has
    finally:
        nats_publisher.close()
    stored = asyncio.run(_stored(SHARED_URL, stream))
    subjects = [subject for subject, _, _ in stored]
    assert subjects == [f"{prefix}.model.deleted", f"{prefix}.training.job.queued"]
    assert [decode(payload) for _, payload, _ in stored] == [deleted, job]
    assert stored[0][2]["Nats-Msg-Id"] == deleted.id


def test_no_event_is_lost_or_doubled_when_nats_is_down_for_a_while(
    tmp_path: Path, sqlite_engine: Engine, prefix: str, consumer_side: ConsumerSide, make_relay: MakeRelay
) -> None:
    server = nats_server(tmp_path)
    server.start()
    url = f"nats://127.0.0.1:{server.port}"
    consumer = start_consumer(url, prefix, "AI_SERVICE", consumer_side)
    try:
        outage(sqlite_engine, make_relay(publisher(url, prefix, "AI_SERVICE")), consumer_side, server)
    finally:
        consumer.stop()
        server.stop()
