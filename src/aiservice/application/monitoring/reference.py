"""The version's own predictions on reference rows, for its profile: through the inference service
(the same input checks and label mapping as live traffic), but neither routed by an experiment nor
written to the payload log, since they are not traffic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiservice.application.inference import InferenceService
from aiservice.application.serving.results import PredictionResult, PredictOptions
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.tenancy import Principal

CHUNK = 1000  # rows per model call


async def reference_predictions(
    inference: InferenceService, principal: Principal, model: str, version: int, rows: Sequence[Any]
) -> list[Any]:
    """One prediction (label or value) per row; ``InvalidInput`` naming the rows the model refused."""
    results = await inference.predict_many(
        principal,
        model,
        list(rows),
        PredictOptions(version=version),
        where="body.rows",
        chunk=CHUNK,
        observe=False,
    )
    refused = [i for i, r in enumerate(results) if isinstance(r, DomainError)]
    if refused:
        raise InvalidInput(
            f"The version could not predict {len(refused)} reference rows.",
            errors=[FieldError(f"body.rows.{i}", _reason(results[i])) for i in refused[:20]],
        )
    return [r.prediction for r in results if isinstance(r, PredictionResult)]


def _reason(result: PredictionResult | DomainError) -> str:
    return result.detail if isinstance(result, DomainError) else "refused"
