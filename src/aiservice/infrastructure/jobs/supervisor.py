"""The part of running training jobs that does not care where a worker runs.

Jobs wait in the database, so they survive a restart. One supervisor thread claims queued jobs, hands
each to a ``WorkerLauncher`` (a local process, a Ray task), relays the worker's progress to the job,
enforces its time and memory limits, kills workers whose job was cancelled (by any replica: it reads
the status back on every heartbeat) and registers the version of a job that finished. A job whose
runner went silent for three heartbeats (the service was restarted, a replica died) is ended as
``interrupted``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

from aiservice.application.leftovers import Swept
from aiservice.application.ports import Span, Tracer
from aiservice.application.tracing import NO_SPAN, NO_TRACER
from aiservice.application.training import TrainingExecution, TrainingOutcome, WorkOrder
from aiservice.domain.training import INTERRUPTED, DatasetConfig, JobFailure, JobStatus
from aiservice.infrastructure.stale_files import remove_stale

log = logging.getLogger(__name__)
JOB_FOLDER = "job-"  # each job's folder in the work folder: job-<id>-<random>


class LaunchFailed(Exception):
    """A job the launcher will not start, and the failure to end it with (no GPU on the cluster...)."""

    def __init__(self, failure: JobFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class WorkerHandle(Protocol):
    """One running worker, as the supervisor sees it."""

    def receive(self) -> list[dict[str, Any]]:
        """The messages the worker sent since the last call, without blocking."""
        ...

    def alive(self) -> bool: ...

    def exit_reason(self) -> str:
        """Why a worker that is no longer alive ended without a result, in words."""
        ...

    def kill(self) -> None: ...

    def resident_bytes(self) -> int | None:
        """The worker's memory now, where the supervisor can see it; None where the worker watches itself."""
        ...

    def waitables(self) -> list[Any]:
        """Objects ``multiprocessing.connection.wait`` can sleep on until the worker speaks; [] to poll."""
        ...

    def close(self) -> None: ...


class WorkerLauncher(Protocol):
    name: str  # "local" | "ray": recorded on the job's start

    def launch(self, request: dict[str, Any], folder: Path) -> WorkerHandle: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class _Running:
    order: WorkOrder
    worker: WorkerHandle
    folder: Path
    deadline: float | None
    memory_bytes: int | None
    fingerprints: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None
    span: Span = NO_SPAN
    started: float = field(default_factory=time.monotonic)


