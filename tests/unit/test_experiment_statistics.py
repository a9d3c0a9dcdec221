"""The statistics of experiments, proved on seeded synthetic traffic: right verdicts, honest peeking,
bandits that learn, canaries that roll back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from aiservice.application.experimenting.bandits import (
    allocate,
    bandit_verdict,
    probability_best,
    thompson_allocation,
    ucb_allocation,
    with_floor,
)
from aiservice.application.experimenting.canary import CanaryAction, evaluate_canary
from aiservice.application.experimenting.statistics import (
    ArmSummary,
    Latency,
    Moments,
    Proportion,
    Verdict,
    difference_interval,
    interval,
    min_sample_size_means,
    min_sample_size_proportions,
    msprt_p_value,
    two_proportion_ztest,
    verdict,
    welch_ttest,
)
from aiservice.domain.experiments import BanditAlgorithm, BanditPlan, CanaryPlan

LOOKS, BATCH = 20, 250  # peek after every 250 outcomes per arm, 20 times


def binary(arm: str, n: int, successes: int) -> ArmSummary:
    return ArmSummary(arm, requests=n, outcome=Proportion(n, successes))


def cumulative_successes(
    rate_a: float, rate_b: float, runs: int, looks: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Per run and look, each arm's successes so far, and the outcomes per arm so far."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(BATCH, rate_a, (runs, looks)).cumsum(axis=1)
    b = rng.binomial(BATCH, rate_b, (runs, looks)).cumsum(axis=1)
    return a, b, BATCH * np.arange(1, looks + 1)


def first_winner(a: NDArray[np.int64], b: NDArray[np.int64], n: NDArray[np.int64]) -> Verdict | None:
    """Peek after every batch through ``verdict``; the first verdict that names a winner."""
    previous: Verdict | None = None
    for look, count in enumerate(n.tolist()):
        arms = [binary("A", count, int(a[look])), binary("B", count, int(b[look]))]
        previous = verdict(arms, champion="A", min_detectable_effect=0.02, previous=previous)
        if previous.winner:
            return previous
    return None


# -- the proof: right verdicts, and honest peeking -------------------------------------------------


def test_b_truly_better_is_declared_b_within_a_realistic_sample() -> None:
    """10% against 13% conversion; a fixed-horizon test would need about 1,800 per arm."""
    a, b, n = cumulative_successes(0.10, 0.13, runs=20, looks=LOOKS, seed=7)
    found = [first_winner(a[run], b[run], n) for run in range(20)]
    texts = [v.text if v else "keep running" for v in found]
    assert texts.count("B better at 95%") >= 18, texts


def test_equal_arms_peeked_at_every_batch_claim_a_winner_at_most_about_5_percent_of_the_time() -> None:
    """A/A, 200 seeded runs of 20 looks each, every look through ``verdict`` with its running state."""
    a, b, n = cumulative_successes(0.10, 0.10, runs=200, looks=LOOKS, seed=11)
    winners = [first_winner(a[run], b[run], n) for run in range(200)]
    false_positives = sum(w is not None for w in winners) / 200
    assert false_positives <= 0.07


def test_always_valid_p_value_keeps_false_positives_under_alpha_over_many_runs() -> None:
    """The same at scale, vectorised on the mSPRT core: 4,000 A/A runs with 20 looks."""
    a, b, n = cumulative_successes(0.10, 0.10, runs=4000, looks=LOOKS, seed=12)
    pa, pb = (a + 0.5) / (n + 1), (b + 0.5) / (n + 1)
    variance = pa * (1 - pa) / n + pb * (1 - pb) / n
    p_values = msprt_p_value(b / n - a / n, variance, tau=0.02)
    assert (p_values.min(axis=1) <= 0.05).mean() <= 0.06


def test_naive_z_test_with_the_same_peeking_exceeds_5_percent() -> None:
    """Why the verdict does not use the fixed-horizon p-value: peeking at it 20 times inflates false
    positives to several times alpha (so the tests above would fail if it did)."""
    a, b, n = cumulative_successes(0.10, 0.10, runs=4000, looks=LOOKS, seed=12)
    pooled = (a + b) / (2 * n)
    z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    p_values = 2 * stats.norm.sf(np.abs(z))
    assert (p_values.min(axis=1) <= 0.05).mean() > 0.12


def test_equal_continuous_rewards_peeked_at_every_batch_rarely_claim_a_winner() -> None:
    """A/A on a skewed continuous reward (Welch's t as the statistic, mSPRT deciding), 100 runs."""
    rng = np.random.default_rng(13)
    claims = 0
    for _ in range(100):
        a, b, previous = Moments(0, 0.0, 0.0), Moments(0, 0.0, 0.0), None
        for _ in range(LOOKS):
            a, b = (
                a.merge(Moments.of(rng.exponential(1.0, 100))),
                b.merge(Moments.of(rng.exponential(1.0, 100))),
            )
            arms = [ArmSummary("A", outcome=a), ArmSummary("B", outcome=b)]
            previous = verdict(arms, champion="A", min_detectable_effect=0.1, previous=previous)
            if previous.winner:
                claims += 1
                break
    assert claims / 100 <= 0.07


def test_equal_arms_with_enough_data_say_no_difference_detected() -> None:
    big = 200_000
    arms = [binary("A", big, 20_000), binary("B", big, 20_050)]
    result = verdict(arms, champion="A", min_detectable_effect=0.01)
    assert (result.text, result.winner) == ("no difference detected", None)


def test_too_few_outcomes_keep_the_experiment_running() -> None:
    result = verdict([binary("A", 10, 0), binary("B", 10, 10)], champion="A", min_detectable_effect=0.02)
    assert (result.text, result.winner) == ("keep running", None)


def test_lower_is_better_declares_the_arm_with_the_smaller_error() -> None:
    rng = np.random.default_rng(3)
    a = ArmSummary("A", outcome=Moments.of(rng.normal(1.00, 0.3, 3000)))
    b = ArmSummary("B", outcome=Moments.of(rng.normal(0.90, 0.3, 3000)))
    result = verdict([a, b], champion="A", min_detectable_effect=0.05, higher_is_better=False)
    assert (result.test, result.text) == ("Welch's t-test", "B better at 95%")


def test_champion_better_than_every_challenger_is_the_winner() -> None:
    arms = [binary("A", 5000, 750), binary("B", 5000, 500), binary("C", 5000, 510)]
    assert verdict(arms, champion="A", min_detectable_effect=0.02).text == "A better at 95%"


def test_verdict_serialises_to_json_with_camel_case_keys() -> None:
    arms = [binary("A", 4000, 400), binary("B", 4000, 520)]
    data = verdict(arms, champion="A", min_detectable_effect=0.03).to_dict()
    text = json.dumps(data)
    assert {"pValue", "minSampleSize", "ci", "test", "verdict"} <= set(data) and "Infinity" not in text


# -- tests, intervals, sample sizes ----------------------------------------------------------------


def test_two_proportion_z_test_matches_the_chi_square_test() -> None:
    a, b = Proportion(1000, 100), Proportion(1000, 130)
    table = [[100, 900], [130, 870]]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert two_proportion_ztest(a, b).p_value == pytest.approx(chi2.pvalue)


def test_welch_test_from_summaries_matches_scipy_on_the_raw_values() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 1, 200), rng.normal(0.3, 2, 150)
    expected = stats.ttest_ind(y, x, equal_var=False)
    result = welch_ttest(Moments.of(x), Moments.of(y))
    assert (result.statistic, result.p_value) == pytest.approx((expected.statistic, expected.pvalue))


