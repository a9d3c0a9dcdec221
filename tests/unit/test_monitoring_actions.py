"""The closed loop's decisions, without a database: what triggers a policy, the cooldown, when a
retrained version counts as better, which configuration a retraining reuses, and the policy's fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiservice.application.monitoring.decisions import (
    MIN_LABELLED,
    CheckOutcome,
    HeldOutScores,
    cooling_down,
    is_better,
    retraining_request,
    trigger_of,
)
from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.monitoring.ports import StoredAction, StoredReport
from aiservice.domain.errors import InvalidInput
from aiservice.domain.models import Framework, Model
from aiservice.domain.training import DatasetConfig, ResourceConfig, TrainingConfig, TrainingJob

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def report(drifted: bool, features: list[str] | None = None) -> StoredReport:
    body = {
        "drifted": drifted,
        "features": [{"feature": f, "drifted": True} for f in features or []],
        "prediction": None,
    }
    return StoredReport(
        id="r1",
        model_id="m1",
        version=3,
        verdict="drift" if drifted else "no_drift",
        score=0.42 if drifted else 0.01,
        trigger="manual",
        window_since=None,
        window_until=NOW,
        report=body,
        created_at=NOW,
    )


def outcome(
    policy: MonitoringPolicy, drifted: bool = False, accuracy: float | None = None, labelled: int = 0
) -> CheckOutcome:
    model = Model("acme", "churn", Framework("sklearn"), NOW, NOW, id="m1")
    return CheckOutcome("acme", model, policy, report(drifted, ["x0"] if drifted else []), accuracy, labelled)


def action(minutes_ago: float) -> StoredAction:
    return StoredAction(
        id="a1",
        model_id="m1",
        version=3,
        action="retrain",
        status="started",
        trigger="drift",
        reason="r",
        reference="job-1",
        details={},
        created_by="system:monitoring",
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


# -- triggers -------------------------------------------------------------------------------------


def test_drift_triggers_with_the_drifted_features_as_reason() -> None:
    found = trigger_of(outcome(MonitoringPolicy(), drifted=True))
    assert found is not None and found.kind == "drift"
    assert "version 3 drifted" in found.reason and "x0" in found.reason


def test_accuracy_below_the_floor_triggers_once_enough_is_labelled() -> None:
    policy = MonitoringPolicy(accuracy_floor=0.9)
    found = trigger_of(outcome(policy, accuracy=0.6, labelled=MIN_LABELLED))
    assert found is not None and found.kind == "accuracy" and "below the floor 0.9" in found.reason


@pytest.mark.parametrize(
    ("floor", "accuracy", "labelled"),
    [(None, 0.1, 500), (0.9, 0.95, 500), (0.9, 0.1, MIN_LABELLED - 1), (0.9, None, 500)],
)
def test_no_drift_and_no_accuracy_under_the_floor_triggers_nothing(
    floor: float | None, accuracy: float | None, labelled: int
) -> None:
    assert (
        trigger_of(outcome(MonitoringPolicy(accuracy_floor=floor), accuracy=accuracy, labelled=labelled))
        is None
    )


# -- cooldown and acting at all -------------------------------------------------------------------


def test_an_action_within_the_cooldown_holds_the_next_one_back() -> None:
    policy = MonitoringPolicy(cooldown_minutes=60)
    assert cooling_down(policy, action(minutes_ago=59), NOW)
    assert not cooling_down(policy, action(minutes_ago=61), NOW)
    assert not cooling_down(policy, None, NOW)
    assert not cooling_down(MonitoringPolicy(cooldown_minutes=0), action(minutes_ago=0), NOW)


def test_a_disabled_policy_acts_on_nothing_it_lists() -> None:
    policy = MonitoringPolicy(actions=("alert", "rollback"), enabled=False)
    assert not policy.acts("alert") and not policy.acts("rollback")
    assert MonitoringPolicy(actions=("alert", "rollback")).acts("rollback")


# -- held-out comparison --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "current", "challenger", "better"),
    [
        ("accuracy", 0.7, 0.9, True),
        ("accuracy", 0.9, 0.9, False),
        ("accuracy", 0.9, 0.7, False),
        ("rmse", 2.0, 1.0, True),
        ("rmse", 1.0, 2.0, False),
    ],
)
def test_the_retrained_version_must_do_strictly_better(
    metric: str, current: float, challenger: float, better: bool
) -> None:
    scores = HeldOutScores(metric, 100, {1: current, 2: challenger})
    assert is_better(scores, 1, 2) is better


def test_no_held_out_rows_is_never_better() -> None:
    assert not is_better(HeldOutScores("accuracy", 0, {1: 0.0, 2: 1.0}), 1, 2)


# -- the retraining's configuration ---------------------------------------------------------------


def job(**dataset: Any) -> TrainingJob:
    return TrainingJob(
        tenant_id="acme",
        model_id="m1",
        training=TrainingConfig("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 30}, seed=7),
        dataset=DatasetConfig(
            **{
                "train_path": "dataset://old",
                "format": "csv",
                "target": "label",
                "validation_split": 0.3,
                **dataset,
            }
        ),
        resources=ResourceConfig(timeout_seconds=600),
        created_at=NOW,
    )


def test_a_retraining_reuses_the_current_versions_configuration_on_the_named_dataset() -> None:
    request = retraining_request(job(features=["x0", "x1"]), "fresh", "parquet")
    assert request.training.algorithm == "sklearn.ensemble.RandomForestClassifier"
    assert (request.training.params, request.training.seed) == ({"n_estimators": 30}, 7)
    assert (request.dataset.train_path, request.dataset.format) == ("dataset://fresh", "parquet")
    assert (request.dataset.target, request.dataset.features, request.dataset.validation_split) == (
        "label",
        ["x0", "x1"],
        0.3,
    )
    assert request.resources.timeout_seconds == 600


def test_what_the_service_chose_before_it_chooses_again() -> None:
    chosen = job(target_chosen_because="the last column")
    chosen.training = TrainingConfig("sklearn.ensemble.RandomForestClassifier", chosen_because="default")
    request = retraining_request(chosen, "fresh", "csv")
    assert request.training.algorithm == "" and request.dataset.target is None


def test_an_uploaded_version_retrains_with_the_defaults() -> None:
    request = retraining_request(None, "fresh", "csv")
    assert request.training.algorithm == "" and request.dataset.train_path == "dataset://fresh"


# -- the policy's fields --------------------------------------------------------------------------


def test_the_closing_fields_round_trip() -> None:
    raw = {
        "actions": ["alert", "retrain", "promote", "rollback"],
        "retrain": {"datasetId": "fresh"},
        "canary": {"steps": [0.5, 1.0]},
        "cooldownMinutes": 15,
        "enabled": False,
    }
    policy = MonitoringPolicy.parse(raw)
    assert policy.retrain_dataset == "fresh" and policy.cooldown_minutes == 15 and not policy.enabled
    assert policy.canary is not None and policy.canary.steps == (0.5, 1.0)
    assert MonitoringPolicy.from_json(policy.to_json()) == policy


def test_a_stored_policy_from_before_the_loop_reads_with_the_defaults() -> None:
    old = {
        "thresholds": {},
        "scheduleMinutes": None,
        "windowHours": 24,
        "accuracyFloor": None,
        "actions": ["alert"],
    }
    policy = MonitoringPolicy.from_json(old)
    assert policy.enabled and policy.cooldown_minutes == 60 and policy.retrain_dataset is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"actions": ["retrain"]}, "body.retrain.datasetId"),
        ({"actions": ["retrain"], "retrain": {"datasetId": ""}}, "body.retrain.datasetId"),
        ({"actions": ["retrain"], "retrain": "fresh"}, "body.retrain"),
        ({"actions": ["promote"]}, "body.actions"),
        ({"cooldownMinutes": 1.5}, "body.cooldownMinutes"),
        ({"enabled": 1}, "body.enabled"),
        ({"canary": {"steps": []}}, "body.canary.steps"),
        ({"canary": {"bogus": 1}}, "body.canary.bogus"),
    ],
)
def test_an_invalid_closing_field_is_named(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        MonitoringPolicy.parse(raw)
    assert field in [e.field for e in raised.value.errors]
