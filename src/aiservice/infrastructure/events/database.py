"""The events' state in the service's database: the relay lease, processed event ids, the outbox report."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aiservice.application.ports import Clock, CloudEvent, OutboxFailure, OutboxReport
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.tables import outbox, outbox_lease, processed_events

RELAY_LEASE = "outbox-relay"


def relay_name() -> str:
    """A name no other relay has: host, process and a random tail (a restarted process is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


class SqlAlchemyOutboxLease:
    """A lease row taken or renewed with one conditional UPDATE: the relay that holds it, or anyone once
    it has expired. Compared against this process's clock, so replicas' clocks must agree to well within
    the lease time (NTP does). No row yet: the first relay inserts it.

    The database is asked at most every third of the lease time while holding it (renewal) and every
    sixth while not (a takeover comes that much after the expiry), not on every relay pass."""

    def __init__(self, engine: Engine, clock: Clock, ttl_s: float, holder: str | None = None) -> None:
        self._engine = writer_engine(engine)
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self.holder = holder or relay_name()
        self._held = False
        self._ask_at = clock()

    def acquire(self) -> bool:
        now = self._clock()
        if now < self._ask_at:
            return self._held
        self._held = self._take(now)
        self._ask_at = now + (self._ttl / 3 if self._held else self._ttl / 6)
        return self._held

    def _take(self, now: datetime) -> bool:
        with self._engine.begin() as conn:
            taken = conn.execute(
                outbox_lease.update()
                .where(outbox_lease.c.name == RELAY_LEASE)
                .where(sa.or_(outbox_lease.c.holder == self.holder, outbox_lease.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self._ttl)
            ).rowcount
            if taken:
                return True
            exists = conn.execute(
                sa.select(outbox_lease.c.name).where(outbox_lease.c.name == RELAY_LEASE)
            ).first()
            if exists is not None:
                return False
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    outbox_lease.insert().values(
                        name=RELAY_LEASE, holder=self.holder, expires_at=now + self._ttl
                    )
                )
        except sa.exc.IntegrityError:  # another relay inserted it first
            return False
        return True

    def release(self) -> None:
        self._held, self._ask_at = False, self._clock()
        with self._engine.begin() as conn:
            conn.execute(
                outbox_lease.update()
                .where(outbox_lease.c.name == RELAY_LEASE, outbox_lease.c.holder == self.holder)
                .values(expires_at=self._clock())
            )


class SqlAlchemyProcessedEvents:
    def __init__(self, engine: Engine) -> None:
        self._reader = engine
        self._writer = writer_engine(engine)

    def seen(self, consumer: str, event_id: str) -> bool:
        with self._reader.connect() as conn:
            row = conn.execute(
                sa.select(processed_events.c.event_id).where(
                    processed_events.c.consumer == consumer, processed_events.c.event_id == event_id
                )
            ).first()
        return row is not None

    def record(self, consumer: str, event: CloudEvent, at: datetime) -> None:
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    processed_events.insert().values(
                        consumer=consumer, event_id=event.id, event_type=event.type, processed_at=at
                    )
                )
        except sa.exc.IntegrityError:  # recorded already: the event was handled twice, as allowed
            pass

    def prune(self, before: datetime) -> int:
        with self._writer.begin() as conn:
            deleted = conn.execute(processed_events.delete().where(processed_events.c.processed_at < before))
        return deleted.rowcount


class SqlAlchemyOutboxMonitor:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def report(self, failures: int) -> OutboxReport:
        pending = outbox.c.published_at.is_(None)
        with self._engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(outbox).where(pending)).scalar_one()
            oldest = conn.execute(
                sa.select(outbox.c.occurred_at).where(pending).order_by(outbox.c.position).limit(1)
            ).scalar_one_or_none()
            failing = conn.execute(
                sa.select(outbox)
                .where(pending, outbox.c.last_error.is_not(None))
                .order_by(outbox.c.position.desc())
                .limit(failures)
            ).mappings()
            failed = [
                OutboxFailure(
                    event_id=r["event_id"],
                    event_type=r["event_type"],
                    tenant_id=r["tenant_id"],
                    error=r["last_error"],
                    attempts=r["attempts"],
                    occurred_at=r["occurred_at"],
                )
                for r in failing
            ]
            lease = conn.execute(
                sa.select(outbox_lease.c.holder, outbox_lease.c.expires_at).where(
                    outbox_lease.c.name == RELAY_LEASE
                )
            ).first()
        return OutboxReport(
            pending=count,
            oldest_pending_at=oldest,
            failures=failed,
            lease_holder=lease.holder if lease is not None else None,
            lease_expires_at=lease.expires_at if lease is not None else None,
        )
