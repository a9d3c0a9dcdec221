"""The adaptive batcher and the model cache, driven directly on an event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aiservice.application.ports import Prediction
from aiservice.application.serving.batching import AdaptiveBatcher
from aiservice.application.serving.cache import ModelCache


class RecordingModel:
    """Doubles its input and remembers the size of every call; slow enough for requests to pile up."""

    def __init__(self, delay: float = 0.02) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> Prediction:
        with self.lock:
            self.calls.append(len(rows))
        time.sleep(self.delay)
        return Prediction(values=rows[:, 0] * 2, probabilities=np.stack([rows[:, 0], -rows[:, 0]], axis=1))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = RecordingModel()

    async def scenario() -> list[Prediction]:
        with ThreadPoolExecutor(2) as pool:
            batcher = AdaptiveBatcher(model, pool, max_batch_size=64, max_delay_s=0.005)
            results = await asyncio.gather(
                *(batcher.submit(np.array([[float(i)]], dtype=np.float32)) for i in range(40))
            )
            await batcher.close()
            return results

    results = run(scenario())
    assert [float(r.values[0]) for r in results] == [2.0 * i for i in range(40)]
    assert [float(r.probabilities[0, 1]) for r in results] == [-float(i) for i in range(40)]  # type: ignore[index]
    assert sum(model.calls) == 40
    assert len(model.calls) < 40  # requests were merged
    assert max(model.calls) <= 64


def test_an_idle_model_runs_a_request_at_once() -> None:
    model = RecordingModel(delay=0)

    async def scenario() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(model, pool, max_batch_size=32, max_delay_s=0.5)
            started = time.perf_counter()
            await batcher.submit(np.ones((1, 1), dtype=np.float32))
            elapsed = time.perf_counter() - started
            await batcher.close()
            return elapsed

    assert run(scenario()) < 0.25  # far below the 0.5 s gathering window: it did not wait for company
    assert model.calls == [1]


def test_a_request_larger_than_the_batch_runs_alone_unsplit() -> None:
    model = RecordingModel(delay=0)

    async def scenario() -> Prediction:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(model, pool, max_batch_size=8)
            result = await batcher.submit(np.ones((20, 1), dtype=np.float32))
            await batcher.close()
            return result

    assert len(run(scenario()).values) == 20
    assert model.calls == [20]


def test_a_failing_call_fails_every_request_in_it() -> None:
    def broken(rows: np.ndarray) -> Prediction:
        raise ValueError("model exploded")

    async def scenario() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(broken, pool)
            results = await asyncio.gather(
                *(batcher.submit(np.ones((1, 1))) for _ in range(3)), return_exceptions=True
            )
            await batcher.close()
            return results

    assert all(isinstance(r, ValueError) for r in run(scenario()))


def loader(name: str, size: int, counter: dict[str, int], delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def load() -> tuple[str, int]:
        counter[name] = counter.get(name, 0) + 1
        await asyncio.sleep(delay)
        return name, size

    return load


def test_a_cold_model_is_loaded_once_for_concurrent_requests() -> None:
    loads: dict[str, int] = {}

    async def scenario() -> list[str]:
        cache: ModelCache[str] = ModelCache(max_models=5, max_bytes=10**9)

        async def one() -> str:
            async with cache.use("m", loader("m", 10, loads, delay=0.05)) as entry:
                return entry.value

        return await asyncio.gather(*(one() for _ in range(10)))

    assert run(scenario()) == ["m"] * 10
    assert loads == {"m": 1}


def test_least_recently_used_goes_first_by_count_and_by_bytes() -> None:
    loads: dict[str, int] = {}

    async def scenario() -> tuple[list[bool], list[bool]]:
        cache: ModelCache[str] = ModelCache(max_models=2, max_bytes=100)
        for name in ("a", "b", "a", "c"):  # "b" is least recently used when "c" arrives
            async with cache.use(name, loader(name, 10, loads)):
                pass
        by_count = ["a" in cache, "b" in cache, "c" in cache]
        async with cache.use("big", loader("big", 95, loads)):
            pass
        by_bytes = ["a" in cache, "c" in cache, "big" in cache]
        assert cache.stats.evictions == 3
        return by_count, by_bytes

    by_count, by_bytes = run(scenario())
    assert by_count == [True, False, True]
    assert by_bytes == [False, False, True]


def test_a_model_in_use_is_not_evicted_under_its_request() -> None:
    loads: dict[str, int] = {}

    async def scenario() -> list[bool]:
        cache: ModelCache[str] = ModelCache(max_models=1, max_bytes=10**9)
        async with cache.use("busy", loader("busy", 10, loads)):
            async with cache.use("other", loader("other", 10, loads)):
                during = ["busy" in cache, "other" in cache]
        return [*during, "busy" in cache, "other" in cache]

    during_busy, during_other, after_busy, after_other = run(scenario())
    assert during_busy and during_other  # over budget for a moment rather than dropping a live model
    assert after_busy != after_other  # back within one model once both requests finished


def test_a_failed_load_is_not_cached_and_is_retried() -> None:
    attempts = {"n": 0}

    async def flaky() -> tuple[str, int]:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("disk hiccup")
        return "ok", 1

    async def scenario() -> str:
        cache: ModelCache[str] = ModelCache(max_models=2, max_bytes=100)
        with pytest.raises(RuntimeError):
            async with cache.use("m", flaky):
                pass
        async with cache.use("m", flaky) as entry:
            return entry.value

    assert run(scenario()) == "ok"
    assert attempts["n"] == 2


def test_a_microsecond_model_runs_on_the_loop_once_measured_fast() -> None:
    threads: list[str] = []

    def fast(rows: np.ndarray) -> Prediction:
        threads.append(threading.current_thread().name)
        return Prediction(values=rows[:, 0])

    async def scenario() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
            batcher = AdaptiveBatcher(fast, pool, inline_below_s=0.01)
            for _ in range(3):
                await batcher.submit(np.ones((1, 1)))
            await batcher.close()

    run(scenario())
    assert threads[0].startswith("worker")  # unmeasured at first: off the loop
    assert threads[1:] == [threading.current_thread().name] * 2  # then inline, no thread hop


def test_a_slow_model_always_runs_off_the_loop() -> None:
    model = RecordingModel(delay=0.005)
    threads: list[str] = []

    def slow(rows: np.ndarray) -> Prediction:
        threads.append(threading.current_thread().name)
        return model(rows)

    async def scenario() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
            batcher = AdaptiveBatcher(slow, pool, inline_below_s=0.001)
            for _ in range(3):
                await batcher.submit(np.ones((1, 1), dtype=np.float32))
            await batcher.close()

    run(scenario())
    assert all(name.startswith("worker") for name in threads)
