"""AutoML studies (ADR 28): a hyper-parameter search over several algorithms for one model, each trial a
training job of its own (run where training jobs run: local worker processes, or Ray), its trials
persisted as each ends (the live leaderboard), its best trial refitted on the whole training split and
registered as the model's next version through the ordinary version registration.

A study is checked completely before it is stored (unknown metric for the task, an empty or unbounded
budget, an unknown algorithm, a bad search space: 422s naming the field). Its coordinator (the search
engine, in a thread of the service: ``StudyLauncher``) asks the sampler for trials, submits them as jobs,
relays their fold reports to the pruner (a pruned trial's job is cancelled) and touches the study as it
goes: a study whose coordinator went silent (the service was killed) is ended as failed by
``recover_silent``, and its trial jobs are cancelled. Each change of a study commits with its event.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.audit import note_changes
from aiservice.application.ports import Clock, UnitOfWork
from aiservice.application.registry import find_model
from aiservice.application.training import TrainingJobs
from aiservice.application.training_data import DatasetAccess, check_data
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound, QuotaExceeded
from aiservice.domain.events import AutoMLStudyEnded, AutoMLStudyStarted, DomainEvent
from aiservice.domain.models import Model
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import Permission, Principal, Role
from aiservice.domain.training import DatasetConfig, ResourceConfig, TrainingConfig

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
MAX_TRIALS = 500
MAX_TIMEOUT_S = 24 * 3600
FINISHED = ("succeeded", "failed", "cancelled")
MAX_PARALLEL = 32
HEARTBEAT_S = 5.0  # how often a running study's coordinator touches it
SILENT_AFTER_S = 60.0  # a study not touched for this long lost its coordinator (the service died)


@dataclass(frozen=True)
class AutoMLRequest:
    dataset: DatasetConfig  # references as the user wrote them
    task: str
    metric: str
    max_trials: int | None
    timeout_seconds: int | None
    algorithms: tuple[str, ...] | None = None  # None: the engine's defaults for the task
    search_spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    cv_folds: int = 3
    parallel_trials: int | None = None  # None: as many as the job runner runs at once

    def to_json(self) -> dict[str, Any]:
        return {
            "datasetConfig": self.dataset.to_json(),
            "task": self.task,
            "metric": self.metric,
            "maxTrials": self.max_trials,
            "timeoutSeconds": self.timeout_seconds,
            "algorithms": list(self.algorithms) if self.algorithms is not None else None,
            "searchSpaces": self.search_spaces,
            "seed": self.seed,
            "cvFolds": self.cv_folds,
            "parallelTrials": self.parallel_trials,
        }


@dataclass
class Study:
    id: str
    tenant_id: str
    model_id: str
    status: str  # queued | running | succeeded | failed | cancelled
    request: dict[str, Any]  # AutoMLRequest.to_json(), with the algorithms chosen filled in
    trials: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None = None  # best trial, held-out figures, baseline, beatsBaseline
    error: str | None = None
    version: int | None = None
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class StudyRepository(Protocol):
    """The unit of work's studies (one tenant's); the transitions are conditional, True when made."""

    def add(self, study: Study) -> None: ...
    def get(self, study_id: str, *, for_update: bool = False) -> Study | None: ...
    def page(self, model_id: str, limit: int, cursor: str | None) -> Page[Study]:
        """The model's studies, newest first."""
        ...

    def start(self, study_id: str, at: datetime) -> bool:
        """queued -> running; False when the study is no longer queued (cancelled)."""
        ...

    def add_trial(self, study_id: str, trial: dict[str, Any], at: datetime) -> bool:
        """Append a finished trial while the study runs; False once it has ended (cancelled)."""
        ...

    def touch(self, study_id: str, at: datetime) -> bool:
        """The coordinator's heartbeat; False once the study has ended."""
        ...

    def finish(
        self,
        study_id: str,
        status: str,
        at: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        version: int | None = None,
    ) -> bool:
        """End a queued or running study; False when it had already ended."""
        ...


class StudyUnitOfWork(UnitOfWork, Protocol):
    @property
    def automl_studies(self) -> StudyRepository: ...


class StudyUnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str, *, writes: bool = True) -> StudyUnitOfWork: ...


SilentStudies = Callable[[datetime], list[tuple[str, str]]]
"""(tenant, study) of every queued or running study not touched since the given time, across tenants."""


@dataclass(frozen=True)
class TrialLook:
    """A trial job as the coordinator sees it: its status, the running mean it reported after each fold,
    and once it succeeded its cross-validated score."""

    status: str  # queued | running | succeeded | failed | cancelled | gone
    reports: list[float]
    score: float | None = None
    error: str | None = None
    seconds: float | None = None


