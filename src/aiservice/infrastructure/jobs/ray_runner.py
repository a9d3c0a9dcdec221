"""Scale-out launcher: each training job as a task on a Ray cluster (``JOB_RUNNER=ray``, ``RAY_ADDRESS``).

The supervisor, the queue in the database and the job's life are the same as with local processes;
only where the worker runs changes. A worker sends its progress through a small queue actor and hands
the artifact back as bytes, so the cluster needs no filesystem shared with the service; datasets must
be reachable from the cluster's nodes (S3, or the same paths mounted there). A PyTorch job that asks
for ``resourceConfig.workers > 1`` trains data-parallel under Ray Train's ``TorchTrainer``, one
process per worker (and per GPU where the cluster has them); its first worker reports and saves.

Every Ray node needs aiservice installed with the frameworks its jobs use.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiservice.domain.training import GpuPolicy, JobFailure
from aiservice.infrastructure.jobs.supervisor import LaunchFailed, memory_exceeded
from aiservice.infrastructure.jobs.worker import run_job

log = logging.getLogger(__name__)
MEMORY_CHECK_S = 0.5


class RayWorker:
    def __init__(self, ref: Any, queue: Any, folder: Path) -> None:
        self._ref = ref
        self._queue = queue
        self._folder = folder

    def receive(self) -> list[dict[str, Any]]:
        try:
            waiting = self._queue.qsize()
            messages: list[dict[str, Any]] = self._queue.get_nowait_batch(waiting) if waiting else []
        except Exception:  # the queue actor is gone with its job; the task's end says why
            return []
        return [self._local(message) for message in messages]

    def _local(self, message: dict[str, Any]) -> dict[str, Any]:
        """A finished job's artifact, sent as bytes, written where the supervisor registers it from."""
        if message.get("type") != "done" or "artifactBytes" not in message:  # progress; a trial's score
            return message
        path = self._folder / message["filename"]
        path.write_bytes(message.pop("artifactBytes"))
        return {**message, "artifact": str(path)}

    def alive(self) -> bool:
        import ray

        ready, _ = ray.wait([self._ref], timeout=0)
        return not ready

    def exit_reason(self) -> str:
        import ray

        try:
            ray.get(self._ref, timeout=10)
        except Exception as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            return f"{type(exc).__name__}: {lines[-1][:300]}" if lines else type(exc).__name__
        return "the Ray task returned without a result"

    def kill(self) -> None:
        import ray

        ray.cancel(self._ref, force=True)  # ends the worker process, and the actors it owns with it

    def resident_bytes(self) -> int | None:
        return None  # the task watches its own memory (see _MemoryWatchdog)

    def waitables(self) -> list[Any]:
        return []

    def close(self) -> None:
        try:
            self._queue.shutdown(force=True)
        except Exception:  # already gone
            log.debug("queue of a finished job was already gone", exc_info=True)


class RayLauncher:
    name = "ray"

    def __init__(self, address: str | None, namespace: str = "aiservice") -> None:
        self._address = address
        self._namespace = namespace

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=self._address or "auto",
                namespace=self._namespace,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    def launch(self, request: dict[str, Any], folder: Path) -> RayWorker:
        import ray
        from ray.util.queue import Queue

        resources = request.get("resources", {})
        workers = int(resources.get("workers") or 1)
        cpus = float(resources.get("cpu") or 1)
        gpus = self._gpus(GpuPolicy(resources.get("gpu", GpuPolicy.NONE.value)))
        queue = Queue(actor_options={"num_cpus": 0})
        options: dict[str, Any] = {"max_retries": 0, "retry_exceptions": False}
        if workers > 1:  # the Train workers hold the CPUs and GPUs; the task that drives them holds none
            options["num_cpus"] = 0
        else:
            options.update(num_cpus=cpus, num_gpus=gpus)
            if resources.get("memoryMb"):
                options["memory"] = int(resources["memoryMb"]) * 1024**2
        task = ray.remote(run_on_ray).options(**options)
        ref = task.remote({**request, "gpu": "required" if gpus else "none"}, queue, workers, cpus, gpus > 0)
        return RayWorker(ref, queue, folder)

    @staticmethod
    def _gpus(policy: GpuPolicy) -> int:
        """One GPU when asked for and the cluster has one; ``required`` on a cluster without is refused
        at once rather than left waiting for a GPU that never comes."""
        import ray

        if policy == GpuPolicy.NONE:
            return 0
        if float(ray.cluster_resources().get("GPU", 0)) >= 1:  # type: ignore[no-untyped-call]
            return 1
        if policy == GpuPolicy.REQUIRED:
            raise LaunchFailed(
                JobFailure("device", "The job requires a GPU (gpu: required) and the Ray cluster has none.")
            )
        return 0


