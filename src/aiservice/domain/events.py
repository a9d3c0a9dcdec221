"""Domain events: facts about changes, written to the outbox in the transaction that made them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import uuid4

from aiservice.domain.clock import utcnow


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base of every event. ``data()`` is what subscribers and brokers receive."""

    tenant_id: str
    aggregate_id: str
    event_id: str = field(default_factory=lambda: str(uuid4()))
    occurred_at: datetime = field(default_factory=utcnow)

    aggregate_type: ClassVar[str] = "model"
    _envelope: ClassVar[frozenset[str]] = frozenset({"tenant_id", "aggregate_id", "event_id", "occurred_at"})

    @property
    def type(self) -> str:
        return type(self).__name__

    def data(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self._envelope
        }


@dataclass(frozen=True, kw_only=True)
class ModelCreated(DomainEvent):
    name: str
    framework: str


@dataclass(frozen=True, kw_only=True)
class ModelUpdated(DomainEvent):
    changed_fields: list[str]


@dataclass(frozen=True, kw_only=True)
class ModelDeleted(DomainEvent):
    name: str


@dataclass(frozen=True, kw_only=True)
class ModelVersionCreated(DomainEvent):
    version: int
    digest: str
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class ModelVersionCompiled(DomainEvent):
    version: int
    form: str  # the form that now serves: "onnx" or "native"
    reason: str


@dataclass(frozen=True, kw_only=True)
class ModelStageChanged(DomainEvent):
    version: int
    from_stage: str
    to_stage: str


@dataclass(frozen=True, kw_only=True)
class ModelDriftDetected(DomainEvent):
    """A drift check found a version's traffic moved from its reference profile (``report_id`` names
    the stored report; ``score`` is its largest PSI; ``trigger``: manual or schedule)."""

    version: int
    report_id: str
    score: float
    drifted_features: list[str]
    prediction_drifted: bool
    window_size: int
    trigger: str


@dataclass(frozen=True, kw_only=True)
class AutoMLStudyStarted(DomainEvent):
    """An AutoML study of the model began searching (ADR 28)."""

    study_id: str
    task: str
    metric: str
    algorithms: list[str]


@dataclass(frozen=True, kw_only=True)
class AutoMLStudyEnded(DomainEvent):
    """An AutoML study ended: ``status`` succeeded (``version`` is its best trial, registered), failed
    (``error`` says why) or cancelled."""

    study_id: str
    status: str
    trials: int
    version: int | None
    best: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True, kw_only=True)
class ModelMonitoringAction(DomainEvent):
    """A monitoring policy acted on its own (``action``: alert, retrain, compare, promote or rollback;
    ``status``: done, started or failed), for ``reason``; ``reference`` names what it made or touched
    (a training job, an experiment, a deployment); ``action_id`` the recorded action."""

    action_id: str
    action: str
    status: str
    trigger: str
    reason: str
    version: int
    reference: str | None
    details: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ModelAliasSet(DomainEvent):
    alias: str
    version: int
    previous_version: int | None


@dataclass(frozen=True, kw_only=True)
class ModelAliasDeleted(DomainEvent):
    alias: str
    version: int


@dataclass(frozen=True, kw_only=True)
class TrainingJobEvent(DomainEvent):
    """Base of training events: their aggregate is the job; ``model_id`` says which model it trains."""

    model_id: str
    aggregate_type: ClassVar[str] = "training-job"


@dataclass(frozen=True, kw_only=True)
class TrainingJobQueued(TrainingJobEvent):
    algorithm: str


@dataclass(frozen=True, kw_only=True)
class TrainingJobStarted(TrainingJobEvent):
    runner: str


@dataclass(frozen=True, kw_only=True)
class TrainingProgress(TrainingJobEvent):
    """Throttled: at most one per job every few seconds, plus the last epoch."""

    progress: float
    epoch: int | None
    metrics: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class TrainingJobSucceeded(TrainingJobEvent):
    version: int
    metrics: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class TrainingJobFailed(TrainingJobEvent):
    stage: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class TrainingJobCancelled(TrainingJobEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class TrainingTrialScored(TrainingJobEvent):
    """A trial job of an AutoML study ended with its cross-validated ``score`` (the metric as it reads:
    rmse positive); it registers no version, the study registers its best trial's."""

    study_id: str
    number: int
    metric: str
    score: float


@dataclass(frozen=True, kw_only=True)
class DeploymentEvent(DomainEvent):
    """Base of deployment events: their aggregate is the deployment; ``name`` is its stable name."""

    name: str
    model_id: str
    aggregate_type: ClassVar[str] = "deployment"


@dataclass(frozen=True, kw_only=True)
class DeploymentCreated(DeploymentEvent):
    version: int
    environment: str
    target: str
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True, kw_only=True)
class DeploymentRolledOut(DeploymentEvent):
    """Every replica of the revision is warm and all traffic reaches it."""

    revision: int
    version: int
    previous_version: int | None


@dataclass(frozen=True, kw_only=True)
class DeploymentRolledBack(DeploymentEvent):
    """Traffic is back on an earlier version (a rollback's revision finished rolling out)."""

    revision: int
    version: int
    from_version: int | None


@dataclass(frozen=True, kw_only=True)
class DeploymentScaled(DeploymentEvent):
    from_replicas: int
    to_replicas: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeploymentFailed(DeploymentEvent):
    """A revision's replicas could not start; traffic stayed where it was (if anywhere)."""

    revision: int
    version: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeploymentDeleted(DeploymentEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ExperimentEvent(DomainEvent):
    """Base of experiment events: their aggregate is the experiment; ``name`` is its name."""

    name: str
    model_id: str
    mode: str
    aggregate_type: ClassVar[str] = "experiment"


@dataclass(frozen=True, kw_only=True)
class ExperimentCreated(ExperimentEvent):
    arms: list[dict[str, Any]]
    champion: str


@dataclass(frozen=True, kw_only=True)
class ExperimentStarted(ExperimentEvent):
    weights: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class ExperimentPaused(ExperimentEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ExperimentStopped(ExperimentEvent):
    reason: str


@dataclass(frozen=True, kw_only=True)
class ExperimentPromoted(ExperimentEvent):
    """The winner's version took the champion's place (an alias moved, or the version's stage)."""

    winner: str
    version: int
    target: str  # the alias or stage that moved
    reason: str


@dataclass(frozen=True, kw_only=True)
class ExperimentRolledBack(ExperimentEvent):
    """A canary guard broke: the challenger gets no more traffic and the experiment stopped."""

    challenger: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ExperimentTrafficShifted(ExperimentEvent):
    """The arms' shares changed automatically: a canary's next step, a bandit's new allocation."""

    weights: dict[str, float]
    reason: str
