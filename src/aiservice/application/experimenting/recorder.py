"""The observation recorder: one row per routed prediction, written off the hot path.

Policy (the payload recorder's): ``observe`` appends to a bounded in-memory queue and returns; when
``capacity`` observations wait, new ones are dropped and counted, never waited for. ``flush`` (run every
second by a ``PeriodicTask``, sooner when a batch is ready, and at shutdown) writes them in batches; a
batch the database refuses is dropped and counted, so a database away never stalls predictions.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from aiservice.application.experimenting.ports import Observation, ObservationStore

log = logging.getLogger(__name__)


class ObservationRecorder:
    def __init__(
        self,
        store: ObservationStore,
        *,
        capacity: int = 50_000,
        batch_size: int = 1_000,
        on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._store = store
        self.capacity = capacity
        self.batch_size = batch_size
        self._on_dropped = on_dropped
        self._queue: deque[Observation] = deque()
        self._flushing = threading.Lock()
        self.dropped = 0
        self.written = 0
        self.wake: Callable[[], None] = lambda: None  # set to the flushing task's wake

    def observe(self, observation: Observation) -> None:
        """The hot path: an append (or a counted drop when the queue is full)."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self._on_dropped(1)
            return
        self._queue.append(observation)
        if len(self._queue) == self.batch_size:
            self.wake()

    def flush(self) -> int:
        """Write every queued observation now; how many were written."""
        written = 0
        with self._flushing:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                try:
                    self._store.write(batch)
                except Exception:
                    log.warning("experiments: %d observations not written", len(batch), exc_info=True)
                    self.dropped += len(batch)
                    self._on_dropped(len(batch))
                    continue
                written += len(batch)
        self.written += written
        return written
