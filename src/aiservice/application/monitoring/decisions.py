"""The closed loop's decisions, pure (``actions.py`` carries them out): what in a check's outcome calls
for action, whether a kind of action is cooling down, whether a retrained version did better on the
held-out rows, and which training request retrains the current version on the policy's dataset."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.monitoring.ports import StoredAction, StoredReport
from aiservice.application.training import TrainingRequest
from aiservice.domain.models import Model
from aiservice.domain.training import DatasetConfig, ResourceConfig, TrainingConfig, TrainingJob

MIN_LABELLED = 20  # labelled predictions a window needs before its accuracy can trigger anything


@dataclass(frozen=True)
class CheckOutcome:
    """What a check (on demand or scheduled) found for one version: its stored drift report, and the
    window's accuracy from feedback (None: no metric, or a regression's RMSE)."""

    tenant_id: str
    model: Model
    policy: MonitoringPolicy
    report: StoredReport
    accuracy: float | None = None
    labelled: int = 0


@dataclass(frozen=True)
class Trigger:
    kind: str  # drift or accuracy
    reason: str


@dataclass(frozen=True)
class HeldOutScores:
    """Both versions' scores on the same held-out rows (``metric``: accuracy, higher is better; rmse,
    lower is better)."""

    metric: str
    rows: int
    scores: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "rows": self.rows,
            "scores": {str(k): v for k, v in self.scores.items()},
        }


def trigger_of(outcome: CheckOutcome) -> Trigger | None:
    """Why the check calls for action: drift first, then accuracy below the floor; None: it does not."""
    report, policy = outcome.report, outcome.policy
    if report.report.get("drifted"):
        features = [f["feature"] for f in report.report.get("features", []) if f.get("drifted")]
        prediction = report.report.get("prediction") or {}
        moved = features + (["the prediction"] if prediction.get("drifted") else [])
        score = f"{report.score:.3f}" if report.score is not None else "n/a"
        return Trigger(
            "drift",
            f"version {report.version} drifted (report {report.id}, score {score}"
            + (f"; drifted: {', '.join(moved)}" if moved else "")
            + ")",
        )
    floor = policy.accuracy_floor
    if floor is not None and outcome.accuracy is not None and outcome.labelled >= MIN_LABELLED:
        if outcome.accuracy < floor:
            return Trigger(
                "accuracy",
                f"version {report.version}'s rolling accuracy {outcome.accuracy:.3f} over "
                f"{outcome.labelled} labelled predictions is below the floor {floor:g}",
            )
    return None


def cooling_down(policy: MonitoringPolicy, last: StoredAction | None, now: datetime) -> bool:
    """True when the model's last action of the kind is younger than the policy's cooldown."""
    return last is not None and now - last.created_at < timedelta(minutes=policy.cooldown_minutes)


def is_better(scores: HeldOutScores, current: int, challenger: int) -> bool:
    """The challenger must do strictly better on the same rows."""
    ours, theirs = scores.scores.get(current), scores.scores.get(challenger)
    if ours is None or theirs is None or scores.rows == 0:
        return False
    return theirs < ours if scores.metric == "rmse" else theirs > ours


def retraining_request(job: TrainingJob | None, dataset: str, format: str) -> TrainingRequest:
    """The current version's training configuration on ``dataset``: its job's algorithm, parameters,
    target, features and validation split (none: the framework's default algorithm, the data's target)."""
    path = f"dataset://{dataset}"
    if job is None:
        return TrainingRequest(TrainingConfig(algorithm=""), DatasetConfig(path, format), ResourceConfig())
    training = replace(job.training, chosen_because=None)
    if job.training.chosen_because is not None:
        training = replace(training, algorithm="")  # the service chose it then: let it choose again
    old = job.dataset
    config = DatasetConfig(
        train_path=path,
        format=format,
        target=None if old.target_chosen_because else old.target,
        features=old.features,
        validation_split=old.validation_split,
    )
    return TrainingRequest(training, config, job.resources)
