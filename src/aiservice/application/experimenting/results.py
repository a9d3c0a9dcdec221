"""An experiment's results: per-arm summaries from its observations (joined with feedback), and the
verdict of the statistics layer.

The outcome each observation contributes, by what feedback says:

- a bandit: the reward (or, without one, 1 when the true label equals the prediction, else 0);
- a labelled regression (the model's category is ``regression``, or labels and predictions are
  numbers that are not all whole): the squared error, lower is better (Welch's t-test);
- a labelled classification: correct or not (the two-proportion z-test on accuracy);
- rewards without labels: the reward, higher is better.

Observations without feedback count for requests, errors, latency and the prediction distribution
only. Shadow observations count for their arm like any other: in a shadow experiment they are the
challengers' only ones, joined to the same request ids (and so the same feedback) as the champion's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aiservice.application.experimenting.bandits import bandit_verdict
from aiservice.application.experimenting.ports import ObservedRow
from aiservice.application.experimenting.statistics import ArmSummary, Verdict, verdict
from aiservice.domain.experiments import Experiment, ExperimentMode, RewardKind

DISTRIBUTION_BUCKETS = 20  # the most frequent predictions listed per arm


class Metric:
    ACCURACY = "accuracy"
    SQUARED_ERROR = "squaredError"
    REWARD = "reward"
    NONE = "none"


@dataclass(frozen=True)
class Results:
    experiment: Experiment
    metric: str
    higher_is_better: bool
    summaries: tuple[ArmSummary, ...]
    distributions: dict[str, dict[str, int]]
    shadow_requests: dict[str, int]
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        judged = {a["arm"]: a for a in self.verdict.to_dict()["arms"]}
        arms = []
        for summary in self.summaries:
            arm = dict(judged.get(summary.arm) or summary.to_dict())
            arm["predictions"] = self.distributions.get(summary.arm, {})
            arm["shadowRequests"] = self.shadow_requests.get(summary.arm, 0)
            arm["champion"] = summary.arm == self.experiment.champion
            arms.append(arm)
        verdict = {k: v for k, v in self.verdict.to_dict().items() if k != "arms"}
        return {
            "experimentId": self.experiment.id,
            "status": self.experiment.status.value,
            "mode": self.experiment.mode.value,
            "weights": self.experiment.weights(),
            "metric": self.metric,
            "higherIsBetter": self.higher_is_better,
            "arms": arms,
            "verdict": verdict,
        }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_of(experiment: Experiment, rows: Sequence[ObservedRow], category: str | None) -> str:
    if experiment.mode == ExperimentMode.BANDIT:
        return Metric.REWARD
    labelled = [r for r in rows if r.has_label and not r.error]
    if labelled:
        numeric = all(_number(r.label) and _number(r.prediction) for r in labelled)
        fractional = any(float(r.prediction) != int(r.prediction) for r in labelled if _number(r.prediction))
        if category == "regression" or (category != "classification" and numeric and fractional):
            return Metric.SQUARED_ERROR
        return Metric.ACCURACY
    if any(r.reward is not None for r in rows):
        return Metric.REWARD
    return Metric.ACCURACY if category == "classification" else Metric.NONE


def _outcome(row: ObservedRow, metric: str) -> float | None:
    if row.error:
        return None
    if metric == Metric.REWARD:
        if row.reward is not None:
            return float(row.reward)
        return float(row.label == row.prediction) if row.has_label else None
    if not row.has_label:
        return None
    if metric == Metric.SQUARED_ERROR:
        if not (_number(row.label) and _number(row.prediction)):
            return None
        return (float(row.label) - float(row.prediction)) ** 2
    return float(row.label == row.prediction)


def summarize(
    experiment: Experiment, rows: Sequence[ObservedRow], category: str | None = None
) -> tuple[str, bool, tuple[ArmSummary, ...], dict[str, dict[str, int]], dict[str, int]]:
    """(metric, higher is better, one summary per arm in the experiment's order, the distribution of
    each arm's predictions, each arm's shadow requests)."""
    metric = metric_of(experiment, rows, category)
    binary = metric == Metric.ACCURACY or (
        metric == Metric.REWARD
        and (experiment.bandit is None or experiment.bandit.reward_kind == RewardKind.BINARY)
        and all(r.reward is None or r.reward in (0.0, 1.0) for r in rows)
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    outcomes: dict[str, list[float]] = defaultdict(list)
    predictions: dict[str, Counter[str]] = defaultdict(Counter)
    shadows: Counter[str] = Counter()
    for row in rows:
        if row.error:
            errors[row.arm] += 1
        else:
            latencies[row.arm].append(row.latency_ms)
            predictions[row.arm][_key(row.prediction)] += 1
        if row.shadow:
            shadows[row.arm] += 1
        value = _outcome(row, metric)
        if value is not None:
            outcomes[row.arm].append(value)
    summaries = tuple(
        ArmSummary.of(
            arm.name,
            latencies_ms=latencies[arm.name],
            errors=errors[arm.name],
            outcomes=outcomes[arm.name] if metric != Metric.NONE else None,
            binary=binary,
        )
        for arm in experiment.arms
    )
    distributions = {
        arm: dict(counter.most_common(DISTRIBUTION_BUCKETS)) for arm, counter in predictions.items()
    }
    return metric, metric != Metric.SQUARED_ERROR, summaries, distributions, dict(shadows)


def _key(prediction: Any) -> str:
    return prediction if isinstance(prediction, str) else orjson.dumps(prediction).decode()


def judge(
    experiment: Experiment, summaries: Sequence[ArmSummary], higher_is_better: bool, seed: int | None = None
) -> Verdict:
    """The verdict at this look: the posterior for a bandit, the always-valid test otherwise."""
    if experiment.mode == ExperimentMode.BANDIT:
        return bandit_verdict(
            summaries,
            champion=experiment.champion,
            min_detectable_effect=experiment.min_detectable_effect,
            confidence=experiment.confidence,
            seed=seed,
        )
    return verdict(
        summaries,
        champion=experiment.champion,
        min_detectable_effect=experiment.min_detectable_effect,
        confidence=experiment.confidence,
        higher_is_better=higher_is_better,
    )


def results_of(
    experiment: Experiment, rows: Sequence[ObservedRow], category: str | None = None, seed: int | None = 0
) -> Results:
    metric, higher, summaries, distributions, shadows = summarize(experiment, rows, category)
    return Results(
        experiment,
        metric,
        higher,
        summaries,
        distributions,
        shadows,
        judge(experiment, summaries, higher, seed),
    )
