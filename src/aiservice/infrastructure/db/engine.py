"""Engines for SQLite (WAL, foreign keys, write transactions that take the lock up front) and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

SQLITE_BEGIN = "sqlite_begin"


def create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own handling defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock at BEGIN (IMMEDIATE): two writers that both read first would
        # otherwise deadlock on upgrade and one would fail with "database is locked".
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        _begin_with_retry(conn, f"BEGIN {mode}")

    return engine


def _begin_with_retry(conn: sa.Connection, statement: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn.exec_driver_sql(statement)
            return
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def writer_engine(engine: Engine) -> Engine:
    """The same pool, with write transactions beginning IMMEDIATE on SQLite (a no-op elsewhere)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return engine
