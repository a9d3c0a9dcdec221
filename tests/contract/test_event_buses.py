"""The event bus contract, for every publisher and consumer pair: in process, Redis Streams, NATS JetStream
and Kafka. A CloudEvent arrives whole; the events of one aggregate (and, where the broker keeps one log per
family, of one family) keep their order; every consumer group gets every event (each replica and worker
consumes as its own); a consumer that fails gets the event again and the processor's deduplication
handles it once; a stopped consumer gets, once started again, what was published meanwhile; stopping
and closing twice is harmless.

The in-process pair has no broker: publishing is handling, in the publisher's (the relay's) thread,
before ``publish`` returns, and a failed handler fails the publish (``PublishFailed``) so that the relay
tries again. So it has one consumer, the process's own, and nothing to be durable with: the cases about
consumer groups and restarts run on the brokers alone, and one case here pins the synchronous handover.

Brokers: this machine's Redis (6379) and NATS (4222), each test on streams, subjects and groups of its
own, deleted afterwards (skipped without them, except under CI=true, where they fail); Kafka is a Tansu
broker the module starts (``tests.events.brokers.tansu``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Engine

from aiservice.application.events import SOURCE_PREFIX
from aiservice.application.ports import CloudEvent, EventConsumer, EventPublisher, PublishFailed
from aiservice.infrastructure.events.base import PollingConsumer
from aiservice.infrastructure.events.inprocess import InProcessEventPublisher
from aiservice.infrastructure.events.kafka import KafkaEventConsumer, KafkaEventPublisher
from aiservice.infrastructure.events.nats_jetstream import NatsEventConsumer, NatsEventPublisher
from aiservice.infrastructure.events.redis_streams import (
    RedisStreamsEventConsumer,
    RedisStreamsEventPublisher,
    redis_client,
)
from tests.events.brokers import (
    BrokerProcess,
    delete_nats_stream,
    forget_streams,
    require_listening,
)
from tests.events.brokers import tansu as tansu  # the module's Kafka broker
from tests.events.conftest import ConsumerSide, processing_side
from tests.events.conftest import sqlite_engine as sqlite_engine  # the processed-events table
from tests.helpers import wait_until

NATS_URL = "nats://127.0.0.1:4222"
BROKERS = ["redis", "nats", "kafka"]
Handle = Callable[[CloudEvent], object]
Opened = TypeVar("Opened", EventPublisher, PollingConsumer)


@dataclass
class Bus:
    """A publisher and consumer pair under test, on names of the test's own."""

    name: str
    new_publisher: Callable[[Handle], EventPublisher]  # given the in-process handler (brokers ignore it)
    new_consumer: Callable[[str], PollingConsumer] | None  # by consumer group; None: publishing is handling
    family_order: bool  # one ordered log per family (else the order is per aggregate only)
    drops_republished: bool  # the broker drops a second publish of an event id (NATS: Nats-Msg-Id)
    opened: list[EventPublisher | PollingConsumer] = field(default_factory=list)
    _publisher: EventPublisher | None = None

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            assert self.new_consumer is not None, "in process, consume first: its handler is the consumer"
            self._publisher = self._open(self.new_publisher(lambda event: None))
        return self._publisher

    def consume(self, side: ConsumerSide, group: str = "replica-1") -> EventConsumer | None:
        """A consumer of ``group`` handing every delivery to ``side``, subscribed when this returns."""
        if self.new_consumer is None:
            assert self._publisher is None, "in process there is one consumer: the publisher's handler"
            self._publisher = self._open(self.new_publisher(side.process))
            return None
        consumer = self._open(self.new_consumer(group))
        consumer.start(side.process)
        # Tansu takes a while to let a group's member back in: some 20 s after it left.
        wait_until(lambda: consumer.ready, 60, what=f"the {self.name} consumer {group} to subscribe")
        return consumer

    def publish(self, events: list[CloudEvent]) -> None:
        """Publish as the outbox relay does: what the publisher did not take (``PublishFailed``), again."""
        rest = list(events)
        for _ in range(5):
            try:
                self.publisher.publish(rest)
                return
            except PublishFailed as failed:
                rest = rest[failed.published :]
        raise AssertionError(f"{len(rest)} events were not published in 5 tries")

    def _open(self, opened: Opened) -> Opened:
        self.opened.append(opened)
        return opened

    def close(self) -> None:
        for opened in reversed(self.opened):
            if isinstance(opened, PollingConsumer):
                opened.stop()
            else:
                opened.close()


