"""Reference profiles: what a model version's training (or validation) data looked like, in a few KB.

A profile is computed once from tabular reference data (a pandas DataFrame, a 2-D numpy array with
feature names, or a list of dict rows) and the model's predictions on it, and stored as JSON next to
the version. Drift detection (``drift.py``) compares a window of logged traffic with it.

Kinds. A feature is *numeric* when its values are numbers, except an integer-typed one (numpy ints,
Python ints, pandas ``Int64``) with at most ``MAX_INT_CATEGORIES`` distinct values (codes, classes,
flags, small counts: a chi-square test suits them better than bins full of ties), which is
*categorical*, as are strings, booleans and a feature with no value at all. Floats are numeric even
when whole. ``kinds=`` overrides the inference per feature.

Per numeric feature: count, missing share, mean, std, min, max, quantiles, quantile-based bin cuts
(deduplicated, so a feature with ties gets fewer bins) with the reference share of each bin, plus a
bin below the reference minimum and one above its maximum (empty in the reference: a window whose
values leave the reference range shows there, even for a constant feature). Per
categorical feature: the ``max_categories`` most frequent labels with their counts, the rest counted
as ``__other__`` and missing values as ``__missing__``. Labels are cut to ``MAX_LABEL_CHARS``.

Sample. One seeded uniform sample of reference *rows* (the same rows for every feature and the
prediction) is kept: its marginals feed the Kolmogorov-Smirnov tests and, because rows stay whole,
it is the reference side of the multivariate domain-classifier check. Its size is bounded by
``MAX_SAMPLE_ROWS`` rows and ``SAMPLE_VALUE_BUDGET`` values in all, never below ``MIN_SAMPLE_ROWS``.

Size bound. Numbers are kept to 6 significant digits. With at most ``MAX_FEATURES`` features, 20
bins and 20 categories each and the sample budget, ``len(json.dumps(profile.to_dict()))`` stays
under ``MAX_PROFILE_BYTES`` (4 MB); a typical 20-feature profile is about 500 KB.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from aiservice.domain.errors import InvalidInput

FeatureKind: TypeAlias = Literal["numeric", "categorical"]
FloatArray: TypeAlias = npt.NDArray[np.float64]
# A DataFrame (duck-typed: this layer does not import pandas), a 2-D ndarray, or dict rows.
Tabular: TypeAlias = Any

FORMAT_VERSION = 1
OTHER = "__other__"
MISSING = "__missing__"
PREDICTION = "__prediction__"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MAX_FEATURES = 1000
MAX_BINS = 20
MAX_CATEGORIES = 20
MAX_LABEL_CHARS = 64
MAX_INT_CATEGORIES = 10
MAX_SAMPLE_ROWS = 2000
MIN_SAMPLE_ROWS = 100
SAMPLE_VALUE_BUDGET = 100_000
MAX_PROFILE_BYTES = 4_000_000


@dataclass(frozen=True)
class NumericProfile:
    """A numeric feature's summary; ``proportions`` has one share per bin of ``bin_counts``."""

    name: str
    count: int  # values present
    missing_share: float
    mean: float
    std: float
    min: float  # rounded down
    max: float  # rounded up
    quantiles: tuple[tuple[float, float], ...]  # (q, value)
    cuts: tuple[float, ...]  # interior bin edges; a bin holds cuts[i-1] <= x < cuts[i]
    proportions: tuple[float, ...]  # of the present values
    sample: tuple[float | None, ...]  # the sampled rows' values, None where missing
    kind: FeatureKind = "numeric"


@dataclass(frozen=True)
class CategoricalProfile:
    """A categorical feature's label counts; the last two categories are ``OTHER`` and ``MISSING``."""

    name: str
    count: int  # values present
    missing_share: float
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    sample: tuple[int, ...]  # the sampled rows' category codes (indexes into ``categories``)
    kind: FeatureKind = "categorical"


