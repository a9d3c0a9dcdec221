"""Drift: how far a window of logged traffic has moved from a version's reference profile.

Per feature, and for the prediction, two views:

- **PSI** (population stability index) over the reference bins, plus a bin for missing values (a
  feature that starts arriving empty has drifted), or over the reference categories (unseen labels
  count as ``__other__``). Both sides' shares are floored at ``PSI_EPSILON`` so an empty bin is
  finite. The feature's ``score`` is its PSI; ``PSI > thresholds.psi`` (0.2, the usual "significant
  shift") flags drift on its own.
- **A significance test**: two-sample Kolmogorov-Smirnov against the reference sample (numeric), or
  chi-square on the 2 x k contingency table of reference and window counts (categorical). It flags
  drift only when its p-value is below ``thresholds.p_value`` divided by the number of tested columns
  (Bonferroni: ``p_value`` bounds the chance that unchanged traffic trips *any* test of the window,
  not each one) *and* the effect is large enough to matter: the KS statistic D at least
  ``ks_statistic``, or Cohen's w, ``sqrt(sum((c - r)^2 / ((c + r) / 2)))`` over the category shares,
  at least ``chi2_effect``. Without the effect floor a window of 100,000 rows flags any shift,
  however small.

PSI's own noise on unchanged traffic is about ``(bins - 1) / window`` (0.04 for 21 categories and
500 rows), hence ``min_window`` = 500: below it the verdict is ``not_enough_data`` and nothing is
tested. With the defaults, resampled windows of 500 to 10,000 rows are not flagged (none in 1,000
seeded windows of 8 features), while a mean shift of half a standard deviation (PSI about 0.25,
D about 0.2) or a move of a tenth of the rows between categories (w about 0.25) is.

The **multivariate** check asks a ``DomainClassifier`` port how well it tells the reference sample
rows from the window's rows (cross-validated ROC AUC): about 0.5 when they are alike, higher when
the joint distribution moved, even with unchanged marginals (a correlation that flipped). AUC above
``thresholds.auc`` flags drift.

The report's overall ``score`` (the ``ai_service_model_drift_score`` metric) is the largest PSI over
the features and the prediction; ``drifted`` is true when any feature, the prediction or the
multivariate check flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from aiservice.application.monitoring.profiles import (
    CategoricalProfile,
    FeatureKind,
    FeatureProfile,
    FloatArray,
    NumericProfile,
    ReferenceProfile,
    Tabular,
    bin_counts,
    category_codes,
    numeric_values,
    prediction_column,
    sample_matrix,
    table_columns,
)
from aiservice.domain.errors import InvalidInput

PSI_EPSILON = 1e-4
MIN_TEST_VALUES = 20  # present values a KS test needs on each side to say anything
Verdict: TypeAlias = Literal["drift", "no_drift", "not_enough_data"]


class DomainClassifier(Protocol):
    """Tells reference rows from current rows; its ROC AUC measures multivariate drift.

    Both matrices hold floats: numeric values with NaN where missing, categorical features as the
    profile's category codes.
    """

    def auc(self, reference: FloatArray, current: FloatArray, seed: int) -> float: ...


@dataclass(frozen=True)
class DriftThresholds:
    """When a model's traffic counts as drifted; stored per model, defaults documented above."""

    psi: float = 0.2
    p_value: float = 0.01
    ks_statistic: float = 0.1
    chi2_effect: float = 0.15
    auc: float = 0.7
    min_window: int = 500

    def __post_init__(self) -> None:
        if not (self.psi > 0 and 0 < self.p_value < 1 and 0 <= self.ks_statistic <= 1):
            raise InvalidInput("drift thresholds need psi > 0, 0 < pValue < 1 and 0 <= ksStatistic <= 1")
        if not (self.chi2_effect >= 0 and 0.5 <= self.auc <= 1 and self.min_window >= MIN_TEST_VALUES):
            raise InvalidInput(f"drift thresholds need 0.5 <= auc <= 1 and minWindow >= {MIN_TEST_VALUES}")

    def to_dict(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftThresholds:
        """Any missing key keeps its default."""
        fields = {k: data[_camel(k)] for k in asdict(cls()) if _camel(k) in data}
        try:
            return cls(**fields)
        except TypeError as exc:  # a value of the wrong type
            raise InvalidInput(f"invalid drift thresholds: {exc}") from exc


@dataclass(frozen=True)
class DriftTest:
    """One test of one feature: PSI against its threshold, or a p-value with an effect floor."""

    method: Literal["psi", "ks", "chi2"]
    statistic: float  # PSI, KS D, or chi-square
    p_value: float | None
    threshold: float  # psi: drifted when statistic > threshold; ks, chi2: p_value < threshold (corrected)...
    min_effect: float | None  # ...and effect >= min_effect
    effect: float | None  # ks: D; chi2: Cohen's w
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FeatureDrift:
    """A feature's (or the prediction's) tests; ``score`` is its PSI."""

    feature: str
    kind: FeatureKind
    score: float
    tests: tuple[DriftTest, ...]
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "score": self.score,
            "drifted": self.drifted,
            "tests": [t.to_dict() for t in self.tests],
        }


@dataclass(frozen=True)
class MultivariateDrift:
    method: Literal["domain_classifier"]
    auc: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "auc": self.auc, "threshold": self.threshold, "drifted": self.drifted}


@dataclass(frozen=True)
class DriftReport:
    computed_at: datetime
    window_size: int
    verdict: Verdict
    score: float | None  # max PSI over features and prediction; None without a verdict
    thresholds: DriftThresholds
    features: tuple[FeatureDrift, ...] = ()
    prediction: FeatureDrift | None = None
    multivariate: MultivariateDrift | None = None

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "computedAt": self.computed_at.isoformat(),
            "windowSize": self.window_size,
            "verdict": self.verdict,
            "drifted": self.drifted,
            "score": self.score,
            "thresholds": self.thresholds.to_dict(),
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
        }


