"""Shared fixtures: real databases (SQLite and this machine's PostgreSQL), migrated by Alembic once per
session, emptied after each test; a container and an HTTP client built through the composition root."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.tables import metadata
from aiservice.infrastructure.observability.logging import configure_logging
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.moto_s3 import MotoServer

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=postgres user=root"
PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/{name}"
TEST_SECRET = "test-secret-0123456789-0123456789-0123456789"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def _json_logs() -> None:
    """Log exactly as the service does, so tests see the records operators would."""
    configure_logging("INFO", "json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each ``xdist_group`` on one worker under ``--dist loadgroup``. pytest-xdist does it by
    renaming a grouped test ``<nodeid>@<group>`` through ``item._nodeid``, which pytest 9 no longer
    reads (a node's id is ``item._id``), so without this every group was silently spread over both
    workers: two Ray heads at once, expensive module fixtures built twice."""
    if not getattr(config.option, "loadgroup", False) or not hasattr(config, "workerinput"):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        groups = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        nodeid = item.nodeid
        if groups and nodeid.rfind("@") <= nodeid.rfind("]") and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{nodeid}@{'_'.join(sorted(groups))}")


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}"


def require_postgres() -> None:
    reason = _postgres_reason()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run, not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[str]:
    """A database of its own per test session (and per xdist worker), migrated by Alembic."""
    require_postgres()
    name = f"aiservice_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.format(name=name)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that touches the database runs once per backend."""
    url: str = request.getfixturevalue(f"{request.param}_database")
    return url


def empty_database(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # the audit log refuses deletes unless told (0006)
            conn.exec_driver_sql("SET LOCAL aiservice.audit_erase = 'on'")
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    empty_database(engine)
    engine.dispose()


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret": TEST_SECRET,
        "outbox_poll_seconds": 0.05,
        "onnx_compile": False,  # tests that compile turn it on; it costs seconds of CPU per upload
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def container(settings: Settings) -> Iterator[Container]:
    c = bootstrap(settings)
    c.tenants.ensure("default")
    c.tenants.ensure("acme")
    c.tenants.ensure("globex")
    yield c
    c.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


Auth = Callable[..., dict[str, str]]


@pytest.fixture
def auth(container: Container) -> Auth:
    """Headers for a caller: ``auth("editor")``, ``auth("admin", tenant="globex")``."""

    def headers(*roles: str, tenant: str = "acme", subject: str = "tester") -> dict[str, str]:
        token = container.tokens.issue(subject, tenant, list(roles) or ["admin"], 3600)
        return {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}

    return headers


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def start_moto(tmp_path: Path) -> Iterator[Callable[[], MotoServer]]:
    """Start a server of a test's own (to kill mid-test); every one started is stopped afterwards."""
    started: list[MotoServer] = []

    def start() -> MotoServer:
        server = MotoServer(tmp_path / f"moto-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
