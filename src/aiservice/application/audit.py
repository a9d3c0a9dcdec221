"""The audit log: who changed what, who was refused, and a chain that shows tampering.

Use cases do not write audit records themselves. The interface that serves a call describes it in a
``CallContext`` (caller, client address, request id, action, resource) held in a context variable;
the unit of work writes the success record in the transaction of the change it commits, and the
interface records refusals and failures afterwards, each in a transaction of its own. A use case
only adds what it alone knows: the field-level diff of an update (``note_changes``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aiservice.application.ports import AuditStore, Clock, UnitOfWorkFactory
from aiservice.domain.audit import (
    AuditEntry,
    AuditQuery,
    AuditRecord,
    ChainBreak,
    Outcome,
    Resource,
    field_diff,
    verify_chain,
)
from aiservice.domain.events import DomainEvent
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import Permission, Principal


class CallKind(StrEnum):
    READ = "read"  # audited only when refused
    CHANGE = "change"  # every outcome is audited
    PREDICT = "predict"  # counted; audited one by one only where the tenant sets auditPredictions


@dataclass(frozen=True)
class CallDescription:
    action: str  # e.g. "model.update"
    kind: CallKind
    resource: Resource = field(default_factory=Resource)


@dataclass
class CallContext:
    """One call being served, as the interface describes it. ``describe`` is read lazily, once the
    interface knows which operation the call is (HTTP: after routing)."""

    describe: Callable[[], CallDescription]
    request_id: str | None = None
    client_ip: str | None = None
    tenant_hint: str | None = None  # the tenant the call names, known before authentication
    principal: Principal | None = None
    changes: dict[str, Any] | None = None
    problem: str | None = None  # the problem code the call ended with, if it failed
    recorded: bool = False  # a record of this call is stored (so no second one is written)

    def entry(
        self, tenant_id: str, outcome: Outcome, at: datetime, resource: Resource | None = None
    ) -> AuditEntry:
        description = self.describe()
        return AuditEntry.of(
            tenant_id=tenant_id,
            at=at,
            action=description.action,
            outcome=outcome,
            subject=self.principal.subject if self.principal else None,
            roles=tuple(str(r) for r in self.principal.roles) if self.principal else (),
            resource=resource or description.resource,
            reason=self.problem if outcome is not Outcome.SUCCESS else None,
            client_ip=self.client_ip,
            request_id=self.request_id,
            changes=self.changes if outcome is Outcome.SUCCESS else None,
        )

    def commit_entry(self, tenant_id: str, at: datetime, events: Sequence[DomainEvent]) -> AuditEntry | None:
        """The success record a unit of work commits with this call's change; None if the call is not
        a change, already has its record, or is not authenticated yet (a commit made while
        authenticating is not the change)."""
        if self.recorded or self.principal is None or self.describe().kind is not CallKind.CHANGE:
            return None
        return self.entry(tenant_id, Outcome.SUCCESS, at, self._resource_of(events))

    def _resource_of(self, events: Sequence[DomainEvent]) -> Resource:
        described = self.describe().resource
        if not events:
            return described
        first = events[0]
        data = first.data()
        name = described.name or data.get("name")
        version = data.get("version")
        if isinstance(name, str) and isinstance(version, int) and ":" not in name and "@" not in name:
            name = f"{name}:{version}"
        return Resource(type=first.aggregate_type, id=first.aggregate_id, name=name)


_current: ContextVar[CallContext | None] = ContextVar("aiservice_audit_call", default=None)


def begin_call(call: CallContext) -> Token[CallContext | None]:
    return _current.set(call)


def end_call(token: Token[CallContext | None]) -> None:
    _current.reset(token)


def current_call() -> CallContext | None:
    return _current.get()


def bind_principal(principal: Principal) -> None:
    """The interface authenticated the caller of the current call."""
    call = _current.get()
    if call is not None:
        call.principal = principal


def note_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """An update use case's hook: the fields it changed, old and new (redacted when recorded)."""
    call = _current.get()
    if call is not None:
        diff = field_diff(before, after)
        call.changes = {**(call.changes or {}), **diff} if diff else call.changes


