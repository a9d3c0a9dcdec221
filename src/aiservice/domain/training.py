"""Training jobs: what a user asked to train, and where the job stands.

A job is queued with a fully validated request, claimed by one runner, reports progress while it
runs, and ends exactly once: succeeded (with the version it registered), failed (with the stage
and a reason a user can act on) or cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from aiservice.domain.models import JsonObject

DATASET_FORMATS = ("csv", "parquet", "npz", "imagefolder")
HISTORY_LIMIT = 1000  # epochs kept in a job's history; a job with more keeps the latest


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

    def to_json(self) -> JsonObject:
        return {
            "algorithm": self.algorithm,
            "params": self.params,
            "epochs": self.epochs,
            "batchSize": self.batch_size,
            "learningRate": self.learning_rate,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> TrainingConfig:
        return cls(
            algorithm=data["algorithm"],
            params=data.get("params", {}),
            epochs=data.get("epochs", 10),
            batch_size=data.get("batchSize", 32),
            learning_rate=data.get("learningRate", 1e-3),
            seed=data.get("seed", 0),
        )


@dataclass(frozen=True)
class DatasetConfig:
    """Dataset references as the user wrote them (a path, ``dataset://NAME``, ``s3://...``); a runner
    resolves them to readable URIs when the job starts."""

    train_path: str
    format: str
    validation_path: str | None = None
    test_path: str | None = None
    target: str | None = None
    features: list[str] | None = None
    validation_split: float | None = None

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
        return {
            "trainPath": self.train_path,
            "validationPath": self.validation_path,
            "testPath": self.test_path,
            "format": self.format,
            "target": self.target,
            "features": self.features,
            "validationSplit": self.validation_split,
        }

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
        )


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

    def eta_seconds(self, now: datetime) -> float | None:
        """Linear extrapolation from the progress so far; None until there is some."""
        if self.status != JobStatus.RUNNING or self.started_at is None or not 0 < self.progress < 1:
            return None
        elapsed = (now - self.started_at).total_seconds()
        return round(elapsed * (1 - self.progress) / self.progress, 1)


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
