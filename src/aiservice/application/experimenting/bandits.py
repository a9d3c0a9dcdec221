"""Bandits: traffic shares that follow the evidence, and the posterior probability of being best.

Posteriors: a binary reward is Beta-Bernoulli with a uniform ``Beta(1, 1)`` prior; a continuous reward's
mean is Normal with an empirical-Bayes prior ``N(pooled mean, pooled variance)`` worth one observation,
and the arm's own variance plugged in (so an arm without data draws from the pooled spread, not from
an arbitrary scale). Thompson sampling, in batch form, gives each arm the share of posterior draws in
which it is best (probability matching). UCB1 gives the arm with the highest upper confidence bound
``mean + sqrt(2 ln N / n)`` (scaled by the pooled standard deviation for a continuous reward) all the
traffic the floor leaves. Every arm keeps ``min_exploration`` of the traffic, so no arm starves of
evidence and a drift in the arms' rewards can still be seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from aiservice.application.experimenting.statistics import (
    ArmSummary,
    Interval,
    Moments,
    Proportion,
    Verdict,
    arm_results,
    better_text,
)
from aiservice.domain.experiments import BanditAlgorithm, BanditPlan

POSTERIOR_TEST = "posterior probability of being best"
DRAWS = 10_000


def _outcomes(arms: Sequence[ArmSummary]) -> list[Proportion | Moments]:
    """Each arm's outcome; an arm without feedback gets an empty one of the others' kind."""
    continuous = any(isinstance(s.outcome, Moments) for s in arms)
    empty: Proportion | Moments = Moments(0, 0.0, 0.0) if continuous else Proportion(0, 0)
    return [empty if s.outcome is None else s.outcome for s in arms]


def _pooled(outcomes: Sequence[Moments]) -> tuple[float, float]:
    """Mean and variance of every observation together (1.0 when none has spread yet)."""
    merged = Moments(0, 0.0, 0.0)
    for m in outcomes:
        merged = merged.merge(m)
    return merged.mean, merged.variance if merged.variance > 0 else 1.0


def posterior_draws(
    arms: Sequence[ArmSummary], draws: int = DRAWS, seed: int | None = None
) -> NDArray[np.float64]:
    """``draws x arms`` samples of each arm's mean reward from its posterior."""
    rng = np.random.default_rng(seed)
    outcomes = _outcomes(arms)
    proportions = [o for o in outcomes if isinstance(o, Proportion)]
    if len(proportions) == len(outcomes):
        return np.column_stack([rng.beta(1 + p.successes, 1 + p.n - p.successes, draws) for p in proportions])
    moments = [o if isinstance(o, Moments) else Moments(o.n, o.mean, o.variance) for o in outcomes]
    columns = []
    prior_mean, prior_variance = _pooled(moments)
    for m in moments:
        noise = m.variance if m.n > 1 and m.variance > 0 else prior_variance
        precision = 1 / prior_variance + m.n / noise
        mean = (prior_mean / prior_variance + m.n * m.mean / noise) / precision
        columns.append(rng.normal(mean, math.sqrt(1 / precision), draws))
    return np.column_stack(columns)


def probability_best(
    arms: Sequence[ArmSummary], draws: int = DRAWS, seed: int | None = None, higher_is_better: bool = True
) -> dict[str, float]:
    """Monte Carlo probability that each arm has the best mean reward."""
    samples = posterior_draws(arms, draws, seed)
    best = np.argmax(samples if higher_is_better else -samples, axis=1)
    counts = np.bincount(best, minlength=len(arms))
    return {s.arm: float(c) / draws for s, c in zip(arms, counts, strict=True)}


def with_floor(shares: Mapping[str, float], min_share: float) -> dict[str, float]:
    """``shares`` (summing to 1) squeezed so that each arm gets at least ``min_share``."""
    floor = min(max(min_share, 0.0), 1 / len(shares))
    total = sum(shares.values())
    rest = 1 - floor * len(shares)
    if total <= 0:
        return {name: 1 / len(shares) for name in shares}
    return {name: floor + rest * share / total for name, share in shares.items()}


def thompson_allocation(
    arms: Sequence[ArmSummary], min_share: float = 0.0, draws: int = DRAWS, seed: int | None = None
) -> dict[str, float]:
    return with_floor(probability_best(arms, draws, seed), min_share)


def ucb_scores(arms: Sequence[ArmSummary]) -> dict[str, float]:
    """UCB1 upper bounds; an arm with no outcome yet scores infinity (it must be tried first)."""
    outcomes = _outcomes(arms)
    total = sum(o.n for o in outcomes)
    scale = 1.0
    if any(isinstance(o, Moments) for o in outcomes):
        scale = math.sqrt(_pooled([o for o in outcomes if isinstance(o, Moments)])[1])
    return {
        s.arm: math.inf if o.n == 0 else o.mean + scale * math.sqrt(2 * math.log(max(total, 1)) / o.n)
        for s, o in zip(arms, outcomes, strict=True)
    }


def ucb_allocation(arms: Sequence[ArmSummary], min_share: float = 0.0) -> dict[str, float]:
    scores = ucb_scores(arms)
    leader = max(scores, key=lambda name: scores[name])
    return with_floor({name: float(name == leader) for name in scores}, min_share)


def allocate(arms: Sequence[ArmSummary], plan: BanditPlan, seed: int | None = None) -> dict[str, float]:
    """The next shares for a bandit experiment, by its plan's algorithm and floor."""
    if plan.algorithm == BanditAlgorithm.UCB:
        return ucb_allocation(arms, plan.min_exploration)
    return thompson_allocation(arms, plan.min_exploration, seed=seed)


def bandit_verdict(
    arms: Sequence[ArmSummary],
    *,
    champion: str,
    min_detectable_effect: float,
    confidence: float = 0.95,
    draws: int = DRAWS,
    seed: int | None = None,
) -> Verdict:
    """The leader wins once its posterior probability of being best reaches ``confidence``; "no
    difference detected" once, with that probability, the best and worst means are within the
    minimum detectable effect. A Bayesian statement: it is not a p-value, and none is reported."""
    samples = posterior_draws(arms, draws, seed)
    chances = np.bincount(np.argmax(samples, axis=1), minlength=len(arms)) / draws
    lead = int(np.argmax(chances))
    base = next(i for i, s in enumerate(arms) if s.arm == champion)
    lift = samples[:, lead] - samples[:, base]
    tail = (1 - confidence) / 2
    spread = float(np.quantile(samples.max(axis=1) - samples.min(axis=1), confidence))
    winner: str | None = None
    if chances[lead] >= confidence:
        winner, text = arms[lead].arm, better_text(arms[lead].arm, confidence)
    elif spread < min_detectable_effect:
        text = "no difference detected"
    else:
        text = "keep running"
    return Verdict(
        test=POSTERIOR_TEST,
        method=f"Monte Carlo over {draws} posterior draws",
        text=text,
        winner=winner,
        confidence=confidence,
        statistic=float(chances[lead]),
        difference=float(lift.mean()),
        ci=Interval(float(np.quantile(lift, tail)), float(np.quantile(lift, 1 - tail))),
        arms=arm_results(arms, confidence),
    )