class TrialJobs(Protocol):
    """Where a study's trials run: training jobs of the study's model."""

    def submit(self, number: int, algorithm: str, params: dict[str, Any]) -> str | None:
        """The trial's job id; None while the tenant's concurrent-jobs quota has no room."""
        ...

    def look(self, job_id: str) -> TrialLook: ...

    def stop(self, job_id: str) -> None:
        """Cancel the trial's job (pruned, or its study ended); nothing once it has ended."""
        ...


@dataclass(frozen=True)
class SearchPlan:
    """What the engine searches: the study's request with its dataset resolved to readable URIs."""

    study_id: str
    dataset: DatasetConfig  # resolved URIs
    task: str
    metric: str
    algorithms: tuple[str, ...]
    search_spaces: dict[str, dict[str, Any]]
    max_trials: int | None
    timeout_seconds: int | None
    seed: int
    cv_folds: int
    work_dir: Path
    parallel: int = 1  # trials running at once
    framework: str = "sklearn"  # the model's: what the best trial is saved as


@dataclass(frozen=True)
class SearchOutcome:
    """The best trial, refitted on the whole training split and saved; its held-out figures."""

    artifact: Path
    filename: str
    result: dict[str, Any]  # best, heldOut, baseline, beatsBaseline, trials counted
    metrics: dict[str, Any]  # the version's metrics (held-out)
    params: dict[str, Any]  # the version's params (algorithm and hyper-parameters)
    configuration: dict[str, Any] = field(default_factory=dict)  # what serving needs (xgboost: classes)


class SearchEngine(Protocol):
    def algorithms(self, framework: str, task: str) -> tuple[str, ...]:
        """The algorithms a study of ``task`` on a ``framework`` model may search; () when none."""
        ...

    def default_algorithms(self, framework: str, task: str) -> tuple[str, ...]: ...

    def metrics(self, task: str) -> tuple[str, ...]: ...

    def problems(self, request: AutoMLRequest, algorithms: tuple[str, ...]) -> list[FieldError]:
        """What is wrong with the search spaces (unknown algorithm keys, parameters, bad ranges)."""
        ...

    def run(
        self,
        plan: SearchPlan,
        trials: TrialJobs,
        on_trial: Callable[[dict[str, Any]], bool],
        stopped: Callable[[], bool],
    ) -> SearchOutcome | None:
        """Run the search, each trial through ``trials``; ``on_trial`` gets each finished trial (False:
        stop now); None when stopped before anything could be registered."""
        ...


class StudyLauncher(Protocol):
    """Runs a study in the background (a thread of the host worker) and waits for them on shutdown."""

    def launch(self, name: str, work: Callable[[], None]) -> None: ...
    def close(self, timeout_s: float = 30.0) -> None: ...


