"""API keys in the database: a tenant's keys inside its unit of work, and the lookup by id that
authentication needs before it knows the tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.domain.api_keys import ApiKey
from aiservice.infrastructure.db.tables import api_keys


class SqlAlchemyApiKeyRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def add(self, key: ApiKey) -> None:
        if key.tenant_id != self._tenant:
            raise ValueError("an API key belongs to the unit of work's tenant")
        self._conn.execute(api_keys.insert().values(**_row(key)))

    def get(self, key_id: str) -> ApiKey | None:
        row = (
            self._conn.execute(
                sa.select(api_keys).where(api_keys.c.tenant_id == self._tenant, api_keys.c.id == key_id)
            )
            .mappings()
            .first()
        )
        return _key(row) if row else None

    def all(self) -> list[ApiKey]:
        rows = self._conn.execute(
            sa.select(api_keys)
            .where(api_keys.c.tenant_id == self._tenant)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        ).mappings()
        return [_key(r) for r in rows]

    def revoke(self, key_id: str, at: datetime) -> None:
        self._conn.execute(
            api_keys.update()
            .where(
                api_keys.c.tenant_id == self._tenant,
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )


class SqlAlchemyApiKeyLookup:
    """One primary-key read per presented key, so a revocation counts from the very next request."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find(self, key_id: str) -> ApiKey | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return _key(row) if row else None


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "roles": list(key.roles),
        "model_ids": list(key.model_ids) if key.model_ids is not None else None,
        "secret_hash": key.secret_hash,
        "created_by": key.created_by,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _key(row: sa.RowMapping) -> ApiKey:
    model_ids = row["model_ids"]
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        roles=tuple(row["roles"]),
        model_ids=tuple(model_ids) if model_ids is not None else None,
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