@dataclass(frozen=True)
class ChainReport:
    tenant_id: str
    records: int
    broken: ChainBreak | None


class AuditLog:
    """Reads the log for a tenant's admins, records calls that changed nothing in the database
    (refused, failed, or file-only changes), and checks every chain."""

    def __init__(
        self, store: AuditStore, uow: UnitOfWorkFactory, clock: Clock, settings_ttl: float = 30.0
    ) -> None:
        self._store = store
        self._uow = uow
        self._clock = clock
        self._ttl = settings_ttl
        self._predictions: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def search(self, principal: Principal, query: AuditQuery) -> Page[AuditRecord]:
        principal.require(Permission.AUDIT_READ)
        return self._store.page(principal.tenant_id, query)

    def needs_record(self, call: CallContext, status: int) -> bool:
        """Whether ``finish`` has anything to write for a call that ended with ``status`` (no I/O,
        so the hot path asks it on the event loop)."""
        if call.recorded:
            return False
        if status in (401, 403):
            return (call.principal.tenant_id if call.principal else call.tenant_hint) is not None
        if call.principal is None or call.problem == "rate-limited":  # a limit must not cost a write
            return False
        kind = call.describe().kind
        if kind is CallKind.PREDICT:
            return self._audits_predictions_cached(call.principal.tenant_id) is not False
        return kind is CallKind.CHANGE

    def finish(self, call: CallContext, status: int) -> AuditRecord | None:
        """Record a call that ended without a committed record: refused (401/403), failed, a change
        outside the database, or a prediction of a tenant that audits them. Its own transaction."""
        if not self.needs_record(call, status):
            return None
        if status in (401, 403):
            outcome = Outcome.DENIED
            tenant_id = call.principal.tenant_id if call.principal else call.tenant_hint
        else:
            assert call.principal is not None
            tenant_id = call.principal.tenant_id
            if call.describe().kind is CallKind.PREDICT and not self.audits_predictions(tenant_id):
                return None
            outcome = Outcome.SUCCESS if status < 400 else Outcome.FAILED
        assert tenant_id is not None
        record = self._store.append(call.entry(tenant_id, outcome, self._clock()))
        call.recorded = record is not None
        return record

    def audits_predictions(self, tenant_id: str) -> bool:
        cached = self._audits_predictions_cached(tenant_id)
        if cached is not None:
            return cached
        with self._uow(tenant_id, writes=False) as uow:
            tenant = uow.tenants.get(tenant_id)
        audited = bool(tenant and tenant.settings.get("auditPredictions"))
        with self._lock:
            self._predictions[tenant_id] = (audited, time.monotonic() + self._ttl)
        return audited

    def _audits_predictions_cached(self, tenant_id: str) -> bool | None:
        with self._lock:
            audited, until = self._predictions.get(tenant_id, (False, 0.0))
        return audited if until > time.monotonic() else None

    def verify(self, tenant_id: str | None = None, batch: int = 1000) -> list[ChainReport]:
        """Walk each tenant's chain (or one tenant's) from its first record to its stored head."""
        tenants = [tenant_id] if tenant_id is not None else self._store.chained_tenants()
        return [self._verify_one(t, batch) for t in tenants]

    def _verify_one(self, tenant_id: str, batch: int) -> ChainReport:
        head = self._store.head(tenant_id)  # read first: records appended while we walk are not judged
        last = head[0] if head else None

        def records() -> Iterator[AuditRecord]:
            after = 0
            while last is None or after < last:
                page = self._store.records(
                    tenant_id, after, batch if last is None else min(batch, last - after)
                )
                if not page:
                    return
                yield from page
                after = page[-1].seq

        count, broken = verify_chain(records(), head)
        if broken is None and head is None and count:
            broken = ChainBreak(count, "the tenant's chain head is missing")
        return ChainReport(tenant_id, count, broken)
