"""Redis Streams: one stream per family (``ai-service.model``, ...), read through consumer groups.

Each entry has the fields ``id``, ``type`` and ``event`` (the CloudEvent JSON). Redis keeps no
publisher-side deduplication, so consumers deduplicate by event id. Streams are trimmed to about
``maxlen`` entries (``XADD MAXLEN ~``).
"""

from __future__ import annotations

from typing import Any

import redis

from aiservice.application.ports import CloudEvent, PublishFailed
from aiservice.infrastructure.events.base import (
    DEFAULT_PREFIX,
    EVERY_FAMILY,
    Delivery,
    HandlerFailed,
    PollingConsumer,
    destination,
    encode,
)


def redis_client(
    host: str, port: int, *, password: str | None = None, db: int = 0, timeout_s: float = 5.0
) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        db=db,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, 2.0),
        health_check_interval=30,
    )


class RedisStreamsEventPublisher:
    name = "redis"

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, maxlen: int | None = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._maxlen = maxlen

    def publish(self, events: list[CloudEvent]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in events:
            fields: dict[Any, Any] = {"id": event.id, "type": event.type, "event": encode(event)}
            pipe.xadd(destination(self._prefix, event.family), fields, maxlen=self._maxlen, approximate=True)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise PublishFailed(0, f"{type(exc).__name__}: {exc}") from exc
        for index, result in enumerate(results):
            if isinstance(result, Exception):
                raise PublishFailed(index, f"{type(result).__name__}: {result}")

    def close(self) -> None:
        self._client.close()


class RedisStreamsEventConsumer(PollingConsumer):
    """A consumer group per consumer name, reading every family's stream. Entries this consumer was handed
    but did not acknowledge (a handler failed, the process died) are read again first, in order.

    A new group starts at the streams' end ("from now on"); a group that went missing (Redis lost its data)
    is created again from the start of what the stream holds, and deduplication drops what was handled."""

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        families: tuple[str, ...] = EVERY_FAMILY,
        batch: int = 100,
        block_ms: int = 1000,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(f"redis-consumer-{group}", max_backoff)
        self._client = client
        self._group = group
        self._streams = [destination(prefix, f) for f in families]
        self._batch = batch
        self._block_ms = block_ms
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the consumer groups exist (the consumer receives what is published from then on)."""
        return self._ready

    def _reset(self) -> None:
        """Nothing to drop: redis-py connects again on the next command."""

    def _close(self) -> None:
        self._client.close()

    def _poll(self, deliver: Delivery) -> None:
        if not self._ready:
            self._create_groups("$")
            self._ready = True
        try:
            entries = self._read("0") or self._read(">", block=True)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._create_groups("0")
            return
        for stream, messages in entries:
            self._handle(deliver, stream, messages)

    def _read(self, start: str, *, block: bool = False) -> list[Any]:
        """``0``: what this consumer holds unacknowledged; ``>``: what no one in the group has seen."""
        reply: Any = self._client.xreadgroup(
            self._group,
            self._group,
            dict.fromkeys(self._streams, start),
            count=self._batch,
            block=self._block_ms if block else None,
        )
        return [(stream, messages) for stream, messages in reply or () if messages]

    def _handle(
        self, deliver: Delivery, stream: bytes, messages: list[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> None:
        for entry_id, fields in messages:
            if self.stopping:
                return
            # An entry trimmed away while pending comes back without fields: malformed, acknowledged.
            if not deliver((fields or {}).get(b"event", b"")):
                raise HandlerFailed(entry_id)  # the rest of this stream waits: order per aggregate
            self._client.xack(stream, self._group, entry_id)

    def _create_groups(self, start: str) -> None:
        for stream in self._streams:
            try:
                self._client.xgroup_create(stream, self._group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
