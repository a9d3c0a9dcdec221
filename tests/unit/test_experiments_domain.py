"""Experiments in the domain: validation names the offending field, lifecycle rules, sticky routing."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiservice.domain.errors import Conflict, InvalidInput
from aiservice.domain.experiments import (
    Arm,
    Assigner,
    BanditPlan,
    CanaryPlan,
    Experiment,
    ExperimentMode,
    ExperimentStatus,
    KeySource,
    RoutingKeySpec,
    assign,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = [f"user-{i}" for i in range(20_000)]


def experiment(mode: ExperimentMode = ExperimentMode.AB, **overrides: Any) -> Experiment:
    arguments: dict[str, Any] = {
        "tenant_id": "t1",
        "name": "ranker test",
        "model_id": "m1",
        "mode": mode,
        "arms": [Arm("A", 1, 0.5), Arm("B", "challenger", 0.5)],
        "now": NOW,
        **overrides,
    }
    return Experiment.create(**arguments)


def fields_of(error: pytest.ExceptionInfo[InvalidInput]) -> set[str]:
    return {e.field for e in error.value.errors}


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arms", "field"),
    [
        ([Arm("A", 1)], "body.arms"),
        ([Arm("A", 1), Arm("A", 2)], "body.arms.1.name"),
        ([Arm("A", 1), Arm("B", 1)], "body.arms.1.reference"),
        ([Arm("A", 3), Arm("B", "3")], "body.arms.1.reference"),
        ([Arm("A", 1), Arm("B", 0)], "body.arms.1.reference"),
        ([Arm("A", 1, -1.0), Arm("B", 2)], "body.arms.0.weight"),
        ([Arm("A", 1, float("nan")), Arm("B", 2)], "body.arms.0.weight"),
        ([Arm("A", 1, 0.0), Arm("B", 2, 0.0)], "body.arms"),
    ],
)
def test_invalid_arms_are_named_by_field(arms: list[Arm], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        experiment(arms=arms)
    assert field in fields_of(error)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "body.name"),
        ({"champion": "Z"}, "body.champion"),
        ({"confidence": 1.0}, "body.confidence"),
        ({"min_detectable_effect": 0}, "body.minDetectableEffect"),
        ({"canary": CanaryPlan()}, "body.canary"),
        ({"bandit": BanditPlan()}, "body.bandit"),
    ],
)
def test_invalid_experiment_fields_are_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        experiment(**overrides)
    assert field in fields_of(error)


def test_every_invalid_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as error:
        experiment(name="", confidence=2, arms=[Arm("A", 1), Arm("B", 2, -1)])
    assert {"body.name", "body.confidence", "body.arms.1.weight"} <= fields_of(error)


def test_shadow_needs_a_champion_among_its_arms_and_does_not_promote() -> None:
    with pytest.raises(InvalidInput) as missing:
        experiment(ExperimentMode.SHADOW, champion="nobody")
    with pytest.raises(InvalidInput) as promoting:
        experiment(ExperimentMode.SHADOW, auto_promote=True)
    assert fields_of(missing) == {"body.champion"}
    assert fields_of(promoting) == {"body.autoPromote"}


def test_canary_has_exactly_a_champion_and_one_challenger() -> None:
    with pytest.raises(InvalidInput) as error:
        experiment(ExperimentMode.CANARY, arms=[Arm("A", 1), Arm("B", 2), Arm("C", 3)])
    assert "body.arms" in fields_of(error)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"steps": [0.5, 0.25]}, "body.canary.steps"),
        ({"steps": [0, 1]}, "body.canary.steps"),
        ({"minRequests": 0}, "body.canary.minRequests"),
        ({"maxErrorRate": 2}, "body.canary.maxErrorRate"),
        ({"maxLatencyRatio": 0.5}, "body.canary.maxLatencyRatio"),
        ({"maxMetricDrop": -1}, "body.canary.maxMetricDrop"),
        ({"speed": 1}, "body.canary.speed"),
    ],
)
def test_invalid_canary_plans_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        CanaryPlan.parse(raw)
    assert field in fields_of(error)


def test_bandit_exploration_floor_must_leave_room_for_every_arm() -> None:
    with pytest.raises(InvalidInput) as error:
        experiment(ExperimentMode.BANDIT, bandit=BanditPlan(min_exploration=0.6))
    assert fields_of(error) == {"body.bandit.minExploration"}


def test_bandit_plan_parses_camel_case_and_names_a_bad_algorithm() -> None:
    plan = BanditPlan.parse({"algorithm": "ucb", "rewardKind": "continuous", "minExploration": 0.1}, arms=3)
    with pytest.raises(InvalidInput) as error:
        BanditPlan.parse({"algorithm": "epsilon"}, arms=3)
    assert plan.algorithm == "ucb" and fields_of(error) == {"body.bandit.algorithm"}


def test_routing_key_takes_exactly_one_source() -> None:
    assert RoutingKeySpec.parse({"header": "X-User-Id"}) == RoutingKeySpec(KeySource.HEADER, "X-User-Id")
    with pytest.raises(InvalidInput) as error:
        RoutingKeySpec.parse({"header": "X-User-Id", "input": "user"})
    assert fields_of(error) == {"body.routingKey"}


# -- lifecycle -------------------------------------------------------------------------------------


def test_lifecycle_runs_draft_running_paused_completed() -> None:
    exp = experiment()
    exp.start(NOW)
    exp.pause(NOW)
    exp.resume(NOW)
    exp.complete("B", NOW + timedelta(days=1), "B better at 95%")
    assert (exp.status, exp.winner, exp.ended_at) == (
        ExperimentStatus.COMPLETED,
        "B",
        NOW + timedelta(days=1),
    )


@pytest.mark.parametrize("action", ["pause", "resume", "complete"])
def test_a_draft_cannot_pause_resume_or_complete(action: str) -> None:
    exp = experiment()
    with pytest.raises(Conflict) as error:
        if action == "complete":
            exp.complete("B", NOW)
        else:
            getattr(exp, action)(NOW)
    assert error.value.extra["status"] == "draft"


def test_a_stopped_experiment_cannot_start_again() -> None:
    exp = experiment()
    exp.start(NOW)
    exp.stop(NOW, "enough")
    with pytest.raises(Conflict):
        exp.start(NOW)


def test_the_winner_must_be_an_arm() -> None:
    exp = experiment()
    exp.start(NOW)
    with pytest.raises(InvalidInput) as error:
        exp.complete("Z", NOW)
    assert fields_of(error) == {"body.winner"}


def test_canary_steps_raise_the_challengers_share_until_the_last() -> None:
    exp = experiment(ExperimentMode.CANARY, canary=CanaryPlan(steps=(0.1, 0.5)))
    assert exp.weights()["B"] == 0.0  # a draft routes nothing to the challenger
    exp.start(NOW)
    shares = [exp.weights()["B"]]
    advanced = [exp.advance_canary(NOW), exp.advance_canary(NOW)]
    shares.append(exp.weights()["B"])
    assert (shares, advanced) == ([0.1, 0.5], [True, False])


def test_canary_roll_back_stops_the_experiment_with_its_reason() -> None:
    exp = experiment(ExperimentMode.CANARY)
    exp.start(NOW)
    exp.roll_back(NOW, "error rate 30%")
    assert (exp.status, exp.reason, exp.canary_share) == (
        ExperimentStatus.STOPPED,
        "rolled back: error rate 30%",
        0.0,
    )


def test_shadow_answers_with_the_champion_and_copies_to_challengers() -> None:
    exp = experiment(ExperimentMode.SHADOW)
    exp.start(NOW)
    assigner = exp.assigner()
    assert {assigner.assign(k).name for k in KEYS[:500]} == {"A"}
    assert [arm.name for arm in exp.shadow_arms()] == ["B"]


def test_bandit_allocation_must_cover_every_arm_and_sum_to_one() -> None:
    exp = experiment(ExperimentMode.BANDIT)
    exp.set_allocation({"A": 0.2, "B": 0.8}, NOW)
    with pytest.raises(InvalidInput):
        exp.set_allocation({"A": 0.5, "B": 0.6}, NOW)
    assert exp.weights() == {"A": 0.2, "B": 0.8}


def test_experiment_serialises_with_camel_case_keys() -> None:
    data = experiment(ExperimentMode.CANARY).to_json()
    assert data["canary"]["minRequests"] == 500 and data["minDetectableEffect"] == 0.01


# -- sticky assignment -----------------------------------------------------------------------------


def test_same_key_always_lands_on_the_same_arm() -> None:
    arms = [Arm("A", 1, 1.0), Arm("B", 2, 1.0), Arm("C", 3, 1.0)]
    first = [assign("exp-1", key, arms).name for key in KEYS[:2000]]
    again = [Assigner("exp-1", list(arms)).assign(key).name for key in KEYS[:2000]]
    assert first == again


def test_split_follows_the_weights_over_20k_keys() -> None:
    assigner = Assigner("exp-1", [Arm("A", 1, 0.7), Arm("B", 2, 0.2), Arm("C", 3, 0.1)])
    counts = Counter(assigner.assign(key).name for key in KEYS)
    shares = {name: count / len(KEYS) for name, count in counts.items()}
    assert shares == pytest.approx({"A": 0.7, "B": 0.2, "C": 0.1}, abs=0.015)


def test_moving_weights_from_50_50_to_60_40_moves_only_about_10_percent_of_keys() -> None:
    before = Assigner("exp-1", [Arm("A", 1, 0.5), Arm("B", 2, 0.5)])
    after = Assigner("exp-1", [Arm("A", 1, 0.6), Arm("B", 2, 0.4)])
    moves = Counter((before.assign(k).name, after.assign(k).name) for k in KEYS)
    moved = (moves[("A", "B")] + moves[("B", "A")]) / len(KEYS)
    assert moves[("A", "B")] == 0 and moved == pytest.approx(0.10, abs=0.015)


def test_different_experiments_split_the_same_keys_independently() -> None:
    arms = [Arm("A", 1), Arm("B", 2)]
    one = [assign("exp-1", key, arms).name for key in KEYS[:4000]]
    two = [assign("exp-2", key, arms).name for key in KEYS[:4000]]
    agreement = sum(a == b for a, b in zip(one, two, strict=True)) / len(one)
    assert agreement == pytest.approx(0.5, abs=0.05)


def test_without_a_routing_key_requests_still_follow_the_weights() -> None:
    assigner = Assigner("exp-1", [Arm("A", 1, 0.8), Arm("B", 2, 0.2)])
    counts = Counter(assigner.assign(None).name for _ in range(20_000))
    assert counts["A"] / 20_000 == pytest.approx(0.8, abs=0.02)


def test_a_rising_canary_share_keeps_earlier_canary_users_on_the_challenger() -> None:
    exp = experiment(ExperimentMode.CANARY)
    exp.start(NOW)
    small = exp.assigner()
    on_canary = {k for k in KEYS if small.assign(k).name == "B"}
    exp.advance_canary(NOW)
    larger = exp.assigner()
    assert on_canary and all(larger.assign(k).name == "B" for k in on_canary)


def test_assignment_is_fast_enough_for_the_hot_path() -> None:
    arms = [Arm("A", 1), Arm("B", 2), Arm("C", 3)]
    assign("exp-1", "warm", arms)
    timings = []
    for key in KEYS[:5000]:
        start = time.perf_counter()
        assign("exp-1", key, arms)
        timings.append(time.perf_counter() - start)
    timings.sort()
    assert timings[int(len(timings) * 0.99)] < 100e-6  # generous: about 10 µs on a laptop
