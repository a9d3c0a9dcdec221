"""The audit log's records and their hash chain: pure values and functions, no I/O.

Each tenant's records form one chain: record ``n`` stores ``prev_hash`` (the hash of record ``n - 1``,
or ``GENESIS`` for the first) and ``hash`` = SHA-256 over a canonical JSON of its own fields plus
``prev_hash``. Editing, inserting or deleting a record breaks the chain from that record on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

GENESIS = "0" * 64
REDACTED = "[redacted]"

# Any key that names a secret, anywhere in a diff, has its value replaced (matched case-insensitively).
_SECRET_KEY = re.compile(r"secret|passw(or)?d|token|key|credential", re.IGNORECASE)

# Column widths of the stored record: longer values are cut before hashing, so what is stored is
# exactly what was hashed.
_LIMITS = {
    "subject": 200,
    "action": 100,
    "resource_type": 50,
    "resource_id": 200,
    "resource_name": 400,
    "reason": 100,
    "client_ip": 64,
    "request_id": 128,
}


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"  # refused: 401 (unauthenticated) or 403 (forbidden)
    FAILED = "failed"  # an authenticated change that did not happen (conflict, invalid input, error)


@dataclass(frozen=True)
class Resource:
    """What a call acted on: a type (``model``), its id when known, and the name the caller used."""

    type: str | None = None
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One call, before it takes its place in the tenant's chain."""

    tenant_id: str
    at: datetime
    action: str
    outcome: Outcome
    subject: str | None = None
    roles: tuple[str, ...] = ()
    resource: Resource = field(default_factory=Resource)
    reason: str | None = None  # the problem code of a denied or failed call
    client_ip: str | None = None
    request_id: str | None = None
    changes: dict[str, Any] | None = None  # {field: [old, new]}, secrets redacted

    @classmethod
    def of(cls, **values: Any) -> AuditEntry:
        """An entry with strings cut to their stored widths, NULs replaced, times in UTC and the diff
        normalised to plain JSON, so that hashing it again after a database round trip agrees."""
        for name, limit in _LIMITS.items():
            if isinstance(values.get(name), str):
                values[name] = _clean(values[name])[:limit]
        resource = values.get("resource") or Resource()
        values["resource"] = Resource(
            *(
                _clean(v)[: _LIMITS[f"resource_{k}"]] if isinstance(v, str) else None
                for k, v in (("type", resource.type), ("id", resource.id), ("name", resource.name))
            )
        )
        values["roles"] = tuple(sorted(_clean(r) for r in values.get("roles", ())))
        values["at"] = values["at"].astimezone(UTC)
        changes = values.get("changes")
        values["changes"] = json.loads(canonical_json(redact(changes))) if changes else None
        return cls(**values)


@dataclass(frozen=True)
class AuditRecord:
    """An entry in its chain: number ``seq`` (1, 2, ... per tenant, no gaps) and its hashes."""

    entry: AuditEntry
    seq: int
    prev_hash: str
    hash: str

    @classmethod
    def chained(cls, entry: AuditEntry, seq: int, prev_hash: str) -> AuditRecord:
        return cls(entry=entry, seq=seq, prev_hash=prev_hash, hash=record_hash(entry, seq, prev_hash))


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: one text per value, the same on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(entry: AuditEntry, seq: int, prev_hash: str) -> str:
    document = {
        "tenant": entry.tenant_id,
        "seq": seq,
        "at": entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": entry.action,
        "outcome": entry.outcome.value,
        "subject": entry.subject,
        "roles": list(entry.roles),
        "resource": {"type": entry.resource.type, "id": entry.resource.id, "name": entry.resource.name},
        "reason": entry.reason,
        "clientIp": entry.client_ip,
        "requestId": entry.request_id,
        "changes": entry.changes,
        "prevHash": prev_hash,
    }
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-looking key's value replaced by ``[redacted]``."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def field_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields whose value changed, names in camelCase."""
    return {
        _camel(name): [before.get(name), after.get(name)]
        for name in after
        if before.get(name) != after.get(name)
    }


@dataclass(frozen=True)
class AuditQuery:
    """Filters of the audit listing; newest first, ``limit`` per page, ``cursor`` from the last page."""

    action: str | None = None
    subject: str | None = None
    outcome: Outcome | None = None
    resource: str | None = None  # matches the resource's id or name
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


def verify_chain(
    records: Iterable[AuditRecord], head: tuple[int, str] | None
) -> tuple[int, ChainBreak | None]:
    """Walk a tenant's records in ``seq`` order; (records checked, the first break or None).

    ``head`` is the stored (last seq, last hash): it catches records deleted from the end.
    """
    expected_seq, prev_hash, count = 1, GENESIS, 0
    for record in records:
        if record.seq != expected_seq:
            return count, ChainBreak(expected_seq, f"record {expected_seq} is missing")
        if record.prev_hash != prev_hash:
            return count, ChainBreak(record.seq, "its prev_hash does not match the record before it")
        if record_hash(record.entry, record.seq, record.prev_hash) != record.hash:
            return count, ChainBreak(record.seq, "its content does not match its hash")
        expected_seq, prev_hash, count = expected_seq + 1, record.hash, count + 1
    last = (expected_seq - 1, prev_hash)
    if head is not None and head != last:
        if head[0] > last[0]:
            return count, ChainBreak(last[0] + 1, f"records {last[0] + 1}..{head[0]} are missing")
        return count, ChainBreak(head[0], "the chain head does not match the last record")
    return count, None


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)
