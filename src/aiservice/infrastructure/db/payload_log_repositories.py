"""Payload logs in SQL: the tenant-scoped repository (in the unit of work) and the recorder's
cross-tenant store (batched writes, enabled policies, the retention purge)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.payload_logging.ports import PredictionQuery
from aiservice.domain.pagination import Page
from aiservice.domain.payload_logging import Feedback, LoggedPrediction, LoggingPolicy
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import (
    models,
    payload_log_policies,
    prediction_feedback,
    prediction_logs,
)

_LOGS = prediction_logs.c
_FEEDBACK = prediction_feedback.c
_JOINED = prediction_logs.outerjoin(
    prediction_feedback,
    sa.and_(_FEEDBACK.tenant_id == _LOGS.tenant_id, _FEEDBACK.request_id == _LOGS.request_id),
)
_COLUMNS = (
    *prediction_logs.c,
    _FEEDBACK.label.label("fb_label"),
    _FEEDBACK.has_label.label("fb_has_label"),
    _FEEDBACK.reward.label("fb_reward"),
    _FEEDBACK.created_by.label("fb_created_by"),
    _FEEDBACK.created_at.label("fb_created_at"),
)
_CHUNK = 500  # ids per IN (...) list


class SqlAlchemyPayloadLogRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def policy(self, model_id: str) -> LoggingPolicy | None:
        row = (
            self._conn.execute(
                sa.select(payload_log_policies).where(
                    payload_log_policies.c.tenant_id == self._tenant,
                    payload_log_policies.c.model_id == model_id,
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else _policy(row)

    def set_policy(self, model_id: str, policy: LoggingPolicy, now: datetime, by: str) -> None:
        where = (
            payload_log_policies.c.tenant_id == self._tenant,
            payload_log_policies.c.model_id == model_id,
        )
        values = {
            "enabled": policy.enabled,
            "sample_rate": policy.sample_rate,
            "retention_days": policy.retention_days,
            "updated_by": by,
            "updated_at": now,
        }
        if self._conn.execute(payload_log_policies.update().where(*where).values(**values)).rowcount == 0:
            self._conn.execute(
                payload_log_policies.insert().values(tenant_id=self._tenant, model_id=model_id, **values)
            )

    def page(self, model_id: str, query: PredictionQuery) -> Page[LoggedPrediction]:
        stmt = (
            sa.select(*_COLUMNS)
            .select_from(_JOINED)
            .where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
        )
        stmt = _in_window(stmt, query.version, query.since, query.until)
        return newest_first(self._conn, stmt, _LOGS.created_at, _LOGS.id, query.limit, query.cursor, _logged)

    def latest(self, request_ids: Sequence[str]) -> dict[str, LoggedPrediction]:
        found: dict[str, LoggedPrediction] = {}
        ids = list(dict.fromkeys(request_ids))
        for start in range(0, len(ids), _CHUNK):
            stmt = (
                sa.select(*_COLUMNS)
                .select_from(_JOINED)
                .where(_LOGS.tenant_id == self._tenant, _LOGS.request_id.in_(ids[start : start + _CHUNK]))
                .order_by(_LOGS.created_at, _LOGS.id)  # the latest of a reused id is kept
            )
            for row in self._conn.execute(stmt).mappings():
                found[row["request_id"]] = _logged(row)
        return found

    def put_feedback(self, feedback: Feedback) -> None:
        self._conn.execute(
            prediction_feedback.delete().where(
                _FEEDBACK.tenant_id == self._tenant, _FEEDBACK.request_id == feedback.request_id
            )
        )
        self._conn.execute(
            prediction_feedback.insert().values(
                tenant_id=self._tenant,
                request_id=feedback.request_id,
                model_id=feedback.model_id,
                label=feedback.label if feedback.has_label else None,
                has_label=feedback.has_label,
                reward=feedback.reward,
                created_by=feedback.created_by,
                created_at=feedback.created_at,
            )
        )

    def erase_model(self, model_id: str, *, policy: bool = False) -> dict[str, int]:
        counts = {
            "predictions": self._conn.execute(
                prediction_logs.delete().where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
            ).rowcount,
            "feedback": self._conn.execute(
                prediction_feedback.delete().where(
                    _FEEDBACK.tenant_id == self._tenant, _FEEDBACK.model_id == model_id
                )
            ).rowcount,
        }
        if policy:
            self._conn.execute(
                payload_log_policies.delete().where(
                    payload_log_policies.c.tenant_id == self._tenant,
                    payload_log_policies.c.model_id == model_id,
                )
            )
        return counts

    def window(
        self, model_id: str, version: int | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[LoggedPrediction]:
        stmt = (
            sa.select(*_COLUMNS)
            .select_from(_JOINED)
            .where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
        )
        stmt = _in_window(stmt, version, since, until).order_by(_LOGS.created_at, _LOGS.id).limit(limit)
        return [_logged(row) for row in self._conn.execute(stmt).mappings()]


class SqlAlchemyPayloadLogStore:
    """Every tenant's logs: written in batches by the recorder, purged by retention."""

    def __init__(self, engine: Engine) -> None:
        self._reader = engine
        self._writer = writer_engine(engine)

    def write(self, records: Sequence[LoggedPrediction]) -> None:
        if not records:
            return
        with self._writer.begin() as conn:
            conn.execute(prediction_logs.insert(), [_row(r) for r in records])

    def enabled_policies(self) -> dict[tuple[str, str], LoggingPolicy]:
        p = payload_log_policies.c
        stmt = (
            sa.select(payload_log_policies)
            .join(models, sa.and_(models.c.tenant_id == p.tenant_id, models.c.id == p.model_id))
            .where(p.enabled.is_(True), models.c.deleted_at.is_(None))
        )
        with self._reader.connect() as conn:
            return {(r["tenant_id"], r["model_id"]): _policy(r) for r in conn.execute(stmt).mappings()}

    def purge(self, now: datetime) -> int:
        """Per policy, the logs older than its retention; then every log of a model that is deleted (or
        gone) or has no policy, the feedback no log is left for, and the policies of deleted models."""
        p = payload_log_policies.c
        deleted = 0
        live_model = sa.exists().where(
            models.c.tenant_id == _LOGS.tenant_id,
            models.c.id == _LOGS.model_id,
            models.c.deleted_at.is_(None),
        )
        has_policy = sa.exists().where(p.tenant_id == _LOGS.tenant_id, p.model_id == _LOGS.model_id)
        logged = sa.exists().where(
            _LOGS.tenant_id == _FEEDBACK.tenant_id, _LOGS.request_id == _FEEDBACK.request_id
        )
        policy_model = sa.exists().where(
            models.c.tenant_id == p.tenant_id, models.c.id == p.model_id, models.c.deleted_at.is_(None)
        )
        with self._writer.begin() as conn:
            policies = conn.execute(sa.select(p.tenant_id, p.model_id, p.retention_days)).all()
            for tenant_id, model_id, days in policies:
                old = prediction_logs.delete().where(
                    _LOGS.tenant_id == tenant_id,
                    _LOGS.model_id == model_id,
                    _LOGS.created_at < now - timedelta(days=days),
                )
                deleted += conn.execute(old).rowcount
            deleted += conn.execute(prediction_logs.delete().where(~live_model | ~has_policy)).rowcount
            conn.execute(prediction_feedback.delete().where(~logged))
            conn.execute(payload_log_policies.delete().where(~policy_model))
        return deleted


