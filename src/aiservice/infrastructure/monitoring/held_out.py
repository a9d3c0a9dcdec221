"""The held-out comparison of a retrained version with the current one (``monitoring/actions.py``):
the retraining job's dataset is read as its worker reads it and split as its worker splits off the
validation rows (the job's fraction, seed and stratification), so the retrained version is scored on
rows it did not train on; both versions predict those same rows through the inference service (the
same input checks and labels as traffic, but neither routed by an experiment nor logged).

The inference service lives on the serving event loop: the scorer runs its calls there when one is
serving (``loop``), and on a loop of its own otherwise (a process without an HTTP server).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiservice.application.inference import InferenceService
from aiservice.application.monitoring.actions import system_principal
from aiservice.application.monitoring.decisions import HeldOutScores
from aiservice.application.serving.results import PredictionResult, PredictOptions
from aiservice.domain.training import TrainingJob
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.readers import read_table
from aiservice.infrastructure.datasets.tables import Table
from aiservice.infrastructure.jobs.worker import DEFAULT_VALIDATION_SPLIT, split_table

MAX_ROWS = 10_000  # held-out rows scored at most
TIMEOUT_S = 300.0
CHUNK = 1000

T = TypeVar("T")


class InferenceHeldOutScorer:
    def __init__(
        self,
        inference: InferenceService,
        locator: DatasetLocator,
        loop: Callable[[], asyncio.AbstractEventLoop | None],
    ) -> None:
        self._inference = inference
        self._locator = locator
        self._loop = loop

    def score(
        self, tenant_id: str, model_id: str, job: TrainingJob, versions: Sequence[int]
    ) -> HeldOutScores:
        held_out = self._held_out(tenant_id, job)
        rows = [dict(zip(held_out.feature_names, map(float, x), strict=True)) for x in held_out.X]
        truth = held_out.y.tolist()
        regression = _regression(truth)
        scores: dict[int, float] = {}
        for version in versions:
            predicted = self._run(self._predict(tenant_id, model_id, version, rows))
            scores[version] = _rmse(truth, predicted) if regression else _accuracy(truth, predicted)
        return HeldOutScores("rmse" if regression else "accuracy", len(rows), scores)

    def _held_out(self, tenant_id: str, job: TrainingJob) -> Table:
        dataset = job.dataset
        uri = self._locator.resolve(tenant_id, dataset.train_path, "retrain.datasetId")
        table = read_table(
            uri, dataset.format, dataset.target, dataset.features, self._locator.storage_options(uri)
        )
        if dataset.validation_path:  # the job validated on a file of its own: that is the held-out data
            uri = self._locator.resolve(tenant_id, dataset.validation_path, "retrain.datasetId")
            held = read_table(
                uri, dataset.format, dataset.target, dataset.features, self._locator.storage_options(uri)
            )
        else:
            held = _split(table, dataset.validation_split or DEFAULT_VALIDATION_SPLIT, job.training.seed)
        return Table(held.X[:MAX_ROWS], held.y[:MAX_ROWS], held.feature_names)

    async def _predict(
        self, tenant_id: str, model_id: str, version: int, rows: list[dict[str, float]]
    ) -> list[Any]:
        results = await self._inference.predict_many(
            system_principal(tenant_id),
            model_id,
            list(rows),
            PredictOptions(version=version),
            where="heldOut",
            chunk=CHUNK,
            observe=False,
        )
        return [r.prediction if isinstance(r, PredictionResult) else None for r in results]

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        loop = self._loop()
        if loop is None or loop.is_closed() or not loop.is_running():
            return asyncio.run(work)
        return asyncio.run_coroutine_threadsafe(work, loop).result(TIMEOUT_S)


def _split(table: Table, fraction: float, seed: int) -> Table:
    """The worker's own validation split (``jobs/worker.py``), so the held-out rows are the job's."""
    task = "regression" if _regression(table.y.tolist()) else "classification"
    return split_table(table, fraction, seed, task)[1]


def _regression(values: Sequence[Any]) -> bool:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(numbers) == len(values) and any(not float(v).is_integer() for v in numbers)


def _accuracy(truth: Sequence[Any], predicted: Sequence[Any]) -> float:
    hits = sum(1 for a, b in zip(truth, predicted, strict=True) if _same(a, b))
    return hits / len(truth) if truth else 0.0


def _same(label: Any, prediction: Any) -> bool:
    if prediction is None:
        return False
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (label, prediction))
    return float(label) == float(prediction) if numeric else str(label) == str(prediction)


def _rmse(truth: Sequence[Any], predicted: Sequence[Any]) -> float:
    pairs = [
        (float(a), float(b)) for a, b in zip(truth, predicted, strict=True) if isinstance(b, int | float)
    ]
    if len(pairs) < len(truth) or not pairs:
        return math.inf  # a row it could not predict counts as the worst
    return math.sqrt(sum((a - b) ** 2 for a, b in pairs) / len(pairs))
