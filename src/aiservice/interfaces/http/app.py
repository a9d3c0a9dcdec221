"""The FastAPI application factory: thin wiring of routers, middleware and problem handlers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import Scope

from aiservice import __version__
from aiservice.bootstrap import Container
from aiservice.interfaces.http import v2
from aiservice.interfaces.http.audit_context import AuditMiddleware
from aiservice.interfaces.http.middleware import (
    BodyLimitMiddleware,
    HardenedFastAPI,
    JsonBodyGate,
    RequestContextMiddleware,
    add_cors,
)
from aiservice.interfaces.http.openapi import document_problems
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.predict_lane import Lane, PredictLane
from aiservice.interfaces.http.problems import install_problem_handlers
from aiservice.interfaces.http.routers import admin as admin_router
from aiservice.interfaces.http.routers import api_keys as api_keys_router
from aiservice.interfaces.http.routers import audit as audit_router
from aiservice.interfaces.http.routers import automl as automl_router
from aiservice.interfaces.http.routers import datasets, health, models, predict, training, versions
from aiservice.interfaces.http.routers import deployments as deployments_router
from aiservice.interfaces.http.routers import experiments as experiments_router
from aiservice.interfaces.http.routers import export as export_router
from aiservice.interfaces.http.routers import imports as imports_router
from aiservice.interfaces.http.routers import monitoring as monitoring_router
from aiservice.interfaces.http.routers import optimize as optimize_router
from aiservice.interfaces.http.routers import payload_logs as payload_logs_router
from aiservice.interfaces.http.routers import permissions as permissions_router
from aiservice.interfaces.http.routers import tenants as tenants_router
from aiservice.interfaces.http.routers import webhooks as webhooks_router
from aiservice.interfaces.http.ui import UI_PREFIX, mount_ui

_UPLOAD_PATH = re.compile(rf"^{API_PREFIX}/models/[^/]+/(versions/?|import)$")  # versions, imports
_DATASET_UPLOAD_PATH = re.compile(rf"^{API_PREFIX}/datasets/?$")

DESCRIPTION = """
Register models of any major framework, upload immutable versions with checksummed artifacts,
promote them through stages and address them by alias.

Every `/api/v1/ai` call needs `Authorization: Bearer <JWT>` and `X-Tenant-ID` equal to the token's
tenant, or `Authorization: ApiKey <key>` (a key names its tenant). Errors are
`application/problem+json` (RFC 9457).
"""


def _route_of(router: APIRouter, endpoint: object) -> APIRoute:
    """The declared route of ``endpoint``: a lane names its calls by it, as routing would."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route serves {endpoint!r}")


def create_app(container: Container, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the app around a container; with ``manage_lifecycle`` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            container.start()
        try:
            yield
        finally:
            await container.deployment_traffic.close()  # its connections belong to this event loop
            if manage_lifecycle:
                container.close()

    app = HardenedFastAPI(  # security headers on every response, 500s included
        title="aiservice",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # Our own spans (TRACING_*), not a second set: and no check of OpenTelemetry's globals per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    install_problem_handlers(app)
    document_problems(app)
    predict_route = predict.add_hot_routes(app)  # first of all, and matched in one step
    app.include_router(health.router)
    app.include_router(predict.router)  # early: the hot routes are matched with the fewest tries
    app.include_router(models.router)
    app.include_router(versions.router)
    app.include_router(imports_router.router)
    app.include_router(export_router.router)
    app.include_router(optimize_router.router)
    app.include_router(training.router)
    app.include_router(automl_router.router)
    app.include_router(deployments_router.router)
    app.include_router(experiments_router.router)
    app.include_router(payload_logs_router.router)
    app.include_router(monitoring_router.router)
    app.include_router(datasets.router)
    app.include_router(audit_router.router)
    app.include_router(api_keys_router.router)
    app.include_router(webhooks_router.router)
    app.include_router(tenants_router.router)
    app.include_router(permissions_router.router)
    app.include_router(admin_router.router)
    app.include_router(v2.router)
    mount_ui(app, container)  # the web dashboard at /ui

    upload_limit = container.settings.max_artifact_bytes + 1024**2  # the artifact plus form overhead
    dataset_limit = container.settings.max_dataset_bytes + 1024**2

    def streaming_limit(scope: Scope) -> int | None:
        if scope["method"] != "POST":
            return None
        if _UPLOAD_PATH.match(scope["path"]):
            return upload_limit
        if _DATASET_UPLOAD_PATH.match(scope["path"]):
            return dataset_limit
        if scope["path"].startswith(UI_PREFIX + "/"):  # the dashboard's forms and uploads (not JSON)
            return upload_limit
        return v2.MAX_INFER_BODY_BYTES if v2.INFER_PATH.match(scope["path"]) else None  # v2 counts bytes too

    gate = JsonBodyGate(container.settings.max_json_body_bytes, container.settings.max_json_depth)
    app.add_middleware(BodyLimitMiddleware, gate=gate, streaming_limit=streaming_limit)
    add_cors(app, container.settings.cors_origin_list)
    # Single-row predictions skip the routing between here and their endpoint (inside the audit).
    lanes = (
        Lane(predict_route, predict.predict),
        Lane(
            _route_of(deployments_router.router, deployments_router.deployment_predict),
            deployments_router.deployment_predict_lane,
            parse=False,
        ),
    )
    app.add_middleware(PredictLane, gate=gate, lanes=lanes, cors=bool(container.settings.cors_origin_list))
    # Inside RequestContextMiddleware, which sets the request id the records carry.
    app.add_middleware(AuditMiddleware, audit=container.audit, metrics=container.metrics)
    app.add_middleware(RequestContextMiddleware, metrics=container.metrics, tracer=container.tracer)
    return app
