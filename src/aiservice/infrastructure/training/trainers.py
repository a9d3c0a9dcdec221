"""One entry point for a job's worker: ``train`` picks the framework's trainer and runs it.

Frameworks are imported inside the functions, so importing this module costs nothing: the API process
imports it to know the names, and only a worker pays for torch or TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from aiservice.infrastructure.runtimes.plugin import Trainer
from aiservice.infrastructure.runtimes.registry import installed
from aiservice.infrastructure.training.spec import (
    Data,
    FittedModel,
    Progress,
    Table,
    TrainedModel,
    TrainingError,
    TrainSpec,
)


def train(
    spec: TrainSpec,
    train: Data,
    validation: Data | None,
    out_dir: Path,
    report: Callable[[Progress], None],
) -> TrainedModel:
    """Fit ``spec`` on ``train`` (scored on ``validation`` as it goes) and write the artifact in ``out_dir``.

    ``train`` and ``validation`` are tables in memory, or for frameworks whose trainer is ``streaming``
    streams read batch by batch (one pass per epoch); other frameworks given a stream fail with a "data"
    error.

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
    trainer = _trainer(spec.framework)
    if streamed and not trainer.streaming:
        streaming = ", ".join(installed().catalog().with_trait("streaming"))
        raise TrainingError(
            "data", f"{spec.framework} trains on data in memory; only {streaming} take a stream."
        )
    try:
        module = importlib.import_module(trainer.module)
    except ImportError as exc:
        raise TrainingError(
            "device", f"{spec.framework} is not installed where this job runs ({exc.name} is missing)."
        ) from exc
    fitted: FittedModel = module.fit(spec, train, validation, report)
    return fitted


def cuda_available(framework: str) -> bool:
    """Whether ``framework`` can train on a GPU here: lets a job that merely prefers CUDA fall back."""
    trainer = installed().trainer(framework)
    return trainer is not None and trainer.gpu()


def _trainer(framework: str) -> Trainer:
    trainer = installed().trainer(framework)
    if trainer is None:
        supported = ", ".join(installed().catalog().with_trait("trainable"))
        raise TrainingError("params", f"Training is not supported for {framework!r}; supported: {supported}.")
    return trainer