def test_moments_merge_like_the_concatenated_values() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(0, 1, 70), rng.normal(2, 3, 30)
    merged, whole = Moments.of(x).merge(Moments.of(y)), Moments.of(np.concatenate([x, y]))
    assert (merged.n, merged.mean, merged.variance) == pytest.approx((whole.n, whole.mean, whole.variance))


def test_wilson_interval_matches_scipy() -> None:
    expected = stats.binomtest(30, 200).proportion_ci(0.95, method="wilson")
    result = interval(Proportion(200, 30))
    assert result is not None and (result.low, result.high) == pytest.approx((expected.low, expected.high))


def test_difference_interval_covers_the_true_difference() -> None:
    ci = difference_interval(Proportion(20_000, 2000), Proportion(20_000, 2600))
    assert ci.low < 0.03 < ci.high


def test_sample_size_for_10_to_13_percent_is_about_1800_per_arm() -> None:
    assert 1700 <= min_sample_size_proportions(0.10, 0.03) <= 1850


def test_sample_size_for_a_mean_follows_the_textbook_formula() -> None:
    # 2 * (1.96 + 0.8416)^2 * 1 / 0.2^2 = 392.4
    assert min_sample_size_means(1.0, 0.2) == 393


# -- bandits ---------------------------------------------------------------------------------------


def simulate_bandit(
    algorithm: BanditAlgorithm, rates: dict[str, float], rounds: int, seed: int
) -> list[float]:
    """Each round routes 200 requests by the current allocation; returns the best arm's share before
    each round (starting from an even split)."""
    rng = np.random.default_rng(seed)
    plan = BanditPlan(algorithm=algorithm, min_exploration=0.05)
    seen = {name: [0, 0] for name in rates}
    shares = {name: 1 / len(rates) for name in rates}
    best = max(rates, key=lambda name: rates[name])
    history = []
    for round_ in range(rounds):
        history.append(shares[best])
        names = list(rates)
        counts = rng.multinomial(200, [shares[name] for name in names])
        for name, count in zip(names, counts, strict=True):
            seen[name][0] += int(count)
            seen[name][1] += int(rng.binomial(count, rates[name]))
        arms = [binary(name, n, s) for name, (n, s) in seen.items()]
        shares = allocate(arms, plan, seed=seed * 1000 + round_)
    return history