class AutoMLStudies:
    def __init__(
        self,
        uow: StudyUnitOfWorkFactory,
        clock: Clock,
        engine: SearchEngine,
        datasets: DatasetAccess,
        versions: ModelVersions,
        training: TrainingJobs,
        launch: StudyLauncher,
        work_dir: Path,
        silent: SilentStudies,
        max_timeout_s: int = MAX_TIMEOUT_S,
        parallel_trials: int = 1,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._engine = engine
        self._datasets = datasets
        self._versions = versions
        self._training = training
        self._launcher = launch
        self._closing = threading.Event()
        self._work_dir = work_dir
        self._silent = silent
        self._max_timeout_s = max_timeout_s
        self._parallel_trials = parallel_trials  # the job runner's concurrency: trials at once by default
        # Trial jobs submitted and not yet ended, per study, as this service's coordinators know them.
        self._running_trials: dict[str, set[str]] = {}

    # ---- the user's side -------------------------------------------------------------------------
    def submit(self, principal: Principal, model_ident: str, request: AutoMLRequest) -> Study:
        principal.require(Permission.TRAIN)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
        request = self._checked(principal, model, request)
        now = self._clock()
        study = Study(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            model_id=model.id,
            status="queued",
            request=request.to_json(),
            trials=[],
            created_at=now,
            updated_at=now,
            created_by=principal.subject,
        )
        with self._uow(principal.tenant_id) as uow:  # the study and its audit record, together
            if uow.models.get(model.id) is None:
                raise NotFound(f"Model {model_ident!r} was deleted meanwhile.")
            uow.automl_studies.add(study)
            note_changes({}, {"automlStudy": study.id, "model": model.id, **request.to_json()})
            uow.commit()
        self._launcher.launch(
            f"automl-{study.id[:8]}", lambda: self.run(study.tenant_id, study.id, model.framework)
        )
        return study

    def _checked(self, principal: Principal, model: Model, request: AutoMLRequest) -> AutoMLRequest:
        errors: list[FieldError] = []
        if request.task not in TASKS:
            errors.append(FieldError("task", f"must be one of {', '.join(TASKS)}, not {request.task!r}"))
            known_metrics: tuple[str, ...] = ()
        else:
            known_metrics = self._engine.metrics(request.task)
            if request.metric not in known_metrics:
                errors.append(
                    FieldError(
                        "metric",
                        f"{request.metric!r} is not a {request.task} metric; use one of "
                        f"{', '.join(known_metrics)}",
                    )
                )
        if request.max_trials is None and request.timeout_seconds is None:
            errors.append(FieldError("budget", "give maxTrials, timeoutSeconds or both"))
        if request.max_trials is not None and not 1 <= request.max_trials <= MAX_TRIALS:
            errors.append(FieldError("budget.maxTrials", f"must be from 1 to {MAX_TRIALS}"))
        if request.timeout_seconds is not None and not 1 <= request.timeout_seconds <= self._max_timeout_s:
            errors.append(FieldError("budget.timeoutSeconds", f"must be from 1 to {self._max_timeout_s}"))
        if request.parallel_trials is not None and not 1 <= request.parallel_trials <= MAX_PARALLEL:
            errors.append(FieldError("parallelTrials", f"must be from 1 to {MAX_PARALLEL}"))
        algorithms: tuple[str, ...] = ()
        if request.task in TASKS:
            allowed = self._engine.algorithms(model.framework, request.task)
            if not allowed:
                errors.append(FieldError("path.model", f"AutoML does not search {model.framework} models"))
            elif request.algorithms is None:
                algorithms = self._engine.default_algorithms(model.framework, request.task)
            elif not request.algorithms:
                errors.append(FieldError("algorithms", "name at least one algorithm, or leave it out"))
            else:
                for i, name in enumerate(request.algorithms):
                    if name not in allowed:
                        errors.append(
                            FieldError(
                                f"algorithms[{i}]",
                                f"unknown algorithm {name!r} for {request.task}; use {', '.join(allowed)}",
                            )
                        )
                algorithms = tuple(dict.fromkeys(request.algorithms))
            if algorithms and not errors:
                errors += self._engine.problems(request, algorithms)
        checked = check_data(self._datasets, principal.tenant_id, model, request.dataset)
        errors += checked.errors
        if errors:
            raise InvalidInput(
                "The AutoML request is invalid: " + "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
                errors=errors,
            )
        parallel = request.parallel_trials or self._parallel_trials
        return replace(request, dataset=checked.dataset, algorithms=algorithms, parallel_trials=parallel)

    def get(self, principal: Principal, model_ident: str, study_id: str) -> Study:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            study = uow.automl_studies.get(study_id)
        if study is None or study.model_id != model.id:
            raise NotFound(
                f"No AutoML study {study_id!r} of model {model_ident!r}.", extra={"study": study_id}
            )
        return study

    def list_studies(
        self, principal: Principal, model_ident: str, limit: int, cursor: str | None
    ) -> Page[Study]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return uow.automl_studies.page(model.id, limit, cursor)

    def cancel(self, principal: Principal, model_ident: str, study_id: str) -> Study:
        principal.require(Permission.TRAIN)
        study = self.get(principal, model_ident, study_id)
        error = "cancelled by " + principal.subject
        if study.finished or not self._end(study.tenant_id, study.id, "cancelled", error=error):
            current = self._study(study.tenant_id, study.id) or study
            raise Conflict(
                f"Study {study_id} has already {current.status}; only queued or running studies can be "
                "cancelled.",
                extra={"studyStatus": current.status},
            )
        return self._study(study.tenant_id, study.id) or study

    # ---- the runner's side ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop running studies (they end as failed, their trial jobs cancelled); wait for their threads."""
        self._closing.set()
        self._launcher.close()

    def recover_silent(self, silent_for_s: float = SILENT_AFTER_S) -> int:
        """End as failed every study whose coordinator has not touched it for ``silent_for_s`` (the
        service running it was killed), and cancel its trial jobs still queued or running."""
        ended = 0
        for tenant_id, study_id in self._silent(self._clock() - timedelta(seconds=silent_for_s)):
            error = "interrupted: the service running the study stopped; start it again"
            if self._end(tenant_id, study_id, "failed", error=error, silent_for_s=silent_for_s):
                ended += 1
                log.warning("automl study %s had gone silent; ended as failed", study_id)
        return ended

    def run(self, tenant_id: str, study_id: str, framework: str) -> None:
        """The whole study, start to end; never raises (a failure ends the study as failed)."""
        try:
            self._run(tenant_id, study_id, framework)
        except Exception as exc:  # the study's own failure, never the service's
            log.warning("automl study %s failed", study_id, exc_info=True)
            lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            self._end(tenant_id, study_id, "failed", error=lines[-1][:2000])

    def _study(self, tenant_id: str, study_id: str) -> Study | None:
        with self._uow(tenant_id, writes=False) as uow:
            return uow.automl_studies.get(study_id)

    def _end(
        self,
        tenant_id: str,
        study_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        version: int | None = None,
        silent_for_s: float | None = None,
    ) -> bool:
        """End the study with its event, in one transaction; then cancel its trial jobs still running.
        ``silent_for_s``: only while it is still silent (its coordinator may have spoken meanwhile)."""
        now = self._clock()
        with self._uow(tenant_id) as uow:
            study = uow.automl_studies.get(study_id, for_update=True)
            if study is None or study.finished:
                return False
            if silent_for_s is not None and (now - study.updated_at).total_seconds() < silent_for_s:
                return False
            if not uow.automl_studies.finish(study_id, status, now, result, error, version):
                return False
            if status == "cancelled":
                note_changes({"status": study.status}, {"status": status})
            uow.record(_ended(study, status, result, error, version))
            uow.commit()
        self._stop_trials(study)
        return True

    def _run(self, tenant_id: str, study_id: str, framework: str) -> None:
        now = self._clock()
        with self._uow(tenant_id) as uow:
            study = uow.automl_studies.get(study_id, for_update=True)
            if study is None or not uow.automl_studies.start(study_id, now):
                return
            request = study.request
            uow.record(
                AutoMLStudyStarted(
                    tenant_id=tenant_id,
                    aggregate_id=study.model_id,
                    study_id=study_id,
                    task=request["task"],
                    metric=request["metric"],
                    algorithms=list(request["algorithms"]),
                )
            )
            uow.commit()
        dataset = DatasetConfig.from_json(request["datasetConfig"])
        resolved = {
            name: self._datasets.resolve(tenant_id, reference, f"datasetConfig.{name}")
            for name, reference in dataset.paths()
        }
        located = replace(
            dataset,
            train_path=resolved["trainPath"],
            validation_path=resolved.get("validationPath"),
            test_path=resolved.get("testPath"),
        )
        plan = SearchPlan(
            study_id=study_id,
            dataset=located,
            task=request["task"],
            metric=request["metric"],
            algorithms=tuple(request["algorithms"]),
            search_spaces=request.get("searchSpaces") or {},
            max_trials=request.get("maxTrials"),
            timeout_seconds=request.get("timeoutSeconds"),
            seed=int(request.get("seed", 0)),
            cv_folds=int(request.get("cvFolds", 3)),
            work_dir=self._work_dir / study_id,
            parallel=int(request.get("parallelTrials") or self._parallel_trials),
            framework=framework,
        )
        trials = _StudyTrials(
            self._training, study, dataset, self._running_trials.setdefault(study_id, set())
        )
        beat = {"at": 0.0}

        def stopped() -> bool:
            if self._closing.is_set():
                return True
            if time.monotonic() - beat["at"] < HEARTBEAT_S:
                return False
            beat["at"] = time.monotonic()
            with self._uow(tenant_id) as uow:  # the heartbeat, and a look for a cancel
                alive = uow.automl_studies.touch(study_id, self._clock())
                uow.commit()
            return not alive

        def on_trial(trial: dict[str, Any]) -> bool:
            if trial.get("jobId"):
                trials.running.discard(str(trial["jobId"]))
            with self._uow(tenant_id) as uow:
                added = uow.automl_studies.add_trial(study_id, trial, self._clock())
                uow.commit()
            beat["at"] = time.monotonic()
            return added

        try:
            outcome = self._engine.run(plan, trials, on_trial, stopped)
        finally:
            if self._closing.is_set():  # the service is stopping: the study ends here, its jobs too
                error = "the service stopped before the study ended; start it again"
                self._end(tenant_id, study_id, "failed", error=error)
        if self._closing.is_set():  # ended above, its trials with it
            return
        if outcome is None:  # cancelled: a trial submitted as the cancel landed may still be queued
            self._stop_trials(study)
            return
        current = self._study(tenant_id, study_id)
        if current is None or current.finished:
            return
        version = self._register(study, outcome)
        self._end(tenant_id, study_id, "succeeded", result=outcome.result, version=version)

    def _stop_trials(self, study: Study) -> None:
        """Cancel the study's trial jobs still queued or running: those its coordinator here knows, and
        those a coordinator of a service that died left in the queue."""
        jobs = self._running_trials.pop(study.id, set()) | self._training.trial_jobs(
            study.tenant_id, study.model_id, study.id
        )
        for job_id in jobs:
            self._training.stop_trial(study.tenant_id, job_id)

    def _register(self, study: Study, outcome: SearchOutcome) -> int:
        """The best trial's artifact as the model's next version, through the ordinary registration."""
        principal = Principal(
            subject=f"automl-study:{study.id}", tenant_id=study.tenant_id, roles=frozenset({Role.EDITOR})
        )
        best = outcome.result.get("best") or {}
        metadata = VersionMetadata(
            description=f"AutoML study {study.id}: best of {outcome.result.get('trialsRun')} "
            f"trials ({best.get('algorithm')})",
            metrics=outcome.metrics,
            params={**outcome.params, "automlStudyId": study.id},
            source_run=f"automl-study:{study.id}",
            configuration=outcome.configuration,
            lineage={
                "automlStudyId": study.id,
                "trial": best.get("number"),
                "metric": study.request["metric"],
                "datasets": [
                    {"name": n, "reference": r}
                    for n, r in DatasetConfig.from_json(study.request["datasetConfig"]).paths()
                ],
            },
        )
        version = self._versions.upload_file(
            principal, study.model_id, outcome.artifact, outcome.filename, metadata
        )
        return version.version


def _ended(
    study: Study, status: str, result: dict[str, Any] | None, error: str | None, version: int | None
) -> DomainEvent:
    return AutoMLStudyEnded(
        tenant_id=study.tenant_id,
        aggregate_id=study.model_id,
        study_id=study.id,
        status=status,
        trials=len(study.trials),
        version=version,
        best=(result or {}).get("best"),
        error=error,
    )


class _StudyTrials:
    """``TrialJobs`` over the training jobs of the study's model: each trial a job whose
    ``training.automlTrial`` names the study, on the study's dataset as the user wrote it (the runner
    resolves it when the job starts, as for any job)."""

    def __init__(
        self, training: TrainingJobs, study: Study, dataset: DatasetConfig, running: set[str]
    ) -> None:
        self._training = training
        self._study = study
        self._dataset = dataset
        self.running = running  # shared with the use case, which cancels them when the study ends
        self._seen: dict[str, tuple[int, list[float]]] = {}  # job -> (last event seen, fold reports)

    def submit(self, number: int, algorithm: str, params: dict[str, Any]) -> str | None:
        request = self._study.request
        training = TrainingConfig(
            algorithm=algorithm,
            params=params,
            seed=int(request.get("seed", 0)),
            automl_trial={
                "studyId": self._study.id,
                "number": number,
                "task": request["task"],
                "metric": request["metric"],
                "cvFolds": int(request.get("cvFolds", 3)),
            },
        )
        try:
            job = self._training.submit_trial(
                self._study.tenant_id,
                self._study.model_id,
                training,
                self._dataset,
                ResourceConfig(cpu=1),
                f"automl-study:{self._study.id}",
            )
        except QuotaExceeded:
            return None
        self.running.add(job.id)
        self._seen[job.id] = (0, [])
        return job.id

    def look(self, job_id: str) -> TrialLook:
        after, reports = self._seen.get(job_id, (0, []))
        events, job = self._training.trial_events(self._study.tenant_id, job_id, after)
        metric = self._study.request["metric"]
        for event in events:
            after = event.seq
            value = (event.data.get("metrics") or {}).get(metric) if event.type == "progress" else None
            if isinstance(value, int | float):
                reports = [*reports, float(value)]
        self._seen[job_id] = (after, reports)
        if job is None:
            return TrialLook("gone", reports, error="the trial's job was deleted")
        status = job.status.value
        if job.status.finished:
            self.running.discard(job_id)
        seconds = (
            round((job.finished_at - job.started_at).total_seconds(), 3)
            if job.finished_at and job.started_at
            else None
        )
        score = job.metrics.get(metric) if status == "succeeded" else None
        return TrialLook(
            status,
            reports,
            score=float(score) if isinstance(score, int | float) else None,
            error=job.failure.message if job.failure else None,
            seconds=seconds,
        )

    def stop(self, job_id: str) -> None:
        self._training.stop_trial(self._study.tenant_id, job_id)
        self.running.discard(job_id)