class JobSupervisor:
    """Runs claimed jobs through a launcher, at most ``concurrency`` at once."""

    def __init__(
        self,
        execution: TrainingExecution,
        launcher: WorkerLauncher,
        *,
        concurrency: int = 1,
        heartbeat_s: float = 5.0,
        default_timeout_s: float = 6 * 3600,
        work_dir: Path,
        resolve: Callable[[str, str, str], str] = lambda tenant, reference, field: reference,
        storage_options: Callable[[str], dict[str, Any]] | None = None,
        fingerprint: Callable[[str], dict[str, Any]] | None = None,
        poll_s: float = 0.5,
        tracer: Tracer = NO_TRACER,
        on_job: Callable[[str, str, float | None], None] = lambda framework, outcome, duration_s: None,
    ) -> None:
        """``on_job`` hears (framework, outcome, duration) as each job starts (duration None) and ends
        (succeeded, failed, cancelled); each job is also a ``training.job`` span, its progress events."""
        self._tracer = tracer
        self._on_job = on_job
        self._execution = execution
        self.launcher = launcher
        self._concurrency = concurrency
        self._heartbeat_s = heartbeat_s
        self._default_timeout = default_timeout_s
        self._work_dir = work_dir
        self._resolve = resolve
        self._storage_options = storage_options or (lambda uri: {})
        self._fingerprint = fingerprint
        self._poll_s = poll_s
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self._running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self.launcher.start()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="training-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising; running workers are killed and their jobs end as interrupted."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._thread = None
        for running in list(self._running.values()):
            running.worker.kill()
            self._end(running, INTERRUPTED)
        self.launcher.stop()

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> list[str]:
        return list(self._running)

    def sweep_stale(self, cutoff: datetime) -> Swept:
        """Remove job folders last modified before ``cutoff`` that no job of this runner uses: what jobs
        of a killed service left (``WorkArea``)."""
        in_use = {running.folder for running in list(self._running.values())}
        folders = [f for f in self._work_dir.glob(f"{JOB_FOLDER}*") if f not in in_use]
        return remove_stale(folders, cutoff)

    # -- the supervisor loop -------------------------------------------------------------------

    def _supervise(self) -> None:
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + self._heartbeat_s
                while len(self._running) < self._concurrency and self._start_next():
                    pass
                if self._wait_for_activity(min(self._poll_s, max(0.0, next_beat - time.monotonic()))):
                    next_beat = 0.0  # woken: a job was queued or cancelled, look at once
                self._collect()
            except Exception:  # the loop must outlive a database hiccup or a lost cluster
                log.exception("training runner loop failed; retrying")
                self._stopping.wait(1.0)

    def _wait_for_activity(self, timeout: float) -> bool:
        """Sleep until a worker speaks or exits, or until woken; True when woken."""
        from multiprocessing.connection import wait

        handles = [h for r in self._running.values() for h in r.worker.waitables()]
        if handles and not self._wake.is_set():
            wait(handles, timeout=timeout)
        else:
            self._wake.wait(timeout)
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def _beat(self) -> None:
        ids = list(self._running)
        self._execution.heartbeat(self.runner_id, ids)
        for job_id in ids:
            running = self._running[job_id]
            status = self._execution.status(running.order.job.tenant_id, job_id)
            if status != JobStatus.RUNNING:  # cancelled (here or on another replica), ended elsewhere,
                outcome = str(status) if status else "deleted"  # or erased with its tenant
                log.info("training job %s is %s; stopping its worker", job_id, outcome)
                running.worker.kill()
                self._forget(job_id, outcome)
        self._execution.recover_stale(3 * self._heartbeat_s)

    def _start_next(self) -> bool:
        order = self._execution.claim(self.runner_id)
        if order is None:
            return False
        job = order.job
        try:  # the data as it is when the job starts: what the job reads and the version's lineage records
            dataset, fingerprints = self._located(job.tenant_id, job.dataset)
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            self._execution.fail(
                job.tenant_id, job.id, JobFailure("dataset", f"The dataset could not be read: {detail}")
            )
            return True
        uris = [uri for _, uri in dataset.paths()]
        folder = Path(tempfile.mkdtemp(prefix=f"{JOB_FOLDER}{job.id[:8]}-", dir=self._work_dir))
        request = {
            "jobId": job.id,
            "framework": order.framework.value,
            "configuration": order.configuration,
            "inputSchema": order.input_schema,
            "outputSchema": order.output_schema,
            "training": job.training.to_json(),
            "dataset": dataset.to_json(),
            "resources": job.resources.to_json(),
            "gpu": job.resources.gpu.value,  # the worker (it imports the framework anyway) picks the device
            "threads": job.resources.cpu,
            "outDir": str(folder),
            "storageOptions": {uri: self._storage_options(uri) for uri in uris},
        }
        try:
            worker = self.launcher.launch(request, folder)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("training job %s could not start: %s", job.id, exc)
            failure = (
                exc.failure
                if isinstance(exc, LaunchFailed)
                else JobFailure("start", f"The {self.launcher.name} runner could not start the job: {exc}")
            )
            self._execution.fail(job.tenant_id, job.id, failure)
            return True
        timeout = job.resources.timeout_seconds or self._default_timeout
        self._running[job.id] = _Running(
            order=order,
            worker=worker,
            folder=folder,
            deadline=time.monotonic() + timeout,
            memory_bytes=job.resources.memory_mb * 1024**2 if job.resources.memory_mb else None,
            fingerprints=fingerprints,
            span=self._tracer.start_span(
                "training.job",
                {"job.id": job.id, "tenant.id": job.tenant_id, "job.framework": order.framework.value},
                traceparent=job.traceparent,  # joins the trace of the request that submitted it
            ),
        )
        self._on_job(order.framework.value, "started", None)
        log.info("training job %s started on the %s runner", job.id, self.launcher.name)
        return True

    def _located(self, tenant_id: str, dataset: DatasetConfig) -> tuple[DatasetConfig, list[dict[str, Any]]]:
        """The job's references resolved for the worker, and the fingerprint of each under its reference."""
        paths: dict[str, str] = {}
        fingerprints: list[dict[str, Any]] = []
        for name, reference in dataset.paths():
            uri = paths[name] = self._resolve(tenant_id, reference, f"datasetConfig.{name}")
            if self._fingerprint:
                fingerprints.append({**self._fingerprint(uri), "uri": reference})
        located = replace(
            dataset,
            train_path=paths["trainPath"],
            validation_path=paths.get("validationPath"),
            test_path=paths.get("testPath"),
        )
        return located, fingerprints

    def _collect(self) -> None:
        for job_id in list(self._running):
            running = self._running[job_id]
            self._relay(running)
            if job_id not in self._running:
                continue
            if running.outcome is None and not running.worker.alive():
                self._relay(running)  # what it said between the first look and its end
            if running.outcome is not None or not running.worker.alive():
                self._finish(running)
                continue
            self._enforce_limits(running)

    def _relay(self, running: _Running) -> None:
        job = running.order.job
        for message in running.worker.receive():
            kind = message.get("type")
            if kind == "progress":
                self._execution.progress(job.tenant_id, job.id, message)
                counts = {
                    k: v for k in ("epoch", "epochs", "step", "steps") if isinstance(v := message.get(k), int)
                }
                running.span.add_event("progress", counts)  # type: ignore[arg-type]
            elif kind in ("done", "failed"):
                running.outcome = message

    def _enforce_limits(self, running: _Running) -> None:
        job = running.order.job
        if running.deadline is not None and time.monotonic() > running.deadline:
            running.worker.kill()
            limit = job.resources.timeout_seconds or self._default_timeout
            self._end(
                running,
                JobFailure("timeout", f"The job ran longer than its {limit:g} s limit; it was stopped."),
            )
            return
        if running.memory_bytes is None:
            return
        rss = running.worker.resident_bytes()
        if rss is not None and rss > running.memory_bytes:
            running.worker.kill()
            self._end(running, memory_exceeded(running.memory_bytes))

    def _finish(self, running: _Running) -> None:
        job = running.order.job
        outcome = running.outcome
        if outcome is None:
            reason = running.worker.exit_reason()
            self._end(
                running, JobFailure("crashed", f"The training process ended without a result ({reason}).")
            )
            return
        if outcome["type"] == "failed":
            self._end(running, JobFailure(str(outcome.get("stage", "fit")), str(outcome.get("message", ""))))
            return
        if job.training.automl_trial is not None:  # a study's trial: a score, no version (ADR 28)
            folds = [float(f) for f in outcome.get("folds", [])]
            scored = self._execution.score_trial(running.order, float(outcome["score"]), folds)
            self._forget(job.id, "succeeded" if scored else "cancelled")
            return
        try:
            with self._tracer.span("training.register", traceparent=running.span.traceparent()):
                version = self._execution.succeed(
                    running.order,
                    TrainingOutcome(
                        artifact=Path(outcome["artifact"]),
                        filename=outcome["filename"],
                        metrics=outcome.get("metrics", {}),
                        params=outcome.get("params", {}),
                        device=outcome.get("device", "cpu"),
                        fingerprints=running.fingerprints,
                        configuration=outcome.get("configuration", {}),
                        reference_profile=outcome.get("referenceProfile"),
                    ),
                )
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            log.warning("training job %s could not register its version: %s", job.id, detail)
            self._end(running, JobFailure("register", f"The trained model could not be registered: {detail}"))
            return
        if version is not None:
            log.info("training job %s registered version %s", job.id, version.version)
        self._forget(job.id, "succeeded")

    def _end(self, running: _Running, failure: JobFailure) -> None:
        with self._tracer.span("training.fail", traceparent=running.span.traceparent()):
            self._execution.fail(running.order.job.tenant_id, running.order.job.id, failure)
        running.span.set_attribute("job.failure", failure.stage)
        self._forget(running.order.job.id, "failed")

    def _forget(self, job_id: str, outcome: str) -> None:
        running = self._running.pop(job_id, None)
        if running is None:
            return
        running.span.set_attribute("job.outcome", outcome)
        running.span.end()
        self._on_job(running.order.framework.value, outcome, time.monotonic() - running.started)
        running.worker.kill()  # a no-op once it has ended; a Ray job's other processes may not have
        running.worker.close()
        shutil.rmtree(running.folder, ignore_errors=True)


def memory_exceeded(limit_bytes: int) -> JobFailure:
    return JobFailure(
        "memory", f"The job used more than its {limit_bytes // 1024**2} MB memory limit; it was stopped."
    )
