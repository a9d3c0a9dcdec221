"""Health and metrics: unauthenticated, for orchestrators and scrapers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from aiservice import __version__
from aiservice.application.health import HealthReport
from aiservice.interfaces.http.deps import ContainerDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers (no I/O); ``worker`` is the answering one")
async def health(c: ContainerDep) -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "worker": c.peers.slot, "workers": c.peers.count}


@router.get(
    "/health/detailed",
    summary="Every configured dependency (database, artifact store, migrations, Redis, event broker, "
    "Ray) with its status and latency; 503 when one is down",
    responses={503: {"description": "A dependency is down"}},
)
def health_detailed(c: ContainerDep) -> Response:
    return _rendered(c.health.detailed())


@router.get(
    "/health/ready",
    summary="Readiness: 503 while migrations are pending, the database is down, or the event broker "
    "has been down past its grace period (BROKER_DOWN_GRACE_SECONDS)",
    responses={503: {"description": "Not ready: the body's reasons say why"}},
)
def health_ready(c: ContainerDep) -> Response:
    return _rendered(c.health.ready())


def _rendered(report: HealthReport) -> Response:
    return JSONResponse(report.body, status_code=200 if report.healthy else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(c: ContainerDep) -> Response:
    return Response(c.metrics.render(), media_type=c.metrics.content_type)
