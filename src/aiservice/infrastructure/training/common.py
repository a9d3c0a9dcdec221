"""What every trainer shares: data checks, label encoding, device names, JSON-safe parameters and warnings.

Every framework sees classes in one order (sorted, as ``np.unique`` gives them), so an artifact's output
columns line up with ``TrainedModel.classes`` whichever framework made it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.infrastructure.datasets.streaming import MAX_LABELS, TableBatches
from aiservice.infrastructure.training.spec import Batches, Data, Table, TrainingError, TrainSpec

TASKS = ("classification", "regression")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Targets:
    """Training and validation targets ready for a framework: class indices or floats."""

    train: np.ndarray  # int64 class indices, or float targets
    validation: np.ndarray | None
    classes: np.ndarray | None  # the labels, index order; None for regression

    @property
    def class_list(self) -> list[Any] | None:
        """The labels as JSON-safe Python values."""
        return None if self.classes is None else [json_safe(c) for c in self.classes]


def wrapper_prediction(model: Any, classes: np.ndarray | None, X: np.ndarray) -> Prediction:
    """A boosting library's sklearn wrapper's answer in the original labels: a regressor's values, or a
    classifier's probabilities with the label of each row's most likely class."""
    if classes is None:
        return Prediction(values=np.asarray(model.predict(X)))
    probabilities = np.asarray(model.predict_proba(X))
    return Prediction(values=classes[probabilities.argmax(axis=1)], probabilities=probabilities)


def check_task(spec: TrainSpec) -> None:
    if spec.task not in TASKS:
        raise TrainingError("params", f"task must be one of {', '.join(TASKS)}, not {spec.task!r}.")


def check_tables(train: Table, validation: Table | None, ndim: int | None = None) -> None:
    """Rows and targets agree, features agree between the tables, and (for nets) the rank is right."""
    for name, table in (("training", train), ("validation", validation)):
        if table is None:
            continue
        if table.X.ndim < 2 or len(table.X) == 0:
            raise TrainingError("data", f"The {name} data has no rows, or its features are not a 2-D table.")
        if table.y.ndim != 1 or len(table.y) != len(table.X):
            raise TrainingError(
                "data", f"The {name} data has {len(table.X)} rows but {len(table.y)} targets."
            )
        if ndim is not None:
            _check_rank(name, table.X.shape, ndim)
    if validation is not None and validation.X.shape[1:] != train.X.shape[1:]:
        raise TrainingError(
            "data",
            f"Validation rows have shape {validation.X.shape[1:]}, training rows {train.X.shape[1:]}.",
        )


def _check_rank(name: str, shape: tuple[int, ...], ndim: int) -> None:
    if len(shape) != ndim:
        kind = "(rows, features)" if ndim == 2 else "(rows, height, width, channels) images"
        raise TrainingError("data", f"The {name} data has shape {shape}; this model takes {kind}.")


def check_finite(train: Table, validation: Table | None) -> None:
    """Networks learn nothing from NaN or infinite features: refuse them rather than train to NaN."""
    for name, table in (("training", train), ("validation", validation)):
        if table is not None:
            _require_finite(table.X, name)


def _require_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise TrainingError(
            "data", f"The {name} features hold missing (NaN) or infinite values; impute them first."
        )


def targets(task: str, train: Table, validation: Table | None) -> Targets:
    if task == "classification":
        return _class_targets(train, validation)
    return Targets(
        train=_regression_target(train.y, "training"),
        validation=None if validation is None else _regression_target(validation.y, "validation"),
        classes=None,
    )


def _class_targets(train: Table, validation: Table | None) -> Targets:
    try:
        classes, indices = np.unique(train.y, return_inverse=True)
    except TypeError as exc:  # labels of mixed types, e.g. str and int
        raise TrainingError("data", f"The class labels cannot be ordered (mixed types?): {exc}") from exc
    _check_classes(classes)
    validation_indices = None if validation is None else class_indices(classes, validation.y, "validation")
    return Targets(train=indices.astype(np.int64), validation=validation_indices, classes=classes)


def _check_classes(classes: np.ndarray) -> None:
    if len(classes) < 2:
        raise TrainingError(
            "data", f"Classification needs at least 2 classes; the training data has {len(classes)}."
        )


def class_indices(classes: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """Each label's index in ``classes``; a label the training data never shows is a data error."""
    try:
        unseen = sorted({repr(json_safe(v)) for v in np.setdiff1d(y, classes)})
    except TypeError as exc:
        raise TrainingError("data", f"The {name} labels cannot be compared: {exc}") from exc
    if unseen:
        raise TrainingError(
            "data", f"The {name} data holds labels the training data never shows: {', '.join(unseen[:10])}."
        )
    return np.searchsorted(classes, y).astype(np.int64)