def detect_drift(
    profile: ReferenceProfile,
    window: Tabular,
    *,
    computed_at: datetime,
    predictions: npt.ArrayLike | None = None,
    thresholds: DriftThresholds = DriftThresholds(),
    classifier: DomainClassifier | None = None,
    seed: int = 0,
) -> DriftReport:
    """Compare a window (same forms as the reference data) and its predictions with the profile.

    CPU-bound (tens of milliseconds, plus the classifier's fit): call it off the event loop.
    Predictions are tested only when the profile has a prediction profile too.
    """
    columns = table_columns(window, profile.feature_names)
    size = len(next(iter(columns.values()))) if columns else 0
    if size < thresholds.min_window:
        return DriftReport(computed_at, size, "not_enough_data", None, thresholds)
    predicted = profile.prediction if predictions is not None else None
    alpha = thresholds.p_value / (len(profile.features) + (predicted is not None))
    features = tuple(feature_drift(p, columns[p.name], thresholds, alpha) for p in profile.features)
    prediction = None
    if predicted is not None and predictions is not None:
        prediction = feature_drift(predicted, prediction_column(predictions, size), thresholds, alpha)
    multivariate = None
    if classifier is not None:
        current = _encode(profile, columns)
        auc = float(classifier.auc(sample_matrix(profile), current, seed))
        multivariate = MultivariateDrift("domain_classifier", auc, thresholds.auc, auc > thresholds.auc)
    scored = [*features, *([prediction] if prediction is not None else [])]
    drifted = any(f.drifted for f in scored) or (multivariate is not None and multivariate.drifted)
    score = max(f.score for f in scored)
    verdict: Verdict = "drift" if drifted else "no_drift"
    return DriftReport(computed_at, size, verdict, score, thresholds, features, prediction, multivariate)


def feature_drift(
    profile: FeatureProfile, column: np.ndarray, thresholds: DriftThresholds, alpha: float | None = None
) -> FeatureDrift:
    """One feature's PSI and significance test (at ``alpha``, default ``thresholds.p_value``)."""
    alpha = thresholds.p_value if alpha is None else alpha
    if isinstance(profile, NumericProfile):
        tests = _numeric_tests(profile, numeric_values(column), thresholds, alpha)
    else:
        tests = _categorical_tests(profile, category_codes(profile, column), thresholds, alpha)
    return FeatureDrift(profile.name, profile.kind, tests[0].statistic, tests, any(t.drifted for t in tests))


def psi(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Population stability index of two share vectors over the same bins, shares floored at epsilon."""
    r = np.clip(np.asarray(reference, dtype=np.float64), PSI_EPSILON, None)
    c = np.clip(np.asarray(current, dtype=np.float64), PSI_EPSILON, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _numeric_tests(
    profile: NumericProfile, values: FloatArray, thresholds: DriftThresholds, alpha: float
) -> tuple[DriftTest, ...]:
    present = values[np.isfinite(values)]
    counts = bin_counts(profile.cuts, profile.min, profile.max, present)
    kept = 1.0 - profile.missing_share
    reference = [*(p * kept for p in profile.proportions), profile.missing_share]
    current = [*(counts / len(values)), 1.0 - len(present) / len(values)]
    tests = [_psi_test(reference, current, thresholds)]
    sample = np.array([v for v in profile.sample if v is not None], dtype=np.float64)
    if len(present) >= MIN_TEST_VALUES and len(sample) >= MIN_TEST_VALUES:
        result = stats.ks_2samp(sample, present, method="asymp")  # exact is slow, and warns on ties
        d, p = float(result.statistic), float(result.pvalue)
        drifted = p < alpha and d >= thresholds.ks_statistic
        tests.append(DriftTest("ks", d, p, alpha, thresholds.ks_statistic, d, drifted))
    return tuple(tests)


def _categorical_tests(
    profile: CategoricalProfile, codes: npt.NDArray[np.int64], thresholds: DriftThresholds, alpha: float
) -> tuple[DriftTest, ...]:
    observed = np.bincount(codes, minlength=len(profile.categories)).astype(np.float64)
    expected = np.asarray(profile.counts, dtype=np.float64)
    reference, current = expected / expected.sum(), observed / observed.sum()
    tests = [_psi_test(reference, current, thresholds)]
    table = np.vstack([expected, observed])[:, (expected + observed) > 0]
    if table.shape[1] >= 2:
        result = stats.chi2_contingency(table, correction=False)
        chi2, p = float(result.statistic), float(result.pvalue)
        shares = table / table.sum(axis=1, keepdims=True)
        w = math.sqrt(float(np.sum((shares[1] - shares[0]) ** 2 / ((shares[0] + shares[1]) / 2))))
        drifted = p < alpha and w >= thresholds.chi2_effect
        tests.append(DriftTest("chi2", chi2, p, alpha, thresholds.chi2_effect, w, drifted))
    return tuple(tests)


def _psi_test(reference: npt.ArrayLike, current: npt.ArrayLike, thresholds: DriftThresholds) -> DriftTest:
    score = psi(reference, current)
    return DriftTest("psi", score, None, thresholds.psi, None, None, score > thresholds.psi)


def _encode(profile: ReferenceProfile, columns: Mapping[str, np.ndarray]) -> FloatArray:
    """The window in the reference sample's encoding: numeric floats and category codes."""
    encoded = [
        numeric_values(columns[f.name])
        if isinstance(f, NumericProfile)
        else category_codes(f, columns[f.name]).astype(np.float64)
        for f in profile.features
    ]
    return np.column_stack(encoded)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
