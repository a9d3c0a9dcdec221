"""Dependencies shared by the routers: the container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from aiservice.application.registry import ModelRegistry
from aiservice.application.versions import ModelVersions
from aiservice.bootstrap import Container
from aiservice.domain.tenancy import Principal

_bearer = HTTPBearer(
    auto_error=False, description="A JWT signed with JWT_SECRET (see `aiservice token create`)."
)


def container(request: Request) -> Container:
    app_container: Container = request.app.state.container
    return app_container


async def principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_tenant_id: Annotated[
        str | None, Header(alias="X-Tenant-ID", description="Must equal the token's tenant.")
    ] = None,
) -> Principal:
    """Verify the caller on the event loop (microseconds) unless the tenant's status must be read from
    the database, which happens in a worker thread."""
    authenticator = container(request).authenticator
    authorization = request.headers.get("authorization")
    if authenticator.tenant_known(x_tenant_id):
        return authenticator.authenticate(authorization, x_tenant_id)
    return await run_in_threadpool(authenticator.authenticate, authorization, x_tenant_id)


def registry(request: Request) -> ModelRegistry:
    return container(request).registry


def versions(request: Request) -> ModelVersions:
    return container(request).versions


CallerDep = Annotated[Principal, Depends(principal)]
RegistryDep = Annotated[ModelRegistry, Depends(registry)]
VersionsDep = Annotated[ModelVersions, Depends(versions)]
ContainerDep = Annotated[Container, Depends(container)]
