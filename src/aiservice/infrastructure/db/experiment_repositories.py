"""Experiments in SQL: the tenant-scoped repository, the cross-tenant directory of running experiments,
and the observation store the recorder writes its batches to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.experimenting.ports import Observation, ObservedRow
from aiservice.domain.experiments import (
    Arm,
    BanditAlgorithm,
    BanditPlan,
    CanaryPlan,
    Experiment,
    ExperimentMode,
    ExperimentStatus,
    KeySource,
    RewardKind,
    RoutingKeySpec,
)
from aiservice.domain.pagination import Page
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import experiment_observations, experiments, prediction_feedback

_E = experiments.c
_O = experiment_observations.c
_F = prediction_feedback.c
_ACTIVE = (ExperimentStatus.RUNNING.value, ExperimentStatus.PAUSED.value)


class SqlAlchemyExperimentRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def add(self, experiment: Experiment) -> None:
        self._conn.execute(experiments.insert().values(**_row(experiment)))

    def get(self, experiment_id: str, *, for_update: bool = False) -> Experiment | None:
        stmt = sa.select(experiments).where(_E.tenant_id == self._tenant, _E.id == experiment_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self._conn.execute(stmt).mappings().first()
        return None if row is None else _experiment(row)

    def page(
        self,
        *,
        model_id: str | None,
        status: ExperimentStatus | None,
        mode: ExperimentMode | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Experiment]:
        stmt = sa.select(experiments).where(_E.tenant_id == self._tenant)
        if model_id is not None:
            stmt = stmt.where(_E.model_id == model_id)
        if status is not None:
            stmt = stmt.where(_E.status == status.value)
        if mode is not None:
            stmt = stmt.where(_E.mode == mode.value)
        return newest_first(self._conn, stmt, _E.created_at, _E.id, limit, cursor, _experiment)

    def active_of_model(self, model_id: str) -> list[Experiment]:
        stmt = sa.select(experiments).where(
            _E.tenant_id == self._tenant, _E.model_id == model_id, _E.status.in_(_ACTIVE)
        )
        return [_experiment(r) for r in self._conn.execute(stmt).mappings()]

    def save(self, experiment: Experiment) -> None:
        row = _row(experiment)
        for key in ("tenant_id", "id", "model_id", "created_at", "created_by"):
            del row[key]
        self._conn.execute(
            experiments.update().where(_E.tenant_id == self._tenant, _E.id == experiment.id).values(**row)
        )

    def delete(self, experiment_id: str) -> None:
        self._conn.execute(
            experiment_observations.delete().where(
                _O.tenant_id == self._tenant, _O.experiment_id == experiment_id
            )
        )
        self._conn.execute(experiments.delete().where(_E.tenant_id == self._tenant, _E.id == experiment_id))

    def observations(self, experiment_id: str, limit: int) -> list[ObservedRow]:
        joined = experiment_observations.outerjoin(
            prediction_feedback, sa.and_(_F.tenant_id == _O.tenant_id, _F.request_id == _O.request_id)
        )
        stmt = (
            sa.select(
                _O.arm,
                _O.latency_ms,
                _O.error,
                _O.prediction,
                _O.shadow,
                _O.created_at,
                _F.has_label,
                _F.label,
                _F.reward,
            )
            .select_from(joined)
            .where(_O.tenant_id == self._tenant, _O.experiment_id == experiment_id)
            .order_by(_O.created_at.desc())
            .limit(limit)
        )
        return [
            ObservedRow(
                arm=r.arm,
                latency_ms=float(r.latency_ms),
                error=bool(r.error),
                prediction=r.prediction,
                shadow=bool(r.shadow),
                has_label=bool(r.has_label),
                label=r.label,
                reward=None if r.reward is None else float(r.reward),
                created_at=r.created_at,
            )
            for r in self._conn.execute(stmt)
        ]


class SqlAlchemyExperimentDirectory:
    """Every tenant's running experiments (the routing snapshot's and the controller's view)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def running(self) -> list[Experiment]:
        stmt = sa.select(experiments).where(_E.status == ExperimentStatus.RUNNING.value)
        with self._engine.connect() as conn:
            return [_experiment(r) for r in conn.execute(stmt).mappings()]


