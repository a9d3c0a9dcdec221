"""The payload recorder: the dataplane's ``PayloadLog``, writing sampled predictions off the hot path.

Policy: on the hot path, ``offer`` does a dictionary lookup (is the model's logging on, at which
rate?), a hash of the request id (is this request in the sample?) and an append to a bounded in-memory
queue (a ``BatchedWriter``); it touches no database and converts nothing. When the queue holds
``capacity`` rows the call is dropped and counted (``dropped``, ``on_dropped``), never waited for. A
background task (``tick``, run every second by a ``PeriodicTask`` and woken when a batch is ready) turns
queued calls into rows (JSON-safe inputs and outputs, one row per answered input) and writes them in
batches, and reloads the enabled policies every ``refresh_s``; ``flush`` at shutdown writes what is left.

The policies a worker knows are those it loaded last, and the ones changed through it (at once): a
change made through another worker process or replica is seen within ``refresh_s``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from aiservice.application.audit import current_call
from aiservice.application.batched_writes import BatchedWriter
from aiservice.application.payload_logging.ports import PayloadLogStore
from aiservice.application.ports import Prediction
from aiservice.application.serving.inputs import ServingModel, labels_of
from aiservice.domain.payload_logging import LoggedPrediction, LoggingPolicy, sampled

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Call:
    request_id: str
    tenant_id: str
    serving: ServingModel
    inputs: Any
    positions: Sequence[int]
    prediction: Prediction
    latency_ms: float
    batch: bool
    at: float  # time.time() when answered


class PayloadRecorder(BatchedWriter[_Call]):
    def __init__(
        self,
        store: PayloadLogStore,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        refresh_s: float = 5.0,
        max_field_bytes: int = 64 * 1024,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_written: Callable[[int], None] = lambda n: None,
    ) -> None:
        super().__init__(
            self._write_calls,
            what="payload log",
            capacity=capacity,
            batch_size=batch_size,
            on_dropped=on_dropped,
            on_written=on_written,
        )
        self._store = store
        self.refresh_s = refresh_s
        self.max_field_bytes = max_field_bytes
        self._policies: dict[tuple[str, str], LoggingPolicy] = {}
        self._refreshed_at = -math.inf

    # -- the hot path ----------------------------------------------------------------------------

    def offer(
        self,
        tenant_id: str,
        serving: ServingModel,
        inputs: Sequence[Any] | Any,
        positions: Sequence[int],
        prediction: Prediction,
        latency_ms: float,
        batch: bool,
    ) -> None:
        policy = self._policies.get((tenant_id, serving.model.id))
        if policy is None:
            return
        call = current_call()
        request_id = call.request_id if call is not None and call.request_id else uuid.uuid4().hex
        if not sampled(request_id, policy.sample_rate):
            return
        self.put(
            _Call(
                request_id, tenant_id, serving, inputs, positions, prediction, latency_ms, batch, time.time()
            ),
            len(positions),
        )

    # -- policies --------------------------------------------------------------------------------

    def policy_changed(self, tenant_id: str, model_id: str, policy: LoggingPolicy | None) -> None:
        """A policy changed through this process: follow it now, not at the next refresh."""
        key = (tenant_id, model_id)
        if policy is not None and policy.enabled:
            self._policies = {**self._policies, key: policy}
        elif key in self._policies:
            self._policies = {k: v for k, v in self._policies.items() if k != key}

    def forget_tenant(self, tenant_id: str) -> None:
        self._policies = {k: v for k, v in self._policies.items() if k[0] != tenant_id}

    def refresh(self) -> None:
        self._policies = self._store.enabled_policies()
        self._refreshed_at = time.monotonic()

    def logging(self, tenant_id: str, model_id: str) -> bool:
        return (tenant_id, model_id) in self._policies

    # -- the background task ---------------------------------------------------------------------

    def tick(self) -> None:
        """The periodic task: write what is queued, and reload the policies when they are due."""
        self.flush()
        if time.monotonic() - self._refreshed_at >= self.refresh_s:
            self.refresh()

    def _write_calls(self, calls: list[_Call]) -> int:
        records = [record for call in calls for record in self._records(call)]
        self._store.write(records)
        return len(records)

    def _records(self, call: _Call) -> list[LoggedPrediction]:
        try:
            return list(self._rows_of(call))
        except Exception:  # an answer this code cannot shape is not worth a failed batch
            log.warning("payload log: a call of model %s not logged", call.serving.model.id, exc_info=True)
            return []

    def _rows_of(self, call: _Call) -> list[LoggedPrediction]:
        serving, prediction = call.serving, call.prediction
        labels = labels_of(serving, prediction.values)
        probabilities = prediction.probabilities
        classes = serving.labels
        at = datetime.fromtimestamp(call.at, UTC)
        records = []
        for row, position in enumerate(call.positions):
            outputs: dict[str, Any] = {"prediction": _safe(labels[row])}
            if probabilities is not None:
                probs = probabilities[row]
                names = classes or tuple(range(len(probs)))
                outputs["probabilities"] = {str(names[c]): _finite(float(p)) for c, p in enumerate(probs)}
            request_id = f"{call.request_id}:{position}" if call.batch else call.request_id
            records.append(
                LoggedPrediction(
                    id=uuid.uuid4().hex,
                    request_id=request_id,
                    tenant_id=call.tenant_id,
                    model_id=serving.model.id,
                    version=serving.version.version,
                    inputs=self._bounded(call.inputs[position]),
                    outputs=self._bounded(outputs),
                    latency_ms=call.latency_ms,
                    created_at=at,
                )
            )
        return records

    def _bounded(self, value: Any) -> Any:
        """``value`` as JSON (numbers that are not finite become null), unless it is too large to keep."""
        safe = _safe(value)
        size = len(orjson.dumps(safe))
        if size > self.max_field_bytes:
            return {"omitted": f"{size} bytes, over the {self.max_field_bytes} a logged field keeps"}
        return safe


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _safe(value: Any) -> Any:
    """JSON-safe: arrays and numpy scalars as lists and numbers, non-finite floats as None."""
    if isinstance(value, np.ndarray):
        return _safe(value.tolist())
    if isinstance(value, np.generic):
        return _safe(value.item())
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)
