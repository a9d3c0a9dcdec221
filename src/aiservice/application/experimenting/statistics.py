"""The statistics of an A/B experiment: per-arm summaries, tests, intervals, sample sizes, and a verdict.

Peeking is handled by the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis
and Walsh, "Peeking at A/B Tests" (KDD 2017) / "Always Valid Inference" (Operations Research 2022).
For the difference of means ``theta = mean(B) - mean(A)`` with estimate ``d`` and plug-in variance
``V = var(A)/n(A) + var(B)/n(B)`` (a proportion's variance is ``p(1-p)``), and a normal mixture
``theta ~ N(0, tau^2)`` over the alternative, the likelihood ratio against ``theta = 0`` is::

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

``Lambda`` is a (asymptotically) non-negative martingale under the null, so by Ville's inequality
``P(sup_n Lambda_n >= 1/alpha) <= alpha``: the always-valid p-value ``p_n = min(p_{n-1}, 1/Lambda_n)``
may be read after every batch, and stopping as soon as ``p_n <= alpha`` keeps the false-positive rate at
``alpha``. Inverting the test gives a confidence *sequence* for ``theta``, ``d +- sqrt(2 V (V + tau^2) /
tau^2 * (ln(1/alpha) + ln((V + tau^2) / V) / 2))``, intersected with the earlier ones. ``tau`` defaults
to the minimum detectable effect, where the mixture is most powerful. Passing the previous ``Verdict``
carries the running minimum and intersection; without it each look is still valid, only more
conservative. With more than two arms each challenger is compared with the champion at
``alpha / (arms - 1)`` (Bonferroni).

The verdict's ``statistic`` is the classic fixed-horizon one (two-proportion z or Welch's t, from SciPy)
for readers who expect it; the decision uses only the always-valid p-value and confidence sequence:

- ``"<arm> better at 95%"``: the always-valid p-value is at most ``1 - confidence``;
- ``"no difference detected"``: every arm has the fixed-horizon minimum sample size and every
  confidence sequence of a difference lies inside ``(-mde, +mde)``: any effect left is smaller than
  the one the experiment was sized for;
- ``"keep running"``: otherwise, or while an arm has fewer than ``BURN_IN`` outcomes (the plug-in
  variance is not yet trustworthy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats  # type: ignore[import-untyped, unused-ignore]

BURN_IN = 30  # outcomes per arm before any sequential decision
TWO_PROPORTIONS = "two-proportion z-test"
WELCH = "Welch's t-test"


@dataclass(frozen=True)
class Proportion:
    """A binary outcome (correct, converted): ``successes`` of ``n``."""

    n: int
    successes: int

    @property
    def mean(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        return self.mean * (1.0 - self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "successes": self.successes, "rate": self.mean}


@dataclass(frozen=True)
class Moments:
    """A continuous outcome (reward, squared error): count, mean and unbiased variance, mergeable."""

    n: int
    mean: float
    variance: float  # ddof=1; 0 below two observations

    @classmethod
    def of(cls, values: ArrayLike) -> Moments:
        data = np.asarray(values, dtype=float).ravel()
        if data.size == 0:
            return cls(0, 0.0, 0.0)
        return cls(int(data.size), float(data.mean()), float(data.var(ddof=1)) if data.size > 1 else 0.0)

    def merge(self, other: Moments) -> Moments:
        """Both batches' moments together (Chan et al.), so windows add up without the raw values."""
        n = self.n + other.n
        if not self.n or not other.n:
            return self if other.n == 0 else other
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        squares = (
            self.variance * (self.n - 1) + other.variance * (other.n - 1) + delta**2 * self.n * other.n / n
        )
        return Moments(n, mean, squares / (n - 1))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "variance": self.variance}


Outcome = Proportion | Moments


@dataclass(frozen=True)
class Latency:
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, milliseconds: ArrayLike) -> Latency:
        data = np.asarray(milliseconds, dtype=float).ravel()
        if data.size == 0:
            return cls()
        p50, p95, p99 = (float(q) for q in np.percentile(data, [50, 95, 99]))
        return cls(int(data.size), p50, p95, p99)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.p50, "p95": self.p95, "p99": self.p99}