class SqlAlchemyObservationStore:
    def __init__(self, engine: Engine) -> None:
        self._writer = writer_engine(engine)

    def write(self, observations: Sequence[Observation]) -> None:
        if not observations:
            return
        with self._writer.begin() as conn:
            conn.execute(experiment_observations.insert(), [_observation(o) for o in observations])


def _observation(o: Observation) -> dict[str, Any]:
    return {
        "tenant_id": o.tenant_id,
        "id": uuid.uuid4().hex,
        "experiment_id": o.experiment_id,
        "arm": o.arm,
        "request_id": o.request_id[:160],
        "latency_ms": o.latency_ms,
        "error": o.error,
        "prediction": o.prediction,
        "shadow": o.shadow,
        "created_at": o.created_at,
    }


def _row(e: Experiment) -> dict[str, Any]:
    return {
        "tenant_id": e.tenant_id,
        "id": e.id,
        "name": e.name,
        "model_id": e.model_id,
        "deployment": e.deployment,
        "mode": e.mode.value,
        "status": e.status.value,
        "arms": [arm.to_json() for arm in e.arms],
        "champion": e.champion,
        "routing_key": None if e.routing_key is None else e.routing_key.to_json(),
        "confidence": e.confidence,
        "min_detectable_effect": e.min_detectable_effect,
        "auto_promote": e.auto_promote,
        "canary": None if e.canary is None else e.canary.to_json(),
        "bandit": None if e.bandit is None else e.bandit.to_json(),
        "canary_step": e.canary_step,
        "step_started_at": e.step_started_at,
        "allocation": dict(e.allocation),
        "winner": e.winner,
        "reason": e.reason,
        "created_by": e.created_by,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
    }


def _canary(raw: dict[str, Any] | None) -> CanaryPlan | None:
    if raw is None:
        return None
    return CanaryPlan(
        steps=tuple(raw["steps"]),
        min_requests=raw["minRequests"],
        min_seconds=raw["minSeconds"],
        max_error_rate=raw["maxErrorRate"],
        max_latency_ratio=raw["maxLatencyRatio"],
        max_metric_drop=raw.get("maxMetricDrop"),
    )


def _bandit(raw: dict[str, Any] | None) -> BanditPlan | None:
    if raw is None:
        return None
    return BanditPlan(
        algorithm=BanditAlgorithm(raw["algorithm"]),
        reward_metric=raw["rewardMetric"],
        reward_kind=RewardKind(raw["rewardKind"]),
        min_exploration=raw["minExploration"],
    )


def _routing(raw: dict[str, Any] | None) -> RoutingKeySpec | None:
    if not raw:
        return None
    ((source, name),) = raw.items()
    return RoutingKeySpec(KeySource(source), name)


def _experiment(row: sa.RowMapping) -> Experiment:
    return Experiment(
        tenant_id=row["tenant_id"],
        id=row["id"],
        name=row["name"],
        model_id=row["model_id"],
        deployment=row["deployment"],
        mode=ExperimentMode(row["mode"]),
        status=ExperimentStatus(row["status"]),
        arms=tuple(Arm.from_json(a) for a in row["arms"]),
        champion=row["champion"],
        routing_key=_routing(row["routing_key"]),
        confidence=row["confidence"],
        min_detectable_effect=row["min_detectable_effect"],
        auto_promote=row["auto_promote"],
        canary=_canary(row["canary"]),
        bandit=_bandit(row["bandit"]),
        canary_step=row["canary_step"],
        step_started_at=row["step_started_at"],
        allocation=dict(row["allocation"]),
        winner=row["winner"],
        reason=row["reason"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )
