"""Kafka (aiokafka): one topic per family (``ai-service.model``, ...), keyed by the aggregate id so the
events of one aggregate share a partition and keep their order. The value is the CloudEvent JSON
(structured mode, header ``content-type: application/cloudevents+json``).

The producer waits for every in-sync replica (``acks=all``) and is idempotent unless told otherwise
(a broker without idempotent producers, such as Tansu 0.6 with the InitProducerId version aiokafka
speaks). Missing topics are created with ``partitions`` and ``replication``.
"""

from __future__ import annotations

import asyncio

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from aiservice.application.events import CONTENT_TYPE
from aiservice.application.ports import CloudEvent, PublishFailed
from aiservice.infrastructure.events.base import (
    DEFAULT_PREFIX,
    EVERY_FAMILY,
    Delivery,
    HandlerFailed,
    PollingConsumer,
    PrivateLoop,
    destination,
    encode,
)

_TOPIC_EXISTS = 36
_HEADERS = [("content-type", CONTENT_TYPE.encode())]


class KafkaTopics:
    """The family topics, created where missing."""

    def __init__(self, broker: str, prefix: str, partitions: int, replication: int, timeout_s: float) -> None:
        self.broker = broker
        self.names = [destination(prefix, f) for f in EVERY_FAMILY]
        self._partitions = partitions
        self._replication = replication
        self._timeout_ms = int(timeout_s * 1000)

    async def ensure(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker, request_timeout_ms=self._timeout_ms)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, self._partitions, self._replication)
                for name in self.names
                if name not in existing
            ]
            if missing:
                response = await admin.create_topics(missing)
                for topic, code, message in response.topic_errors:
                    if code not in (0, _TOPIC_EXISTS):
                        raise RuntimeError(f"cannot create the Kafka topic {topic}: {message} ({code})")
        finally:
            await admin.close()


class KafkaEventPublisher:
    name = "kafka"

    def __init__(
        self,
        broker: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        idempotent: bool = True,
        partitions: int = 3,
        replication: int = 1,
        timeout_s: float = 10.0,
    ) -> None:
        self._prefix = prefix
        self._idempotent = idempotent
        self._timeout = timeout_s
        self._topics = KafkaTopics(broker, prefix, partitions, replication, timeout_s)
        self._producer: AIOKafkaProducer | None = None
        self._loop = PrivateLoop("kafka-publisher")

    def publish(self, events: list[CloudEvent]) -> None:
        try:
            self._loop.run(self._publish(events), timeout=self._timeout * 2)
        except PublishFailed:
            self._loop.run(self._discard())
            raise
        except Exception as exc:
            self._loop.run(self._discard())
            raise PublishFailed(0, f"{type(exc).__name__}: {exc}") from exc

    async def _publish(self, events: list[CloudEvent]) -> None:
        producer = await self._connected()
        sent = []
        for index, event in enumerate(events):
            try:
                topic = destination(self._prefix, event.family)
                key = event.subject.encode()
                sent.append(await producer.send(topic, encode(event), key=key, headers=_HEADERS))
            except Exception as exc:
                raise PublishFailed(index, f"{type(exc).__name__}: {exc}") from exc
        for index, delivery in enumerate(sent):
            try:
                await asyncio.wait_for(delivery, self._timeout)
            except Exception as exc:
                raise PublishFailed(index, f"{type(exc).__name__}: {exc}") from exc

    async def _connected(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self._topics.ensure()
            producer = AIOKafkaProducer(
                bootstrap_servers=self._topics.broker,
                enable_idempotence=self._idempotent,
                acks="all",
                request_timeout_ms=int(self._timeout * 1000),
                linger_ms=2,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _discard(self) -> None:
        """After a failure the producer is made anew, so a broker that came back empty (topics and
        producer ids gone) is met with fresh state."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def close(self) -> None:
        self._loop.close(self._discard())


class _KeepStartingPoints(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits where the group starts reading a partition it has no committed offset for, as soon as
    the partition is assigned: otherwise a consumer that restarts before it handled an event there
    would start again at the end (``latest``) and lose what was published while it was down."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.settled = False  # the current assignment's starting points are committed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.settled = False

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        fresh = {}
        for partition in assigned:
            if await self._consumer.committed(partition) is None:
                fresh[partition] = await self._consumer.position(partition)
        if fresh:
            await self._consumer.commit(fresh)
        self.settled = True


class KafkaEventConsumer(PollingConsumer):
    """A consumer group of its own (the consumer name), offsets committed after the handled messages.
    A new group starts at the end of each partition (``auto_offset_reset=latest``), or at the start of
    what the topics hold with ``from_start``."""

    def __init__(
        self,
        broker: str,
        group: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = 3,
        replication: int = 1,
        batch: int = 100,
        timeout_s: float = 10.0,
        max_backoff: float = 30.0,
        from_start: bool = False,
    ) -> None:
        super().__init__(f"kafka-consumer-{group}", max_backoff)
        self._group = group
        self._reset_to = "earliest" if from_start else "latest"
        self._batch = batch
        self._timeout = timeout_s
        self._topics = KafkaTopics(broker, prefix, partitions, replication, timeout_s)
        self._consumer: AIOKafkaConsumer | None = None
        self._starting_points: _KeepStartingPoints | None = None
        self._loop = PrivateLoop(f"kafka-consumer-{group}")

    def _close(self) -> None:
        self._loop.close(self._discard())

    @property
    def ready(self) -> bool:
        """Whether the group gave this consumer its partitions and their starting points are kept
        (it reads everything published from then on)."""
        consumer, starting_points = self._consumer, self._starting_points
        return (
            consumer is not None
            and starting_points is not None
            and starting_points.settled
            and bool(consumer.assignment())
        )

    def _poll(self, deliver: Delivery) -> None:
        batches = self._loop.run(self._fetch())
        for partition, records in batches.items():
            self._handle(deliver, partition, records)

    def _handle(
        self, deliver: Delivery, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        handled: int | None = None  # the offset to commit: the next one to read
        try:
            for record in records:
                if self.stopping:
                    return
                if not deliver(record.value or b""):
                    self._loop.run(self._rewind(partition, record.offset))  # read again, in order
                    raise HandlerFailed(f"{partition} @ {record.offset}")
                handled = record.offset + 1
        finally:
            if handled is not None:
                self._loop.run(self._commit(partition, handled))

    async def _rewind(self, partition: TopicPartition, offset: int) -> None:
        if self._consumer is not None:
            self._consumer.seek(partition, offset)

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        if self._consumer is not None:
            await self._consumer.commit({partition: offset})

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self._consumer is None:
            await self._topics.ensure()
            consumer: AIOKafkaConsumer = AIOKafkaConsumer(
                bootstrap_servers=self._topics.broker,
                group_id=self._group,
                enable_auto_commit=False,
                auto_offset_reset=self._reset_to,  # a group's JoinGroup may take seconds: default timeouts
            )
            self._starting_points = _KeepStartingPoints(consumer)
            consumer.subscribe(list(self._topics.names), listener=self._starting_points)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await self._consumer.getmany(
            timeout_ms=1000, max_records=self._batch
        )
        return batches

    async def _discard(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def _reset(self) -> None:
        self._loop.run(self._discard())
