"""The observation recorder: one row per routed prediction, written off the hot path by a
``BatchedWriter`` (a bounded queue: a full queue drops and counts, a refused batch is dropped and
counted, so a database away never stalls predictions)."""

from __future__ import annotations

from collections.abc import Callable

from aiservice.application.batched_writes import BatchedWriter
from aiservice.application.experimenting.ports import Observation, ObservationStore


class ObservationRecorder(BatchedWriter[Observation]):
    def __init__(
        self,
        store: ObservationStore,
        *,
        capacity: int = 50_000,
        batch_size: int = 1_000,
        on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        def write(batch: list[Observation]) -> int:
            store.write(batch)
            return len(batch)

        super().__init__(
            write, what="experiments", capacity=capacity, batch_size=batch_size, on_dropped=on_dropped
        )

    def observe(self, observation: Observation) -> None:
        """The hot path: an append (or a counted drop when the queue is full)."""
        self.put(observation)