@dataclass(frozen=True)
class ArmSummary:
    """What one arm has seen: requests, failed requests, latencies and (with feedback) its outcomes."""

    arm: str
    requests: int = 0
    errors: int = 0
    latency: Latency = field(default_factory=Latency)
    outcome: Outcome | None = None

    @classmethod
    def of(
        cls,
        arm: str,
        *,
        latencies_ms: ArrayLike = (),
        errors: int = 0,
        requests: int | None = None,
        outcomes: ArrayLike | None = None,
        binary: bool = True,
    ) -> ArmSummary:
        """From raw observations; ``requests`` defaults to the latencies' count (plus errors)."""
        latency = Latency.of(latencies_ms)
        outcome: Outcome | None = None
        if outcomes is not None:
            data = np.asarray(outcomes, dtype=float).ravel()
            outcome = Proportion(int(data.size), int(np.count_nonzero(data))) if binary else Moments.of(data)
        total = latency.count + errors if requests is None else requests
        return cls(arm, total, errors, latency, outcome)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "requests": self.requests,
            "errors": self.errors,
            "errorRate": self.error_rate,
            "latencyMs": self.latency.to_dict(),
            "outcome": None if self.outcome is None else self.outcome.to_dict(),
        }


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def inside(self, bound: float) -> bool:
        """Whether the whole interval lies strictly within ``(-bound, bound)``."""
        return -bound < self.low and self.high < bound

    def intersect(self, other: Interval | None) -> Interval:
        return self if other is None else Interval(max(self.low, other.low), min(self.high, other.high))

    def to_dict(self) -> dict[str, Any]:
        return {"low": _finite(self.low), "high": _finite(self.high)}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no infinity


# -- fixed-horizon tests and intervals -------------------------------------------------------------


@dataclass(frozen=True)
class Significance:
    """A classic (fixed-horizon) test of B against A: valid for one look only."""

    test: str
    statistic: float
    p_value: float


