"""Consuming events: in-process handlers of the CloudEvents a broker delivers, each event handled once
per consumer, and the built-in handlers that keep every replica's serving caches in step.

Brokers deliver at least once, so ``EventProcessor`` records the ids it has handled and skips an event
it already handled. Handlers run on every replica (each replica consumes as its own consumer), so they
suit work on a replica's memory; work to do once for the whole service subscribes to the relay's
``EventBus`` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from aiservice.application.events import EVENT_TYPES
from aiservice.application.inference import InferenceService
from aiservice.application.ports import (
    Clock,
    CloudEvent,
    EventConsumer,
    ProcessedEvents,
    SpanValue,
    Tracer,
)
from aiservice.application.tracing import NO_TRACER
from aiservice.domain.tenancy import Principal, Role

log = logging.getLogger(__name__)

CloudEventHandler = Callable[[CloudEvent], None]

STAGE_CHANGED = EVENT_TYPES["ModelStageChanged"]
PROCESSED_RETENTION = timedelta(days=7)  # longer than any broker keeps redelivering one event
_PRUNE_EVERY = timedelta(hours=1)


class EventHandlers:
    """Handlers by CloudEvent type (``ai.model.deleted.v1``); ``"*"`` receives every event."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[CloudEventHandler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: CloudEventHandler) -> None:
        self._handlers[event_type].append(handler)

    def for_type(self, event_type: str) -> list[CloudEventHandler]:
        return [*self._handlers.get(event_type, ()), *self._handlers.get("*", ())]


class EventProcessor:
    """Hands each delivered event to its handlers, once per consumer.

    The id is recorded after every handler succeeded, so a crash in between hands the event over again
    (at least once); an event already recorded is skipped (the broker's redelivery is harmless). A
    failing handler raises, and the consumer leaves the event unacknowledged for a later try.
    """

    def __init__(
        self,
        handlers: EventHandlers,
        processed: ProcessedEvents,
        consumer: str,
        clock: Clock,
        retention: timedelta = PROCESSED_RETENTION,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.consumer = consumer
        self._tracer = tracer
        self._handlers = handlers
        self._processed = processed
        self._clock = clock
        self._retention = retention
        self._pruned_at = clock() - _PRUNE_EVERY

    def process(self, event: CloudEvent) -> bool:
        """Handle ``event`` unless this consumer already did; True if it was handled now."""
        if self._processed.seen(self.consumer, event.id):
            return False
        attributes: dict[str, SpanValue] = {
            "messaging.message.id": event.id,
            "messaging.consumer.group.name": self.consumer,
            "cloudevents.event_type": event.type,
            "tenant.id": event.tenant_id,
        }
        # A child of the producer's span (the request that made the change), on whichever replica.
        with self._tracer.span("event.process", attributes, traceparent=event.traceparent):
            for handler in self._handlers.for_type(event.type):
                handler(event)
        now = self._clock()
        self._processed.record(self.consumer, event, now)
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            self._processed.prune(now - self._retention)
        return True


class ServingCacheHandlers:
    """Keep this replica's serving caches in step with changes made on any replica: forget a model's
    resolutions when it changes (deleted, staged, aliased), and warm a version promoted to production.

    Warming runs on the event loop that serves predictions (``serve_on``), where the model cache lives;
    without one (no HTTP server in this process) there is nothing to warm."""

    def __init__(self, inference: InferenceService, *, warm: bool = True) -> None:
        self._inference = inference
        self._warm = warm
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def subscribe(self, handlers: EventHandlers) -> None:
        handlers.subscribe("*", self.forget)
        if self._warm:
            handlers.subscribe(STAGE_CHANGED, self.warm)

    def forget(self, event: CloudEvent) -> None:
        if event.family == "model":
            self._inference.invalidate(event.tenant_id, event.subject)

    def warm(self, event: CloudEvent) -> None:
        loop = self._loop
        if event.data.get("to_stage") != "production" or loop is None or loop.is_closed():
            return
        system = Principal("system:events", event.tenant_id, frozenset({Role.ADMIN}))
        load = self._inference.load(system, event.subject, int(event.data["version"]))
        try:
            future = asyncio.run_coroutine_threadsafe(load, loop)
        except RuntimeError:  # the loop closed in between: the process is stopping
            load.close()
            return
        future.add_done_callback(lambda done: _report_warm(done, event))


class EventConsumption:
    """This replica's side of the events: the broker's consumer (none when events stay in-process: the
    relay then hands them to the processor itself) and the handlers of its serving caches."""

    def __init__(
        self,
        handlers: EventHandlers,
        processor: EventProcessor,
        serving: ServingCacheHandlers,
        consumer: EventConsumer | None,
    ) -> None:
        self.handlers = handlers
        self.processor = processor
        self.serving = serving
        self.consumer = consumer
        serving.subscribe(handlers)

    def subscribe(self, event_type: str, handler: CloudEventHandler) -> None:
        """Run ``handler`` on this replica for every event of ``event_type`` (``"*"``: all), once each."""
        self.handlers.subscribe(event_type, handler)

    def start(self) -> None:
        """Call on the event loop that serves predictions, if there is one (its caches get warmed)."""
        try:
            self.serving.serve_on(asyncio.get_running_loop())
        except RuntimeError:
            self.serving.serve_on(None)
        if self.consumer is not None:
            self.consumer.start(self.processor.process)

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        self.serving.serve_on(None)


def _report_warm(done: Future[Any], event: CloudEvent) -> None:
    """Warming is best effort: a version that cannot load now loads on its first prediction."""
    if done.cancelled():
        return
    error = done.exception()
    if error is not None:
        log.info("could not warm %s version %s: %s", event.subject, event.data.get("version"), error)
