"""Reference profiles and drift detection on seeded synthetic traffic: a shifted feature is flagged and
only it, a resample of the reference is not, a correlation change that leaves every marginal alone is
caught by the domain classifier alone, and a profile is small JSON that reads back equal."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from aiservice.application.monitoring.drift import (
    DomainClassifier,
    DriftReport,
    DriftThresholds,
    detect_drift,
    psi,
)
from aiservice.application.monitoring.profiles import (
    MAX_PROFILE_BYTES,
    MISSING,
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
)
from aiservice.domain.errors import InvalidInput
from aiservice.infrastructure.monitoring.domain_classifier import SklearnDomainClassifier

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NUMERIC = [f"x{i}" for i in range(5)]
COLORS = ("red", "green", "blue")
SHARES = (0.5, 0.3, 0.2)


def traffic(
    rows: int, seed: int, *, shift: dict[str, float] | None = None, shares: tuple[float, ...] = SHARES
) -> pd.DataFrame:
    """Five standard normal features (one moved by ``shift`` standard deviations) and a colour."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(NUMERIC))), columns=NUMERIC)
    for name, by in (shift or {}).items():
        frame[name] += by
    frame["color"] = rng.choice(COLORS, size=rows, p=shares)
    return frame


def predict(frame: pd.DataFrame) -> np.ndarray:
    """A stand-in classifier: its labels follow x0 and x1."""
    return np.asarray(frame["x0"] + frame["x1"] > 0, dtype=np.int64)


def correlated(rows: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=rows)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return traffic(5000, seed=0)


@pytest.fixture(scope="module")
def profile(reference: pd.DataFrame) -> ReferenceProfile:
    return build_profile(reference, predictions=predict(reference), seed=0)


def check(
    profile: ReferenceProfile, window: pd.DataFrame, classifier: DomainClassifier | None = None, seed: int = 0
) -> DriftReport:
    return detect_drift(
        profile, window, computed_at=NOW, predictions=predict(window), classifier=classifier, seed=seed
    )


# Drift is flagged where it is, and only there.


def test_a_mean_shift_of_one_std_flags_that_feature_and_no_other(profile: ReferenceProfile) -> None:
    report = check(profile, traffic(1000, seed=1, shift={"x2": 1.0}))

    assert report.verdict == "drift" and report.drifted_features == ("x2",)
    x2 = next(f for f in report.features if f.feature == "x2")
    assert {t.method for t in x2.tests if t.drifted} == {"psi", "ks"}
    assert report.score == pytest.approx(x2.score) and report.score > 0.5


def test_changed_category_shares_flag_that_feature_and_no_other(profile: ReferenceProfile) -> None:
    report = check(profile, traffic(1000, seed=2, shares=(0.3, 0.3, 0.4)))

    assert report.drifted_features == ("color",)
    color = next(f for f in report.features if f.feature == "color")
    assert [t.method for t in color.tests if t.drifted] == ["psi", "chi2"]


def test_a_shift_of_an_input_the_model_reads_moves_the_prediction_distribution(
    profile: ReferenceProfile,
) -> None:
    report = check(profile, traffic(1000, seed=3, shift={"x0": 1.0}))

    assert report.prediction is not None and report.prediction.drifted
    assert report.prediction.kind == "categorical"


@pytest.mark.parametrize("rows", [500, 1000, 5000])
def test_fresh_draws_from_the_reference_distribution_are_never_flagged(
    profile: ReferenceProfile, rows: int
) -> None:
    reports = [check(profile, traffic(rows, seed=100 + seed)) for seed in range(20)]

    assert [r.verdict for r in reports] == ["no_drift"] * 20
    assert max(r.score or 0.0 for r in reports) < DriftThresholds().psi / 2


def test_a_feature_that_starts_arriving_empty_drifts(profile: ReferenceProfile) -> None:
    window = traffic(1000, seed=4)
    window.loc[: window.index[399], "x3"] = np.nan

    assert check(profile, window).drifted_features == ("x3",)


def test_values_outside_the_reference_range_drift_even_for_a_constant_feature() -> None:
    reference = pd.DataFrame({"version": np.full(1000, 3.0), "x": np.random.default_rng(0).normal(size=1000)})
    window = reference.assign(version=4.0)

    report = detect_drift(build_profile(reference), window, computed_at=NOW)

    assert report.drifted_features == ("version",) and report.score is not None and report.score > 5


def test_unseen_categories_are_counted_as_other_and_flag_when_frequent(profile: ReferenceProfile) -> None:
    window = traffic(1000, seed=5)
    window.loc[: window.index[299], "color"] = "purple"

    report = check(profile, window)

    assert report.drifted_features == ("color",)


def test_a_window_below_the_minimum_says_not_enough_data(profile: ReferenceProfile) -> None:
    report = check(profile, traffic(DriftThresholds().min_window - 1, seed=6, shift={"x2": 3.0}))

    assert report.verdict == "not_enough_data" and not report.drifted
    assert report.score is None and report.features == ()


def test_thresholds_are_per_model_values_read_back_from_camel_case() -> None:
    strict = DriftThresholds.from_dict({"psi": 0.1, "minWindow": 100})

    assert strict == DriftThresholds(psi=0.1, min_window=100)
    assert DriftThresholds.from_dict(strict.to_dict()) == strict
    with pytest.raises(InvalidInput):
        DriftThresholds(auc=0.4)
    with pytest.raises(InvalidInput):
        DriftThresholds.from_dict({"psi": "high"})


