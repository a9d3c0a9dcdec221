"""Dependencies shared by the routers: the container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from aiservice.application.audit import bind_principal
from aiservice.application.inference import InferenceService
from aiservice.application.registry import ModelRegistry
from aiservice.application.versions import ModelVersions
from aiservice.bootstrap import Container
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.rate_limit import spend

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT: HS256 signed with JWT_SECRET (see `aiservice token create`), or RS256/ES256 "
    "signed by the identity provider whose JWKS is configured.",
)
# Documents the other scheme of the same header: `Authorization: ApiKey aisk_...`.
_api_key = APIKeyHeader(
    name="Authorization",
    scheme_name="ApiKey",
    auto_error=False,
    description="`ApiKey <key>`: a key from POST /api/v1/ai/api-keys. X-Tenant-ID is optional with a key.",
)


def _container(request: Request) -> Container:
    app_container: Container = request.app.state.container
    return app_container


container_of = _container  # for the hot lanes' endpoints, which resolve no dependencies


# Dependencies are ``async`` although they do no I/O: FastAPI runs a plain ``def`` dependency in its
# thread pool, which would cost every request a thread hop.
async def container(request: Request) -> Container:
    return _container(request)


async def principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _key: Annotated[str | None, Depends(_api_key)],
    x_tenant_id: Annotated[
        str | None,
        Header(
            alias="X-Tenant-ID", description="Must equal the credential's tenant; optional with an API key."
        ),
    ] = None,
) -> Principal:
    return await authenticate(request)


async def authenticate(request: Request) -> Principal:
    """Verify the caller on the event loop (microseconds) unless that needs the database (an API key,
    a tenant's status) or the network (signing keys), which happens in a worker thread."""
    c = _container(request)
    authenticator = c.authenticator
    authorization = request.headers.get("authorization")
    tenant = request.headers.get("x-tenant-id")
    if not authenticator.needs_io(authorization, tenant):
        caller = authenticator.authenticate(authorization, tenant)
    else:
        caller = await run_in_threadpool(authenticator.authenticate, authorization, tenant)
    bind_principal(caller)  # the audit record of this call names its caller
    if c.rate_limits.enabled:  # after authentication: the budgets are the caller's and its tenant's
        await spend(request, c.rate_limits, caller, c.metrics)
    return caller


def inference_of(request: Request) -> InferenceService:
    """For the hottest routes: one dependency fewer to resolve per request."""
    return _container(request).inference


async def registry(request: Request) -> ModelRegistry:
    return _container(request).registry


async def versions(request: Request) -> ModelVersions:
    return _container(request).versions


CallerDep = Annotated[Principal, Depends(principal)]
RegistryDep = Annotated[ModelRegistry, Depends(registry)]
VersionsDep = Annotated[ModelVersions, Depends(versions)]
ContainerDep = Annotated[Container, Depends(container)]

# Every list route pages the same way: a page size and the ``nextCursor`` of the page before.
PageLimit = Annotated[int, Query(ge=1, le=500, description="At most this many items")]
PageCursor = Annotated[
    str | None, Query(max_length=1000, description="The nextCursor of the previous page; none for the first")
]
