"""NATS JetStream: one stream (``AI_SERVICE``) over the subjects ``ai-service.<family>.<event>``.

Each message is the CloudEvent JSON with the header ``Nats-Msg-Id`` set to the event id, so the server
drops a retried publish within the stream's duplicate window. Consumers are durable pull consumers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from aiservice.application.events import CONTENT_TYPE
from aiservice.application.ports import CloudEvent, PublishFailed
from aiservice.infrastructure.events.base import (
    DEFAULT_PREFIX,
    Delivery,
    HandlerFailed,
    PollingConsumer,
    PrivateLoop,
    encode,
)

log = logging.getLogger("aiservice.events")

DEFAULT_STREAM = "AI_SERVICE"
DUPLICATE_WINDOW = timedelta(minutes=10)  # retries of one event within it are dropped by the server
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_-]")


class _Connection:
    """One client, its JetStream context and the stream, made on first use on the adapter's loop and
    made again after it closed (nats-py reconnects by itself after a blip; this covers the rest)."""

    def __init__(self, url: str, prefix: str, stream: str, timeout_s: float, name: str) -> None:
        self.url, self.prefix, self.stream, self.timeout_s, self.name = url, prefix, stream, timeout_s, name
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    async def jetstream(self) -> JetStreamContext:
        if self._client is None or self._client.is_closed or self._js is None:
            await self.close()
            client = Client()
            try:  # with endless reconnects, connect() would retry forever against a server that is down
                await asyncio.wait_for(self._connect(client), self.timeout_s)
            except BaseException:
                await client.close()
                raise
            self._client, self._js = client, client.jetstream(timeout=self.timeout_s)
            await self._ensure_stream(self._js)
        return self._js

    async def _connect(self, client: Client) -> None:
        await client.connect(
            servers=[self.url],
            name=self.name,
            connect_timeout=max(1, int(self.timeout_s)),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,
            error_cb=_log_error,
            disconnected_cb=_ignore,
            reconnected_cb=_ignore,
        )

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.prefix}.>"],
                    duplicate_window=DUPLICATE_WINDOW.total_seconds(),
                )
            )

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()


async def _log_error(error: Exception) -> None:
    log.debug("nats client: %s", error)


async def _ignore() -> None:
    return None


async def _nak(messages: list[Msg], delay: float) -> None:
    for message in messages:
        await message.nak(delay=delay)


class NatsEventPublisher:
    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        timeout_s: float = 5.0,
    ) -> None:
        self._prefix = prefix
        self._timeout = timeout_s
        self._connection = _Connection(url, prefix, stream, timeout_s, "aiservice-outbox-relay")
        self._loop = PrivateLoop("nats-publisher")

    def publish(self, events: list[CloudEvent]) -> None:
        try:
            self._loop.run(self._publish(events))
        except PublishFailed:
            raise
        except Exception as exc:
            raise PublishFailed(0, f"{type(exc).__name__}: {exc}") from exc

    async def _publish(self, events: list[CloudEvent]) -> None:
        try:
            js = await self._connection.jetstream()
        except Exception as exc:
            raise PublishFailed(0, f"cannot reach NATS at {self._connection.url}: {exc!r}") from exc
        for index, event in enumerate(events):
            try:
                await js.publish(
                    f"{self._prefix}.{event.name}",
                    encode(event),
                    stream=self._connection.stream,
                    headers={"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE},
                )
            except Exception as exc:
                raise PublishFailed(index, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._loop.close(self._connection.close())


class NatsEventConsumer(PollingConsumer):
    """A durable pull consumer named after the consumer (``.`` and other characters NATS refuses in a
    name become ``_``). A new consumer starts with the messages published after it was made."""

    def __init__(
        self,
        url: str,
        durable: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        batch: int = 100,
        timeout_s: float = 5.0,
        ack_wait_s: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._durable = _NOT_A_NAME.sub("_", durable)
        super().__init__(f"nats-consumer-{self._durable}", max_backoff)
        self._prefix = prefix
        self._batch = batch
        self._ack_wait = ack_wait_s
        self._connection = _Connection(url, prefix, stream, timeout_s, f"aiservice-{self._durable}")
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._loop = PrivateLoop(f"nats-consumer-{self._durable}")

    def _close(self) -> None:
        self._loop.close(self._connection.close())

    @property
    def ready(self) -> bool:
        """Whether the durable consumer exists (it receives what is published from then on)."""
        return self._subscription is not None

    def _poll(self, deliver: Delivery) -> None:
        messages = self._loop.run(self._fetch())
        for index, message in enumerate(messages):
            if self.stopping:
                return
            if not deliver(message.data):
                # This one and the rest of the batch come back after the pause, still in order.
                self._loop.run(_nak(messages[index:], delay=1.0))
                raise HandlerFailed(message.reply)
            self._loop.run(message.ack())

    async def _fetch(self) -> list[Msg]:
        if self._subscription is None:
            js = await self._connection.jetstream()
            self._subscription = await js.pull_subscribe(
                f"{self._prefix}.>",
                durable=self._durable,
                stream=self._connection.stream,
                config=ConsumerConfig(
                    durable_name=self._durable,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait,
                ),
            )
        try:
            return await self._subscription.fetch(self._batch, timeout=1.0)
        except NatsTimeout:
            return []

    def _reset(self) -> None:
        self._subscription = None
        self._loop.run(self._connection.close())