FeatureProfile: TypeAlias = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class ReferenceProfile:
    """Every feature's profile, the prediction's (if given), and how the sample was drawn."""

    rows: int
    sample_rows: int
    seed: int
    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase; ``from_dict`` reads it back to an equal profile."""
        return {
            "formatVersion": FORMAT_VERSION,
            "rows": self.rows,
            "sampleRows": self.sample_rows,
            "seed": self.seed,
            "features": [_feature_to_dict(f) for f in self.features],
            "prediction": None if self.prediction is None else _feature_to_dict(self.prediction),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        try:
            if data["formatVersion"] != FORMAT_VERSION:
                raise InvalidInput(f"unknown reference profile format {data['formatVersion']!r}")
            prediction = data.get("prediction")
            return cls(
                rows=int(data["rows"]),
                sample_rows=int(data["sampleRows"]),
                seed=int(data["seed"]),
                features=tuple(_feature_from_dict(f) for f in data["features"]),
                prediction=None if prediction is None else _feature_from_dict(prediction),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"not a reference profile: {exc!r}") from exc


def build_profile(
    data: Tabular,
    *,
    predictions: npt.ArrayLike | None = None,
    feature_names: Sequence[str] | None = None,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = 10,
    max_categories: int = MAX_CATEGORIES,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile reference data (and the model's predictions on it: labels or regression values)."""
    if not 1 <= bins <= MAX_BINS or not 1 <= max_categories <= MAX_CATEGORIES:
        raise InvalidInput(f"bins must be 1..{MAX_BINS} and max_categories 1..{MAX_CATEGORIES}")
    columns = table_columns(data, feature_names)
    if not columns:
        raise InvalidInput("reference data has no feature")
    if len(columns) > MAX_FEATURES:
        raise InvalidInput(f"a reference profile covers at most {MAX_FEATURES} features")
    rows = len(next(iter(columns.values())))
    if rows == 0:
        raise InvalidInput("reference data has no row")
    if PREDICTION in columns:
        raise InvalidInput(f"{PREDICTION!r} is the prediction's name, not a feature's")
    if predictions is not None:
        columns[PREDICTION] = prediction_column(predictions, rows)
    width = len(columns)
    sample_rows = min(rows, MAX_SAMPLE_ROWS, max(MIN_SAMPLE_ROWS, SAMPLE_VALUE_BUDGET // width))
    picked = np.sort(np.random.default_rng(seed).choice(rows, size=sample_rows, replace=False))
    overrides = kinds or {}
    profiles = [
        _profile(name, column, overrides.get(name), picked, bins, max_categories)
        for name, column in columns.items()
    ]
    prediction = profiles.pop() if predictions is not None else None
    return ReferenceProfile(rows, sample_rows, seed, tuple(profiles), prediction)


def table_columns(data: Tabular, feature_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The columns of a DataFrame, a 2-D array (named by ``feature_names``, else f0, f1...) or dict rows."""
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        names = list(feature_names) if feature_names is not None else [str(c) for c in data.columns]
        by_name = {str(c): c for c in data.columns}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InvalidInput(f"the data lacks features {missing}")
        return {n: _series_column(data[by_name[n]]) for n in names}
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise InvalidInput("array data must be 2-D (rows x features)")
        names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(data.shape[1])]
        if len(names) != data.shape[1]:
            raise InvalidInput(f"{len(names)} feature names for {data.shape[1]} columns")
        return {n: data[:, i] for i, n in enumerate(names)}
    rows = cast(Sequence[Mapping[str, Any]], list(data))
    names = (
        list(feature_names) if feature_names is not None else list(dict.fromkeys(k for r in rows for k in r))
    )
    return {n: _object_array([r.get(n) for r in rows]) for n in names}


def _series_column(series: Any) -> np.ndarray:
    """A pandas column as an array; nullable integers (``Int64``) stay integers, not floats with NaN."""
    column = np.asarray(series.to_numpy())
    if getattr(series.dtype, "kind", None) in ("i", "u") and column.dtype.kind == "f":
        return _object_array([None if math.isnan(v) else int(v) for v in column.tolist()])
    return column


def prediction_column(predictions: npt.ArrayLike, rows: int) -> np.ndarray:
    """Predictions as one column: labels for a classifier, values for a regressor."""
    column = np.asarray(predictions)
    if column.ndim == 2 and column.shape[1] == 1:
        column = column[:, 0]
    if column.ndim != 1:
        raise InvalidInput("predictions must be one label or value per row, not class probabilities")
    if len(column) != rows:
        raise InvalidInput(f"{len(column)} predictions for {rows} rows")
    return column


def numeric_values(column: np.ndarray) -> FloatArray:
    """A column as floats, NaN where missing, non-finite or not a number."""
    if column.dtype.kind in "fiub":
        values = column.astype(np.float64)
    else:
        values = np.array([_float_or_nan(v) for v in column.tolist()], dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def category_codes(profile: CategoricalProfile, column: np.ndarray) -> npt.NDArray[np.int64]:
    """Each value's index into ``profile.categories``: unseen labels are ``OTHER``, missing ``MISSING``."""
    index = {label: i for i, label in enumerate(profile.categories[:-2])}
    other, missing = len(profile.categories) - 2, len(profile.categories) - 1
    labels = _labels(column)
    return np.array(
        [missing if label is None else index.get(label, other) for label in labels], dtype=np.int64
    )


def bin_counts(cuts: Sequence[float], low: float, high: float, values: FloatArray) -> npt.NDArray[np.int64]:
    """Present values per bin: below ``low``, each quantile bin from ``cuts``, above ``high``."""
    bins = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="right") + 1
    bins[values < low] = 0
    bins[values > high] = len(cuts) + 2
    return np.bincount(bins, minlength=len(cuts) + 3)


def sample_matrix(profile: ReferenceProfile) -> FloatArray:
    """The reference sample rows as floats: numeric values (NaN missing) and category codes."""
    columns = [
        np.array([np.nan if v is None else v for v in f.sample], dtype=np.float64)
        if isinstance(f, NumericProfile)
        else np.asarray(f.sample, dtype=np.float64)
        for f in profile.features
    ]
    return np.column_stack(columns) if columns else np.empty((profile.sample_rows, 0))


def _profile(
    name: str,
    column: np.ndarray,
    kind: FeatureKind | None,
    picked: npt.NDArray[np.intp],
    bins: int,
    max_categories: int,
) -> FeatureProfile:
    values = _numbers_or_none(column)
    if kind is None:
        kind = _infer_kind(column, values)
    if kind == "numeric":
        if values is None:
            values = numeric_values(column)
        if np.isfinite(values).any():
            return _numeric_profile(name, values, picked, bins)
        kind = "categorical"  # nothing to bin: every value is missing
    return _categorical_profile(name, column, picked, max_categories)


def _infer_kind(column: np.ndarray, values: FloatArray | None) -> FeatureKind:
    if values is None or not np.isfinite(values).any():
        return "categorical"
    if _is_integer(column) and len(np.unique(values[np.isfinite(values)])) <= MAX_INT_CATEGORIES:
        return "categorical"
    return "numeric"


def _is_integer(column: np.ndarray) -> bool:
    """An integer dtype, or objects that are all ints or missing (pandas' nullable ``Int64``)."""
    if column.dtype.kind in "iu":
        return True
    return column.dtype.kind == "O" and all(_is_missing(v) or isinstance(v, int) for v in column.tolist())


def _numeric_profile(
    name: str, values: FloatArray, picked: npt.NDArray[np.intp], bins: int
) -> NumericProfile:
    present = values[np.isfinite(values)]
    raw_cuts = np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])  # none for one bin
    cuts = tuple(sorted({_sig(float(c)) for c in raw_cuts}))
    low, high = _sig_outward(float(np.min(present)), -1), _sig_outward(float(np.max(present)), +1)
    counts = bin_counts(cuts, low, high, present)
    return NumericProfile(
        name=name,
        count=len(present),
        missing_share=_sig(1.0 - len(present) / len(values)),
        mean=_sig(float(np.mean(present))),
        std=_sig(float(np.std(present))),
        min=low,
        max=high,
        quantiles=tuple(
            (q, _sig(float(v))) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES), strict=True)
        ),
        cuts=cuts,
        proportions=tuple(_sig(float(c)) for c in counts / len(present)),
        sample=tuple(None if math.isnan(v) else _sig(v) for v in values[picked].tolist()),
    )


