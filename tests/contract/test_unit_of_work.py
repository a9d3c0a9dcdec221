"""The UnitOfWork contract on every backend: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aiservice.application.ports import ModelQuery, UnitOfWorkFactory
from aiservice.application.tenants import Tenants
from aiservice.domain.errors import Conflict
from aiservice.domain.models import ArtifactRef, Framework, Model, ModelVersion
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory
from tests.conftest import empty_database
from tests.fakes import InMemoryUnitOfWorkFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def uow(request: pytest.FixtureRequest) -> Iterator[UnitOfWorkFactory]:
    factory: UnitOfWorkFactory
    engine = None
    if request.param == "memory":
        factory = InMemoryUnitOfWorkFactory()
    else:
        engine = create_engine(request.getfixturevalue(f"{request.param}_database"))
        factory = SqlAlchemyUnitOfWorkFactory(engine, lambda: NOW)
    Tenants(factory).ensure("acme")
    Tenants(factory).ensure("globex")
    yield factory
    if engine is not None:
        empty_database(engine)
        engine.dispose()


@pytest.fixture
def sql_uow(engine: Engine) -> SqlAlchemyUnitOfWorkFactory:
    factory = SqlAlchemyUnitOfWorkFactory(engine, lambda: NOW)
    Tenants(factory).ensure("acme")
    Tenants(factory).ensure("globex")
    return factory


def new_model(name: str = "m", tenant: str = "acme", **rest: object) -> Model:
    return Model.register(tenant_id=tenant, name=name, framework=Framework.ONNX, now=NOW, **rest)  # type: ignore[arg-type]


def test_uncommitted_work_is_rolled_back(uow: UnitOfWorkFactory) -> None:
    with uow("acme") as work:
        work.models.add(new_model())
    with uow("acme") as work:
        assert work.models.get_by_name("m") is None


def test_committed_model_reads_back_equal(uow: UnitOfWorkFactory) -> None:
    model = new_model(tags=["a"], configuration={"k": [1, 2]}, input_schema={"type": "tabular"})
    with uow("acme") as work:
        work.models.add(model)
        work.commit()
    with uow("acme") as work:
        loaded = work.models.get(model.id)
    assert loaded is not None
    assert (loaded.name, loaded.tags, loaded.configuration, loaded.input_schema) == (
        "m",
        ["a"],
        {"k": [1, 2]},
        {"type": "tabular"},
    )
    assert loaded.created_at == NOW and loaded.created_at.tzinfo is not None


def test_repositories_only_see_their_own_tenant(uow: UnitOfWorkFactory) -> None:
    model = new_model()
    with uow("acme") as work:
        work.models.add(model)
        work.commit()
    with uow("globex") as work:
        assert work.models.get(model.id) is None
        assert work.models.get_by_name("m") is None
        assert work.models.search(ModelQuery()).items == []


def test_version_numbers_are_dense(uow: UnitOfWorkFactory) -> None:
    model = new_model()
    with uow("acme") as work:
        work.models.add(model)
        work.commit()
    numbers = []
    for _ in range(3):
        with uow("acme") as work:
            number = work.models.next_version_number(model.id)
            ref = ArtifactRef("k", "d" * 64, 1, "f", "application/octet-stream")
            work.versions.add(ModelVersion("acme", model.id, number, ref, NOW))
            work.commit()
            numbers.append(number)
    with uow("acme") as work:
        assert numbers == [1, 2, 3]
        assert [v.version for v in work.versions.page(model.id, 10, None).items] == [3, 2, 1]
        assert work.models.get(model.id).latest_version == 3  # type: ignore[union-attr]


def test_sql_duplicate_live_name_is_a_conflict(sql_uow: SqlAlchemyUnitOfWorkFactory) -> None:
    with sql_uow("acme") as work:
        work.models.add(new_model())
        work.commit()
    with pytest.raises(Conflict), sql_uow("acme") as work:
        work.models.add(new_model())


def test_sql_events_reach_the_outbox_only_on_commit(
    sql_uow: SqlAlchemyUnitOfWorkFactory, engine: Engine
) -> None:
    with sql_uow("acme") as work:
        work.models.add(new_model("a"))
    with sql_uow("acme") as work:
        work.models.add(new_model("b"))
        work.commit()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_type, tenant_id, payload FROM outbox")).all()
    assert [(r[0], r[1]) for r in rows] == [("ModelCreated", "acme")]


def test_sql_search_pages_and_filters(sql_uow: SqlAlchemyUnitOfWorkFactory) -> None:
    with sql_uow("acme") as work:
        for i in range(5):
            model = new_model(f"n{i}", tags=["even"] if i % 2 == 0 else [])
            model.created_at = model.updated_at = NOW + timedelta(seconds=i)
            work.models.add(model)
        work.commit()
    with sql_uow("acme") as work:
        first = work.models.search(ModelQuery(limit=2, sort="createdAt"))
        second = work.models.search(ModelQuery(limit=2, sort="createdAt", cursor=first.next_cursor))
        tagged = work.models.search(ModelQuery(tag="even", sort="name"))
        like = work.models.search(ModelQuery(text="N3"))
    assert [m.name for m in first.items + second.items] == ["n0", "n1", "n2", "n3"]
    assert [m.name for m in tagged.items] == ["n0", "n2", "n4"]
    assert [m.name for m in like.items] == ["n3"]
