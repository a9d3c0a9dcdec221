"""Training jobs: submitting (validated completely before anything is queued), following, cancelling,
and the runner's side of a job's life (claim, progress, success with a registered version, failure).

Every end of a job is a conditional transition out of ``running`` (or ``queued`` for a cancel), so
a job ends exactly once even when a cancel, a runner and a restart race for it. A successful job's
version and the job's success commit in one transaction: no version without its job, and no
version from a job that was cancelled meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.job_endings import cancel_job, end_job
from aiservice.application.ports import (
    Clock,
    JobQueue,
    UnitOfWork,
    UnitOfWorkFactory,
)
from aiservice.application.quotas import admit_training_job
from aiservice.application.registry import find_model
from aiservice.application.training_data import DatasetAccess, check_data
from aiservice.application.training_labels import judge_labels
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.events import (
    TrainingJobFailed,
    TrainingJobQueued,
    TrainingJobStarted,
    TrainingJobSucceeded,
    TrainingProgress,
    TrainingTrialScored,
)
from aiservice.domain.models import Framework, Model, ModelVersion
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import Permission, Principal, Role
from aiservice.domain.training import (
    HISTORY_LIMIT,
    INTERRUPTED,
    DatasetConfig,
    JobEvent,
    JobFailure,
    JobKind,
    JobStatus,
    LabelMapping,
    ResourceConfig,
    TargetValues,
    TrainingConfig,
    TrainingJob,
    declared_classes,
)

TASKS = ("classification", "regression")
log = logging.getLogger(__name__)


class TrainingCatalog(Protocol):
    """Which algorithms and hyper-parameters each framework's trainer accepts; cheap, no training."""

    def validate(self, framework: Framework, config: TrainingConfig) -> list[FieldError]: ...

    def task(self, framework: Framework, config: TrainingConfig) -> str | None:
        """What the algorithm learns, "classification" or "regression"; None when the model decides."""
        ...

    def default_algorithm(self, framework: Framework, task: str, images: bool) -> str | None:
        """The algorithm a job runs when its request names none; None when the framework has none."""
        ...


