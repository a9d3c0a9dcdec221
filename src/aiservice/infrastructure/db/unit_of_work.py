"""The SQLAlchemy unit of work: one connection, one transaction, one tenant, and the outbox."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.audit import current_call
from aiservice.application.ports import Clock, OutboxMessage
from aiservice.domain.events import DomainEvent
from aiservice.infrastructure.auth.api_keys import SqlAlchemyApiKeyRepository
from aiservice.infrastructure.db.audit_repository import append_record
from aiservice.infrastructure.db.automl_repositories import SqlAlchemyStudyRepository
from aiservice.infrastructure.db.deployment_repositories import SqlAlchemyDeploymentRepository
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.experiment_repositories import SqlAlchemyExperimentRepository
from aiservice.infrastructure.db.job_repositories import SqlAlchemyTrainingJobRepository
from aiservice.infrastructure.db.monitoring_repositories import SqlAlchemyMonitoringRepository
from aiservice.infrastructure.db.payload_log_repositories import SqlAlchemyPayloadLogRepository
from aiservice.infrastructure.db.repositories import (
    SqlAlchemyAliasRepository,
    SqlAlchemyModelRepository,
    SqlAlchemyVersionRepository,
)
from aiservice.infrastructure.db.tables import outbox
from aiservice.infrastructure.db.tenant_erasure import SqlAlchemyTenantDataRepository
from aiservice.infrastructure.db.tenant_repositories import (
    SqlAlchemyTenantRepository,
    SqlAlchemyUsageRepository,
)
from aiservice.infrastructure.payload_logs.parquet_files import ParquetPayloadFiles


class SqlAlchemyUnitOfWork:
    """Rolls back unless ``commit()`` was called; on commit, recorded events go to the outbox first."""

    def __init__(
        self,
        engine: Engine,
        tenant_id: str,
        clock: Clock,
        on_events: Callable[[list[DomainEvent]], None],
        trace_context: Callable[[], str | None] = lambda: None,
        payload_files: ParquetPayloadFiles | None = None,
    ) -> None:
        self._engine = engine
        self._payload_files = payload_files
        self.tenant_id = tenant_id
        self._clock = clock
        self._on_events = on_events
        self._trace_context = trace_context
        self._events: list[DomainEvent] = []
        self._conn: Connection | None = None

    def __enter__(self) -> Self:
        self._conn = self._engine.connect()
        self._conn.begin()
        self.models = SqlAlchemyModelRepository(self._conn, self.tenant_id)
        self.versions = SqlAlchemyVersionRepository(self._conn, self.tenant_id)
        self.aliases = SqlAlchemyAliasRepository(self._conn, self.tenant_id)
        self.tenants = SqlAlchemyTenantRepository(self._conn, self._clock())
        self.jobs = SqlAlchemyTrainingJobRepository(self._conn, self.tenant_id)
        self.deployments = SqlAlchemyDeploymentRepository(self._conn, self.tenant_id)
        self.usage = SqlAlchemyUsageRepository(self._conn, self.tenant_id)
        self.api_keys = SqlAlchemyApiKeyRepository(self._conn, self.tenant_id)
        self.tenant_data = SqlAlchemyTenantDataRepository(self._conn, self.tenant_id)
        self.payload_logs = SqlAlchemyPayloadLogRepository(self._conn, self.tenant_id, self._payload_files)
        self.experiments = SqlAlchemyExperimentRepository(self._conn, self.tenant_id)
        self.monitoring = SqlAlchemyMonitoringRepository(self._conn, self.tenant_id)
        self.automl_studies = SqlAlchemyStudyRepository(self._conn, self.tenant_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction():
                self._conn.rollback()
        finally:
            self._conn.close()
            self._conn = None

    def record(self, *events: DomainEvent) -> None:
        self._events.extend(events)

    def commit(self) -> None:
        assert self._conn is not None, "commit() outside the 'with' block"
        events = [*self._collect_entity_events(), *self._events]
        if events:
            traceparent = self._trace_context()
            self._conn.execute(outbox.insert(), [_outbox_row(e, traceparent) for e in events])
        call = current_call()  # the call being served, if any: its audit record joins this transaction
        audit = call.commit_entry(self.tenant_id, self._clock(), events) if call else None
        if audit is not None:
            append_record(self._conn, audit)
        self._conn.commit()
        if call is not None and audit is not None:
            call.recorded = True
        self._events.clear()
        if events:
            self._on_events(events)

    def _collect_entity_events(self) -> list[DomainEvent]:
        collected: list[DomainEvent] = []
        for model in self.models.seen:
            collected.extend(model.events)
            model.events.clear()
        for deployment in self.deployments.seen:
            collected.extend(deployment.events)
            deployment.events.clear()
        return collected


def _outbox_row(event: DomainEvent, traceparent: str | None) -> dict[str, object]:
    return {
        "traceparent": traceparent,
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "event_type": event.type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "occurred_at": event.occurred_at,
        "payload": event.data(),
    }


class SqlAlchemyUnitOfWorkFactory:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        on_events: Callable[[list[DomainEvent]], None] = lambda events: None,
        trace_context: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._reader = engine
        self._writer = writer_engine(engine)
        self._clock = clock
        self.on_events = on_events
        self._trace_context = trace_context  # the current span's traceparent, stored with each event
        self.payload_files: ParquetPayloadFiles | None = None  # set by the wiring (the artifact store)

    def __call__(self, tenant_id: str, *, writes: bool = True) -> SqlAlchemyUnitOfWork:
        engine = self._writer if writes else self._reader
        return SqlAlchemyUnitOfWork(
            engine,
            tenant_id,
            self._clock,
            lambda events: self.on_events(events),
            self._trace_context,
            self.payload_files,
        )


class SqlAlchemyOutbox:
    """The relay's view of the outbox: pending events in commit order."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self._clock = clock

    def pending(self, limit: int) -> list[OutboxMessage]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(outbox)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.position)
                .limit(limit)
            ).mappings()
            return [
                OutboxMessage(
                    position=r["position"],
                    event_id=r["event_id"],
                    event_type=r["event_type"],
                    tenant_id=r["tenant_id"],
                    aggregate_type=r["aggregate_type"],
                    aggregate_id=r["aggregate_id"],
                    occurred_at=r["occurred_at"],
                    data=r["payload"],
                    traceparent=r["traceparent"],
                )
                for r in rows
            ]

    def mark_published(self, positions: list[int]) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.position.in_(positions))
                .values(published_at=self._clock(), attempts=outbox.c.attempts + 1, last_error=None)
            )

    def mark_failed(self, position: int, error: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.position == position)
                .values(attempts=outbox.c.attempts + 1, last_error=error[:2000])
            )
