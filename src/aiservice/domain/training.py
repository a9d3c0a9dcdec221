"""Training jobs: what a user asked to train, and where the job stands.

A job is queued with a fully validated request, claimed by one runner, reports progress while it
runs, and ends exactly once: succeeded (with the version it registered), failed (with the stage
and a reason a user can act on) or cancelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import uuid4

from aiservice.domain.models import JsonObject

DATASET_FORMATS = ("csv", "parquet", "npz", "imagefolder")
_FORMAT_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


def format_of(path: str) -> str | None:
    """The dataset format a path's extension names (``train.csv`` -> csv); None when it names none."""
    name = path.rstrip().split("?", 1)[0].rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind(".") :] if "." in name else ""
    return _FORMAT_BY_SUFFIX.get(suffix)


HISTORY_LIMIT = 1000  # epochs kept in a job's history; a job with more keeps the latest
_INTEGER = re.compile(r"0|[1-9][0-9]*")  # how a label reads as an integer: 0, 7, 42; never 07 or 1.0


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class GpuPolicy(StrEnum):
    """``gpu: true`` prefers CUDA and falls back to the CPU; ``gpu: required`` fails without it."""

    NONE = "none"
    PREFERRED = "preferred"
    REQUIRED = "required"


@dataclass(frozen=True)
class TrainingConfig:
    algorithm: str
    params: JsonObject = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    chosen_because: str | None = None  # why the service chose the algorithm (the request named none)
    # A trial of an AutoML study (ADR 28): {"studyId", "number", "task", "metric", "cvFolds"}; the job
    # cross-validates ``algorithm`` with ``params`` and reports its score instead of registering a version.
    automl_trial: JsonObject | None = None

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "algorithm": self.algorithm,
            "params": self.params,
            "epochs": self.epochs,
            "batchSize": self.batch_size,
            "learningRate": self.learning_rate,
            "seed": self.seed,
        }
        if self.chosen_because is not None:
            data["algorithmChosenBecause"] = self.chosen_because
        if self.automl_trial is not None:
            data["automlTrial"] = self.automl_trial
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> TrainingConfig:
        return cls(
            algorithm=data["algorithm"],
            params=data.get("params", {}),
            epochs=data.get("epochs", 10),
            batch_size=data.get("batchSize", 32),
            learning_rate=data.get("learningRate", 1e-3),
            seed=data.get("seed", 0),
            chosen_because=data.get("algorithmChosenBecause"),
            automl_trial=data.get("automlTrial"),
        )


@dataclass(frozen=True)
class DatasetConfig:
    """Dataset references as the user wrote them (a path, a folder, ``dataset://NAME``, ``s3://...``); a
    runner resolves them to readable URIs when the job starts. ``format`` and ``target`` are filled in at
    submission when the request left them out (told from a folder's files; chosen by ``choose_target``)."""

    train_path: str
    format: str
    validation_path: str | None = None
    test_path: str | None = None
    target: str | None = None
    features: list[str] | None = None
    validation_split: float | None = None
    label_mapping: LabelMapping | None = None  # decided at submission, never sent by the user
    target_chosen_because: str | None = None  # why the service chose the target (the request named none)

    def names_dataset(self, name: str) -> bool:
        """Whether one of its references is the uploaded dataset ``name`` (``dataset://NAME``)."""
        return any(reference == f"dataset://{name}" for _, reference in self.paths())

    def paths(self) -> list[tuple[str, str]]:
        """``(field, reference)`` for each path given, named as in the request: trainPath first."""
        named = (
            ("trainPath", self.train_path),
            ("validationPath", self.validation_path),
            ("testPath", self.test_path),
        )
        return [(name, reference) for name, reference in named if reference]

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "trainPath": self.train_path,
            "validationPath": self.validation_path,
            "testPath": self.test_path,
            "format": self.format,
            "target": self.target,
            "features": self.features,
            "validationSplit": self.validation_split,
        }
        if self.target_chosen_because is not None:
            data["targetChosenBecause"] = self.target_chosen_because
        if self.label_mapping is not None:
            data["labelMapping"] = self.label_mapping.to_json()
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> DatasetConfig:
        return cls(
            train_path=data["trainPath"],
            format=data["format"],
            validation_path=data.get("validationPath"),
            test_path=data.get("testPath"),
            target=data.get("target"),
            features=data.get("features"),
            validation_split=data.get("validationSplit"),
            label_mapping=LabelMapping.from_json(data["labelMapping"]) if data.get("labelMapping") else None,
            target_chosen_because=data.get("targetChosenBecause"),
        )


@dataclass(frozen=True)
class LabelMapping:
    """How a job reads a label-encoded target: ``position`` maps the integers 0..K-1 to the model's K
    declared classes in order, which is what a target written by a label encoder means."""

    kind: str  # "position", the only kind so far
    values: dict[str, Any]  # a target value as text ("0") -> the declared class it stands for

    @classmethod
    def by_position(cls, classes: Sequence[Any]) -> LabelMapping:
        return cls("position", {str(index): label for index, label in enumerate(classes)})

    def to_json(self) -> JsonObject:
        return {"kind": self.kind, "values": dict(self.values)}

    @classmethod
    def from_json(cls, data: JsonObject) -> LabelMapping:
        return cls(kind=data["kind"], values=dict(data["values"]))


@dataclass(frozen=True)
class TargetValues:
    """A dataset file's distinct target values, read at submission to compare with the declared classes."""

    column: str  # how messages name the target: "column 'species' of iris.csv", "array 'y' of iris.npz"
    values: tuple[Any, ...]  # distinct, typed as the worker types them (a csv's "1" is the integer 1)
    rows: int  # how many rows were read
    complete: bool  # False when only the first rows were read: a large file, or too many distinct values


