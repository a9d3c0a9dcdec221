"""One entry point for a job's worker: ``train`` picks the framework's trainer and runs it.

Frameworks are imported inside the functions, so importing this module costs nothing: the API process
imports it to know the names, and only a worker pays for torch or TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiservice.infrastructure.training.spec import (
    Data,
    FittedModel,
    Progress,
    Table,
    TrainedModel,
    TrainingError,
    TrainSpec,
)

# Frameworks whose trainers also take a stream of batches (``spec.Batches``), for data larger than memory.
STREAMING = ("pytorch", "keras")
TRAINERS = {
    "sklearn": "aiservice.infrastructure.training.sklearn_trainer",
    "xgboost": "aiservice.infrastructure.training.xgboost_trainer",
    "pytorch": "aiservice.infrastructure.training.torch_trainer",
    "keras": "aiservice.infrastructure.training.keras_trainer",
}


def train(
    spec: TrainSpec,
    train: Data,
    validation: Data | None,
    out_dir: Path,
    report: Callable[[Progress], None],
) -> TrainedModel:
    """Fit ``spec`` on ``train`` (scored on ``validation`` as it goes) and write the artifact in ``out_dir``.

    ``train`` and ``validation`` are tables in memory, or for the ``STREAMING`` frameworks streams read
    batch by batch (one pass per epoch); other frameworks given a stream fail with a "data" error.

    ``report`` is called after each epoch (pytorch, keras), every few boosting rounds (xgboost) or once
    at the end (sklearn). Raises ``TrainingError`` for anything the user can fix; other exceptions are bugs.
    """
    fitted = fit(spec, train, validation, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    return fitted.save(out_dir)


def fit(
    spec: TrainSpec, train: Data, validation: Data | None, report: Callable[[Progress], None]
) -> FittedModel:
    """The model in memory, not yet saved: for callers that also want its predictions."""
    streamed = not isinstance(train, Table) or not isinstance(validation, Table | None)
    if streamed and spec.framework not in STREAMING:
        raise TrainingError(
            "data", f"{spec.framework} trains on data in memory; only {', '.join(STREAMING)} take a stream."
        )
    fitted: FittedModel = _trainer(spec.framework).fit(spec, train, validation, report)
    return fitted


def cuda_available(framework: str) -> bool:
    """Whether ``framework`` can train on a GPU here: lets a job that merely prefers CUDA fall back."""
    if framework == "pytorch":
        import torch

        return bool(torch.cuda.is_available())
    if framework == "keras":
        from aiservice.infrastructure.training import keras_trainer

        return keras_trainer.gpu_count() > 0
    if framework == "xgboost":
        from aiservice.infrastructure.training import xgboost_trainer

        try:
            xgboost_trainer.cuda_device("cuda")
        except TrainingError:
            return False
        return True
    return False


def _trainer(framework: str) -> Any:
    name = TRAINERS.get(framework)
    if name is None:
        raise TrainingError(
            "params", f"Training is not supported for {framework!r}; supported: {', '.join(TRAINERS)}."
        )
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise TrainingError(
            "device", f"{framework} is not installed where this job runs ({exc.name} is missing)."
        ) from exc