def in_process(prefix: str) -> Bus:
    return Bus("inprocess", InProcessEventPublisher, None, family_order=True, drops_republished=False)


def redis_streams(prefix: str) -> Bus:
    require_listening(6379, "Redis")

    def consumer(group: str) -> PollingConsumer:
        client = redis_client("127.0.0.1", 6379, timeout_s=2.0)
        return RedisStreamsEventConsumer(client, group, prefix=prefix, block_ms=200, max_backoff=0.5)

    def publisher(_: Handle) -> EventPublisher:
        return RedisStreamsEventPublisher(redis_client("127.0.0.1", 6379, timeout_s=2.0), prefix=prefix)

    return Bus("redis", publisher, consumer, family_order=True, drops_republished=False)


def nats_jetstream(prefix: str) -> Bus:
    require_listening(4222, "NATS")
    stream = prefix.upper()  # a stream of the test's own (the service's is AI_SERVICE)

    def consumer(group: str) -> PollingConsumer:
        return NatsEventConsumer(
            NATS_URL, group, prefix=prefix, stream=stream, timeout_s=2.0, max_backoff=0.5
        )

    def publisher(_: Handle) -> EventPublisher:
        return NatsEventPublisher(NATS_URL, prefix=prefix, stream=stream, timeout_s=2.0)

    return Bus("nats", publisher, consumer, family_order=True, drops_republished=True)


def kafka(prefix: str, broker: BrokerProcess) -> Bus:
    address = f"127.0.0.1:{broker.port}"

    def consumer(group: str) -> PollingConsumer:
        # Groups are the broker's, not the topics': a group of the test's own.
        return KafkaEventConsumer(address, f"{prefix}-{group}", prefix=prefix, timeout_s=2.0, max_backoff=0.5)

    def publisher(_: Handle) -> EventPublisher:
        # Tansu 0.6 refuses aiokafka's InitProducerId: not idempotent (see tests/events/test_kafka.py).
        return KafkaEventPublisher(address, prefix=prefix, idempotent=False, timeout_s=2.0)

    # Keyed by aggregate over three partitions a topic: one family's aggregates are not ordered together.
    return Bus("kafka", publisher, consumer, family_order=False, drops_republished=False)


WITHOUT_A_BROKER_OF_OUR_OWN = {"inprocess": in_process, "redis": redis_streams, "nats": nats_jetstream}


@pytest.fixture(params=["inprocess", *BROKERS])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "kafka":
        made = kafka(prefix, request.getfixturevalue("tansu"))
    else:
        made = WITHOUT_A_BROKER_OF_OUR_OWN[request.param](prefix)
    yield made
    made.close()
    if made.name == "redis":
        forget_streams(prefix)
    elif made.name == "nats":
        delete_nats_stream(NATS_URL, prefix.upper())


brokers_only = pytest.mark.parametrize("bus", BROKERS, indirect=True)


def cloud_event(subject: str, n: int = 0, *, family: str = "model", **attributes: Any) -> CloudEvent:
    """An event of ``family`` about ``subject``; ``data.n`` numbers it."""
    kind = "training.job.progress" if family == "training" else "model.updated"
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": f"ai.{kind}.v1",
        "source": f"{SOURCE_PREFIX}acme",
        "subject": subject,
        "time": datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC),
        "tenant_id": "acme",
        "data": {"n": n},
        "family": family,
        "name": kind,
    }
    return CloudEvent(**{**values, **attributes})