def declared_classes(output_schema: Any, configuration: Any) -> tuple[list[Any], str] | None:
    """The classes a model declares, in output order, and where: ``outputSchema.classes`` (what serving
    labels predictions with) else ``configuration.classes``; None when it declares none."""
    for where, holder in (("outputSchema", output_schema), ("configuration", configuration)):
        classes = holder.get("classes") if isinstance(holder, dict) else None
        if isinstance(classes, list) and classes:
            return list(classes), f"{where}.classes"
    return None


def integer_label(value: Any) -> int | None:
    """A label's integer value: an int (not a bool) or its canonical decimal text (an image folder's
    name, an npz's text labels); None for anything else, floats included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def position_mapping(values: Iterable[Any], classes: Sequence[Any]) -> LabelMapping | None:
    """The positional mapping when ``values`` (the distinct targets of every file of a job) are a label
    encoding of ``classes``: the classes are names, not integers, and every value is an integer in
    0..K-1 (a subset will do). None when the values are the classes themselves, or anything else."""
    values = list(values)
    if not values or not unknown_labels(values, classes, None):
        return None
    if any(integer_label(label) is not None for label in classes):
        return None  # integer classes: 0 could be a label or a position; refuse to guess
    positions = [integer_label(value) for value in values]
    if all(position is not None and 0 <= position < len(classes) for position in positions):
        return LabelMapping.by_position(classes)
    return None


def unknown_labels(values: Iterable[Any], classes: Sequence[Any], mapping: LabelMapping | None) -> list[Any]:
    """The values neither a declared class nor (with a mapping) a mapped value, sorted as text. Labels
    compare as text, as the worker compares them: a csv's 1 is the declared "1"."""
    known = set(mapping.values) if mapping is not None else {str(label) for label in classes}
    return sorted((value for value in values if str(value) not in known), key=str)


def missing_classes(values: Iterable[Any], classes: Sequence[Any], mapping: LabelMapping | None) -> list[Any]:
    """The declared classes no value stands for: training data must show every one."""
    seen = {str(value) for value in values}
    if mapping is not None:
        return [label for text, label in mapping.values.items() if text not in seen]
    return [label for label in classes if str(label) not in seen]


@dataclass(frozen=True)
class ResourceConfig:
    gpu: GpuPolicy = GpuPolicy.NONE
    memory_mb: int | None = None
    cpu: float | None = None
    timeout_seconds: int | None = None
    workers: int = 1  # data-parallel processes (PyTorch on the Ray runner)

    def to_json(self) -> JsonObject:
        return {
            "gpu": self.gpu.value,
            "memoryMb": self.memory_mb,
            "cpu": self.cpu,
            "timeoutSeconds": self.timeout_seconds,
            "workers": self.workers,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> ResourceConfig:
        return cls(
            gpu=GpuPolicy(data.get("gpu", "none")),
            memory_mb=data.get("memoryMb"),
            cpu=data.get("cpu"),
            timeout_seconds=data.get("timeoutSeconds"),
            workers=int(data.get("workers") or 1),
        )


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed: the stage (``dataset``, ``params``, ``fit``, ``register``, ``device``,
    ``interrupted``, ``timeout``, ``crashed``) and a message meant for the user, never a traceback."""

    stage: str
    message: str

    def to_json(self) -> JsonObject:
        return {"stage": self.stage, "message": self.message}


INTERRUPTED = JobFailure(
    "interrupted", "The service stopped while this job was running (interrupted); submit it again."
)


@dataclass
class TrainingJob:
    tenant_id: str
    model_id: str
    training: TrainingConfig
    dataset: DatasetConfig
    resources: ResourceConfig
    created_at: datetime
    id: str = field(default_factory=lambda: str(uuid4()))
    status: JobStatus = JobStatus.QUEUED
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    progress: float = 0.0
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    metrics: JsonObject = field(default_factory=dict)  # the latest reported
    history: list[JsonObject] = field(default_factory=list)  # one entry per epoch
    failure: JobFailure | None = None
    version: int | None = None  # the version the job registered
    device: str | None = None
    dataset_fingerprint: list[JsonObject] = field(default_factory=list)
    runner_id: str | None = None
    heartbeat_at: datetime | None = None
    traceparent: str | None = None  # the submitting request's W3C trace context: the job joins its trace

    def device_chosen_because(self) -> str | None:
        """Why the job runs where it does, when that is not plainly what was asked: ``gpu: true``
        prefers a GPU, and the job says when there was none and it trained on the CPU."""
        if self.device is None or self.resources.gpu != GpuPolicy.PREFERRED:
            return None
        asked = "A GPU was preferred (resourceConfig.gpu: true)"
        if self.device == "cpu":
            return f"{asked}, but none is available to this job: it trains on the CPU."
        return f"{asked} and one is available: it trains on {self.device}."

    def eta_seconds(self, now: datetime) -> float | None:
        """Linear extrapolation from the progress so far; None until there is some."""
        if self.status != JobStatus.RUNNING or self.started_at is None or not 0 < self.progress < 1:
            return None
        elapsed = (now - self.started_at).total_seconds()
        return round(elapsed * (1 - self.progress) / self.progress, 1)


JobKind = Literal["training", "trial"]  # a training job, or a trial of an AutoML study


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event stream (what ``/events`` serves): numbered per job from 1."""

    job_id: str
    seq: int
    type: str  # status | progress
    data: JsonObject
    created_at: datetime


def progress_entry(epoch: int, epochs: int, metrics: dict[str, Any]) -> JsonObject:
    return {"epoch": epoch, "epochs": epochs, "metrics": metrics}