class JobRunner(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wake(self) -> None:
        """A job was queued: look for work now rather than at the next poll."""
        ...


@dataclass(frozen=True)
class TrainingRequest:
    training: TrainingConfig
    dataset: DatasetConfig  # references as the user wrote them
    resources: ResourceConfig


@dataclass(frozen=True)
class WorkOrder:
    """Everything a worker needs to run one job, without touching the database."""

    job: TrainingJob
    framework: Framework
    configuration: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


@dataclass(frozen=True)
class TrainingOutcome:
    """What a worker hands back: the artifact file and what the version records about it."""

    artifact: Path
    filename: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    device: str
    fingerprints: list[dict[str, Any]]
    configuration: dict[str, Any] = field(default_factory=dict)  # what serving needs to read the artifact
    reference_profile: dict[str, Any] | None = None  # the validation data's, for drift monitoring


class TrainingJobs:
    """The user's side: submit, look, follow, cancel."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        catalog: TrainingCatalog,
        datasets: DatasetAccess,
        frameworks: FrameworkCatalog,
        wake_runner: Callable[[], None] = lambda: None,
        max_timeout_s: int = 24 * 3600,
        data_parallel: bool = False,
        trace_context: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._uow = uow
        self._trace_context = trace_context  # the submitting request's traceparent, kept on the job
        self._clock = clock
        self._catalog = catalog
        self._frameworks = frameworks  # which installed frameworks train, in epochs, over workers
        self._datasets = datasets
        self.wake_runner = wake_runner
        self._max_timeout_s = max_timeout_s
        self._data_parallel = data_parallel  # the runner can spread one job over several workers

    def submit(self, principal: Principal, model_ident: str, request: TrainingRequest) -> TrainingJob:
        principal.require(Permission.TRAIN)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
        request = self._with_algorithm(model, request)
        dataset = self._checked(principal, model, request)
        now = self._clock()
        job = TrainingJob(
            tenant_id=principal.tenant_id,
            model_id=model.id,
            training=request.training,
            dataset=dataset,
            resources=request.resources,
            created_at=now,
            updated_at=now,
            created_by=principal.subject,
            traceparent=self._trace_context(),
            epochs=request.training.epochs if self._frameworks.has(model.framework, "epochs") else None,
        )
        with self._uow(principal.tenant_id) as uow:
            admit_training_job(uow)  # locks the tenant's row until commit
            if uow.models.get(model.id) is None:
                raise NotFound(f"Model {model_ident!r} was deleted meanwhile.")
            uow.jobs.add(job)
            uow.jobs.append_event(job.id, "status", {"status": job.status.value}, now)
            uow.record(
                TrainingJobQueued(
                    tenant_id=job.tenant_id,
                    aggregate_id=job.id,
                    model_id=model.id,
                    algorithm=job.training.algorithm,
                )
            )
            uow.commit()
        self.wake_runner()
        return job

    def submit_trial(
        self,
        tenant_id: str,
        model_id: str,
        training: TrainingConfig,
        dataset: DatasetConfig,
        resources: ResourceConfig,
        created_by: str,
    ) -> TrainingJob:
        """A trial of an AutoML study as a job of its own (``training.automl_trial``), checked by the
        study; it counts against the tenant's concurrent-jobs quota like any job (``QuotaExceeded``)."""
        now = self._clock()
        job = TrainingJob(
            tenant_id=tenant_id,
            model_id=model_id,
            training=training,
            dataset=dataset,
            resources=resources,
            created_at=now,
            updated_at=now,
            created_by=created_by,
        )
        with self._uow(tenant_id) as uow:
            admit_training_job(uow)
            if uow.models.get(model_id) is None:
                raise NotFound("The model was deleted meanwhile.")
            uow.jobs.add(job)
            uow.jobs.append_event(job.id, "status", {"status": job.status.value}, now)
            uow.record(
                TrainingJobQueued(
                    tenant_id=tenant_id, aggregate_id=job.id, model_id=model_id, algorithm=training.algorithm
                )
            )
            uow.commit()
        self.wake_runner()
        return job

    def trial_events(
        self, tenant_id: str, job_id: str, after: int
    ) -> tuple[list[JobEvent], TrainingJob | None]:
        """A trial job's events after ``after`` and the job as it stands (None once erased)."""
        with self._uow(tenant_id, writes=False) as uow:
            job = uow.jobs.get(job_id)
            return (uow.jobs.events_after(job_id, after, 500) if job else []), job

    def trial_jobs(self, tenant_id: str, model_id: str, study_id: str) -> set[str]:
        """The study's trial jobs still queued or running."""
        found: set[str] = set()
        with self._uow(tenant_id, writes=False) as uow:
            for status in (JobStatus.QUEUED, JobStatus.RUNNING):
                cursor: str | None = None
                while True:
                    page = uow.jobs.page(model_id, status, 200, cursor, study_id=study_id)
                    found |= {job.id for job in page.items}
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        return found

    def stop_trial(self, tenant_id: str, job_id: str) -> bool:
        """Cancel a trial job (pruned, or its study ended); False when it had already ended."""
        with self._uow(tenant_id) as uow:
            job = uow.jobs.get(job_id, for_update=True)
            if job is None or job.status.finished:
                return False
            cancel_job(uow, job, self._clock())
            uow.commit()
        self.wake_runner()
        return True

    def _with_algorithm(self, model: Model, request: TrainingRequest) -> TrainingRequest:
        """A request that names no algorithm gets its framework's default for the model's task (its
        configuration's ``task``, else its category, else classification) and input kind; the job
        says so (``algorithmChosenBecause``)."""
        if request.training.algorithm or not self._frameworks.has(model.framework, "trainable"):
            return request
        declared = model.configuration.get("task") or model.category
        task = declared if declared in TASKS else "classification"
        images = model.input_schema.get("type") == "image"
        chosen = self._catalog.default_algorithm(model.framework, task, images)
        if chosen is None:
            return request
        because = (
            f"the request named no algorithm: {chosen} is the default for {model.framework} models "
            f"doing {task}{' on images' if images else ''}"
        )
        training = replace(request.training, algorithm=chosen, chosen_because=because)
        return replace(request, training=training)

    def _workers_problems(self, model: Model, resources: ResourceConfig) -> list[FieldError]:
        if resources.workers == 1:
            return []
        if not self._data_parallel:
            message = "training over several workers needs the Ray runner (JOB_RUNNER=ray); use 1"
        elif not self._frameworks.has(model.framework, "data_parallel"):
            spread = ", ".join(self._frameworks.with_trait("data_parallel")) or "no"
            message = f"only {spread} models train over several workers; use 1"
        else:
            return []
        return [FieldError("resourceConfig.workers", message)]

    def _checked(self, principal: Principal, model: Model, request: TrainingRequest) -> DatasetConfig:
        """The whole body is checked before anything is queued; every problem is reported at once."""
        errors: list[FieldError] = []
        if not self._frameworks.has(model.framework, "trainable"):
            errors.append(
                FieldError(
                    "path.model",
                    f"{model.framework} models cannot be trained here; "
                    f"trainable frameworks: {', '.join(self._frameworks.with_trait('trainable'))}",
                )
            )
        else:
            errors += self._catalog.validate(model.framework, request.training)
        timeout = request.resources.timeout_seconds
        if timeout is not None and timeout > self._max_timeout_s:
            errors.append(
                FieldError("resourceConfig.timeoutSeconds", f"must be at most {self._max_timeout_s}")
            )
        errors += self._workers_problems(model, request.resources)
        checked = check_data(self._datasets, principal.tenant_id, model, request.dataset)
        errors += checked.errors
        mapping, label_errors = self._labels(model, request.training, checked.dataset, checked.readable)
        errors += label_errors
        if errors:
            raise InvalidInput(
                "The training request is invalid: "
                + "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
                errors=errors,
            )
        # The job keeps the references as the user wrote them (dataset://NAME, not the server's folders);
        # the runner resolves them again when the job starts, against the data as it is then.
        return replace(checked.dataset, label_mapping=mapping)

    def _labels(
        self, model: Model, training: TrainingConfig, dataset: DatasetConfig, readable: list[tuple[str, str]]
    ) -> tuple[LabelMapping | None, list[FieldError]]:
        """The target's values against the model's declared classes (``training_labels``); only
        classifiers whose model declares classes read anything here."""
        declared = declared_classes(model.output_schema, model.configuration)
        if declared is None or not readable or self._task(model, training) != "classification":
            return None, []
        errors: list[FieldError] = []
        scans: list[tuple[str, TargetValues]] = []
        for name, uri in readable:
            try:
                scans.append((name, self._datasets.target_values(uri, dataset, f"datasetConfig.{name}")))
            except InvalidInput as exc:
                errors += exc.errors or [FieldError(f"datasetConfig.{name}", exc.detail)]
        mapping, problems = judge_labels(*declared, scans)
        return mapping, errors + problems

    def _task(self, model: Model, training: TrainingConfig) -> str | None:
        """What the job will learn, decided as its worker decides: the algorithm, else the model's
        ``configuration.task``, else classification (the model declares classes)."""
        if not self._frameworks.has(model.framework, "trainable"):
            return None
        known = self._catalog.task(model.framework, training)
        configured = model.configuration.get("task")
        return known or (configured if configured in TASKS else "classification")

    def get(self, principal: Principal, job_id: str) -> TrainingJob:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return _job(uow, job_id)

    def list_jobs(
        self,
        principal: Principal,
        model_ident: str | None,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        *,
        kind: JobKind | None = None,
        study_id: str | None = None,
    ) -> Page[TrainingJob]:
        """Newest first: every job, or only training jobs or only AutoML trials (``kind``), or one
        study's trials (``study_id``)."""
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model_id = find_model(uow, model_ident, principal).id if model_ident else None
            return uow.jobs.page(model_id, status, limit, cursor, kind=kind, study_id=study_id)

    def cancel(self, principal: Principal, job_id: str) -> TrainingJob:
        """Queued jobs never start; a running one is stopped by its runner, which sees the status."""
        principal.require(Permission.TRAIN)
        now = self._clock()
        with self._uow(principal.tenant_id) as uow:
            job = _job(uow, job_id, for_update=True)
            if job.status.finished:
                raise Conflict(
                    f"Job {job_id} has already {job.status.value}; "
                    "only queued or running jobs can be cancelled.",
                    extra={"jobStatus": job.status.value},
                )
            cancel_job(uow, job, now)
            uow.commit()
        self.wake_runner()  # a running job's worker is stopped at the runner's next look
        return job

    def events(
        self, principal: Principal, job_id: str, after: int, limit: int = 500
    ) -> tuple[list[JobEvent], TrainingJob]:
        """The job's events numbered after ``after``, and the job as it stands."""
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            job = _job(uow, job_id)
            return uow.jobs.events_after(job_id, after, limit), job


ProfileListener = Callable[[str, ModelVersion, dict[str, Any]], None]
"""Called with (tenant id, the registered version, its validation data's reference profile)."""


class TrainingExecution:
    """The runner's side of a job: no caller, the job's own tenant, conditional transitions."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        queue: JobQueue,
        versions: ModelVersions,
        clock: Clock,
        progress_event_interval_s: float = 5.0,
        on_registered: ProfileListener | None = None,
    ) -> None:
        self._uow = uow
        self._queue = queue
        self._versions = versions
        self._clock = clock
        self._interval = progress_event_interval_s
        self._on_registered = on_registered  # stores a trained version's reference profile
        self._last_progress_event: dict[str, float] = {}

    def claim(self, runner_id: str) -> WorkOrder | None:
        now = self._clock()
        job = self._queue.claim_next(runner_id, now)
        if job is None:
            return None
        with self._uow(job.tenant_id) as uow:
            model = uow.models.get(job.model_id)
            if model is None:
                end_job(
                    uow,
                    job,
                    JobStatus.FAILED,
                    now,
                    JobFailure("model", "The model was deleted before the job started."),
                )
                uow.commit()
                return None
            uow.jobs.append_event(job.id, "status", {"status": JobStatus.RUNNING.value}, now)
            uow.record(
                TrainingJobStarted(
                    tenant_id=job.tenant_id, aggregate_id=job.id, model_id=job.model_id, runner=runner_id
                )
            )
            uow.commit()
        return WorkOrder(
            job=job,
            framework=model.framework,
            configuration=model.configuration,
            input_schema=model.input_schema,
            output_schema=model.output_schema,
        )

    def status(self, tenant_id: str, job_id: str) -> JobStatus | None:
        with self._uow(tenant_id, writes=False) as uow:
            job = uow.jobs.get(job_id)
            return job.status if job else None

    def progress(self, tenant_id: str, job_id: str, report: dict[str, Any]) -> None:
        """One report from the worker: epoch/step counts, metrics, device. Ignored once the job ended."""
        now = self._clock()
        with self._uow(tenant_id) as uow:
            job = uow.jobs.get(job_id, for_update=True)
            if job is None or job.status != JobStatus.RUNNING:
                return
            epoch, epochs = report.get("epoch"), report.get("epochs")
            step, steps = report.get("step"), report.get("steps")
            metrics = {k: v for k, v in (report.get("metrics") or {}).items() if isinstance(v, int | float)}
            job.epoch, job.epochs, job.step, job.steps = epoch, epochs, step, steps
            if report.get("device"):
                job.device = str(report["device"])
            if metrics:
                job.metrics = metrics
            if epoch and epochs:
                done = (epoch - 1 + (step / steps if step and steps else 1.0)) / epochs
                job.progress = round(min(max(done, job.progress), 0.99), 4)  # 1.0 only once registered
                if (step is None or step == steps) and (not job.history or job.history[-1]["epoch"] != epoch):
                    job.history = [*job.history, {"epoch": epoch, **metrics}][-HISTORY_LIMIT:]
            job.updated_at = now
            uow.jobs.save(job)
            uow.jobs.append_event(
                job_id,
                "progress",
                {
                    "progress": job.progress,
                    "epoch": epoch,
                    "epochs": epochs,
                    "step": step,
                    "steps": steps,
                    "metrics": metrics,
                    "device": job.device,
                },
                now,
            )
            last = self._last_progress_event.get(job_id)
            if last is None or time.monotonic() - last >= self._interval or (epoch and epoch == epochs):
                self._last_progress_event[job_id] = time.monotonic()
                uow.record(
                    TrainingProgress(
                        tenant_id=tenant_id,
                        aggregate_id=job_id,
                        model_id=job.model_id,
                        progress=job.progress,
                        epoch=epoch,
                        metrics=metrics,
                    )
                )
            uow.commit()

    def succeed(self, order: WorkOrder, outcome: TrainingOutcome) -> ModelVersion | None:
        """Register the artifact as the model's next version and end the job, in one transaction.

        None when the job ended meanwhile (cancelled): the registration is rolled back and its bytes removed.
        """
        job = order.job
        principal = Principal(
            subject=f"training-job:{job.id}", tenant_id=job.tenant_id, roles=frozenset({Role.EDITOR})
        )
        metadata = VersionMetadata(
            description=f"Trained by job {job.id} ({job.training.algorithm})",
            metrics=outcome.metrics,
            params=outcome.params,
            source_run=f"training-job:{job.id}",
            lineage={
                "trainingJob": job.id,
                "datasets": outcome.fingerprints,
                "device": outcome.device,
                **({"labelMapping": mapping.to_json()} if (mapping := job.dataset.label_mapping) else {}),
            },
            configuration=outcome.configuration,
        )

        def finish_job(uow: UnitOfWork, version: ModelVersion) -> None:
            current = uow.jobs.get(job.id, for_update=True)
            if current is None or current.status != JobStatus.RUNNING:
                raise _JobEnded()
            now = self._clock()
            current.version = version.version
            current.metrics = outcome.metrics
            current.device = outcome.device
            current.dataset_fingerprint = outcome.fingerprints
            current.progress = 1.0
            end_job(uow, current, JobStatus.SUCCEEDED, now, None, {"version": version.version})
            uow.record(
                TrainingJobSucceeded(
                    tenant_id=job.tenant_id,
                    aggregate_id=job.id,
                    model_id=job.model_id,
                    version=version.version,
                    metrics=outcome.metrics,
                )
            )

        try:
            version = self._versions.upload_file(
                principal, job.model_id, outcome.artifact, outcome.filename, metadata, on_commit=finish_job
            )
        except _JobEnded:
            return None
        finally:
            self._last_progress_event.pop(job.id, None)
        if outcome.reference_profile is not None and self._on_registered is not None:
            try:  # after the job's own transaction: a profile that cannot be stored fails nothing
                self._on_registered(job.tenant_id, version, outcome.reference_profile)
            except Exception:
                log.warning("training job %s: reference profile not stored", job.id, exc_info=True)
        return version

    def score_trial(self, order: WorkOrder, score: float, folds: list[float]) -> bool:
        """End a running AutoML trial job with its cross-validated score; False when it had ended
        meanwhile (pruned or cancelled). A trial registers no version: its study does, for the best."""
        job, trial = order.job, order.job.training.automl_trial or {}
        self._last_progress_event.pop(job.id, None)
        metric = str(trial.get("metric", "score"))
        with self._uow(job.tenant_id) as uow:
            current = uow.jobs.get(job.id, for_update=True)
            if current is None or current.status != JobStatus.RUNNING:
                return False
            current.metrics = {metric: score, "folds": folds}
            current.progress = 1.0
            end_job(uow, current, JobStatus.SUCCEEDED, self._clock(), None, {"score": score})
            uow.record(
                TrainingTrialScored(
                    tenant_id=job.tenant_id,
                    aggregate_id=job.id,
                    model_id=job.model_id,
                    study_id=str(trial.get("studyId")),
                    number=int(trial.get("number", 0)),
                    metric=metric,
                    score=score,
                )
            )
            uow.commit()
        return True

    def fail(self, tenant_id: str, job_id: str, failure: JobFailure) -> bool:
        """End a running job as failed; False when it had already ended (cancelled, say)."""
        now = self._clock()
        self._last_progress_event.pop(job_id, None)
        with self._uow(tenant_id) as uow:
            job = uow.jobs.get(job_id, for_update=True)
            if job is None or job.status != JobStatus.RUNNING:
                return False
            end_job(uow, job, JobStatus.FAILED, now, failure)
            uow.record(
                TrainingJobFailed(
                    tenant_id=tenant_id,
                    aggregate_id=job_id,
                    model_id=job.model_id,
                    stage=failure.stage,
                    reason=failure.message,
                )
            )
            uow.commit()
        log.info("training job %s failed at %s: %s", job_id, failure.stage, failure.message)
        return True

    def heartbeat(self, runner_id: str, job_ids: list[str]) -> None:
        self._queue.heartbeat(runner_id, job_ids, self._clock())

    def recover_stale(self, silent_for_s: float) -> int:
        """Jobs whose runner went silent (a restart, a crashed replica) end as failed: interrupted."""
        stale = self._queue.stale_running(self._clock() - timedelta(seconds=silent_for_s))
        ended = 0
        for tenant_id, job_id in stale:
            ended += self.fail(tenant_id, job_id, INTERRUPTED)
        return ended


class _JobEnded(Exception):
    """The job left ``running`` while its version was being registered."""


def _job(uow: UnitOfWork, job_id: str, *, for_update: bool = False) -> TrainingJob:
    job = uow.jobs.get(job_id, for_update=for_update)
    if job is None:
        raise NotFound(f"No training job {job_id!r} exists.", extra={"job": job_id})
    return job
