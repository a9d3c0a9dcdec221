"""Canary guards: at each look, advance the challenger's share, hold it, or roll it back.

Rollback needs evidence, advance needs the step's minimum requests and time with every guard held:

1. error rate: roll back when the lower bound of the challenger's Wilson interval (one-sided, at the
   experiment's confidence) is above ``max_error_rate``, so a handful of early failures is enough when
   they are nearly all failures, and one unlucky error among a few requests is not;
2. latency: roll back when the challenger's p95 exceeds ``max_latency_ratio`` times the champion's,
   once each side has ``LATENCY_SAMPLES`` latencies (a p95 of fewer is mostly noise);
3. metric (optional ``max_metric_drop``): roll back when the always-valid confidence sequence of
   ``challenger - champion`` lies wholly below ``-max_metric_drop`` (a drop shown, not suspected);
4. otherwise hold until ``min_requests`` and ``min_seconds`` are reached, and while an error rate or a
   latency ratio above its guard is not yet conclusive; then advance.

``advance`` at the last step means the challenger has earned all the traffic: the caller completes the
experiment with it as the winner (``Experiment.advance_canary`` returns False there).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiservice.application.experimenting.statistics import ArmSummary, compare, wilson
from aiservice.domain.experiments import CanaryPlan

LATENCY_SAMPLES = 50


class CanaryAction(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class CanaryDecision:
    action: CanaryAction
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "reason": self.reason}


def error_rate_lower_bound(errors: int, requests: int, confidence: float) -> float:
    """One-sided Wilson lower bound of an error rate (0 without requests)."""
    if requests == 0:
        return 0.0
    return wilson(errors, requests, 2 * confidence - 1).low


def evaluate_canary(
    champion: ArmSummary,
    challenger: ArmSummary,
    plan: CanaryPlan,
    *,
    step_seconds: float,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> CanaryDecision:
    """The decision at this look of the current step (``step_seconds`` since it began)."""
    rate, guard = challenger.error_rate, plan.max_error_rate
    low = error_rate_lower_bound(challenger.errors, challenger.requests, confidence)
    if low > guard:
        return _rollback(
            f"challenger error rate {rate:.1%} ({challenger.errors}/{challenger.requests}) is above the "
            f"{guard:.1%} guard at {confidence:.0%} confidence (lower bound {low:.1%})"
        )
    ratio = _latency_ratio(champion, challenger)
    if ratio is not None and ratio > plan.max_latency_ratio:
        return _rollback(
            f"challenger p95 latency is {ratio:.2f}x the champion's (guard {plan.max_latency_ratio:g}x)"
        )
    drop = _metric_drop(champion, challenger, plan, confidence, higher_is_better)
    if drop:
        return _rollback(drop)
    if challenger.requests < plan.min_requests or step_seconds < plan.min_seconds:
        return CanaryDecision(
            CanaryAction.HOLD,
            f"step needs {plan.min_requests} requests and {plan.min_seconds:g}s: has "
            f"{challenger.requests} and {step_seconds:.0f}s",
        )
    if rate > guard:
        return CanaryDecision(
            CanaryAction.HOLD, f"error rate {rate:.1%} above the {guard:.1%} guard, not yet conclusive"
        )
    if ratio is None:
        return CanaryDecision(CanaryAction.HOLD, f"fewer than {LATENCY_SAMPLES} latencies on an arm")
    return CanaryDecision(
        CanaryAction.ADVANCE,
        f"guards held over {challenger.requests} requests: error rate {rate:.1%}, p95 ratio {ratio:.2f}x",
    )


def _rollback(reason: str) -> CanaryDecision:
    return CanaryDecision(CanaryAction.ROLLBACK, reason)


def _latency_ratio(champion: ArmSummary, challenger: ArmSummary) -> float | None:
    a, b = champion.latency, challenger.latency
    if min(a.count, b.count) < LATENCY_SAMPLES or a.p95 is None or b.p95 is None:
        return None
    return b.p95 / a.p95 if a.p95 > 0 else None


def _metric_drop(
    champion: ArmSummary, challenger: ArmSummary, plan: CanaryPlan, confidence: float, higher_is_better: bool
) -> str:
    if plan.max_metric_drop is None or champion.outcome is None or challenger.outcome is None:
        return ""
    if min(champion.outcome.n, challenger.outcome.n) < 2:
        return ""
    # The mixture is tuned to the drop we guard against: that is the effect we must see quickly.
    comparison = compare(champion, challenger, alpha=1 - confidence, tau=max(plan.max_metric_drop, 1e-6))
    worse = -comparison.ci.high if higher_is_better else comparison.ci.low  # the smallest plausible drop
    if worse > plan.max_metric_drop:
        return (
            f"challenger metric is worse than the champion's by at least {worse:.4g} "
            f"(guard {plan.max_metric_drop:g}) at {confidence:.0%} confidence"
        )
    return ""
