"""One of several worker processes, as its container is built: what slot 0 runs and the others do
not, and how the cores and the cache budget are shared."""

from __future__ import annotations

import asyncio
import os

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.workers.slots import WorkerSlot
from aiservice.settings import Settings


def _started(settings: Settings, slot: WorkerSlot) -> Container:
    container = bootstrap(settings, slot=slot)

    async def start() -> None:  # as the app's lifespan does, on the serving loop
        container.start()

    asyncio.run(start())
    return container


def test_only_the_host_worker_runs_the_relay_the_job_supervisor_and_the_sweeps(settings: Settings) -> None:
    folder = settings.workers_dir
    host, other = WorkerSlot.claim(folder, 2), WorkerSlot.claim(folder, 2)
    first, second = _started(settings, host), _started(settings, other)
    try:
        assert first.relay._thread is not None and first.training_runner._thread is not None
        assert second.relay._thread is None and second.training_runner._thread is None
        assert first.events.processor.consumer != second.events.processor.consumer  # each hears every event
    finally:
        first.close()
        second.close()
        host.release()
        other.release()


def test_workers_share_the_cache_budget(settings: Settings) -> None:
    slot = WorkerSlot.claim(settings.workers_dir, 2)
    alone = bootstrap(settings)
    shared = bootstrap(settings, slot=slot)
    try:
        assert shared.inference.cache.max_bytes == alone.inference.cache.max_bytes // 2
    finally:
        shared.close()
        alone.close()
        slot.release()


def test_model_threads_apply_where_a_models_configuration_names_none(settings: Settings) -> None:
    slot = WorkerSlot.claim(settings.workers_dir, 2)
    alone = bootstrap(settings)
    shared = bootstrap(settings, slot=slot)
    limited = bootstrap(settings.model_copy(update={"model_threads": 3}))
    unlimited = bootstrap(settings.model_copy(update={"model_threads": 0}), slot=slot)
    try:
        assert alone.inference.loader.threaded({}) == {}  # one process: the frameworks' own defaults
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert shared.inference.loader.threaded({}) == {"numThreads": share}  # several: a share of the cores
        assert shared.inference.loader.threaded({"numThreads": 4}) == {
            "numThreads": 4
        }  # the model's own wins
        assert limited.inference.loader.threaded({}) == {"numThreads": 3}
        assert unlimited.inference.loader.threaded({}) == {}
    finally:
        for container in (alone, shared, limited, unlimited):
            container.close()
        slot.release()