def test_the_report_serialises_to_camel_case_json(profile: ReferenceProfile) -> None:
    report = check(profile, traffic(1000, seed=7, shift={"x2": 1.0}))

    body = json.loads(json.dumps(report.to_dict()))

    assert body["verdict"] == "drift" and body["drifted"] is True and body["windowSize"] == 1000
    assert body["computedAt"] == NOW.isoformat() and body["thresholds"]["minWindow"] == 500
    ks = next(t for t in body["features"][2]["tests"] if t["method"] == "ks")
    assert ks["pValue"] < ks["threshold"] and ks["effect"] >= ks["minEffect"]


def test_psi_is_zero_for_equal_shares_and_finite_for_an_empty_bin() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) < 10


# The multivariate check.


def test_the_domain_classifier_cannot_tell_a_resample_from_the_reference(profile: ReferenceProfile) -> None:
    classifier = SklearnDomainClassifier()
    reports = [check(profile, traffic(1000, seed=200 + s), classifier=classifier, seed=s) for s in range(3)]

    aucs = [r.multivariate.auc for r in reports if r.multivariate is not None]
    assert len(aucs) == 3 and all(abs(auc - 0.5) < 0.05 for auc in aucs)
    assert not any(r.drifted for r in reports)


def test_a_flipped_correlation_is_missed_by_univariate_tests_and_caught_by_the_domain_classifier() -> None:
    reference = build_profile(correlated(5000, rho=0.8, seed=0), feature_names=["a", "b"])
    window = correlated(1000, rho=-0.8, seed=1)

    report = detect_drift(reference, window, computed_at=NOW, classifier=SklearnDomainClassifier())

    assert report.drifted_features == ()
    assert report.multivariate is not None and report.multivariate.auc > 0.8 and report.multivariate.drifted
    assert report.drifted


# Profiles.


def test_a_profile_reads_back_equal_from_json(profile: ReferenceProfile) -> None:
    body = json.dumps(profile.to_dict())

    assert ReferenceProfile.from_dict(json.loads(body)) == profile
    assert {"missingShare", "binCuts", "binProportions"} <= set(json.loads(body)["features"][0])


def test_a_profile_with_missing_values_reads_back_equal_from_json() -> None:
    frame = traffic(1000, seed=10)
    frame.loc[frame.index[::7], ["x1", "color"]] = None

    profile = build_profile(frame, predictions=frame["x4"].to_numpy())

    assert None in profile.features[1].sample
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_a_malformed_profile_is_refused_as_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        ReferenceProfile.from_dict({"formatVersion": 1, "rows": 3})


def test_a_profile_of_the_widest_data_stays_under_its_size_bound() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1000, 500)), columns=[f"n{i}" for i in range(500)])
    labels = np.array([f"{'long-category-label-' * 5}{i}" for i in range(50)], dtype=object)
    wide = pd.concat(
        [frame, pd.DataFrame({f"c{i}": rng.choice(labels, size=1000) for i in range(500)})], axis=1
    )

    profile = build_profile(wide, bins=20)

    assert len(json.dumps(profile.to_dict())) < MAX_PROFILE_BYTES
    assert profile.sample_rows == 100


def test_a_typical_profile_is_small() -> None:
    profile = build_profile(traffic(100_000, seed=0))

    assert profile.sample_rows == 2000 and len(json.dumps(profile.to_dict())) < 200_000


def test_a_dataframe_with_string_categories_and_missing_values_is_profiled() -> None:
    frame = pd.DataFrame(
        {
            "age": [31.0, np.nan, 45.0, 52.0, np.nan, 28.0, 39.0, 61.0, 23.0, 47.0, 35.0, 58.0],
            "plan": ["pro", "free", None, "free", "pro", "free", "team", None, "free", "pro", "free", "x"],
            "active": [True, False, True, True, False, True, True, False, True, True, False, True],
            "seats": pd.array([1, 2, None, 1, 3, 1, 2, 1, 1, 2, 3, 1], dtype="Int64"),
        }
    )

    profile = build_profile(frame, max_categories=2)

    age, plan, active, seats = profile.features
    assert (
        isinstance(age, NumericProfile)
        and age.count == 10
        and age.missing_share == pytest.approx(2 / 12, abs=1e-6)
    )
    assert isinstance(plan, CategoricalProfile)
    assert dict(zip(plan.categories, plan.counts, strict=True)) == {"free": 5, "pro": 3, OTHER: 2, MISSING: 2}
    assert isinstance(active, CategoricalProfile) and set(active.categories[:2]) == {"True", "False"}
    assert isinstance(seats, CategoricalProfile) and seats.missing_share == pytest.approx(1 / 12, abs=1e-6)


def test_dict_rows_a_dataframe_and_a_named_array_give_the_same_profile() -> None:
    frame = traffic(1000, seed=9)[NUMERIC]

    from_frame = build_profile(frame)

    assert build_profile(frame.to_dict("records")) == from_frame
    assert build_profile(frame.to_numpy(), feature_names=NUMERIC) == from_frame


def test_few_distinct_whole_numbers_are_categorical_and_regression_outputs_numeric() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rooms": rng.integers(1, 6, size=1000), "area": rng.integers(20, 400, size=1000)})

    profile = build_profile(frame, predictions=rng.normal(size=1000))

    assert [f.kind for f in profile.features] == ["categorical", "numeric"]
    assert profile.prediction is not None and profile.prediction.kind == "numeric"


def test_probabilities_are_refused_as_predictions() -> None:
    with pytest.raises(InvalidInput):
        build_profile(traffic(100, seed=0), predictions=np.full((100, 2), 0.5))
