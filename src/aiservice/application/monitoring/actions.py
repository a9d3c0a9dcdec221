"""Closing the loop: what a monitoring policy does on its own when a check finds the current version
degraded (its traffic drifted, or its rolling accuracy with feedback fell below ``accuracyFloor``).

Every step runs as ``system:monitoring`` through the use case a person would call (training jobs,
experiments, deployments), so their checks, events and audit records apply; and every step is itself
recorded: a ``monitoring_actions`` row, an audit record whose changes carry the reason, and an
``ai.model.monitoring_action.v1`` event, in one transaction.

- ``alert``: the recorded action and its event (a drifted check has written ``ModelDriftDetected`` and
  set the drift gauge already); webhooks subscribe to either.
- ``retrain``: a training job on ``retrain.datasetId`` with the current version's training
  configuration (the algorithm, parameters, target and features of the job that trained it; the
  framework's default algorithm for an uploaded version).
- ``compare`` (after ``retrain``, when its job succeeded: the ``TrainingJobSucceeded`` event on the
  relay's bus, never polling): the retrained and the current version predict the same held-out rows of
  the dataset (the split the job held out for validation); the retrained one must do better.
- ``promote``: a better retrained version goes into a canary experiment against the current one
  (auto-promoting, the policy's ``canary`` plan); the experiment controller promotes it or rolls it back.
- ``rollback``: a deployment of the model whose serving revision (of the degraded version) rolled out
  within the policy's ``windowHours`` goes back to its previous revision.

``enabled: false`` switches all of it off. A kind of action runs at most once per ``cooldownMinutes``
per model (failed tries count: a broken retraining is not retried every minute).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Protocol

from aiservice.application.audit import (
    CallContext,
    CallDescription,
    CallKind,
    begin_call,
    end_call,
    note_changes,
)
from aiservice.application.deploying.deployments import DeploymentFilter, Deployments
from aiservice.application.experimenting.experiments import Experiments, NewExperiment
from aiservice.application.monitoring.decisions import (
    CheckOutcome,
    HeldOutScores,
    Trigger,
    cooling_down,
    is_better,
    retraining_request,
    trigger_of,
)
from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.monitoring.ports import MonitoringUnitOfWorkFactory, StoredAction
from aiservice.application.ports import Clock
from aiservice.application.training import TrainingJobs
from aiservice.domain.audit import Resource
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.events import ModelMonitoringAction
from aiservice.domain.experiments import ExperimentMode
from aiservice.domain.models import Model
from aiservice.domain.tenancy import Principal, Role
from aiservice.domain.training import TrainingJob

log = logging.getLogger(__name__)

SYSTEM_SUBJECT = "system:monitoring"
COOLING_KINDS = ("alert", "retrain", "rollback")  # the kinds a check starts; compare/promote follow a job


def system_principal(tenant_id: str) -> Principal:
    return Principal(SYSTEM_SUBJECT, tenant_id, frozenset({Role.ADMIN}))


class HeldOutScorer(Protocol):
    def score(
        self, tenant_id: str, model_id: str, job: TrainingJob, versions: Sequence[int]
    ) -> HeldOutScores:
        """Each version's score on the rows ``job`` held out of its dataset for validation."""
        ...


DatasetFormat = Callable[[str, str], str | None]
"""(tenant id, dataset name) -> the uploaded dataset's format; None when the tenant has no such dataset."""


# -- the use case ---------------------------------------------------------------------------------