def two_proportion_ztest(a: Proportion, b: Proportion) -> Significance:
    """Pooled two-proportion z-test of ``b - a`` (SciPy has none; the normal tail is SciPy's)."""
    if not a.n or not b.n:
        return Significance(TWO_PROPORTIONS, 0.0, 1.0)
    pooled = (a.successes + b.successes) / (a.n + b.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    z = (b.mean - a.mean) / se if se > 0 else 0.0
    return Significance(TWO_PROPORTIONS, z, float(2 * special.ndtr(-abs(z))))


def welch_ttest(a: Moments, b: Moments) -> Significance:
    """Welch's unequal-variance t-test of ``b - a``, from the summaries (``scipy.stats``)."""
    if a.n < 2 or b.n < 2 or a.variance + b.variance == 0:
        return Significance(WELCH, 0.0, 1.0)
    result = stats.ttest_ind_from_stats(
        b.mean, math.sqrt(b.variance), b.n, a.mean, math.sqrt(a.variance), a.n, equal_var=False
    )
    return Significance(WELCH, float(result.statistic), float(result.pvalue))


def fixed_test(a: Outcome, b: Outcome) -> Significance:
    if isinstance(a, Proportion) and isinstance(b, Proportion):
        return two_proportion_ztest(a, b)
    return welch_ttest(_moments(a), _moments(b))


def _moments(outcome: Outcome) -> Moments:
    if isinstance(outcome, Moments):
        return outcome
    n = outcome.n
    return Moments(n, outcome.mean, outcome.variance * n / (n - 1) if n > 1 else 0.0)


@lru_cache(maxsize=64)
def normal_quantile(probability: float) -> float:
    """``scipy.stats.norm.ppf``, cached: a verdict asks for the same few quantiles at every look."""
    return float(stats.norm.ppf(probability))


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for a proportion (what ``scipy.stats.binomtest(...).proportion_ci(
    method="wilson")`` returns, without the exact test that call computes first and we do not need)."""
    z = normal_quantile(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def interval(outcome: Outcome, confidence: float = 0.95) -> Interval | None:
    """One arm's metric: Wilson's interval for a proportion, Student's t for a mean (None: no data)."""
    if outcome.n == 0:
        return None
    if isinstance(outcome, Proportion):
        return wilson(outcome.successes, outcome.n, confidence)
    if outcome.n < 2:
        return Interval(-math.inf, math.inf)
    half = float(stats.t.ppf(0.5 + confidence / 2, outcome.n - 1)) * math.sqrt(outcome.variance / outcome.n)
    return Interval(outcome.mean - half, outcome.mean + half)


def difference_interval(a: Outcome, b: Outcome, confidence: float = 0.95) -> Interval:
    """Fixed-horizon interval of ``b - a`` (Wald for proportions, Welch-Satterthwaite t for means)."""
    va, vb = a.variance / max(a.n, 1), b.variance / max(b.n, 1)
    se = math.sqrt(va + vb)
    if isinstance(a, Proportion) and isinstance(b, Proportion):
        q = normal_quantile(0.5 + confidence / 2)
    else:
        ma, mb = _moments(a), _moments(b)
        va, vb = ma.variance / max(ma.n, 1), mb.variance / max(mb.n, 1)
        se = math.sqrt(va + vb)
        df_den = (va**2 / (ma.n - 1) if ma.n > 1 else 0) + (vb**2 / (mb.n - 1) if mb.n > 1 else 0)
        df = (va + vb) ** 2 / df_den if df_den > 0 else 1.0
        q = float(stats.t.ppf(0.5 + confidence / 2, df))
    d = b.mean - a.mean
    return Interval(d - q * se, d + q * se)


def min_sample_size_proportions(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per arm, to detect ``baseline -> baseline + mde`` with a two-sided test.

    The standard normal-approximation formula (statsmodels is not a dependency; the quantiles are
    ``scipy.stats.norm``): ``n = (z_{1-a/2} sqrt(2 p(1-p)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / mde^2``
    with ``p`` the mean of the two rates. It sizes a single look; the sequential test needs more.
    """
    p1, p2 = baseline, min(max(baseline + mde, 0.0), 1.0)
    p = (p1 + p2) / 2
    z_alpha, z_power = normal_quantile(1 - alpha / 2), normal_quantile(power)
    root = z_alpha * math.sqrt(2 * p * (1 - p)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / mde**2)


def min_sample_size_means(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per arm, to detect a shift of ``mde`` in a mean with standard deviation ``sd`` (normal
    approximation, ``n = 2 (z_{1-a/2} + z_{power})^2 sd^2 / mde^2``)."""
    z = normal_quantile(1 - alpha / 2) + normal_quantile(power)
    return math.ceil(2 * z**2 * sd**2 / mde**2)


# -- the always-valid (sequential) test ------------------------------------------------------------


def msprt_p_value(difference: ArrayLike, variance: ArrayLike, tau: float) -> NDArray[np.float64]:
    """``min(1, 1/Lambda)`` of the normal-mixture SPRT at one look (vectorised over looks or runs);
    the running minimum over looks is the always-valid p-value."""
    d, v = np.asarray(difference, dtype=float), np.asarray(variance, dtype=float)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + d * d * t2 / (2 * v * (v + t2))
    usable = np.isfinite(v) & (v > 0)  # no variance yet (or no data): no evidence
    return np.where(usable, np.minimum(1.0, np.exp(-np.nan_to_num(log_lambda, nan=0.0))), 1.0)


def confidence_sequence_half_width(variance: ArrayLike, tau: float, alpha: float) -> NDArray[np.float64]:
    """Half-width of the mSPRT's confidence sequence for the difference at level ``1 - alpha``."""
    v = np.asarray(variance, dtype=float)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / alpha) + 0.5 * np.log((v + t2) / v)))
    return np.where(np.isfinite(v) & (v > 0), width, np.inf)


def difference_variance(a: Outcome, b: Outcome) -> float:
    """Plug-in ``Var(mean B - mean A)``; a proportion's rate is shrunk by half a success and half a
    failure so that an arm of all successes (or none) does not claim zero variance."""

    def one(outcome: Outcome) -> float:
        if outcome.n == 0:
            return math.inf
        if isinstance(outcome, Proportion):
            p = (outcome.successes + 0.5) / (outcome.n + 1)
            return p * (1 - p) / outcome.n
        return outcome.variance / outcome.n

    return one(a) + one(b)


@dataclass(frozen=True)
class Comparison:
    """One challenger against the champion: fixed-horizon statistic, always-valid p and sequence."""

    champion: str
    challenger: str
    difference: float  # challenger - champion
    statistic: float
    p_value: float  # always-valid: the running minimum over looks
    ci: Interval  # confidence sequence: the running intersection over looks

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "difference": self.difference,
            "statistic": self.statistic,
            "pValue": self.p_value,
            "ci": self.ci.to_dict(),
        }


def compare(
    champion: ArmSummary,
    challenger: ArmSummary,
    *,
    alpha: float,
    tau: float,
    previous: Comparison | None = None,
) -> Comparison:
    """The sequential comparison at this look, carrying ``previous`` (the same pair's last look)."""
    a, b = champion.outcome, challenger.outcome
    if a is None or b is None:
        raise ValueError("both arms need outcomes to be compared")
    difference, variance = b.mean - a.mean, difference_variance(a, b)
    p_value = float(msprt_p_value(difference, variance, tau))
    half = float(confidence_sequence_half_width(variance, tau, alpha))
    ci = Interval(difference - half, difference + half)
    if previous is not None:
        p_value, ci = min(p_value, previous.p_value), ci.intersect(previous.ci)
    statistic = fixed_test(a, b).statistic
    return Comparison(champion.arm, challenger.arm, difference, statistic, p_value, ci)


