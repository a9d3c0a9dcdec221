"""Tenants (platform-wide rows) and what a tenant uses of its quotas (counted, never stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.pagination import Page, decode_cursor, encode_cursor
from aiservice.domain.tenancy import Quota, Tenant, TenantStatus
from aiservice.domain.training import JobStatus
from aiservice.infrastructure.db.tables import model_versions, models, tenants, training_jobs

_ACTIVE_JOBS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class SqlAlchemyTenantRepository:
    def __init__(self, conn: Connection, now: datetime) -> None:
        self._conn = conn
        self._now = now

    def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        stmt = sa.select(tenants).where(tenants.c.tenant_id == tenant_id)
        if for_update:
            # PostgreSQL: FOR NO KEY UPDATE, which the foreign-key checks of inserted models, versions
            # and jobs (FOR KEY SHARE) do not wait for. SQLite's writer lock already serialises writers.
            stmt = stmt.with_for_update(key_share=True)
        row = self._conn.execute(stmt).mappings().first()
        return _tenant(row) if row is not None else None

    def add(self, tenant: Tenant) -> None:
        tenant.created_at = tenant.created_at or self._now
        self._conn.execute(tenants.insert().values(tenant_id=tenant.id, **_values(tenant)))

    def save(self, tenant: Tenant) -> None:
        self._conn.execute(tenants.update().where(tenants.c.tenant_id == tenant.id).values(**_values(tenant)))

    def all_ids(self) -> list[str]:
        return list(
            self._conn.execute(sa.select(tenants.c.tenant_id).order_by(tenants.c.tenant_id)).scalars()
        )

    def page(self, limit: int, cursor: str | None) -> Page[Tenant]:
        stmt = sa.select(tenants).order_by(tenants.c.tenant_id).limit(limit + 1)
        if cursor is not None:
            after = decode_cursor(cursor).get("after")
            if not isinstance(after, str):
                raise InvalidInput("The cursor is malformed.", errors=[FieldError("query.cursor", "bad key")])
            stmt = stmt.where(tenants.c.tenant_id > after)
        found = [_tenant(row) for row in self._conn.execute(stmt).mappings()]
        more = len(found) > limit
        items = found[:limit]
        return Page(items, encode_cursor({"after": items[-1].id}) if more else None)


def _values(tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "status": tenant.status.value,
        "settings": tenant.settings,
        "quotas": {quota.value: limit for quota, limit in tenant.quotas.items()},
        "created_at": tenant.created_at,
    }


def _tenant(row: sa.RowMapping) -> Tenant:
    return Tenant(
        id=row["tenant_id"],
        name=row["name"],
        status=TenantStatus(row["status"]),
        settings=row["settings"],
        quotas={Quota(name): int(limit) for name, limit in (row["quotas"] or {}).items()},
        created_at=row["created_at"],
    )


class SqlAlchemyUsageRepository:
    """Counts inside the caller's transaction: after the tenant row is locked they cannot go stale."""

    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def _scalar(self, stmt: sa.Select[Any]) -> int:
        return int(self._conn.execute(stmt).scalar_one() or 0)

    def models(self) -> int:
        return self._scalar(
            sa.select(sa.func.count())
            .select_from(models)
            .where(models.c.tenant_id == self._tenant, models.c.deleted_at.is_(None))
        )

    def versions(self, model_id: str) -> int:
        return self._scalar(
            sa.select(sa.func.count())
            .select_from(model_versions)
            .where(model_versions.c.tenant_id == self._tenant, model_versions.c.model_id == model_id)
        )

    def _of_live_models(self) -> sa.Join:
        live = sa.and_(
            models.c.tenant_id == model_versions.c.tenant_id,
            models.c.id == model_versions.c.model_id,
            models.c.deleted_at.is_(None),
        )
        return model_versions.join(models, live)

    def most_versions(self) -> int:
        per_model = (
            sa.select(sa.func.count().label("n"))
            .select_from(self._of_live_models())
            .where(model_versions.c.tenant_id == self._tenant)
            .group_by(model_versions.c.model_id)
            .subquery()
        )
        return self._scalar(sa.select(sa.func.coalesce(sa.func.max(per_model.c.n), 0)))

    def artifact_bytes(self) -> int:
        return self._scalar(
            sa.select(sa.func.coalesce(sa.func.sum(model_versions.c.artifact_size), 0))
            .select_from(self._of_live_models())
            .where(model_versions.c.tenant_id == self._tenant)
        )

    def active_jobs(self) -> int:
        return self._scalar(
            sa.select(sa.func.count())
            .select_from(training_jobs)
            .where(training_jobs.c.tenant_id == self._tenant, training_jobs.c.status.in_(_ACTIVE_JOBS))
        )
