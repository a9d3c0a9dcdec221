"""Drift monitoring in SQL: the tenant-scoped repository (reference profiles, monitoring policies,
drift reports) and the scheduler's cross-tenant view of the checks that are due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.monitoring.ports import StoredAction, StoredProfile, StoredReport
from aiservice.domain.pagination import Page
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import (
    drift_reports,
    models,
    monitoring_actions,
    monitoring_policies,
    reference_profiles,
)

_PROFILES = reference_profiles.c
_POLICIES = monitoring_policies.c
_REPORTS = drift_reports.c
_ACTIONS = monitoring_actions.c


class SqlAlchemyMonitoringRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def profile(self, model_id: str, version: int | None) -> StoredProfile | None:
        stmt = sa.select(reference_profiles).where(
            _PROFILES.tenant_id == self._tenant, _PROFILES.model_id == model_id
        )
        if version is not None:
            stmt = stmt.where(_PROFILES.version == version)
        row = self._conn.execute(stmt.order_by(_PROFILES.version.desc()).limit(1)).mappings().first()
        if row is None:
            return None
        return StoredProfile(
            model_id=row["model_id"],
            version=row["version"],
            profile=row["profile"],
            source=row["source"],
            created_at=row["created_at"],
            created_by=row["created_by"],
        )

    def put_profile(self, profile: StoredProfile) -> None:
        self._conn.execute(
            reference_profiles.delete().where(
                _PROFILES.tenant_id == self._tenant,
                _PROFILES.model_id == profile.model_id,
                _PROFILES.version == profile.version,
            )
        )
        self._conn.execute(
            reference_profiles.insert().values(
                tenant_id=self._tenant,
                model_id=profile.model_id,
                version=profile.version,
                profile=profile.profile,
                source=profile.source,
                created_by=profile.created_by,
                created_at=profile.created_at,
            )
        )

    def policy(self, model_id: str) -> MonitoringPolicy | None:
        row = self._conn.execute(
            sa.select(_POLICIES.policy).where(
                _POLICIES.tenant_id == self._tenant, _POLICIES.model_id == model_id
            )
        ).first()
        return None if row is None else MonitoringPolicy.from_json(row[0])

    def set_policy(self, model_id: str, policy: MonitoringPolicy, now: datetime, by: str) -> None:
        where = (_POLICIES.tenant_id == self._tenant, _POLICIES.model_id == model_id)
        values = {
            "policy": policy.to_json(),
            "schedule_minutes": policy.schedule_minutes,
            "updated_by": by,
            "updated_at": now,
        }
        if self._conn.execute(monitoring_policies.update().where(*where).values(**values)).rowcount == 0:
            self._conn.execute(
                monitoring_policies.insert().values(tenant_id=self._tenant, model_id=model_id, **values)
            )

    def mark_run(self, model_id: str, at: datetime) -> None:
        self._conn.execute(
            monitoring_policies.update()
            .where(_POLICIES.tenant_id == self._tenant, _POLICIES.model_id == model_id)
            .values(last_run_at=at)
        )

    def add_report(self, report: StoredReport) -> None:
        self._conn.execute(
            drift_reports.insert().values(
                tenant_id=self._tenant,
                id=report.id,
                model_id=report.model_id,
                version=report.version,
                verdict=report.verdict,
                score=report.score,
                trigger=report.trigger,
                window_since=report.window_since,
                window_until=report.window_until,
                report=report.report,
                created_at=report.created_at,
            )
        )

    def reports(
        self, model_id: str, version: int | None, limit: int, cursor: str | None
    ) -> Page[StoredReport]:
        stmt = sa.select(drift_reports).where(
            _REPORTS.tenant_id == self._tenant, _REPORTS.model_id == model_id
        )
        if version is not None:
            stmt = stmt.where(_REPORTS.version == version)
        return newest_first(self._conn, stmt, _REPORTS.created_at, _REPORTS.id, limit, cursor, _report)

    def erase_model(self, model_id: str) -> None:
        for table in (reference_profiles, monitoring_policies, drift_reports, monitoring_actions):
            self._conn.execute(
                table.delete().where(table.c.tenant_id == self._tenant, table.c.model_id == model_id)
            )

    def add_action(self, action: StoredAction) -> None:
        self._conn.execute(monitoring_actions.insert().values(tenant_id=self._tenant, **action.__dict__))

    def actions(self, model_id: str, limit: int, cursor: str | None) -> Page[StoredAction]:
        stmt = sa.select(monitoring_actions).where(
            _ACTIONS.tenant_id == self._tenant, _ACTIONS.model_id == model_id
        )
        return newest_first(self._conn, stmt, _ACTIONS.created_at, _ACTIONS.id, limit, cursor, _action)

    def last_action(self, model_id: str, action: str) -> StoredAction | None:
        stmt = (
            sa.select(monitoring_actions)
            .where(
                _ACTIONS.tenant_id == self._tenant,
                _ACTIONS.model_id == model_id,
                _ACTIONS.action == action,
            )
            .order_by(_ACTIONS.created_at.desc(), _ACTIONS.id.desc())
            .limit(1)
        )
        row = self._conn.execute(stmt).mappings().first()
        return None if row is None else _action(row)

    def action_by_reference(self, action: str, reference: str) -> StoredAction | None:
        stmt = sa.select(monitoring_actions).where(
            _ACTIONS.tenant_id == self._tenant, _ACTIONS.reference == reference, _ACTIONS.action == action
        )
        row = self._conn.execute(stmt.limit(1)).mappings().first()
        return None if row is None else _action(row)


class SqlAlchemyMonitoringSchedule:
    """The policies with a schedule whose next check is due, across tenants (live models only)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def due(self, now: datetime) -> list[tuple[str, str]]:
        stmt = (
            sa.select(
                _POLICIES.tenant_id, _POLICIES.model_id, _POLICIES.schedule_minutes, _POLICIES.last_run_at
            )
            .join(
                models, sa.and_(models.c.tenant_id == _POLICIES.tenant_id, models.c.id == _POLICIES.model_id)
            )
            .where(_POLICIES.schedule_minutes.is_not(None), models.c.deleted_at.is_(None))
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            (tenant, model)
            for tenant, model, minutes, last in rows
            if last is None or last + timedelta(minutes=minutes) <= now
        ]


def _report(row: sa.RowMapping) -> StoredReport:
    values: dict[str, Any] = dict(row)
    values.pop("tenant_id")
    return StoredReport(**values)


def _action(row: sa.RowMapping) -> StoredAction:
    values: dict[str, Any] = dict(row)
    values.pop("tenant_id")
    return StoredAction(**values)