def numbered(events: list[CloudEvent], key: Callable[[CloudEvent], str]) -> dict[str, list[int]]:
    """``data.n`` of the events, in their order, grouped by ``key``."""
    grouped: dict[str, list[int]] = {}
    for event in events:
        grouped.setdefault(key(event), []).append(event.data["n"])
    return grouped


class FailsOnce:
    """Raises the first time it sees each event (of ``ids``, where given): a handler that is down for a
    moment, or a consumer that dies between handling an event and acknowledging it."""

    def __init__(self, ids: set[str] | None = None) -> None:
        self._ids = ids
        self._failed: set[str] = set()

    def __call__(self, event: CloudEvent) -> None:
        if event.id not in self._failed and (self._ids is None or event.id in self._ids):
            self._failed.add(event.id)
            raise RuntimeError("down for a moment")


def test_a_published_event_arrives_with_every_attribute(bus: Bus, sqlite_engine: Engine) -> None:
    side = processing_side(sqlite_engine)
    bus.consume(side)
    traced = cloud_event(
        "m-1",
        type="ai.model.version.created.v1",
        name="model.version.created",
        data={"version": 3, "metrics": {"accuracy": 0.93}, "tags": ["a", "ü"], "note": None, "n": 0},
        traceparent=f"00-{'ab' * 16}-{'cd' * 8}-01",
    )
    untraced = cloud_event("job-1", 1, family="training", tenant_id="globex", source=f"{SOURCE_PREFIX}globex")
    bus.publish([traced, untraced])
    received = {event.id: event for event in side.handled.wait_for(2)}
    assert received == {traced.id: traced, untraced.id: untraced}


def test_the_events_of_an_aggregate_keep_their_order(bus: Bus, sqlite_engine: Engine) -> None:
    side = processing_side(sqlite_engine)
    bus.consume(side)
    events = [
        cloud_event(subject, n, family=family)
        for n in range(5)
        for subject, family in (("m-a", "model"), ("m-b", "model"), ("job-1", "training"))
    ]
    bus.publish(events[:6])
    bus.publish(events[6:])  # the relay publishes in batches
    received = side.handled.wait_for(len(events))
    by_subject = numbered(received, lambda event: event.subject)
    assert by_subject == numbered(events, lambda event: event.subject)
    if bus.family_order:
        assert numbered(received, lambda event: event.family) == numbered(events, lambda event: event.family)


@brokers_only
def test_every_consumer_group_gets_every_event(bus: Bus, sqlite_engine: Engine) -> None:
    sides = {group: processing_side(sqlite_engine, group) for group in ("replica-a", "replica-b")}
    for group, side in sides.items():
        bus.consume(side, group)
    events = [cloud_event(subject, n) for n in range(3) for subject in ("m-a", "m-b")]
    bus.publish(events)
    for side in sides.values():
        side.handled.wait_for(len(events))
        assert sorted(side.handled.ids()) == sorted(event.id for event in events)
        by_subject = numbered(side.handled.events, lambda event: event.subject)
        assert by_subject == {"m-a": [0, 1, 2], "m-b": [0, 1, 2]}


@pytest.mark.parametrize("failing", ["handler", "before the acknowledgement"])
def test_an_event_whose_consumer_failed_comes_again_and_is_handled_once(
    bus: Bus, sqlite_engine: Engine, failing: str
) -> None:
    """A handler that raises leaves the event unhandled, so it must come again (at least once); a consumer
    that dies after handling but before acknowledging gets it again too, and the processor, which
    recorded it, does not handle it twice. Either way the next event of the aggregate waits for it."""
    fails_once = FailsOnce()
    if failing == "handler":
        side = processing_side(sqlite_engine, before=fails_once)
        consume = side.process
    else:
        side = processing_side(sqlite_engine)

        def consume(event: CloudEvent) -> bool:
            handled = side.process(event)
            fails_once(event)
            return handled

    bus.consume(ConsumerSide(side.handled, consume))
    first, second = cloud_event("m-1", 0), cloud_event("m-1", 1)
    bus.publish([first, second])
    side.handled.wait_for(2)
    wait_until(lambda: side.handled.deliveries[first.id] >= 2, what="the failed event to come again")
    assert side.handled.ids() == [first.id, second.id]


