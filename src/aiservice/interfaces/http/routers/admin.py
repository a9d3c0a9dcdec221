"""``/admin``: the platform's operators look into the service's machinery (the outbox of events)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from aiservice.application.outbox import OutboxOverview
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])


class OutboxFailureOut(ApiModel):
    event_id: str
    event_type: str
    tenant_id: str
    error: str
    attempts: int
    occurred_at: datetime


class OutboxLeaseOut(ApiModel):
    holder: str | None = Field(description="The relay that holds (or last held) the lease")
    expires_at: datetime | None
    active: bool = Field(description="Whether the lease is held now")
    held_here: bool = Field(description="Whether the answering replica's relay holds it")


class OutboxOut(ApiModel):
    bus: str = Field(description="Where events are published: inprocess, redis, nats or kafka")
    pending: int = Field(description="Committed events not published yet")
    lag_seconds: float = Field(description="Age of the oldest pending event (0 when none)")
    oldest_pending_at: datetime | None
    failures: list[OutboxFailureOut] = Field(description="Pending events whose last try failed, newest first")
    lease: OutboxLeaseOut

    @classmethod
    def of(cls, view: OutboxOverview) -> OutboxOut:
        report = view.report
        return cls(
            bus=view.bus,
            pending=report.pending,
            lag_seconds=round(view.lag_seconds, 3),
            oldest_pending_at=report.oldest_pending_at,
            failures=[OutboxFailureOut(**dataclasses.asdict(f)) for f in report.failures],
            lease=OutboxLeaseOut(
                holder=report.lease_holder,
                expires_at=report.lease_expires_at,
                active=view.lease_active,
                held_here=view.held_here,
            ),
        )


@router.get(
    "/outbox",
    response_model=OutboxOut,
    summary="The event outbox: pending events, lag, recent failures and the relay lease (platform operators)",
)
def outbox(
    caller: CallerDep,
    c: ContainerDep,
    failures: Annotated[int, Query(ge=0, le=500, description="How many failing events to list")] = 20,
) -> OutboxOut:
    return OutboxOut.of(c.outbox.overview(caller, failures))


class WorkerOut(ApiModel):
    worker: int = Field(
        description="The worker's slot; slot 0 also runs the relay, webhooks, jobs and sweeps"
    )
    pid: int | None
    ok: bool = Field(description="Whether the worker answered")
    host_duties: bool | None = None
    started_at: float | None = Field(default=None, description="Unix time the worker started")
    cached_models: int | None = None
    cached_bytes: int | None = None
    cache_budget_bytes: int | None = Field(default=None, description="Its share of MODEL_CACHE_MEMORY_MB")
    error: str | None = None


@router.get(
    "/workers",
    response_model=list[WorkerOut],
    summary="Every worker process of the answering replica: pid, duties and model cache (platform operators)",
)
async def workers(caller: CallerDep, c: ContainerDep) -> list[WorkerOut]:
    return [WorkerOut.model_validate(w.to_json()) for w in await c.fleet.status(caller)]