def _regression_target(y: np.ndarray, name: str) -> np.ndarray:
    try:
        values = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TrainingError(
            "data", f"Regression needs a numeric target; the {name} target is not ({exc})."
        ) from exc
    if not np.isfinite(values).all():
        raise TrainingError("data", f"The {name} target holds missing (NaN) or infinite values.")
    return values


def cuda_index(device: str) -> int | None:
    """None for "cpu"; the GPU index for "cuda" (0) or "cuda:N"; anything else is a device error."""
    if device == "cpu":
        return None
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise TrainingError("device", f"Unknown device {device!r}; use 'cpu' or 'cuda'.")
    return int(match.group(1) or 0)


NO_CUDA = "CUDA was requested but no GPU is available"


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, tuples as lists, non-finite floats and objects as text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    return repr(value)


@contextlib.contextmanager
def logged_warnings() -> Iterator[None]:
    """Warnings a framework raises while fitting (convergence, fallbacks) are logged, never fatal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: set[str] = set()
    for warning in caught:
        text = f"{warning.category.__name__}: {warning.message}"
        if text not in seen:
            seen.add(text)
            log.warning("while training: %s", text)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def fit_error(exc: Exception, params: dict[str, Any], otherwise: str) -> TrainingError:
    """A framework's error while fitting: a parameter error when it names a parameter the job set (or the
    text value given to one), else ``otherwise``."""
    message = first_line(exc)
    named = [
        name
        for name, value in params.items()
        if re.search(rf"\b{re.escape(name)}\b", message)
        or (isinstance(value, str) and f"'{value}'" in message)
    ]
    if named:
        return TrainingError("params", f"{', '.join(named)}: {message}")
    return TrainingError(otherwise, message)


NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hiddenSizes": [64], "dropout": 0.0},
    "cnn": {"channels": [16, 32], "kernelSize": 3, "hiddenSizes": [64], "dropout": 0.0},
}


def network_params(spec: TrainSpec) -> dict[str, Any]:
    """The network's shape: the job's parameters over the defaults, checked as the catalog checks them."""
    from aiservice.infrastructure.training import catalog

    check_task(spec)
    errors = catalog.validate(spec.framework, spec.algorithm, spec.params)
    if errors:
        raise TrainingError("params", "; ".join(f"{e.field}: {e.message}" for e in errors))
    for name, value, low in (("epochs", spec.epochs, 1), ("batch_size", spec.batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TrainingError("params", f"{name} must be a positive integer, not {value!r}.")
    rate = spec.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise TrainingError("params", f"learning_rate must be a positive number, not {rate!r}.")
    return {**NETWORK_DEFAULTS[spec.algorithm], **spec.params}


@dataclass(frozen=True)
class NetworkInputs:
    """What both network trainers (torch, keras) establish before building a net, from a table or a stream."""

    params: dict[str, Any]  # the network's shape, defaults filled in
    shape: list[int]  # one row's shape
    classes: np.ndarray | None  # the labels in output order; None for regression
    scale: tuple[np.ndarray, np.ndarray] | None  # an MLP's per-feature mean and std; None for a CNN
    target_scale: tuple[float, float] | None  # a regressor's target mean and std (1 if constant)

    @property
    def class_list(self) -> list[Any] | None:
        """The labels as JSON-safe Python values."""
        return None if self.classes is None else [json_safe(c) for c in self.classes]


@dataclass(frozen=True)
class InMemory:
    """Tables a network trains on as before: shuffled by the framework, every epoch from memory."""

    inputs: NetworkInputs
    train: Table
    validation: Table | None
    target: Targets


@dataclass(frozen=True)
class Streamed:
    """Data a network trains on batch by batch, one pass over ``train`` per epoch."""

    inputs: NetworkInputs
    train: Batches
    validation: Batches | None

    def epoch(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of ``(X, y)`` minibatches, shuffled within ``SHUFFLE_ROWS`` rows at a time."""
        batches = (encoded(self.inputs, batch, "training") for batch in self.train.batches())
        return shuffled(batches, batch_size, rng)

    def validation_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
        """One pass over the validation rows as ``(X, y)`` chunks; None without validation data."""
        if self.validation is None:
            return None
        return (encoded(self.inputs, batch, "validation") for batch in self.validation.batches())


def prepare(spec: TrainSpec, train: Data, validation: Data | None) -> InMemory | Streamed:
    """Check the parameters and the data the same way for every network framework: tables stay in memory;
    when either is a stream, both are read as streams."""
    if isinstance(train, Table) and (validation is None or isinstance(validation, Table)):
        inputs, target = network_inputs(spec, train, validation)
        return InMemory(inputs, train, validation, target)
    stream = TableBatches(train) if isinstance(train, Table) else train
    held = TableBatches(validation) if isinstance(validation, Table) else validation
    return Streamed(stream_inputs(spec, stream), stream, held)