def test_an_event_published_again_is_handled_once(bus: Bus, sqlite_engine: Engine) -> None:
    """The relay publishes an event again when it cannot know the broker took it (a timeout, a crash
    before marking it published). NATS drops the copy by its id; the others deliver it, and the
    processor skips it."""
    side = processing_side(sqlite_engine)
    bus.consume(side)
    event, after = cloud_event("m-1", 0), cloud_event("m-1", 1)
    bus.publish([event])
    bus.publish([event])
    bus.publish([after])
    side.handled.wait_for(2)
    assert side.handled.ids() == [event.id, after.id]
    assert side.handled.deliveries[event.id] == (1 if bus.drops_republished else 2)


@pytest.mark.parametrize("bus", ["redis", "nats", "kafka"], indirect=True)
def test_a_stopped_consumer_gets_what_was_published_meanwhile_once_started_again(
    bus: Bus, sqlite_engine: Engine
) -> None:
    side = processing_side(sqlite_engine)
    consumer = bus.consume(side)
    assert consumer is not None
    before = cloud_event("m-a", 0)
    bus.publish([before])
    side.handled.wait_for(1)
    consumer.stop()  # the replica goes down, or its consumer starts anew after a broker blip

    meanwhile = [cloud_event(subject, n) for n in range(1, 3) for subject in ("m-a", "m-b", "m-c")]
    bus.publish(meanwhile)
    bus.consume(side)  # the same consumer group again
    everything = [before, *meanwhile]
    received = side.handled.wait_for(len(everything), timeout=10)
    by_subject = numbered(received, lambda event: event.subject)
    assert by_subject == numbered(everything, lambda event: event.subject)


@brokers_only
def test_a_new_consumer_group_does_not_replay_what_was_published_before_it(
    bus: Bus, sqlite_engine: Engine
) -> None:
    """A new replica starts from now on. Kafka's "now" is when the group has fetched its positions, a
    moment after ``ready`` (the partitions are assigned): so events go on being published until one
    arrives, rather than one published at once and perhaps before that moment."""
    old = cloud_event("m-a", 0)
    bus.publish([old])
    side = processing_side(sqlite_engine)
    bus.consume(side)
    numbers = iter(range(1, 100))

    def published_until_one_arrives() -> list[CloudEvent]:
        if not side.handled.events:
            bus.publish([cloud_event("m-a", next(numbers))])
        return side.handled.events

    wait_until(published_until_one_arrives, 15, 0.5, "an event published after the group was made")
    assert old.id not in side.handled.ids()


def test_the_in_process_bus_hands_each_event_over_before_publish_returns(sqlite_engine: Engine) -> None:
    """In process, publishing is handling: nothing to wait for, and a failing handler fails the publish
    at that event, the ones before it taken (the relay publishes the rest again)."""
    events = [cloud_event("m-1", n) for n in range(3)]
    side = processing_side(sqlite_engine, before=FailsOnce({events[1].id}))
    publisher = InProcessEventPublisher(side.process)
    publisher.publish(events[:1])
    assert side.handled.ids() == [events[0].id]  # already, in this thread
    with pytest.raises(PublishFailed) as failed:
        publisher.publish(events)
    assert failed.value.published == 1  # the first was taken (skipped: handled before), not the second
    publisher.publish(events[failed.value.published :])
    assert side.handled.ids() == [event.id for event in events]


def test_stopping_and_closing_again_is_harmless(bus: Bus, sqlite_engine: Engine) -> None:
    side = processing_side(sqlite_engine)
    consumer = bus.consume(side)
    event = cloud_event("m-1")
    bus.publish([event])
    side.handled.wait_for(1)
    if consumer is not None:
        consumer.stop()
        consumer.stop()
    bus.publisher.close()
    bus.publisher.close()
    if bus.new_consumer is not None:
        never_started = bus.new_consumer("replica-idle")
        never_started.stop()
        never_started.stop()
