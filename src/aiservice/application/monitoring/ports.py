"""The drift monitoring ports: the tenant-scoped repository (in a unit of work), the scheduler's
cross-tenant view of due checks, and the drift score metric."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.payload_logging.ports import PayloadLogUnitOfWork
from aiservice.domain.pagination import Page


@dataclass(frozen=True)
class StoredProfile:
    """A version's reference profile as stored (``profile`` is ``ReferenceProfile.to_dict()``)."""

    model_id: str
    version: int
    profile: dict[str, Any]
    source: str  # rows, dataset or training
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True)
class StoredReport:
    """A drift check's outcome (``report`` is ``DriftReport.to_dict()``)."""

    id: str
    model_id: str
    version: int
    verdict: str
    score: float | None
    trigger: str  # manual or schedule
    window_since: datetime | None
    window_until: datetime | None
    report: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class StoredAction:
    """One automatic step of a monitoring policy (``monitoring/actions.py``), as recorded."""

    id: str
    model_id: str
    version: int  # the version the step was about (the current one; a retrained one for compare)
    action: str  # alert, retrain, compare, promote or rollback
    status: str  # done, started (its outcome comes later: a job, a canary) or failed
    trigger: str  # drift, accuracy or training
    reason: str
    reference: str | None  # the training job, experiment or deployment it made or touched
    details: dict[str, Any]
    created_by: str
    created_at: datetime


class MonitoringRepository(Protocol):
    """The unit of work's tenant's reference profiles, monitoring policies and drift reports."""

    def profile(self, model_id: str, version: int | None) -> StoredProfile | None:
        """A version's profile; ``None`` asks for the newest version that has one."""
        ...

    def put_profile(self, profile: StoredProfile) -> None:
        """Stores ``profile``, replacing the version's earlier one."""
        ...

    def policy(self, model_id: str) -> MonitoringPolicy | None: ...
    def set_policy(self, model_id: str, policy: MonitoringPolicy, now: datetime, by: str) -> None: ...
    def mark_run(self, model_id: str, at: datetime) -> None:
        """Records a scheduled check's time, so the next is due ``schedule_minutes`` later."""
        ...

    def add_report(self, report: StoredReport) -> None: ...
    def reports(
        self, model_id: str, version: int | None, limit: int, cursor: str | None
    ) -> Page[StoredReport]:
        """Newest first."""
        ...

    def erase_model(self, model_id: str) -> None:
        """Deletes a model's profiles, policy and reports."""
        ...

    def add_action(self, action: StoredAction) -> None: ...
    def actions(self, model_id: str, limit: int, cursor: str | None) -> Page[StoredAction]:
        """Newest first."""
        ...

    def last_action(self, model_id: str, action: str) -> StoredAction | None:
        """The model's newest action of that kind (failed ones included)."""
        ...

    def action_by_reference(self, action: str, reference: str) -> StoredAction | None:
        """The action of that kind that made ``reference`` (a training job, an experiment)."""
        ...


class MonitoringUnitOfWork(PayloadLogUnitOfWork, Protocol):
    @property
    def monitoring(self) -> MonitoringRepository: ...


class MonitoringUnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str, *, writes: bool = True) -> MonitoringUnitOfWork: ...


class MonitoringSchedule(Protocol):
    """Every tenant's scheduled policies, outside any unit of work (the host worker's duty)."""

    def due(self, now: datetime) -> list[tuple[str, str]]:
        """(tenant id, model id) of each live model whose policy has a schedule and whose last
        scheduled check is ``schedule_minutes`` old or more (or that never ran)."""
        ...


class DriftMetrics(Protocol):
    def drift_score(self, model: str, version: int, score: float) -> None:
        """Sets ``ai_service_model_drift_score{model,version}``."""
        ...


class NoDriftMetrics:
    def drift_score(self, model: str, version: int, score: float) -> None:
        return None
