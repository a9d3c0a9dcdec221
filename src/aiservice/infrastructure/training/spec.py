"""What a trainer is given and what it hands back: the contracts between a training job and a trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.infrastructure.datasets.readers import (
    Table as Table,  # one table type for readers and trainers
)
from aiservice.infrastructure.datasets.streaming import (
    Batches as Batches,  # data larger than memory: read batch by batch, once per epoch
)
from aiservice.infrastructure.datasets.streaming import (
    TableStats as TableStats,
)

# What a trainer trains on: a table in memory, or (streaming trainers: pytorch, keras) a stream of batches.
Data: TypeAlias = Table | Batches


@dataclass(frozen=True)
class DataParallel:
    """This process's part in a data-parallel fit (Ray Train): the hooks that wrap the model for
    gradient averaging and shard the loader, and which process it is (rank 0 reports and saves)."""

    rank: int
    world_size: int
    prepare_model: Callable[[Any], Any]
    prepare_loader: Callable[[Any], Any]


@dataclass(frozen=True)
class TrainSpec:
    """One training run: framework, algorithm, hyper-parameters (checked by ``catalog.validate``)."""

    framework: str  # the name of a framework plugin with a trainer: "sklearn", "lightgbm", "pytorch"...
    algorithm: (
        str  # sklearn: dotted estimator name; xgboost: "XGBClassifier"|"XGBRegressor"; nets: "mlp"|"cnn"
    )
    params: dict[str, Any]  # estimator kwargs (sklearn, xgboost) or the network's shape (mlp, cnn)
    task: str  # "classification" | "regression"
    epochs: int = 10  # pytorch/keras; xgboost takes n_estimators from params; sklearn ignores it
    batch_size: int = 32
    learning_rate: float = 1e-3
    device: str = "cpu"  # "cpu" | "cuda"; CUDA requested and missing is an error, never a silent fallback
    seed: int = 0
    # The registered model's configuration (e.g. {"inputShape": [20]}); the artifact serves under it
    # merged with TrainedModel.configuration.
    configuration: dict[str, Any] = field(default_factory=dict)
    data_parallel: DataParallel | None = None  # pytorch only: one of several processes training together


@dataclass(frozen=True)
class Progress:
    """One report from a running fit: after each epoch (nets), every few boosting rounds, or at the end."""

    epoch: int  # 1-based
    epochs: int
    step: int | None = None
    steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"loss", "val_loss", "val_accuracy"}


@dataclass(frozen=True)
class TrainedModel:
    """The artifact a fit wrote, and what registering and serving it needs."""

    path: Path  # the artifact inside out_dir
    filename: str  # the name to register it under: model.skops, model.ubj, model.pt or model.keras
    classes: list[Any] | None  # labels in the order of the model's output columns; None for regression
    params: dict[str, Any]  # the effective hyper-parameters, JSON-safe
    device: str  # the device that really trained: "cpu" or "cuda:0"
    configuration: dict[str, Any]  # keys the runtime needs beyond TrainSpec.configuration; {} if none


class FittedModel(Protocol):
    """A model fitted in memory, before its artifact is written: each trainer module's ``fit`` returns one.

    ``predict`` answers like the serving runtime (labels, probabilities in ``classes`` order) but with the
    original class labels, so callers and tests can compare the artifact with the model that made it.
    """

    def predict(self, X: np.ndarray) -> Prediction: ...
    def save(self, out_dir: Path) -> TrainedModel: ...


class TrainingError(Exception):
    """A failure the user can act on; ``stage`` names where ("params", "data", "fit", "save", "device")."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