class MonitoringActions:
    def __init__(
        self,
        uow: MonitoringUnitOfWorkFactory,
        clock: Clock,
        training: TrainingJobs,
        experiments: Experiments,
        deployments: Deployments,
        dataset_format: DatasetFormat,
        scorer: HeldOutScorer | None = None,
        run_later: Callable[[Callable[[], None]], None] = lambda work: work(),
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._training = training
        self._experiments = experiments
        self._deployments = deployments
        self._dataset_format = dataset_format
        self._scorer = scorer  # None: retrained versions are never compared, so never promoted
        self._run_later = run_later  # the comparison predicts hundreds of rows: off the relay's thread

    def check_policy(self, tenant_id: str, policy: MonitoringPolicy) -> None:
        """The policy's references exist in the tenant (``InvalidInput`` naming the field)."""
        dataset = policy.retrain_dataset
        if dataset is not None and self._dataset_format(tenant_id, dataset) is None:
            raise InvalidInput(
                f"There is no dataset named {dataset!r} to retrain on.",
                errors=[FieldError("body.retrain.datasetId", "names no uploaded dataset of this tenant")],
            )

    # -- after a check ---------------------------------------------------------------------------

    def after_check(self, outcome: CheckOutcome) -> list[StoredAction]:
        """Carries out the policy for a check's outcome; the actions recorded. Never raises: a step
        that fails is recorded as failed."""
        policy = outcome.policy
        trigger = trigger_of(outcome)
        if not policy.enabled or trigger is None:
            return []
        done: list[StoredAction] = []
        steps: dict[str, Callable[[CheckOutcome, Trigger], StoredAction | None]] = {
            "alert": self._alert,
            "retrain": self._retrain,
            "rollback": self._rollback,
        }
        for kind in COOLING_KINDS:
            if not policy.acts(kind) or self._cooling(outcome, kind):
                continue
            try:
                action = steps[kind](outcome, trigger)
            except Exception as exc:  # recorded, never the check's failure
                log.warning("monitoring %s of model %s failed", kind, outcome.model.id, exc_info=True)
                action = self._record(
                    outcome.tenant_id,
                    outcome.model,
                    kind,
                    "failed",
                    trigger.kind,
                    trigger.reason,
                    outcome.report.version,
                    details={"error": _detail(exc)},
                )
            if action is not None:
                done.append(action)
        return done

    def _cooling(self, outcome: CheckOutcome, kind: str) -> bool:
        with self._uow(outcome.tenant_id, writes=False) as uow:
            last = uow.monitoring.last_action(outcome.model.id, kind)
        return cooling_down(outcome.policy, last, self._clock())

    def _alert(self, outcome: CheckOutcome, trigger: Trigger) -> StoredAction:
        report = outcome.report
        details = {"reportId": report.id, "score": report.score, "accuracy": outcome.accuracy}
        return self._record(
            outcome.tenant_id,
            outcome.model,
            "alert",
            "done",
            trigger.kind,
            trigger.reason,
            report.version,
            details=details,
        )

    def _retrain(self, outcome: CheckOutcome, trigger: Trigger) -> StoredAction:
        tenant_id, model, version = outcome.tenant_id, outcome.model, outcome.report.version
        dataset = outcome.policy.retrain_dataset or ""
        format = self._dataset_format(tenant_id, dataset)
        if format is None:
            raise InvalidInput(f"The dataset {dataset!r} to retrain on was deleted.")
        with self._uow(tenant_id, writes=False) as uow:
            current = uow.versions.get(model.id, version)
            job_id = (current.lineage or {}).get("trainingJob") if current is not None else None
            previous = uow.jobs.get(job_id) if isinstance(job_id, str) else None
        request = retraining_request(previous, dataset, format)
        principal = system_principal(tenant_id)
        with automatic(principal, "training.submit", Resource("model", model.id, model.name)):
            job = self._training.submit(principal, model.id, request)
        details = {"datasetId": dataset, "jobId": job.id, "algorithm": job.training.algorithm}
        if previous is not None:
            details["configurationOf"] = previous.id
        return self._record(
            tenant_id,
            model,
            "retrain",
            "started",
            trigger.kind,
            trigger.reason,
            version,
            reference=job.id,
            details=details,
        )

    def _rollback(self, outcome: CheckOutcome, trigger: Trigger) -> StoredAction | None:
        tenant_id, model, version = outcome.tenant_id, outcome.model, outcome.report.version
        principal = system_principal(tenant_id)
        since = self._clock() - timedelta(hours=outcome.policy.window_hours)
        page = self._deployments.list(principal, DeploymentFilter(model=model.id, limit=100))
        fresh = [
            d
            for d in page.items
            if d.serving is not None
            and d.serving.version == version
            and d.serving.created_at >= since
            and d.previous is not None
        ]
        if not fresh:
            return None  # nothing fresh serves the degraded version: nothing to roll back
        last: StoredAction | None = None
        for deployment in fresh:
            previous = deployment.previous.version if deployment.previous else None
            with automatic(
                principal, "deployment.rollback", Resource("deployment", deployment.id, deployment.name)
            ):
                self._deployments.rollback(principal, deployment.name)
            last = self._record(
                tenant_id,
                model,
                "rollback",
                "done",
                trigger.kind,
                trigger.reason,
                version,
                reference=deployment.name,
                details={"deployment": deployment.name, "fromVersion": version, "toVersion": previous},
            )
        return last

    # -- after a retraining job ------------------------------------------------------------------

    def job_succeeded(self, tenant_id: str, job_id: str, model_id: str, version: int) -> None:
        """A training job succeeded: when a retraining queued it, compare its version (off this thread)."""
        with self._uow(tenant_id, writes=False) as uow:
            retrain = uow.monitoring.action_by_reference("retrain", job_id)
            policy = uow.monitoring.policy(model_id) or MonitoringPolicy()
        if retrain is None or not policy.enabled:
            return

        def compare() -> None:
            self.compare(tenant_id, retrain, version)

        self._run_later(compare)

    def compare(self, tenant_id: str, retrain: StoredAction, challenger: int) -> StoredAction | None:
        """The retrained version against the one it was retrained for, on the same held-out rows; when
        it is better and the policy promotes, its canary experiment starts."""
        current = retrain.version
        with self._uow(tenant_id, writes=False) as uow:
            model = uow.models.get(retrain.model_id)
            job = uow.jobs.get(retrain.reference or "")
            policy = uow.monitoring.policy(retrain.model_id) or MonitoringPolicy()
        if model is None or job is None or self._scorer is None or not policy.enabled:
            return None
        reason = f"version {challenger} was retrained (job {job.id}) because {retrain.reason}"
        try:
            scores = self._scorer.score(tenant_id, model.id, job, [current, challenger])
        except Exception as exc:
            log.warning("held-out comparison of model %s failed", model.id, exc_info=True)
            return self._record(
                tenant_id,
                model,
                "compare",
                "failed",
                "training",
                reason,
                challenger,
                reference=job.id,
                details={"error": _detail(exc), "against": current},
            )
        better = is_better(scores, current, challenger)
        verdict = "better" if better else "not better"
        compared = self._record(
            tenant_id,
            model,
            "compare",
            "done",
            "training",
            f"{reason}; on {scores.rows} held-out rows it is {verdict} than version {current}",
            challenger,
            reference=job.id,
            details={**scores.to_json(), "against": current, "better": better},
        )
        if better and policy.acts("promote"):
            return self._promote(tenant_id, model, policy, current, challenger, compared.reason)
        return compared

    def _promote(
        self,
        tenant_id: str,
        model: Model,
        policy: MonitoringPolicy,
        current: int,
        challenger: int,
        reason: str,
    ) -> StoredAction:
        principal = system_principal(tenant_id)
        spec = NewExperiment(
            name=f"retrained-v{challenger}-{uuid.uuid4().hex[:6]}",
            model=model.id,
            arms=[
                {"name": "champion", "version": current},
                {"name": "challenger", "version": challenger},
            ],
            mode=ExperimentMode.CANARY,
            champion="champion",
            auto_promote=True,
            canary=None if policy.canary is None else policy.canary.to_json(),
        )
        try:
            resource = Resource("model", model.id, model.name)
            with automatic(principal, "experiment.create", resource):
                experiment = self._experiments.create(principal, spec)
            with automatic(
                principal, "experiment.start", Resource("experiment", experiment.id, experiment.name)
            ):
                self._experiments.start(principal, experiment.id)
        except Exception as exc:
            log.warning("canary of model %s version %s not started", model.id, challenger, exc_info=True)
            return self._record(
                tenant_id,
                model,
                "promote",
                "failed",
                "training",
                reason,
                challenger,
                details={"error": _detail(exc), "against": current},
            )
        return self._record(
            tenant_id,
            model,
            "promote",
            "started",
            "training",
            f"{reason}: a canary experiment puts it against version {current}",
            challenger,
            reference=experiment.id,
            details={"experiment": experiment.id, "name": experiment.name, "champion": current},
        )

    # -- the record ------------------------------------------------------------------------------

    def _record(
        self,
        tenant_id: str,
        model: Model,
        action: str,
        status: str,
        trigger: str,
        reason: str,
        version: int,
        *,
        reference: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> StoredAction:
        stored = StoredAction(
            id=uuid.uuid4().hex,
            model_id=model.id,
            version=version,
            action=action,
            status=status,
            trigger=trigger,
            reason=reason,
            reference=reference,
            details=dict(details or {}),
            created_by=SYSTEM_SUBJECT,
            created_at=self._clock(),
        )
        principal = system_principal(tenant_id)
        with automatic(principal, f"monitoring.{action}", Resource("model", model.id, model.name)):
            with self._uow(tenant_id) as uow:
                uow.monitoring.add_action(stored)
                uow.record(
                    ModelMonitoringAction(
                        tenant_id=tenant_id,
                        aggregate_id=model.id,
                        action_id=stored.id,
                        action=action,
                        status=status,
                        trigger=trigger,
                        reason=reason,
                        version=version,
                        reference=reference,
                        details=stored.details,
                    )
                )
                note_changes(
                    {}, {"action": action, "status": status, "reason": reason, "reference": reference}
                )
                uow.commit()
        log.info("monitoring %s of model %s: %s (%s)", action, model.id, status, reason)
        return stored


@contextmanager
def automatic(principal: Principal, action: str, resource: Resource) -> Iterator[None]:
    """The audit context of an automatic step: ``system:monitoring`` is the caller (not the request
    whose check led to it, which has its own record)."""
    call = CallContext(
        describe=lambda: CallDescription(action, CallKind.CHANGE, resource), principal=principal
    )
    token = begin_call(call)
    try:
        yield
    finally:
        end_call(token)


def _detail(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"[:500]
