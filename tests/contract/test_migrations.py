"""One Alembic history for SQLite and PostgreSQL: it builds exactly the schema the code queries, and
it can be walked down and up again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.probe import SqlAlchemyDatabaseProbe
from aiservice.infrastructure.db.tables import metadata
from tests.conftest import PG_ADMIN_DSN, PG_URL, require_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def blank_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'blank.db'}")
        yield engine
        engine.dispose()
        return
    require_postgres()
    name = f"aiservice_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(PG_URL.format(name=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_build_the_schema_the_code_uses(blank_engine: Engine) -> None:
    probe = SqlAlchemyDatabaseProbe(blank_engine)
    assert not probe.migrations_current()
    migrate.upgrade(blank_engine)
    with blank_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
    assert probe.migrations_current()


def test_migrations_walk_down_and_up(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    migrate.downgrade(blank_engine, "base")
    assert set(sa.inspect(blank_engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(blank_engine)
    assert {"models", "model_versions", "model_aliases", "tenants", "outbox"} <= set(
        sa.inspect(blank_engine).get_table_names()
    )


@pytest.mark.parametrize(
    "blank_engine", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_json_columns_are_jsonb_on_postgresql(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    columns = {c["name"]: c["type"] for c in sa.inspect(blank_engine).get_columns("models")}
    assert type(columns["tags"]).__name__ == "JSONB"


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_version_cannot_point_at_another_tenants_model(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    now = "2026-01-01 00:00:00+00:00"
    with blank_engine.begin() as conn:
        for tenant in ("acme", "globex"):
            conn.execute(
                sa.text(
                    "INSERT INTO tenants (tenant_id, name, status, settings, created_at)"
                    " VALUES (:t, :t, 'active', '{}', :now)"
                ),
                {"t": tenant, "now": now},
            )
        conn.execute(
            sa.text(
                "INSERT INTO models (tenant_id, id, name, description, framework, configuration,"
                " input_schema, output_schema, tags, created_at, updated_at)"
                " VALUES ('acme', 'm1', 'm', '', 'onnx', '{}', '{}', '{}', '[]', :now, :now)"
            ),
            {"now": now},
        )
    with pytest.raises(sa.exc.IntegrityError), blank_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO model_aliases (tenant_id, model_id, alias, version, updated_at)"
                " VALUES ('globex', 'm1', 'stolen', 1, :now)"
            ),
            {"now": now},
        )
