"""The payload logging ports: the tenant-scoped repository (in a unit of work), the recorder's
cross-tenant store, and the dataplane's hook (``PayloadLog``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiservice.application.ports import Prediction, UnitOfWork
from aiservice.application.serving.inputs import ServingModel
from aiservice.domain.pagination import Page
from aiservice.domain.payload_logging import Feedback, LoggedPrediction, LoggingPolicy


@dataclass(frozen=True)
class PredictionQuery:
    version: int | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    limit: int = 50
    cursor: str | None = None


class PayloadLogRepository(Protocol):
    """The unit of work's tenant's logging policies, logged predictions and feedback."""

    def policy(self, model_id: str) -> LoggingPolicy | None: ...
    def set_policy(self, model_id: str, policy: LoggingPolicy, now: datetime, by: str) -> None: ...
    def page(self, model_id: str, query: PredictionQuery) -> Page[LoggedPrediction]:
        """Newest first, each with its feedback."""
        ...

    def latest(self, request_ids: Sequence[str], *, payloads: bool = True) -> dict[str, LoggedPrediction]:
        """The latest prediction logged under each id (an id a client reused names its last one);
        without ``payloads``, the inputs and outputs of the Parquet sink are not read (they are null)."""
        ...

    def put_feedback(self, feedback: Feedback) -> None:
        """Stores ``feedback``, replacing any earlier feedback for the same request id."""
        ...

    def erase_model(self, model_id: str, *, policy: bool = False) -> dict[str, int]:
        """Deletes a model's logged predictions and their feedback (and its policy when asked)."""
        ...

    def window(
        self, model_id: str, version: int | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[LoggedPrediction]:
        """Logged predictions of a model (and version) in ``[since, until)``, oldest first, at most
        ``limit``, each with its feedback: what drift and performance checks read."""
        ...


class PayloadLogUnitOfWork(UnitOfWork, Protocol):
    @property
    def payload_logs(self) -> PayloadLogRepository: ...


class PayloadLogUnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str, *, writes: bool = True) -> PayloadLogUnitOfWork: ...


class PayloadLogStore(Protocol):
    """Every tenant's logs, outside any unit of work: the recorder's writes and the retention purge."""

    def write(self, records: Sequence[LoggedPrediction]) -> None: ...
    def enabled_policies(self) -> dict[tuple[str, str], LoggingPolicy]:
        """(tenant id, model id) -> policy, of every live model that has logging enabled."""
        ...

    def purge(self, now: datetime) -> int:
        """Deletes what is past its model's retention, and every log of a deleted model; the count."""
        ...

    def drop_files(self, tenant_id: str | None = None, model_id: str | None = None) -> int:
        """Deletes the Parquet sink's files none of whose rows remain (of one model, or all); the count.
        Called after the commit that deleted their rows; a file not deleted is tried again later."""
        ...


class PayloadLog(Protocol):
    """The dataplane's hook, called once per answered call on the hot path: it must not block. The
    inputs, the rows of ``prediction`` and ``positions`` (each row's input index in the request) are
    handed over as they are; whatever converting they need happens off the hot path."""

    def offer(
        self,
        tenant_id: str,
        serving: ServingModel,
        inputs: Sequence[Any] | Any,
        positions: Sequence[int],
        prediction: Prediction,
        latency_ms: float,
        batch: bool,
    ) -> None: ...


class NoPayloadLog:
    """Logs nothing (the default)."""

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
        return None


NO_PAYLOAD_LOG = NoPayloadLog()