def _categorical_profile(
    name: str, column: np.ndarray, picked: npt.NDArray[np.intp], max_categories: int
) -> CategoricalProfile:
    labels = _labels(column)
    present = Counter(label for label in labels if label is not None)
    ranked = sorted(present.items(), key=lambda item: (-item[1], item[0]))
    top = [label for label, _ in ranked[:max_categories]]
    missing = len(labels) - sum(present.values())
    other = sum(count for _, count in ranked[max_categories:])
    profile = CategoricalProfile(
        name=name,
        count=len(labels) - missing,
        missing_share=_sig(missing / len(labels)),
        categories=(*top, OTHER, MISSING),
        counts=(*(present[label] for label in top), other, missing),
        sample=(),
    )
    return replace(profile, sample=tuple(category_codes(profile, column[picked]).tolist()))


def _labels(column: np.ndarray) -> list[str | None]:
    return [_label(v) for v in column.tolist()]


def _label(value: object) -> str | None:
    """One label per value, whatever its type: 1, 1.0 and "1" are the same category."""
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)[:MAX_LABEL_CHARS]


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' missing markers, without pandas


def _numbers_or_none(column: np.ndarray) -> FloatArray | None:
    """The column as floats when every present value is a number (not a bool), else None."""
    if column.dtype.kind in "fiu":
        return numeric_values(column)
    if column.dtype.kind != "O":
        return None
    items = column.tolist()
    if all(_is_missing(v) or (isinstance(v, int | float) and not isinstance(v, bool)) for v in items):
        return numeric_values(column)
    return None


