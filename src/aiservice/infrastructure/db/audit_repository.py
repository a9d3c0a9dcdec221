"""The audit log in SQL: appends that extend a tenant's chain under a lock on its head row, and reads."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from aiservice.domain.audit import (
    GENESIS,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    Outcome,
    Resource,
    canonical_json,
)
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.pagination import Page, decode_cursor, encode_cursor
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.tables import audit_chain_heads, audit_log, tenants


def append_record(conn: Connection, entry: AuditEntry) -> AuditRecord:
    """Extend the entry's tenant chain inside the caller's transaction.

    The head row is locked (``FOR UPDATE`` on PostgreSQL; SQLite writers already hold the database's
    write lock), so concurrent writers of one tenant take turns and ``seq`` stays gapless.
    """
    seq, prev_hash = _locked_head(conn, entry.tenant_id)
    record = AuditRecord.chained(entry, seq + 1, prev_hash)
    conn.execute(audit_log.insert().values(**_row(record)))
    conn.execute(
        audit_chain_heads.update()
        .where(audit_chain_heads.c.tenant_id == entry.tenant_id)
        .values(seq=record.seq, hash=record.hash)
    )
    return record


def _locked_head(conn: Connection, tenant_id: str) -> tuple[int, str]:
    select = (
        sa.select(audit_chain_heads.c.seq, audit_chain_heads.c.hash)
        .where(audit_chain_heads.c.tenant_id == tenant_id)
        .with_for_update()
    )
    head = conn.execute(select).first()
    if head is None:  # the tenant's first record: create the head, racing writers wait on its key
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(
            insert(audit_chain_heads)
            .values(tenant_id=tenant_id, seq=0, hash=GENESIS)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        head = conn.execute(select).one()
    return int(head.seq), str(head.hash)


class SqlAlchemyAuditStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)

    def append(self, entry: AuditEntry) -> AuditRecord | None:
        with self._writer.begin() as conn:
            known = conn.execute(
                sa.select(tenants.c.tenant_id).where(tenants.c.tenant_id == entry.tenant_id)
            ).first()
            return append_record(conn, entry) if known else None

    def page(self, tenant_id: str, query: AuditQuery) -> Page[AuditRecord]:
        stmt = sa.select(audit_log).where(audit_log.c.tenant_id == tenant_id, *_filters(query))
        if query.cursor:
            before = decode_cursor(query.cursor).get("seq")
            if not isinstance(before, int):
                raise InvalidInput("The cursor is malformed.", errors=[FieldError("query.cursor", "bad key")])
            stmt = stmt.where(audit_log.c.seq < before)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt.order_by(audit_log.c.seq.desc()).limit(query.limit + 1)).mappings().all()
        items = [_record(r) for r in rows[: query.limit]]
        next_cursor = encode_cursor({"seq": items[-1].seq}) if len(rows) > query.limit else None
        return Page(items=items, next_cursor=next_cursor)

    def records(self, tenant_id: str, after_seq: int, limit: int) -> list[AuditRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit_log)
                .where(audit_log.c.tenant_id == tenant_id, audit_log.c.seq > after_seq)
                .order_by(audit_log.c.seq)
                .limit(limit)
            ).mappings()
            return [_record(r) for r in rows]

    def head(self, tenant_id: str) -> tuple[int, str] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(audit_chain_heads.c.seq, audit_chain_heads.c.hash).where(
                    audit_chain_heads.c.tenant_id == tenant_id
                )
            ).first()
        return (int(row.seq), str(row.hash)) if row else None

    def chained_tenants(self) -> list[str]:
        """Tenants with a chain head or with records (a head deleted on its own must not hide a chain)."""
        heads = sa.select(audit_chain_heads.c.tenant_id)
        logged = sa.select(audit_log.c.tenant_id).distinct()
        with self._engine.connect() as conn:
            return sorted(conn.execute(sa.union(heads, logged)).scalars())


def _filters(query: AuditQuery) -> list[sa.ColumnElement[bool]]:
    found: list[sa.ColumnElement[bool]] = []
    if query.action:
        if query.action.endswith("*"):  # "model.*": every model action
            found.append(audit_log.c.action.startswith(query.action[:-1], autoescape=True))
        else:
            found.append(audit_log.c.action == query.action)
    if query.subject:
        found.append(audit_log.c.subject == query.subject)
    if query.outcome:
        found.append(audit_log.c.outcome == query.outcome.value)
    if query.resource:
        name = audit_log.c.resource_name
        found.append(
            sa.or_(
                audit_log.c.resource_id == query.resource,
                name == query.resource,
                # "churn" also finds "churn:3" (a version) and "churn@champion" (an alias)
                *(name.startswith(query.resource + sep, autoescape=True) for sep in (":", "@")),
            )
        )
    if query.since:
        found.append(audit_log.c.at >= query.since)
    if query.until:
        found.append(audit_log.c.at < query.until)
    return found


def _row(record: AuditRecord) -> dict[str, Any]:
    e = record.entry
    return {
        "tenant_id": e.tenant_id,
        "seq": record.seq,
        "at": e.at,
        "action": e.action,
        "outcome": e.outcome.value,
        "subject": e.subject,
        "roles": list(e.roles),
        "resource_type": e.resource.type,
        "resource_id": e.resource.id,
        "resource_name": e.resource.name,
        "reason": e.reason,
        "client_ip": e.client_ip,
        "request_id": e.request_id,
        "changes": canonical_json(e.changes) if e.changes is not None else None,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _record(row: sa.RowMapping) -> AuditRecord:
    digest = row["hash"]
    try:
        outcome = Outcome(row["outcome"])
    except ValueError:  # only an edited row holds another value: make sure it cannot verify
        outcome, digest = Outcome.FAILED, f"unknown outcome {row['outcome']!r}"
    entry = AuditEntry(
        tenant_id=row["tenant_id"],
        at=row["at"],
        action=row["action"],
        outcome=outcome,
        subject=row["subject"],
        roles=tuple(row["roles"]),
        resource=Resource(row["resource_type"], row["resource_id"], row["resource_name"]),
        reason=row["reason"],
        client_ip=row["client_ip"],
        request_id=row["request_id"],
        changes=json.loads(row["changes"]) if row["changes"] is not None else None,
    )
    return AuditRecord(entry=entry, seq=int(row["seq"]), prev_hash=row["prev_hash"], hash=digest)
