"""Database health: latency of a round trip and whether the schema is at the newest migration."""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from aiservice.infrastructure.db.migrate import head_revision


class SqlAlchemyDatabaseProbe:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ping(self) -> float:
        started = time.perf_counter()
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return (time.perf_counter() - started) * 1000

    def migrations_current(self) -> bool:
        with self._engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        return current == head_revision()