# -- what runs on the cluster ------------------------------------------------------------------------


class _QueueSink:
    """Where ``run_job`` sends its messages: the job's queue, with the artifact inlined on success.

    Without a queue it only notes a failure: a data-parallel worker other than the first trains, and
    the first one reports.
    """

    def __init__(self, queue: Any | None) -> None:
        self._queue = queue
        self.failed = False

    def send(self, message: dict[str, Any]) -> None:
        self.failed = self.failed or message.get("type") == "failed"
        if self._queue is None:
            return
        if message.get("type") == "done" and "artifact" in message:  # a trial's score has none
            artifact = Path(message.pop("artifact"))
            message["artifactBytes"] = artifact.read_bytes()
        self._queue.put(message)

    def close(self) -> None:
        pass


class _MemoryWatchdog(threading.Thread):
    """Ray schedules by a task's ``memory`` but does not hold it to it; this does, like the local runner."""

    def __init__(self, limit_bytes: int, sink: _QueueSink) -> None:
        super().__init__(name="memory-watchdog", daemon=True)
        self._limit = limit_bytes
        self._sink = sink
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.wait(MEMORY_CHECK_S):
            if me.memory_info().rss > self._limit:
                failure = memory_exceeded(self._limit)
                self._sink.send({"type": "failed", "stage": failure.stage, "message": failure.message})
                os._exit(1)

    def finish(self) -> None:
        self._done.set()


def run_on_ray(request: dict[str, Any], queue: Any, workers: int, cpus: float, use_gpu: bool) -> None:
    """The Ray task of one job: train here, or drive ``workers`` Ray Train workers."""
    sink = _QueueSink(queue)
    if workers > 1:
        _run_data_parallel(request, queue, workers, cpus, use_gpu)
        return
    folder = Path(tempfile.mkdtemp(prefix="aiservice-job-"))
    memory = (request.get("resources") or {}).get("memoryMb")
    watchdog = _MemoryWatchdog(int(memory) * 1024**2, sink) if memory else None
    if watchdog:
        watchdog.start()
    try:
        run_job({**request, "outDir": str(folder)}, sink)
    finally:
        if watchdog:
            watchdog.finish()
        shutil.rmtree(folder, ignore_errors=True)


def _run_data_parallel(request: dict[str, Any], queue: Any, workers: int, cpus: float, use_gpu: bool) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = tempfile.mkdtemp(prefix="aiservice-train-")
    try:
        trainer = TorchTrainer(
            _train_loop_per_worker,
            train_loop_config={"request": request, "queue": queue},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(name=f"aiservice-{request['jobId']}", storage_path=storage),
        )
        trainer.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from aiservice.infrastructure.training.spec import DataParallel

    context = ray.train.get_context()
    parallel = DataParallel(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        prepare_model=ray.train.torch.prepare_model,
        prepare_loader=ray.train.torch.prepare_data_loader,
    )
    sink = _QueueSink(config["queue"] if parallel.rank == 0 else None)
    folder = Path(tempfile.mkdtemp(prefix="aiservice-job-"))
    try:
        run_job({**config["request"], "outDir": str(folder), "dataParallel": parallel}, sink)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if sink.failed:  # end the other processes too, rather than leave them waiting in a collective
        raise RuntimeError("this training process failed; its job has the reason")