def network_inputs(spec: TrainSpec, train: Table, validation: Table | None) -> tuple[NetworkInputs, Targets]:
    """Check the parameters and the data the same way for every network framework."""
    params = network_params(spec)
    check_tables(train, validation, ndim=2 if spec.algorithm == "mlp" else 4)
    check_finite(train, validation)
    shape = input_shape(spec, [int(d) for d in train.X.shape[1:]])
    target = targets(spec.task, train, validation)
    scale = standardisation(train.X.astype(np.float64)) if spec.algorithm == "mlp" else None
    target_scale = None
    if target.classes is None:
        target_scale = (float(target.train.mean()), float(target.train.std()) or 1.0)
    return NetworkInputs(params, shape, target.classes, scale, target_scale), target


def stream_inputs(spec: TrainSpec, train: Batches) -> NetworkInputs:
    """``network_inputs`` for data read in batches, checked from ``train.stats()`` (one pass of running
    sums); each batch's labels and values are checked as ``encoded`` prepares it."""
    params = network_params(spec)
    stats = train.stats()
    shape = [int(d) for d in stats.mean.shape]
    if stats.rows == 0:
        raise TrainingError("data", "The training data has no rows.")
    _check_rank("training", (stats.rows, *shape), 2 if spec.algorithm == "mlp" else 4)
    _require_finite(np.concatenate([stats.mean.ravel(), stats.std.ravel()]), "training")
    shape = input_shape(spec, shape)
    scale = scaling(stats.mean, stats.std) if spec.algorithm == "mlp" else None
    if spec.task == "classification":
        if stats.labels is None:
            raise TrainingError(
                "data", f"Classification takes at most {MAX_LABELS} classes; the training data has more."
            )
        _check_classes(stats.labels)
        return NetworkInputs(params, shape, stats.labels, scale, None)
    if stats.target_mean is None or stats.target_std is None:
        raise TrainingError("data", "Regression needs a numeric target; the training target is not.")
    if not math.isfinite(stats.target_mean + stats.target_std):
        raise TrainingError("data", "The training target holds missing (NaN) or infinite values.")
    return NetworkInputs(params, shape, None, scale, (stats.target_mean, stats.target_std or 1.0))


def input_shape(spec: TrainSpec, shape: list[int]) -> list[int]:
    """The shape of one row; it must agree with the model's configured ``inputShape`` when it has one."""
    configured = spec.configuration.get("inputShape")
    if configured:
        declared = [int(d) for d in configured]
        if len(declared) != len(shape) or any(
            d > 0 and d != s for d, s in zip(declared, shape, strict=False)
        ):
            raise TrainingError(
                "data", f"The data's rows have shape {shape}, but the model declares inputShape {declared}."
            )
    return shape


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 where a column is constant), baked into a network."""
    return scaling(values.mean(axis=0), values.std(axis=0))


def scaling(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``standardisation`` from moments already known: a constant column's deviation becomes 1."""
    return mean, np.where(std > 1e-12, std, 1.0)


# --- batches for networks trained on a stream ------------------------------------------------------------

SHUFFLE_ROWS = 1 << 16  # rows shuffled together when training on a stream


def encoded(inputs: NetworkInputs, batch: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch as a network takes it: float32 features, and class indices or float targets."""
    X = np.ascontiguousarray(batch.X, dtype=np.float32)
    if list(X.shape[1:]) != inputs.shape:
        raise TrainingError(
            "data", f"The {name} rows have shape {list(X.shape[1:])}, the model's {inputs.shape}."
        )
    _require_finite(X, name)
    if inputs.classes is not None:
        return X, class_indices(inputs.classes, batch.y, name)
    return X, _regression_target(batch.y, name)


def shuffled(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    size: int,
    rng: np.random.Generator,
    buffer_rows: int = SHUFFLE_ROWS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(X, y)`` minibatches of ``size`` rows (the last one shorter), each drawn from a buffer of about
    ``buffer_rows`` rows shuffled together: as many minibatches as ``DataLoader`` makes of the same rows."""
    buffer: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for pair in pairs:
        buffer.append(pair)
        count += len(pair[1])
        if count >= buffer_rows:
            X, y = _mixed(buffer, rng)
            whole = len(y) - len(y) % size  # the rest waits for the next buffer
            yield from _slices(X[:whole], y[:whole], size)
            buffer, count = [(X[whole:], y[whole:])], len(y) - whole
    if count:
        yield from _slices(*_mixed(buffer, rng), size)


def _mixed(
    pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([X for X, _ in pairs])
    y = np.concatenate([y for _, y in pairs])
    order = rng.permutation(len(y))
    return X[order], y[order]


def _slices(X: np.ndarray, y: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(y), size):
        yield X[start : start + size], y[start : start + size]


def served_configuration(spec: TrainSpec, classes: list[Any] | None, shape: list[int]) -> dict[str, Any]:
    """What the torch and keras runtimes need to read a network's output: the task, the classes."""
    configuration: dict[str, Any] = {"task": spec.task}
    if classes is not None:
        configuration["classes"] = classes
    if not spec.configuration.get("inputShape"):
        configuration["inputShape"] = shape
    return configuration
