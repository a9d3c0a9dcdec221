"""The experiment ports: the tenant-scoped repository (in a unit of work), the cross-tenant view of
running experiments (the routing snapshot and the controller), and the observation store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiservice.application.ports import UnitOfWork
from aiservice.domain.experiments import Experiment, ExperimentMode, ExperimentStatus
from aiservice.domain.pagination import Page


@dataclass(frozen=True, slots=True)
class Observation:
    """One routed prediction (or a shadow copy of one) as an experiment saw it."""

    tenant_id: str
    experiment_id: str
    arm: str
    request_id: str
    latency_ms: float
    error: bool
    prediction: Any  # the caller-facing label or value (JSON); None on an error
    shadow: bool
    created_at: datetime


@dataclass(frozen=True)
class ObservedRow:
    """An observation with the feedback given for its request id, if any."""

    arm: str
    latency_ms: float
    error: bool
    prediction: Any
    shadow: bool
    has_label: bool = False
    label: Any = None
    reward: float | None = None
    created_at: datetime | None = None


class ExperimentRepository(Protocol):
    """Experiments of the unit of work's tenant."""

    def add(self, experiment: Experiment) -> None: ...
    def get(self, experiment_id: str, *, for_update: bool = False) -> Experiment | None: ...
    def page(
        self,
        *,
        model_id: str | None,
        status: ExperimentStatus | None,
        mode: ExperimentMode | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Experiment]: ...
    def active_of_model(self, model_id: str) -> list[Experiment]:
        """The model's running and paused experiments."""
        ...

    def save(self, experiment: Experiment) -> None: ...
    def delete(self, experiment_id: str) -> None:
        """Deletes the experiment and its observations."""
        ...

    def observations(self, experiment_id: str, limit: int) -> list[ObservedRow]:
        """The experiment's latest observations (at most ``limit``), each joined with its feedback."""
        ...


class ExperimentUnitOfWork(UnitOfWork, Protocol):
    @property
    def experiments(self) -> ExperimentRepository: ...


class ExperimentUnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str, *, writes: bool = True) -> ExperimentUnitOfWork: ...


class ExperimentDirectory(Protocol):
    """Every tenant's running experiments, outside any unit of work."""

    def running(self) -> list[Experiment]: ...


class ObservationStore(Protocol):
    def write(self, observations: Sequence[Observation]) -> None: ...