def _object_array(values: list[Any]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _float_or_nan(value: object) -> float:
    if _is_missing(value) or isinstance(value, str | bytes):
        return math.nan
    try:
        return float(cast(float, value))
    except (TypeError, ValueError):
        return math.nan


def _sig(value: float) -> float:
    """Six significant digits: enough for bins and tests, and a third of a float's JSON size."""
    return float(f"{value:.6g}")


def _sig_outward(value: float, direction: int) -> float:
    """Six significant digits rounded down (-1) or up (+1): the range still holds every reference value."""
    rounded = _sig(value)
    if value != 0 and (rounded - value) * direction < 0:
        rounded = _sig(rounded + direction * 10 ** (math.floor(math.log10(abs(rounded))) - 5))
    return rounded


def _feature_to_dict(feature: FeatureProfile) -> dict[str, Any]:
    if isinstance(feature, CategoricalProfile):
        return {
            "name": feature.name,
            "kind": feature.kind,
            "count": feature.count,
            "missingShare": feature.missing_share,
            "categories": list(feature.categories),
            "counts": list(feature.counts),
            "sample": list(feature.sample),
        }
    return {
        "name": feature.name,
        "kind": feature.kind,
        "count": feature.count,
        "missingShare": feature.missing_share,
        "mean": feature.mean,
        "std": feature.std,
        "min": feature.min,
        "max": feature.max,
        "quantiles": [list(pair) for pair in feature.quantiles],
        "binCuts": list(feature.cuts),
        "binProportions": list(feature.proportions),
        "sample": list(feature.sample),
    }


def _feature_from_dict(data: Mapping[str, Any]) -> FeatureProfile:
    if data["kind"] == "categorical":
        return CategoricalProfile(
            name=str(data["name"]),
            count=int(data["count"]),
            missing_share=float(data["missingShare"]),
            categories=tuple(str(c) for c in data["categories"]),
            counts=tuple(int(c) for c in data["counts"]),
            sample=tuple(int(c) for c in data["sample"]),
        )
    if data["kind"] != "numeric":
        raise ValueError(f"unknown feature kind {data['kind']!r}")
    return NumericProfile(
        name=str(data["name"]),
        count=int(data["count"]),
        missing_share=float(data["missingShare"]),
        mean=float(data["mean"]),
        std=float(data["std"]),
        min=float(data["min"]),
        max=float(data["max"]),
        quantiles=tuple((float(q), float(v)) for q, v in data["quantiles"]),
        cuts=tuple(float(c) for c in data["binCuts"]),
        proportions=tuple(float(p) for p in data["binProportions"]),
        sample=tuple(None if v is None else float(v) for v in data["sample"]),
    )