# -- the verdict -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmResult:
    arm: str
    summary: ArmSummary
    metric: float | None
    ci: Interval | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "metric": self.metric,
            "ci": None if self.ci is None else self.ci.to_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    """The plain answer for the results page, and the evidence behind it."""

    test: str
    method: str
    text: str
    winner: str | None
    confidence: float
    statistic: float | None = None
    p_value: float | None = None  # always-valid (None for a bandit's posterior)
    difference: float | None = None
    ci: Interval | None = None  # of the difference
    min_sample_size: int | None = None
    arms: tuple[ArmResult, ...] = ()
    comparisons: tuple[Comparison, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "method": self.method,
            "verdict": self.text,
            "winner": self.winner,
            "confidence": self.confidence,
            "statistic": self.statistic,
            "pValue": self.p_value,
            "difference": self.difference,
            "ci": None if self.ci is None else self.ci.to_dict(),
            "minSampleSize": self.min_sample_size,
            "arms": [arm.to_dict() for arm in self.arms],
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


KEEP_RUNNING = "keep running"
NO_DIFFERENCE = "no difference detected"


def better_text(arm: str, confidence: float) -> str:
    return f"{arm} better at {confidence * 100:g}%"


def arm_results(arms: Iterable[ArmSummary], confidence: float) -> tuple[ArmResult, ...]:
    return tuple(
        ArmResult(
            s.arm,
            s,
            None if s.outcome is None or s.outcome.n == 0 else s.outcome.mean,
            None if s.outcome is None else interval(s.outcome, confidence),
        )
        for s in arms
    )


def verdict(
    arms: Sequence[ArmSummary],
    *,
    champion: str,
    min_detectable_effect: float,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    tau: float | None = None,
    power: float = 0.8,
    previous: Verdict | None = None,
) -> Verdict:
    """The experiment's verdict at this look (see the module docstring for the rule).

    ``previous`` is the verdict of the last look, whose running p-values and confidence sequences this
    one continues; ``higher_is_better`` is False for errors (RMSE, latency as an outcome).
    """
    base = next((s for s in arms if s.arm == champion), None)
    others = [s for s in arms if s.arm != champion]
    if base is None or not others:
        raise ValueError("a verdict needs the champion's summary and at least one challenger's")
    alpha = (1 - confidence) / max(len(others), 1)
    test = TWO_PROPORTIONS if isinstance(base.outcome, Proportion) else WELCH
    mde, mixture = min_detectable_effect, tau or min_detectable_effect
    method = f"mSPRT always-valid p-value (normal mixture, tau={mixture:g}), Bonferroni over challengers"
    results = arm_results(arms, confidence)
    needed = _min_sample_size(base.outcome, others, mde, alpha, power)
    waiting = Verdict(test, method, KEEP_RUNNING, None, confidence, min_sample_size=needed, arms=results)
    if any(s.outcome is None or s.outcome.n < BURN_IN for s in arms):
        return waiting
    earlier = {c.challenger: c for c in previous.comparisons} if previous else {}
    comparisons = tuple(
        compare(base, s, alpha=alpha, tau=mixture, previous=earlier.get(s.arm)) for s in others
    )
    sign = 1.0 if higher_is_better else -1.0
    significant = [c for c in comparisons if c.p_value <= alpha]
    better = [c for c in significant if sign * c.difference > 0]
    winner: str | None = None
    chosen = min(comparisons, key=lambda c: c.p_value)
    if better:
        chosen = max(better, key=lambda c: sign * c.difference)
        winner, text = chosen.challenger, better_text(chosen.challenger, confidence)
    elif len(significant) == len(comparisons):  # the champion beats every challenger
        winner, text = champion, better_text(champion, confidence)
    elif (
        needed is not None
        and all(s.outcome is not None and s.outcome.n >= needed for s in arms)
        and all(c.ci.inside(mde) for c in comparisons)
    ):
        text = NO_DIFFERENCE
    else:
        text = KEEP_RUNNING
    return replace(
        waiting,
        text=text,
        winner=winner,
        statistic=chosen.statistic,
        p_value=chosen.p_value,
        difference=chosen.difference,
        ci=chosen.ci,
        comparisons=comparisons,
    )


def _min_sample_size(
    base: Outcome | None, others: Sequence[ArmSummary], mde: float, alpha: float, power: float
) -> int | None:
    if base is None or base.n == 0:
        return None
    if isinstance(base, Proportion):
        return min_sample_size_proportions(base.mean, mde, alpha, power)
    pooled = [base, *(s.outcome for s in others if isinstance(s.outcome, Moments) and s.outcome.n > 1)]
    variance = float(np.mean([m.variance for m in pooled]))
    return min_sample_size_means(math.sqrt(variance), mde, alpha, power) if variance > 0 else None
