"""Adaptive batching: concurrent requests for one model version run as one vectorised call.

No request waits for a batch to fill when the model is idle: a request that finds the model idle
runs at once, and the requests that arrive while a batch runs form the next one. Only while batches
of more than one request are forming (load is present) does the batcher linger up to
``max_delay_s`` to gather a fuller batch. A request with more rows than ``max_batch_size`` runs on
its own, never split or refused.

A model whose small calls take only microseconds (a compiled ONNX tree ensemble answers a row in
~5 us) would spend far longer hopping to a worker thread, or waiting for a batch, than computing:
while its measured small-call time stays under ``inline_below_s``, small requests run on the event
loop itself, at once. Gathering waits only for models whose calls cost more than the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from aiservice.application.ports import Prediction

SMALL_CALL_ROWS = 8  # calls this small are timed to decide whether the model runs inline


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Prediction]


class AdaptiveBatcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], Prediction],
        executor: Executor,
        max_batch_size: int = 32,
        max_delay_s: float = 0.002,
        workers: int = 1,
        on_batch: Callable[[int, int], None] = lambda requests, rows: None,
        inline_below_s: float = 0.0002,
        first_call_s: float | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._workers_wanted = workers
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._last_batch_requests = 0
        self._inline_below = inline_below_s
        self._call_s = first_call_s  # moving average of a small call's duration (a warm-up's at first)
        self._busy = 0

    def _timed(self, rows: np.ndarray) -> Prediction:
        started = time.perf_counter()
        try:
            return self._run(rows)
        finally:
            elapsed = time.perf_counter() - started
            if len(rows) <= SMALL_CALL_ROWS:
                self._call_s = elapsed if self._call_s is None else 0.8 * self._call_s + 0.2 * elapsed

    async def submit(self, rows: np.ndarray) -> Prediction:
        loop = asyncio.get_running_loop()
        fast = self._call_s is not None and self._call_s < self._inline_below
        if fast and len(rows) <= SMALL_CALL_ROWS:
            self._on_batch(1, len(rows))
            return self._timed(rows)
        if len(rows) >= self.max_batch_size:
            self._on_batch(1, len(rows))
            return await loop.run_in_executor(self._executor, self._timed, rows)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.create_task(self._work()) for _ in range(self._workers_wanted)]
        future: asyncio.Future[Prediction] = loop.create_future()
        await self._queue.put(_Pending(rows, future))
        return await future

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue = [], None

    async def _gather(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        batch = [await queue.get()]
        size = len(batch[0].rows)
        deadline = asyncio.get_running_loop().time() + self.max_delay_s
        while size < self.max_batch_size:
            if queue.empty():
                busy = self._last_batch_requests > 1 and (self._call_s or 0.0) > self.max_delay_s
                remaining = deadline - asyncio.get_running_loop().time()
                if not busy or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            if size + len(item.rows) > self.max_batch_size:
                queue.put_nowait(item)  # goes first in the next batch
                break
            batch.append(item)
            size += len(item.rows)
        return batch

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(queue)
            self._last_batch_requests = len(batch)
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            rows = live[0].rows if len(live) == 1 else np.concatenate([p.rows for p in live])
            self._on_batch(len(live), len(rows))
            self._busy += 1
            try:
                result = await loop.run_in_executor(self._executor, self._timed, rows)
            except Exception as exc:
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            finally:
                self._busy -= 1
            start = 0
            for pending in live:
                end = start + len(pending.rows)
                if not pending.future.done():
                    pending.future.set_result(
                        Prediction(
                            values=result.values[start:end],
                            probabilities=None
                            if result.probabilities is None
                            else result.probabilities[start:end],
                        )
                    )
                start = end
