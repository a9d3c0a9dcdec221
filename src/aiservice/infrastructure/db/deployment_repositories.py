"""Deployments in SQL: the tenant-scoped repository and the deployers' cross-tenant view."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.domain.deployments import (
    TARGET_FIELDS,
    Autoscaling,
    Deployment,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    ReplicaLoad,
    ResourceLimits,
    Revision,
    Scaling,
    ScalingMetric,
)
from aiservice.domain.pagination import Page
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import deployments

_LIVE = deployments.c.deleted_at.is_(None)


class SqlAlchemyDeploymentRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id
        self.seen: list[Deployment] = []  # their events go to the outbox on commit

    def add(self, deployment: Deployment) -> None:
        self._conn.execute(deployments.insert().values(**_row(deployment)))
        self.seen.append(deployment)

    def get_by_name(self, name: str, *, for_update: bool = False) -> Deployment | None:
        stmt = sa.select(deployments).where(
            deployments.c.tenant_id == self._tenant, deployments.c.name == name, _LIVE
        )
        return self._one(stmt, for_update)

    def get(self, deployment_id: str, *, for_update: bool = False) -> Deployment | None:
        stmt = sa.select(deployments).where(
            deployments.c.tenant_id == self._tenant, deployments.c.id == deployment_id
        )
        return self._one(stmt, for_update)

    def _one(self, stmt: sa.Select[Any], for_update: bool) -> Deployment | None:
        if for_update:
            stmt = stmt.with_for_update()  # PostgreSQL row lock; SQLite's writer lock covers it
        row = self._conn.execute(stmt).mappings().first()
        if row is None:
            return None
        deployment = _deployment(row)
        self.seen.append(deployment)
        return deployment

    def page(
        self,
        *,
        model_id: str | None,
        status: DeploymentStatus | None,
        environment: Environment | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Deployment]:
        stmt = sa.select(deployments).where(deployments.c.tenant_id == self._tenant, _LIVE)
        if model_id is not None:
            stmt = stmt.where(deployments.c.model_id == model_id)
        if status is not None:
            stmt = stmt.where(deployments.c.status == status.value)
        if environment is not None:
            stmt = stmt.where(deployments.c.environment == environment.value)
        return newest_first(
            self._conn, stmt, deployments.c.created_at, deployments.c.id, limit, cursor, _deployment
        )

    def of_model(self, model_id: str) -> list[Deployment]:
        stmt = sa.select(deployments).where(
            deployments.c.tenant_id == self._tenant, deployments.c.model_id == model_id, _LIVE
        )
        return [_deployment(r) for r in self._conn.execute(stmt).mappings()]

    def count_live(self) -> int:
        stmt = sa.select(sa.func.count()).select_from(deployments)
        return int(
            self._conn.execute(stmt.where(deployments.c.tenant_id == self._tenant, _LIVE)).scalar_one()
        )

    def save(self, deployment: Deployment) -> None:
        row = _row(deployment)
        for key in ("tenant_id", "id", "name", "model_id", "created_at", "created_by"):
            del row[key]
        self._conn.execute(
            deployments.update()
            .where(deployments.c.tenant_id == self._tenant, deployments.c.id == deployment.id)
            .values(**row)
        )


class SqlAlchemyDeploymentDirectory:
    """Every tenant's live deployments, for the deployers' reconcile loop and the endpoints' routing."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def live(self, target: DeploymentTarget | None = None) -> list[Deployment]:
        stmt = sa.select(deployments).where(_LIVE).order_by(deployments.c.created_at)
        if target is not None:
            stmt = stmt.where(deployments.c.target == target.value)
        with self._engine.connect() as conn:
            return [_deployment(r) for r in conn.execute(stmt).mappings()]

    def find(self, tenant_id: str, name: str) -> Deployment | None:
        stmt = sa.select(deployments).where(
            deployments.c.tenant_id == tenant_id, deployments.c.name == name, _LIVE
        )
        with self._engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _deployment(row)


def _row(d: Deployment) -> dict[str, Any]:
    return {
        "tenant_id": d.tenant_id,
        "id": d.id,
        "name": d.name,
        "model_id": d.model_id,
        "environment": d.environment.value,
        "target": d.target.value,
        "status": d.status.value,
        "reason": d.reason,
        "scaling": {
            "minReplicas": d.scaling.min_replicas,
            "maxReplicas": d.scaling.max_replicas,
            "autoscaling": d.scaling.autoscaling.to_json(),
        },
        "resources": d.resources.to_json(),
        "revision": d.revision.to_json(),
        "serving": None if d.serving is None else d.serving.to_json(),
        "previous": None if d.previous is None else d.previous.to_json(),
        "replicas_desired": d.replicas_desired,
        "replicas_ready": d.replicas_ready,
        "history": d.history,
        "endpoints": d.endpoints,
        "load": None if d.load is None else d.load.to_json(),
        "created_by": d.created_by,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "deleted_at": d.deleted_at,
    }


def _deployment(row: sa.RowMapping) -> Deployment:
    scaling, autoscaling = row["scaling"], row["scaling"]["autoscaling"]
    metric = ScalingMetric(autoscaling["metric"])
    return Deployment(
        tenant_id=row["tenant_id"],
        id=row["id"],
        name=row["name"],
        model_id=row["model_id"],
        environment=Environment(row["environment"]),
        target=DeploymentTarget(row["target"]),
        status=DeploymentStatus(row["status"]),
        reason=row["reason"],
        scaling=Scaling(
            min_replicas=scaling["minReplicas"],
            max_replicas=scaling["maxReplicas"],
            autoscaling=Autoscaling(
                enabled=autoscaling["enabled"],
                metric=metric,
                target=float(autoscaling[TARGET_FIELDS[metric]]),
                cooldown_seconds=float(autoscaling["cooldownSeconds"]),
            ),
        ),
        resources=ResourceLimits(**row["resources"]),
        revision=Revision.from_json(row["revision"]),
        serving=None if row["serving"] is None else Revision.from_json(row["serving"]),
        previous=None if row["previous"] is None else Revision.from_json(row["previous"]),
        replicas_desired=row["replicas_desired"],
        replicas_ready=row["replicas_ready"],
        history=list(row["history"]),
        endpoints=dict(row["endpoints"]),
        load=None if row["load"] is None else ReplicaLoad.from_json(row["load"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )
