"""Child side of a training job: read the datasets, train, evaluate through the serving runtime,
and hand the artifact back. Runs in its own process, so a crash, an out-of-memory kill or a
segfault in a framework ends this job only.

Messages to the parent (plain JSON types over a pipe): ``{"type": "progress", ...}`` per epoch,
then exactly one of ``{"type": "done", ...}`` or ``{"type": "failed", "stage", "message"}``.
Evaluating the registered artifact through the same runtime that will serve it means the metrics
on the version are the served model's, not the in-memory estimator's.

Data is read whole, except that jobs of a streaming trainer (pytorch, keras) stream a csv or parquet
file larger than ``STREAM_ABOVE_BYTES`` (the request's ``streamAboveBytes`` overrides it) batch by batch,
once per epoch: then a validation split holds rows out by a hash of their index, labels are mapped
batch by batch, and evaluation predicts batch by batch, keeping only the targets and predictions.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiservice.application.ports import LoadedModel, LoadSpec
from aiservice.domain.models import Framework
from aiservice.domain.training import GpuPolicy, LabelMapping, declared_classes
from aiservice.infrastructure.datasets.readers import DatasetError, Table, read_table
from aiservice.infrastructure.datasets.streaming import (
    STREAM_FORMATS,
    MappedStream,
    dataset_bytes,
    split_stream,
    stream_table,
)
from aiservice.infrastructure.runtimes.registry import installed
from aiservice.infrastructure.training.spec import Data, Progress, TrainingError, TrainSpec

DEFAULT_VALIDATION_SPLIT = 0.2
STREAM_ABOVE_BYTES = 256 * 1024**2  # streaming trainers read larger csv and parquet files batch by batch


class MessageSink(Protocol):
    """Where a job's messages go: a pipe to the local supervisor, or a Ray queue."""

    def send(self, message: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def run_job(request: dict[str, Any], sender: MessageSink) -> None:
    """Process target: one job, start to end; never raises (the parent learns everything by message)."""
    try:
        with cpu_threads(request.get("threads"), request["framework"]):
            if request["training"].get("automlTrial") is not None:  # an AutoML study's trial (ADR 28)
                from aiservice.infrastructure.automl.trial import run_trial

                result = run_trial(request, lambda message: sender.send(message))
            else:
                result = train_request(request, lambda message: sender.send(message))
        sender.send({"type": "done", **result})
    except TrainingError as exc:
        sender.send({"type": "failed", "stage": exc.stage, "message": exc.message[:2000]})
    except DatasetError as exc:
        sender.send({"type": "failed", "stage": "dataset", "message": str(exc)[:2000]})
    except MemoryError:
        sender.send({"type": "failed", "stage": "memory", "message": "The job ran out of memory."})
    except Exception as exc:  # a framework's own failure: its last line is the useful part
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        sender.send({"type": "failed", "stage": "fit", "message": f"{type(exc).__name__}: {lines[-1][:500]}"})
        traceback.print_exc()
    finally:
        sender.close()


@contextmanager
def cpu_threads(cpu: float | None, framework: str) -> Iterator[None]:
    """Hold the frameworks' thread pools (BLAS, OpenMP, torch) to the job's ``resourceConfig.cpu``,
    restoring them after: a Ray worker process runs one job after another."""
    if not cpu:
        yield
        return
    threads = max(1, math.ceil(cpu))
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
        except ImportError:  # comes with scikit-learn; without it only torch's own pool is held
            pass
        trainer = installed().trainer(framework)
        if trainer is not None and trainer.threads is not None:  # a pool of the framework's own (torch's)
            stack.callback(trainer.threads(threads))
        yield


def train_request(request: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    framework = Framework(request["framework"])
    dataset = request["dataset"]
    training = request["training"]
    configuration: dict[str, Any] = request["configuration"]
    options: dict[str, Any] = request.get("storageOptions", {})
    features = dataset.get("features") or _schema_features(request["inputSchema"])
    image_size = _image_size(configuration) if dataset["format"] == "imagefolder" else None
    stream_above = int(request.get("streamAboveBytes", STREAM_ABOVE_BYTES))
    trainer = installed().trainer(framework)
    streaming = trainer is not None and trainer.streaming

    def read(uri: str) -> Data:
        kind, target, uri_options = dataset["format"], dataset.get("target"), options.get(uri, {})
        streamed = streaming and kind in STREAM_FORMATS
        if streamed and dataset_bytes(uri, uri_options) > stream_above:
            return stream_table(uri, kind, target, features, uri_options)
        return read_table(uri, kind, target, features, uri_options, image_size)

    train = read(dataset["trainPath"])
    validation = read(dataset["validationPath"]) if dataset.get("validationPath") else None
    test = read(dataset["testPath"]) if dataset.get("testPath") else None
    task = _task(request, train)
    declared = declared_classes(request["outputSchema"], configuration) if task == "classification" else None
    classes = declared[0] if declared else None
    if declared is not None:
        # Served labels come from the declared list by output position, so the model is trained on
        # positions in that list: its outputs then line up with the declaration whatever the labels sort as.
        # A label-encoded target (0..K-1, mapped at submission) already is those positions.
        position = _positions(*declared, dataset.get("labelMapping"))
        train = _as_positions(train, "train", position, declared[1])
        validation = _as_positions(validation, "validation", position, declared[1]) if validation else None
        test = _as_positions(test, "test", position, declared[1]) if test else None
        if isinstance(train, Table):
            _require_every_class(train, *declared)
    split = dataset.get("validationSplit")
    if validation is None:
        train, validation = _split(train, split or DEFAULT_VALIDATION_SPLIT, training.get("seed", 0), task)
    if declared is not None and not isinstance(train, Table):
        # From the rows it trains on: the pass the trainer needs anyway.
        _require_every_class(train, *declared)

    spec = TrainSpec(
        framework=framework.value,
        algorithm=training["algorithm"],
        params=training.get("params", {}),
        task=task,
        epochs=training.get("epochs", 10),
        batch_size=training.get("batchSize", 32),
        learning_rate=training.get("learningRate", 1e-3),
        device=_device(framework, GpuPolicy(request.get("gpu", GpuPolicy.NONE.value))),
        seed=training.get("seed", 0),
        configuration=configuration,
        data_parallel=request.get("dataParallel"),
    )
    out = Path(request["outDir"])

    def report(progress: Progress) -> None:
        send(
            {
                "type": "progress",
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "step": progress.step,
                "steps": progress.steps,
                "metrics": progress.metrics,
            }
        )

    from aiservice.infrastructure.training.trainers import train as train_model

    trained = train_model(spec, train, validation, out, report)
    if spec.data_parallel and spec.data_parallel.rank != 0:
        return {"artifact": str(trained.path), "filename": trained.filename}  # rank 0 evaluates and reports
    send({"type": "progress", "device": trained.device})
    metrics = _evaluate(
        framework,
        trained.path,
        trained.filename,
        configuration,
        trained.configuration,
        task,
        trained.classes,
        validation,
        test,
    )
    params = {**trained.params}
    if classes is not None and task == "classification":
        params["classes"] = classes  # trained on positions in the declared list
    elif trained.classes is not None:
        params["classes"] = [
            c if isinstance(c, int | float | str | bool) else str(c) for c in trained.classes
        ]
    if validation is not None and dataset.get("validationPath") is None:
        params["validationSplit"] = split or DEFAULT_VALIDATION_SPLIT
    return {
        "artifact": str(trained.path),
        "filename": trained.filename,
        "metrics": metrics,
        "params": params,
        "device": trained.device,
        "configuration": _served_configuration(trained.configuration, trained.classes, classes, task),
        "referenceProfile": _reference_profile(validation),
    }


def _reference_profile(data: Data | None) -> dict[str, Any] | None:
    """The validation rows' profile, the version's reference for drift monitoring: a table's features
    only (the prediction's profile wants the labels serving gives; a PUT of reference rows computes
    it). None for other data, or when profiling fails: the job does not fail for it."""
    if not isinstance(data, Table) or data.X.ndim != 2 or len(data.X) == 0 or not data.feature_names:
        return None
    try:
        from aiservice.application.monitoring.profiles import build_profile

        names = [str(n) for n in data.feature_names]
        return build_profile(np.asarray(data.X, dtype=np.float64), feature_names=names).to_dict()
    except Exception:
        return None


def _served_configuration(
    configuration: dict[str, Any], trained: list[Any] | None, declared: list[Any] | None, task: str
) -> dict[str, Any]:
    """The trainer's configuration plus the labels of the output columns: the declared classes for a model
    trained on positions in them, else the trained labels for runtimes whose artifacts know class
    positions only (XGBoost boosters). Without them callers would see 0, 1, 2."""
    if task != "classification":
        return configuration
    if declared is not None:
        return {**configuration, "classes": declared}
    if trained is None or "classes" in configuration:
        return configuration
    return {**configuration, "classes": trained}


def _require_every_class(data: Data, classes: list[Any], where: str) -> None:
    present = np.unique(data.y) if isinstance(data, Table) else data.stats().labels
    if present is None:  # more distinct labels than a stream counts: more than any declaration
        return
    missing = sorted(set(range(len(classes))) - {int(v) for v in present})
    if missing:
        raise TrainingError(
            "dataset",
            f"Every class the model's {where} declares must appear in the training data; "
            f"missing: {', '.join(str(classes[i]) for i in missing[:10])}",
        )


@dataclass(frozen=True)
class _Positions:
    """Each label (as text) the job accepts, and its position in the declared classes."""

    index: dict[str, int]
    mapped: bool  # the labels are a positional mapping's integers, decided when the job was submitted


def _positions(classes: list[Any], where: str, mapping: dict[str, Any] | None) -> _Positions:
    """The declared classes' positions by label; with a positional mapping, by the integers it maps."""
    position = {str(c): i for i, c in enumerate(classes)}
    if not mapping:
        return _Positions(position, mapped=False)
    mapped = {}
    for text, label in LabelMapping.from_json(mapping).values.items():
        if str(label) not in position:
            raise TrainingError(
                "dataset",
                f"The job maps the label {text} to {label!r} by position, but the model's {where} no "
                "longer declares it (it changed after the job was submitted); submit the job again.",
            )
        mapped[text] = position[str(label)]
    return _Positions(mapped, mapped=True)


def _as_positions(data: Data, name: str, position: _Positions, where: str) -> Data:
    """Labels replaced by their position in the declared classes (a stream's batch by batch, as they are
    read); a label not declared fails the job."""
    if not isinstance(data, Table):
        return MappedStream(data, lambda batch, _: _table_as_positions(batch, name, position, where))
    return _table_as_positions(data, name, position, where)


def _table_as_positions(table: Table, name: str, position: _Positions, where: str) -> Table:
    labels = [str(v) for v in table.y.tolist()]
    unknown = sorted({label for label in labels if label not in position.index})
    if unknown and position.mapped:
        raise TrainingError(
            "dataset",
            f"The {name} data has labels outside the positional mapping onto the model's {where} that "
            f"this job recorded when it was submitted (integers 0..{len(position.index) - 1}); the data "
            f"changed since: {', '.join(unknown[:10])}",
        )
    if unknown:
        raise TrainingError(
            "dataset",
            f"The {name} data has labels the model's {where} does not know: {', '.join(unknown[:10])}",
        )
    return Table(
        table.X, np.array([position.index[label] for label in labels], dtype=np.int64), table.feature_names
    )


def _evaluate(
    framework: Framework,
    path: Path,
    filename: str,
    configuration: dict[str, Any],
    extra_configuration: dict[str, Any],
    task: str,
    classes: list[Any] | None,
    validation: Data | None,
    test: Data | None,
) -> dict[str, Any]:
    from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
    from aiservice.infrastructure.training.metrics import classification_metrics, regression_metrics

    loaded = (
        FrameworkRegistry.discover()
        .get(framework)
        .load(
            path,
            LoadSpec(
                framework=framework, filename=filename, configuration={**configuration, **extra_configuration}
            ),
        )
    )
    metrics: dict[str, Any] = {}
    for prefix, data in (("validation", validation), ("test", test)):
        predicted = None if data is None else _predicted(loaded, data, task)
        if predicted is None:
            continue
        truth, output = predicted
        if task == "classification":
            found = classification_metrics(truth, output, classes or [])
        else:
            found = regression_metrics(truth.astype(np.float64), output)
        metrics.update({f"{prefix}_{name}": value for name, value in found.items()})
    return metrics


def _predicted(loaded: LoadedModel, data: Data, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The targets and what the served model gives for them (a classifier's probabilities, a regressor's
    values), a stream predicted batch by batch; None when there are no rows."""
    truths, outputs = [], []
    for batch in (data,) if isinstance(data, Table) else data.batches():
        if len(batch.y) == 0:
            continue
        prediction = loaded.predict(batch.X)
        if task != "classification":
            outputs.append(np.asarray(prediction.values, dtype=np.float64))
        elif prediction.probabilities is None:
            raise TrainingError("evaluate", "The trained classifier gave no class probabilities.")
        else:
            outputs.append(prediction.probabilities)
        truths.append(batch.y)
    return (np.concatenate(truths), np.concatenate(outputs)) if truths else None


def _device(framework: Framework, gpu: GpuPolicy) -> str:
    """``required`` asks for CUDA (the trainer fails clearly without it); ``preferred`` takes it if there."""
    if gpu == GpuPolicy.REQUIRED:
        return "cuda"
    if gpu == GpuPolicy.PREFERRED:
        from aiservice.infrastructure.training.trainers import cuda_available

        return "cuda" if cuda_available(framework.value) else "cpu"
    return "cpu"


def _task(request: dict[str, Any], train: Data) -> str:
    from aiservice.infrastructure.training.catalog import task_of

    known = task_of(request["framework"], request["training"]["algorithm"])
    if known:
        return known
    declared = request["configuration"].get("task")
    if declared in ("classification", "regression"):
        return str(declared)
    if declared_classes(request["outputSchema"], request["configuration"]) is not None:
        return "classification"
    return "regression" if _target_kind(train) == "f" else "classification"


def _target_kind(data: Data) -> str:
    """The numpy kind of the targets ("f" for floats); a stream's batches are all typed alike."""
    if isinstance(data, Table):
        return str(data.y.dtype.kind)
    for batch in data.batches():
        return str(batch.y.dtype.kind)
    return "O"


def _schema_features(input_schema: dict[str, Any]) -> list[str] | None:
    """A tabular model's declared features, in order: the columns its versions are fed at serving time."""
    if not isinstance(input_schema, dict) or input_schema.get("type") != "tabular":
        return None
    names = [f.get("name") for f in input_schema.get("features", []) if isinstance(f, dict)]
    return [n for n in names if isinstance(n, str)] or None


def _image_size(configuration: dict[str, Any]) -> tuple[int, int] | None:
    shape = configuration.get("inputShape")
    if isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape):
        return int(shape[0]), int(shape[1])
    return None


def _split(data: Data, fraction: float, seed: int, task: str) -> tuple[Data, Data]:
    """Rows held out for validation: stratified for a table; for a stream, chosen by a hash of each row's
    index, so no second copy of the data is needed."""
    if not isinstance(data, Table):
        return split_stream(data, fraction, seed)
    return split_table(data, fraction, seed, task)


def split_table(table: Table, fraction: float, seed: int, task: str) -> tuple[Table, Table]:
    """Train and validation rows of a table (also the held-out rows monitoring scores a retrain on)."""
    from sklearn.model_selection import train_test_split

    stratify = table.y if task == "classification" and _stratifiable(table.y, fraction) else None
    X_train, X_val, y_train, y_val = train_test_split(
        table.X, table.y, test_size=fraction, random_state=seed, stratify=stratify
    )
    return Table(X_train, y_train, table.feature_names), Table(X_val, y_val, table.feature_names)


def _stratifiable(y: np.ndarray, fraction: float) -> bool:
    _, counts = np.unique(y, return_counts=True)
    return bool(counts.min() >= 2 and len(y) * fraction >= len(counts))
