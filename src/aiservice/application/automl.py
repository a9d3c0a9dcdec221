"""AutoML studies (ADR 28): a hyper-parameter search over several algorithms for one model, its trials
persisted as each ends (the live leaderboard), its best trial retrained on the whole training split and
registered as the model's next version through the ordinary version registration.

A study is checked completely before it is stored (unknown metric for the task, an empty or unbounded
budget, an unknown algorithm, a bad search space: 422s naming the field). It then runs in one runner
(``StudyLauncher``): trials are cross-validated fits inside that runner, not training jobs of their own,
so the study's data is read once and its folds are reported to the search's pruner.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.audit import note_changes
from aiservice.application.ports import Clock, UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.application.training_data import DatasetAccess, check_data
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.models import Model
from aiservice.domain.tenancy import Permission, Principal, Role
from aiservice.domain.training import DatasetConfig

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
MAX_TRIALS = 500
MAX_TIMEOUT_S = 24 * 3600
FINISHED = ("succeeded", "failed", "cancelled")


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


class StudyStore(Protocol):
    def add(self, study: Study) -> None: ...
    def get(self, tenant_id: str, study_id: str) -> Study | None: ...
    def start(self, tenant_id: str, study_id: str, at: datetime) -> bool:
        """queued -> running; False when the study is no longer queued (cancelled)."""
        ...

    def add_trial(self, tenant_id: str, study_id: str, trial: dict[str, Any], at: datetime) -> bool:
        """Append a finished trial while the study runs; False once it has ended (cancelled)."""
        ...

    def finish(
        self,
        tenant_id: str,
        study_id: str,
        status: str,
        at: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        version: int | None = None,
    ) -> bool:
        """End a queued or running study; False when it had already ended."""
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


@dataclass(frozen=True)
class SearchOutcome:
    """The best trial, refitted on the whole training split and saved; its held-out figures."""

    artifact: Path
    filename: str
    result: dict[str, Any]  # best, heldOut, baseline, beatsBaseline, trials counted
    metrics: dict[str, Any]  # the version's metrics (held-out)
    params: dict[str, Any]  # the version's params (algorithm and hyper-parameters)


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
        on_trial: Callable[[dict[str, Any]], bool],
        stopped: Callable[[], bool],
    ) -> SearchOutcome | None:
        """Run the search; ``on_trial`` gets each finished trial (False: stop now); None when stopped
        before anything could be registered."""
        ...


class StudyLauncher(Protocol):
    """Runs a study in the background (a thread of the host worker) and waits for them on shutdown."""

    def launch(self, name: str, work: Callable[[], None]) -> None: ...
    def close(self, timeout_s: float = 30.0) -> None: ...


class AutoMLStudies:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        store: StudyStore,
        engine: SearchEngine,
        datasets: DatasetAccess,
        versions: ModelVersions,
        launch: StudyLauncher,
        work_dir: Path,
        max_timeout_s: int = MAX_TIMEOUT_S,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._store = store
        self._engine = engine
        self._datasets = datasets
        self._versions = versions
        self._launcher = launch
        self._closing = threading.Event()
        self._work_dir = work_dir
        self._max_timeout_s = max_timeout_s

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
        self._store.add(study)
        with self._uow(principal.tenant_id) as uow:  # the audit record of the submission
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
        return replace(request, dataset=checked.dataset, algorithms=algorithms)

    def get(self, principal: Principal, model_ident: str, study_id: str) -> Study:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
        study = self._store.get(principal.tenant_id, study_id)
        if study is None or study.model_id != model.id:
            raise NotFound(
                f"No AutoML study {study_id!r} of model {model_ident!r}.", extra={"study": study_id}
            )
        return study

    def cancel(self, principal: Principal, model_ident: str, study_id: str) -> Study:
        principal.require(Permission.TRAIN)
        study = self.get(principal, model_ident, study_id)
        if study.finished or not self._store.finish(
            study.tenant_id, study.id, "cancelled", self._clock(), error="cancelled by " + principal.subject
        ):
            current = self._store.get(study.tenant_id, study.id) or study
            raise Conflict(
                f"Study {study_id} has already {current.status}; only queued or running studies can be "
                "cancelled.",
                extra={"studyStatus": current.status},
            )
        with self._uow(principal.tenant_id) as uow:
            note_changes({"status": study.status}, {"status": "cancelled"})
            uow.commit()
        return self._store.get(study.tenant_id, study.id) or study

    # ---- the runner's side ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop running studies between folds (they end as failed) and wait for their threads."""
        self._closing.set()
        self._launcher.close()

    def run(self, tenant_id: str, study_id: str, framework: str) -> None:
        """The whole study, start to end; never raises (a failure ends the study as failed)."""
        try:
            self._run(tenant_id, study_id, framework)
        except Exception as exc:  # the study's own failure, never the service's
            log.warning("automl study %s failed", study_id, exc_info=True)
            lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            self._store.finish(tenant_id, study_id, "failed", self._clock(), error=lines[-1][:2000])

    def _run(self, tenant_id: str, study_id: str, framework: str) -> None:
        if not self._store.start(tenant_id, study_id, self._clock()):
            return
        study = self._store.get(tenant_id, study_id)
        assert study is not None
        request = study.request
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
        )

        def stopped() -> bool:
            if self._closing.is_set():
                return True
            current = self._store.get(tenant_id, study_id)
            return current is None or current.finished

        def on_trial(trial: dict[str, Any]) -> bool:
            return self._store.add_trial(tenant_id, study_id, trial, self._clock())

        outcome = self._engine.run(plan, on_trial, stopped)
        if self._closing.is_set():
            error = "the service stopped before the study ended; start it again"
            self._store.finish(tenant_id, study_id, "failed", self._clock(), error=error)
            return
        if outcome is None or stopped():
            return
        version = self._register(study, outcome)
        self._store.finish(
            tenant_id, study_id, "succeeded", self._clock(), result=outcome.result, version=version
        )

    def _register(self, study: Study, outcome: SearchOutcome) -> int:
        """The best trial's artifact as the model's next version, through the ordinary registration."""
        principal = Principal(
            subject=f"automl-study:{study.id}", tenant_id=study.tenant_id, roles=frozenset({Role.EDITOR})
        )
        best = outcome.result.get("best") or {}
        metadata = VersionMetadata(
            description=f"AutoML study {study.id}: best of {len(outcome.result.get('trials', []))} "
            f"trials ({best.get('algorithm')})",
            metrics=outcome.metrics,
            params={**outcome.params, "automlStudyId": study.id},
            source_run=f"automl-study:{study.id}",
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
