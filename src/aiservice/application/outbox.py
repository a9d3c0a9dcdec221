"""The outbox relay: delivers committed events to subscribers, in commit order, at least once."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from aiservice.application.ports import EventHandler, Outbox, OutboxMessage

log = logging.getLogger(__name__)


class EventBus:
    """In-process subscribers by event type; ``"*"`` receives every event."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: EventHandler) -> None:
        self._handlers[event_type].append(handler)

    def deliver(self, message: OutboxMessage) -> None:
        for handler in (*self._handlers.get(message.event_type, ()), *self._handlers.get("*", ())):
            handler(message)


class OutboxRelay:
    """Polls the outbox and hands each pending event to the bus; marks it published after.

    A failing handler leaves the event pending (with the error recorded) and stops the batch, so
    order per aggregate is kept; the next poll retries it.
    """

    def __init__(self, outbox: Outbox, bus: EventBus, interval: float = 1.0, batch: int = 100) -> None:
        self._outbox = outbox
        self._bus = bus
        self._interval = interval
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        delivered: list[int] = []
        try:
            for message in self._outbox.pending(self._batch):
                try:
                    self._bus.deliver(message)
                except Exception as exc:
                    log.warning("event delivery failed", exc_info=True)
                    self._outbox.mark_failed(message.position, f"{type(exc).__name__}: {exc}")
                    break
                delivered.append(message.position)
        finally:
            if delivered:
                self._outbox.mark_published(delivered)
        return len(delivered)

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
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.run_once() == self._batch:
                    pass
            except Exception:
                log.exception("outbox relay pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()
