"""Payload logging: a model's sampled predictions (inputs and outputs) kept for a retention period, and
the feedback (true label or reward) callers send for them later.

A logged prediction is known by the id of the request that made it: ``X-Request-ID`` for a single
prediction (``/predict``, or a one-row v2 inference), ``{requestId}:{row}`` for each row of a batch
(``/batch-predict``, a v2 inference of several rows; ``row`` is the input's index in the request).
Sampling is deterministic by that request id, so a rate is honoured and one request is logged whole or
not at all. Feedback is joined to the logged prediction by the same id; the latest feedback wins.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiservice.domain.errors import FieldError, InvalidInput

MAX_RETENTION_DAYS = 3650
MAX_FEEDBACK_ITEMS = 1000
MAX_REQUEST_ID = 160  # a request id (128) with a row suffix
SINKS = ("database", "parquet")  # where the inputs and outputs go: the table, or Parquet files


@dataclass(frozen=True)
class LoggingPolicy:
    """Whether a model's predictions are logged, which fraction of requests, and for how long."""

    enabled: bool = False
    sample_rate: float = 1.0
    retention_days: int = 30
    sink: str = "database"

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "body") -> LoggingPolicy:
        """A policy from the API's fields (``enabled``, ``sampleRate``, ``retentionDays``, ``sink``);
        fields left out take the defaults. Raises ``InvalidInput`` naming every bad field."""
        errors: list[FieldError] = []
        default = cls()
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.append(FieldError(f"{where}.enabled", "must be a boolean"))
        rate = raw.get("sampleRate", default.sample_rate)
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or not 0 < rate <= 1
        ):
            errors.append(FieldError(f"{where}.sampleRate", "must be a number in (0, 1]"))
        days = raw.get("retentionDays", default.retention_days)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
            errors.append(
                FieldError(
                    f"{where}.retentionDays", f"must be a whole number of days, 1-{MAX_RETENTION_DAYS}"
                )
            )
        sink = raw.get("sink", default.sink)
        if sink not in SINKS:
            errors.append(FieldError(f"{where}.sink", "must be one of: " + ", ".join(SINKS)))
        for name in raw:
            if name not in ("enabled", "sampleRate", "retentionDays", "sink"):
                errors.append(FieldError(f"{where}.{name}", "unknown field"))
        if errors:
            raise InvalidInput(
                "Invalid payload logging policy: " + ", ".join(e.field for e in errors), errors=errors
            )
        return cls(enabled=bool(enabled), sample_rate=float(rate), retention_days=int(days), sink=str(sink))

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "sampleRate": self.sample_rate,
            "retentionDays": self.retention_days,
            "sink": self.sink,
        }


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the ``rate`` fraction logged: a hash of its id, so the same request (and
    every row of it) always gets the same answer, and ids spread evenly whatever they look like."""
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < rate


@dataclass(frozen=True)
class Feedback:
    """What a caller learnt later about one prediction: its true label (any JSON; the true value of a
    regression) and/or a reward (a number, as bandits use)."""

    request_id: str
    model_id: str
    label: Any = None
    has_label: bool = False
    reward: float | None = None
    created_at: datetime | None = None
    created_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"requestId": self.request_id}
        if self.has_label:
            body["label"] = self.label
        if self.reward is not None:
            body["reward"] = self.reward
        body["createdAt"] = self.created_at.isoformat() if self.created_at else None
        body["createdBy"] = self.created_by
        return body


@dataclass(frozen=True)
class FeedbackInput:
    """One feedback as sent, checked: a label, a reward, or both."""

    request_id: str
    label: Any = None
    has_label: bool = False
    reward: float | None = None

    @classmethod
    def parse(cls, request_id: Any, raw: Mapping[str, Any], where: str = "body") -> FeedbackInput:
        errors: list[FieldError] = []
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID:
            errors.append(
                FieldError(f"{where}.requestId", f"must be a string of 1-{MAX_REQUEST_ID} characters")
            )
        has_label = raw.get("label") is not None
        reward = raw.get("reward")
        if reward is not None and (
            isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
        ):
            errors.append(FieldError(f"{where}.reward", "must be a finite number"))
        if not has_label and reward is None:
            errors.append(FieldError(f"{where}.label", "give a label or a reward (or both)"))
        if errors:
            raise InvalidInput("Invalid feedback: " + ", ".join(e.field for e in errors), errors=errors)
        return cls(
            request_id=str(request_id),
            label=raw.get("label"),
            has_label=has_label,
            reward=None if reward is None else float(reward),
        )


@dataclass(frozen=True)
class LoggedPrediction:
    """One logged prediction (a row of a batch is one), with the feedback joined to it if any.
    ``deployment``, ``experiment_id`` and ``arm`` name what routed it, where something did."""

    id: str
    request_id: str
    tenant_id: str
    model_id: str
    version: int
    inputs: Any
    outputs: Any
    latency_ms: float
    created_at: datetime
    deployment: str | None = None
    experiment_id: str | None = None
    arm: str | None = None
    feedback: Feedback | None = None
    payload_unavailable: bool = False  # its Parquet file is missing or corrupt: inputs/outputs are null

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "requestId": self.request_id,
            "modelId": self.model_id,
            "version": self.version,
            "deployment": self.deployment,
            "experimentId": self.experiment_id,
            "arm": self.arm,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "latencyMs": self.latency_ms,
            "createdAt": self.created_at.isoformat(),
            "feedback": None if self.feedback is None else self.feedback.to_json(),
        }
        if self.payload_unavailable:
            body["payloadUnavailable"] = True
        return body
