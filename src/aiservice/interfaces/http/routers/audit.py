"""``/audit``: the tenant's audit log, newest first, for its admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from aiservice.domain.audit import AuditQuery, AuditRecord, Outcome
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["audit"])


class ResourceOut(ApiModel):
    type: str | None
    id: str | None
    name: str | None = Field(description="The name the caller used: churn, churn:3, churn@champion")


class AuditRecordOut(ApiModel):
    seq: int = Field(description="Position in the tenant's chain: 1, 2, ... without gaps")
    at: datetime
    action: str = Field(examples=["model.update"])
    outcome: Outcome
    subject: str | None = Field(description="The caller (the token's subject); null when unauthenticated")
    roles: list[str]
    resource: ResourceOut
    reason: str | None = Field(description="The problem type of a denied or failed call")
    client_ip: str | None
    request_id: str | None
    changes: dict[str, Any] | None = Field(
        description="For updates: {field: [old, new]}, with secret-looking keys redacted"
    )
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        e = record.entry
        return cls(
            seq=record.seq,
            at=e.at,
            action=e.action,
            outcome=e.outcome,
            subject=e.subject,
            roles=list(e.roles),
            resource=ResourceOut(type=e.resource.type, id=e.resource.id, name=e.resource.name),
            reason=e.reason,
            client_ip=e.client_ip,
            request_id=e.request_id,
            changes=e.changes,
            prev_hash=record.prev_hash,
            hash=record.hash,
        )


@router.get(
    "/audit",
    response_model=PageOut[AuditRecordOut],
    summary="The tenant's audit log, newest first (admin)",
)
def list_audit_records(
    caller: CallerDep,
    c: ContainerDep,
    action: Annotated[
        str | None, Query(max_length=100, description="An action, or a prefix ending in *: model.*")
    ] = None,
    principal: Annotated[str | None, Query(max_length=200, description="The caller's subject")] = None,
    outcome: Outcome | None = None,
    resource: Annotated[
        str | None, Query(max_length=400, description="A resource id or name (churn finds churn:3 too)")
    ] = None,
    since: Annotated[AwareDatetime | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time")] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[AuditRecordOut]:
    page = c.audit.search(
        caller,
        AuditQuery(
            action=action,
            subject=principal,
            outcome=outcome,
            resource=resource,
            since=_in_utc(since, "query.since"),
            until=_in_utc(until, "query.until"),
            limit=limit,
            cursor=cursor,
        ),
    )
    return PageOut[AuditRecordOut](
        items=[AuditRecordOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )


def _in_utc(value: datetime | None, field: str) -> datetime | None:
    """The time in UTC; a time whose offset moves it past year 1 or 9999 is the caller's mistake."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        message = "is out of range once converted to UTC"
        raise InvalidInput(f"{field} {message}", errors=[FieldError(field, message)]) from None
