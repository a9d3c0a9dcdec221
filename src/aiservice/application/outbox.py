"""The outbox relay: publishes committed events to the broker and hands them to in-process subscribers,
in commit order, at least once; one relay at a time across replicas, by a lease."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from aiservice.application.events import to_cloud_event
from aiservice.application.ports import (
    Clock,
    EventHandler,
    EventPublisher,
    Outbox,
    OutboxLease,
    OutboxMessage,
    OutboxMonitor,
    OutboxReport,
    PublishFailed,
)
from aiservice.domain.clock import utcnow
from aiservice.domain.tenancy import Permission, Principal

log = logging.getLogger(__name__)


class EventBus:
    """In-process subscribers by event type; ``"*"`` receives every event.

    They run on the replica that holds the relay lease, once per committed event (at least once), before
    it is marked published: work to do once for the whole service (ONNX compilation, logs) belongs here.
    Work every replica must do (its caches) subscribes to ``EventHandlers`` instead."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: EventHandler) -> None:
        self._handlers[event_type].append(handler)

    def deliver(self, message: OutboxMessage) -> None:
        for handler in (*self._handlers.get(message.event_type, ()), *self._handlers.get("*", ())):
            handler(message)


class OutboxRelay:
    """Polls the outbox, publishes each pending event to the broker, then to the bus; marks it published.

    A failure (the broker, or a subscriber) leaves the event pending with the error recorded and stops
    the batch, so order per aggregate is kept; the loop retries it with exponential backoff. With a
    ``lease`` only the replica holding it publishes, renewing it before every pass.
    """

    def __init__(
        self,
        outbox: Outbox,
        bus: EventBus,
        interval: float = 1.0,
        batch: int = 100,
        *,
        publisher: EventPublisher | None = None,
        lease: OutboxLease | None = None,
        max_backoff: float = 60.0,
        clock: Clock = utcnow,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._interval = interval
        self._batch = batch
        self._publisher = publisher
        self._lease = lease
        self._max_backoff = max(max_backoff, interval)
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0  # passes in a row that ended in a failure
        self._holding = lease is None
        self._oldest_pending: datetime | None = None

    @property
    def publisher_name(self) -> str:
        return self._publisher.name if self._publisher is not None else "inprocess"

    def run_once(self) -> int:
        """One pass: publish up to a batch of pending events; returns how many were published."""
        if self._lease is not None:
            self._holding = self._lease.acquire()
            if not self._holding:
                self._oldest_pending = None  # the holder reports the lag
                return 0
        messages = self._outbox.pending(self._batch)
        done: list[int] = []
        try:
            acknowledged, error = self._publish(messages)
            for message in messages[:acknowledged]:
                try:
                    self._bus.deliver(message)
                except Exception as exc:
                    log.warning("event subscriber failed", exc_info=True)
                    error = exc
                    break
                done.append(message.position)
        finally:
            if done:
                self._outbox.mark_published(done)
        left = messages[len(done) :]
        if left and error is not None:
            self._outbox.mark_failed(left[0].position, f"{type(error).__name__}: {error}")
        self._failures = self._failures + 1 if error is not None else 0
        self._oldest_pending = left[0].occurred_at if left else None
        return len(done)

    def lag_seconds(self) -> float:
        """How long the oldest event this relay could not publish yet has waited (0 when none, or when
        another replica holds the lease)."""
        oldest = self._oldest_pending
        return max(0.0, (self._clock() - oldest).total_seconds()) if oldest is not None else 0.0

    @property
    def holding_lease(self) -> bool:
        return self._holding

    @property
    def holder(self) -> str | None:
        """This relay's name on the lease (None without a lease)."""
        return self._lease.holder if self._lease is not None else None

    def _publish(self, messages: list[OutboxMessage]) -> tuple[int, Exception | None]:
        """Publish to the broker: how many of the leading messages it acknowledged, and why not all."""
        if self._publisher is None or not messages:
            return len(messages), None
        try:
            self._publisher.publish([to_cloud_event(m) for m in messages])
        except Exception as exc:  # an adapter raises PublishFailed; anything else published nothing
            log.warning("publishing to %s failed: %s", self._publisher.name, exc)
            published = exc.published if isinstance(exc, PublishFailed) else 0
            return max(0, min(published, len(messages))), exc
        return len(messages), None

    def notify(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting for the poll."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._lease is not None and self._holding:
            try:
                self._lease.release()  # another replica takes over now, not when the lease expires
            except Exception:
                log.warning("could not release the outbox lease", exc_info=True)
        if self._publisher is not None:
            self._publisher.close()

    def backoff_seconds(self) -> float:
        """The wait before the next try after ``failures`` failed passes in a row: doubling, jittered."""
        if self._failures == 0:
            return 0.0
        delay = min(self._max_backoff, self._interval * 2.0 ** min(self._failures, 30))
        return delay * random.uniform(0.5, 1.0)

    def _loop(self) -> None:
        retry_at = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= retry_at:
                    while self.run_once() == self._batch and not self._stop.is_set():
                        pass
                    retry_at = time.monotonic() + self.backoff_seconds()
                elif self._lease is not None:
                    self._holding = self._lease.acquire()  # keep the lease while backing off
            except Exception:
                log.exception("outbox relay pass failed")
                self._failures += 1
                retry_at = time.monotonic() + self.backoff_seconds()
            self._wake.wait(self._interval)
            self._wake.clear()


@dataclass(frozen=True)
class OutboxOverview:
    """What an operator asks of the outbox: how far behind it is, what fails, who publishes."""

    bus: str
    report: OutboxReport
    lag_seconds: float  # the age of the oldest pending event (0 when none)
    lease_active: bool  # whether some relay holds the lease now (else the next to try takes it)
    held_here: bool  # whether this replica's relay holds the lease


class OutboxStatus:
    """The platform's outbox, for operators: it spans every tenant, so platform permission is needed."""

    def __init__(self, monitor: OutboxMonitor, relay: OutboxRelay, clock: Clock) -> None:
        self._monitor = monitor
        self._relay = relay
        self._clock = clock

    def overview(self, principal: Principal, failures: int = 20) -> OutboxOverview:
        principal.require(Permission.TENANTS_MANAGE)
        report = self._monitor.report(failures)
        now, oldest, expires = self._clock(), report.oldest_pending_at, report.lease_expires_at
        lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        active = expires is not None and expires > now
        return OutboxOverview(self._relay.publisher_name, report, lag, active, self._relay.holding_lease)