@pytest.mark.parametrize("algorithm", list(BanditAlgorithm))
def test_bandit_shifts_traffic_to_the_better_arm(algorithm: BanditAlgorithm) -> None:
    history = simulate_bandit(algorithm, {"A": 0.05, "B": 0.05, "C": 0.12}, rounds=60, seed=21)
    assert history[0] == pytest.approx(1 / 3) and np.mean(history[-10:]) > 0.6


def test_every_arm_keeps_its_exploration_floor() -> None:
    arms = [binary("A", 10_000, 100), binary("B", 10_000, 2000)]
    shares = thompson_allocation(arms, min_share=0.1, seed=1)
    assert shares["A"] == pytest.approx(0.1, abs=1e-3) and sum(shares.values()) == pytest.approx(1.0)


def test_ucb_tries_an_arm_without_data_first() -> None:
    arms = [binary("A", 1000, 500), ArmSummary("B")]
    assert ucb_allocation(arms) == {"A": 0.0, "B": 1.0}


def test_floor_applies_to_any_shares() -> None:
    assert with_floor({"A": 1.0, "B": 0.0, "C": 0.0}, 0.1) == pytest.approx({"A": 0.8, "B": 0.1, "C": 0.1})


def test_probability_best_is_seeded_and_sums_to_one() -> None:
    arms = [binary("A", 500, 50), binary("B", 500, 60), ArmSummary("C", outcome=Proportion(0, 0))]
    first, again = probability_best(arms, seed=4), probability_best(arms, seed=4)
    assert first == again and math.isclose(sum(first.values()), 1.0)


def test_probability_best_of_continuous_rewards_favours_the_higher_mean() -> None:
    rng = np.random.default_rng(8)
    arms = [
        ArmSummary("A", outcome=Moments.of(rng.normal(1.0, 1.0, 400))),
        ArmSummary("B", outcome=Moments.of(rng.normal(1.5, 1.0, 400))),
    ]
    assert probability_best(arms, seed=1)["B"] > 0.99


def test_bandit_verdict_uses_the_posterior_probability_of_being_best() -> None:
    arms = [binary("A", 3000, 300), binary("B", 3000, 420)]
    result = bandit_verdict(arms, champion="A", min_detectable_effect=0.01, seed=2)
    assert (result.test, result.text, result.p_value) == (
        "posterior probability of being best",
        "B better at 95%",
        None,
    )


# -- canary guards ---------------------------------------------------------------------------------

PLAN = CanaryPlan(min_requests=500, min_seconds=60, max_error_rate=0.02, max_latency_ratio=1.5)


def arm(name: str, requests: int, errors: int, latency_ms: float, seed: int) -> ArmSummary:
    rng = np.random.default_rng(seed)
    return ArmSummary.of(
        name, latencies_ms=rng.gamma(4.0, latency_ms / 4, requests), errors=errors, requests=requests
    )


def test_canary_rolls_back_when_the_challengers_error_rate_spikes() -> None:
    decision = evaluate_canary(arm("A", 5000, 20, 20, 1), arm("B", 300, 30, 20, 2), PLAN, step_seconds=10)
    assert decision.action == CanaryAction.ROLLBACK and "error rate" in decision.reason


def test_canary_advances_when_healthy_after_the_steps_minimums() -> None:
    decision = evaluate_canary(arm("A", 5000, 20, 20, 1), arm("B", 800, 3, 21, 2), PLAN, step_seconds=120)
    assert decision.action == CanaryAction.ADVANCE


def test_canary_holds_a_healthy_challenger_until_the_step_has_enough_requests() -> None:
    decision = evaluate_canary(arm("A", 5000, 20, 20, 1), arm("B", 100, 0, 20, 2), PLAN, step_seconds=120)
    assert decision.action == CanaryAction.HOLD


def test_one_early_error_is_not_evidence_enough_to_roll_back() -> None:
    decision = evaluate_canary(arm("A", 5000, 20, 20, 1), arm("B", 20, 1, 20, 2), PLAN, step_seconds=5)
    assert decision.action == CanaryAction.HOLD


def test_canary_rolls_back_when_p95_latency_passes_its_ratio_guard() -> None:
    decision = evaluate_canary(arm("A", 5000, 0, 20, 1), arm("B", 600, 0, 45, 2), PLAN, step_seconds=120)
    assert decision.action == CanaryAction.ROLLBACK and "p95" in decision.reason


def test_canary_rolls_back_on_a_shown_metric_drop() -> None:
    plan = CanaryPlan(min_requests=500, min_seconds=0, max_metric_drop=0.02)
    champion = ArmSummary("A", 5000, 0, Latency.of([20] * 100), Proportion(5000, 4500))
    challenger = ArmSummary("B", 3000, 0, Latency.of([20] * 100), Proportion(3000, 2400))
    decision = evaluate_canary(champion, challenger, plan, step_seconds=10)
    assert decision.action == CanaryAction.ROLLBACK and "metric" in decision.reason
