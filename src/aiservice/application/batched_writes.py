"""Writing off the hot path: a bounded in-memory queue drained in batches by a background task.

Both sampled predictions (``payload_logging.recorder``) and experiment observations
(``experimenting.recorder``) are written this way. ``put`` is the hot path: an append, or, when
``capacity`` rows already wait, a counted drop (``dropped``, ``on_dropped``), never a wait. ``flush``
(run every second by a ``PeriodicTask``, sooner when ``wake`` says a batch is ready, and at shutdown)
hands the queued items to ``write`` a batch of about ``batch_size`` rows at a time; a batch that
``write`` cannot store is dropped and counted, so a database that is away never stalls a prediction.
An item may stand for several rows (a batch prediction is logged row by row): ``put`` takes its weight.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchedWriter(Generic[T]):
    def __init__(
        self,
        write: Callable[[list[T]], int],
        *,
        what: str,
        capacity: int,
        batch_size: int,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_written: Callable[[int], None] = lambda n: None,
    ) -> None:
        """``write`` stores a batch and says how many rows it stored, or raises; ``what`` names the rows
        in the warning a failed batch logs."""
        self._write = write
        self._what = what
        self.capacity = capacity  # rows queued at most
        self.batch_size = batch_size
        self._on_dropped = on_dropped
        self._on_written = on_written
        self._queue: deque[tuple[T, int]] = deque()
        self._queued_rows = 0
        self._flushing = threading.Lock()
        self.dropped = 0
        self.written = 0
        self.wake: Callable[[], None] = lambda: None  # set to the flushing task's wake

    def put(self, item: T, rows: int = 1) -> bool:
        """Queue ``item`` (``rows`` rows); False when the queue is full and it was dropped."""
        if self._queued_rows + rows > self.capacity:
            self.drop(rows)
            return False
        self._queue.append((item, rows))
        self._queued_rows += rows
        if self._queued_rows >= self.batch_size:
            self.wake()
        return True

    def drop(self, rows: int) -> None:
        self.dropped += rows
        self._on_dropped(rows)

    def flush(self) -> int:
        """Write everything queued now; the rows written."""
        written = 0
        with self._flushing:
            while self._queue:
                batch: list[T] = []
                rows = 0
                while self._queue and rows < self.batch_size:
                    item, weight = self._queue.popleft()
                    batch.append(item)
                    rows += weight
                self._queued_rows -= rows
                try:
                    written += self._write(batch)
                except Exception:  # the store is away: these rows are lost, and counted as such
                    log.warning("%s: %d rows not written", self._what, rows, exc_info=True)
                    self.drop(rows)
        if written:
            self.written += written
            self._on_written(written)
        return written