def _in_window(
    stmt: sa.Select[Any], version: int | None, since: datetime | None, until: datetime | None
) -> sa.Select[Any]:
    if version is not None:
        stmt = stmt.where(_LOGS.version == version)
    if since is not None:
        stmt = stmt.where(_LOGS.created_at >= since)
    if until is not None:
        stmt = stmt.where(_LOGS.created_at < until)
    return stmt


def _policy(row: sa.RowMapping) -> LoggingPolicy:
    return LoggingPolicy(
        enabled=bool(row["enabled"]),
        sample_rate=float(row["sample_rate"]),
        retention_days=row["retention_days"],
    )


def _row(r: LoggedPrediction) -> dict[str, Any]:
    return {
        "tenant_id": r.tenant_id,
        "id": r.id,
        "request_id": r.request_id,
        "model_id": r.model_id,
        "version": r.version,
        "deployment": r.deployment,
        "experiment_id": r.experiment_id,
        "arm": r.arm,
        "inputs": r.inputs,
        "outputs": r.outputs,
        "latency_ms": r.latency_ms,
        "created_at": r.created_at,
    }


def _logged(row: sa.RowMapping) -> LoggedPrediction:
    feedback = None
    if row["fb_created_at"] is not None:
        feedback = Feedback(
            request_id=row["request_id"],
            model_id=row["model_id"],
            label=row["fb_label"],
            has_label=bool(row["fb_has_label"]),
            reward=row["fb_reward"],
            created_at=row["fb_created_at"],
            created_by=row["fb_created_by"],
        )
    return LoggedPrediction(
        id=row["id"],
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        model_id=row["model_id"],
        version=row["version"],
        inputs=row["inputs"],
        outputs=row["outputs"],
        latency_ms=row["latency_ms"],
        created_at=row["created_at"],
        deployment=row["deployment"],
        experiment_id=row["experiment_id"],
        arm=row["arm"],
        feedback=feedback,
    )
