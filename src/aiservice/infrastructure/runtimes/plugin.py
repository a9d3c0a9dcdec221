"""One object per framework: everything the service knows about a framework, in one place.

A plugin module builds its ``FrameworkPlugin`` in a function named by one line of the
``aiservice.runtimes`` entry-point group; the registry calls it. What the plugin leaves out (no trainer,
no ONNX conversion, no accelerator) is simply not offered for that framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aiservice.application.frameworks import FrameworkTraits
from aiservice.application.ports import LoadedModel, Runtime
from aiservice.domain.errors import FieldError
from aiservice.domain.models import Framework
from aiservice.domain.signature import Signature

OnnxConverter = Callable[[LoadedModel, np.ndarray, Signature], tuple[bytes, dict[str, Any]]]
"""(the native model, check sample, signature) -> (the ONNX bytes, configuration the ONNX runtime
reads them with). Runs in the compilation's child process; raising records the reason on the version."""

Accelerator = Literal["torch", "tensorflow"]
"""Which device setting a framework's loads follow: PYTORCH_BACKEND or TENSORFLOW_BACKEND."""


def _no_task(algorithm: str) -> str | None:
    return None


def _no_gpu() -> bool:
    return False


@dataclass(frozen=True)
class Trainer:
    """How training jobs fit a framework's models."""

    # The module a job's worker imports (never the API process): ``fit(spec, train, validation, report)``.
    module: str
    # Every problem with (algorithm, params), or []; cheap, runs in the API process before queuing.
    validate: Callable[[str, dict[str, Any]], list[FieldError]]
    # What an algorithm learns, "classification" or "regression"; None when the model decides (networks).
    task: Callable[[str], str | None] = _no_task
    streaming: bool = False  # also takes a stream of batches (``spec.Batches``)
    epochs: bool = False  # trains in epochs
    data_parallel: bool = False  # spreads one job over several workers
    gpu: Callable[[], bool] = _no_gpu  # whether it can train on a GPU here (a "preferred" job falls back)
    # Holds the framework's own thread pool (beyond BLAS and OpenMP) to n threads; returns the undo.
    threads: Callable[[int], Callable[[], None]] | None = None
    # The algorithm a job runs when its request names none: (task, takes images) -> algorithm.
    default: Callable[[str, bool], str] | None = None


def by_task(classifier: str, regressor: str) -> Callable[[str, bool], str]:
    """A default algorithm per task: the regressor for regression, else the classifier."""
    return lambda task, _images: regressor if task == "regression" else classifier


def network_for(_task: str, images: bool) -> str:
    """A network trainer's default: a CNN for image inputs, else an MLP (the task sets its head)."""
    return "cnn" if images else "mlp"


@dataclass(frozen=True)
class FrameworkPlugin:
    name: Framework
    runtime: Runtime
    trainer: Trainer | None = None
    to_onnx: OnnxConverter | None = None
    accelerator: Accelerator | None = None  # None: its models load on the CPU
    preload: tuple[str, ...] = ()  # modules the inspection fork server imports once, ahead of uploads

    def traits(self) -> FrameworkTraits:
        trainer = self.trainer
        return FrameworkTraits(
            name=self.name,
            trainable=trainer is not None,
            streaming=trainer is not None and trainer.streaming,
            epochs=trainer is not None and trainer.epochs,
            data_parallel=trainer is not None and trainer.data_parallel,
            compilable=self.to_onnx is not None,
        )
