"""What every broker adapter shares: the JSON form of an event, a private event loop for the async
clients, the consumer thread, and the handing over of one delivered message."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson

from aiservice.application.events import FAMILIES, MalformedEvent, envelope, from_envelope
from aiservice.application.ports import CloudEvent

log = logging.getLogger("aiservice.events")

T = TypeVar("T")

DEFAULT_PREFIX = "ai-service"
EVERY_FAMILY = tuple(sorted(set(FAMILIES.values())))
MAX_HANDLER_ATTEMPTS = 10  # then the event is logged and acknowledged, so one bad event cannot stall a stream


def encode(event: CloudEvent) -> bytes:
    return orjson.dumps(envelope(event))


def decode(payload: bytes | str) -> CloudEvent:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    return from_envelope(document)


def destination(prefix: str, family: str) -> str:
    """A family's stream (Redis) or topic (Kafka): ``ai-service.model``."""
    return f"{prefix}.{family}"


class PrivateLoop:
    """An adapter's own asyncio loop in a daemon thread. The async clients (nats-py, aiokafka) keep their
    background tasks (pings, reconnects, heartbeats, the producer's sender) running between calls,
    while callers stay synchronous: ``run`` waits for a coroutine's result."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self, cleanup: Coroutine[Any, Any, None] | None = None, timeout: float = 10.0) -> None:
        """Run ``cleanup`` (closing the client), cancel what is left, stop the loop and its thread."""
        if self._loop.is_closed():
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None:
            try:
                self.run(cleanup, timeout)
            except Exception:
                log.warning("closing an event broker client failed", exc_info=True)
        try:
            self.run(_cancel_others(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class HandlerFailed(Exception):
    """A handler raised: the event stays unacknowledged and the consumer backs off before the retry."""


class Delivery:
    """Hands one delivered message to the handler. A malformed message is logged and skipped; a failing
    handler leaves its event unacknowledged, until it has failed ``MAX_HANDLER_ATTEMPTS`` times."""

    def __init__(self, handle: Callable[[CloudEvent], object]) -> None:
        self._handle = handle
        self._failures: OrderedDict[str, int] = OrderedDict()

    def __call__(self, payload: bytes | str) -> bool:
        """True: acknowledge the message (handled, malformed or given up on)."""
        try:
            event = decode(payload)
        except MalformedEvent as exc:
            log.warning("skipping a malformed message on the event broker: %s", exc)
            return True
        try:
            self._handle(event)
        except Exception:
            failures = self._failures.pop(event.id, 0) + 1
            if failures >= MAX_HANDLER_ATTEMPTS:
                log.error("giving up on event %s (%s) after %d failures", event.id, event.type, failures)
                return True
            self._failures[event.id] = failures
            while len(self._failures) > 1000:
                self._failures.popitem(last=False)
            log.warning("event handler failed for %s (%s)", event.id, event.type, exc_info=True)
            return False
        self._failures.pop(event.id, None)
        return True


class PollingConsumer(ABC):
    """Base of the broker consumers (``EventConsumer``): ``_poll`` runs over and over in a thread of the
    consumer's own until it is stopped, blocking at most about a second waiting for messages and handing
    each to ``deliver``. When a poll raises (broker down, a handler failed) the thread waits, doubling the
    pause up to ``max_backoff``, and calls ``_reset`` so the next poll connects again."""

    def __init__(self, name: str, max_backoff: float) -> None:
        self._name = name
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deliver: Delivery | None = None

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether the subscription exists on the broker (the consumer gets what is published from now)."""

    @abstractmethod
    def _poll(self, deliver: Delivery) -> None: ...

    @abstractmethod
    def _reset(self) -> None:
        """Drop the connection after a failed poll (the next poll makes a new one)."""

    @abstractmethod
    def _close(self) -> None:
        """Release the client once the thread has stopped."""

    def start(self, handle: Callable[[CloudEvent], object]) -> None:
        if self._thread is None:
            self._deliver = Delivery(handle)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        assert self._deliver is not None
        failures = 0
        while not self._stop.is_set():
            try:
                self._poll(self._deliver)
                failures = 0
            except HandlerFailed:
                failures += 1
            except Exception as exc:
                failures += 1
                log.warning("%s: %s", self._name, exc, exc_info=failures == 1)
                try:
                    self._reset()
                except Exception:
                    log.debug("%s: reset failed", self._name, exc_info=True)
            if failures:
                pause = min(self._max_backoff, 0.1 * 2.0 ** min(failures, 20))
                self._stop.wait(pause * random.uniform(0.5, 1.0))
