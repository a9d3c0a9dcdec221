"""``/tenants``: the platform's superadmins create, list and change tenants; a tenant's own admin may
read its quota usage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status
from pydantic import Field

from aiservice.application.quotas import QuotaUse
from aiservice.application.tenants import NewTenant, TenantChanges
from aiservice.domain.tenancy import Quota, Tenant, TenantStatus
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=f"{API_PREFIX}/tenants", tags=["tenants"])

TenantId = Annotated[str, Path(max_length=63, description="A tenant id")]
Limit = Annotated[int | None, Field(default=None, ge=0, le=2**62)]


class TenantSettings(ApiModel):
    allow_pickle: bool | None = Field(default=None, description="Accept pickled sklearn artifacts")
    allowed_frameworks: list[Annotated[str, Field(max_length=20)]] | None = Field(
        default=None,
        max_length=100,
        description="Installed frameworks this tenant's models may use; null: every framework",
    )


class Quotas(ApiModel):
    """Limits by quota; null (or absent on create) is unlimited."""

    max_models: Limit = None
    max_versions_per_model: Limit = None
    max_artifact_bytes: Limit = None
    max_concurrent_training_jobs: Limit = None
    max_loaded_models: Limit = None
    max_deployments: Limit = None


class TenantCreate(ApiModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", examples=["acme"])
    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: TenantSettings = Field(default_factory=TenantSettings)
    quotas: Quotas = Field(default_factory=Quotas)


class TenantPatch(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    status: TenantStatus | None = None
    settings: TenantSettings | None = None
    quotas: Quotas | None = Field(default=None, description="Only the quotas sent change; null: unlimited")


class TenantOut(ApiModel):
    id: str
    name: str
    status: TenantStatus
    settings: TenantSettings
    quotas: Quotas
    created_at: datetime | None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            name=tenant.name,
            status=tenant.status,
            settings=TenantSettings(
                allow_pickle=tenant.allow_pickle, allowed_frameworks=tenant.allowed_frameworks
            ),
            quotas=Quotas.model_validate({q.value: tenant.quotas.get(q) for q in Quota}),
            created_at=tenant.created_at,
        )


class QuotaUseOut(ApiModel):
    limit: int | None
    current: int
    enforced: bool
    scope: str = Field(description="tenant, or replica: counted in the answering replica's serving cache")

    @classmethod
    def of(cls, use: QuotaUse) -> QuotaUseOut:
        return cls(limit=use.limit, current=use.current, enforced=use.enforced, scope=use.scope)


class UsageOut(ApiModel):
    tenant_id: str
    status: TenantStatus
    quotas: dict[str, QuotaUseOut]


def _sent(body: ApiModel | None) -> dict[str, Any] | None:
    """The fields a client sent, by their JSON names."""
    return None if body is None else body.model_dump(by_alias=True, exclude_unset=True, mode="json")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantOut, summary="Create a tenant")
def create_tenant(body: TenantCreate, caller: CallerDep, c: ContainerDep, response: Response) -> TenantOut:
    tenant = c.tenants.create(
        caller,
        NewTenant(
            id=body.id, name=body.name, settings=_sent(body.settings) or {}, quotas=_sent(body.quotas) or {}
        ),
    )
    response.headers["Location"] = f"{API_PREFIX}/tenants/{tenant.id}"
    return TenantOut.of(tenant)


@router.get("", response_model=PageOut[TenantOut], summary="Every tenant, by id")
def list_tenants(
    caller: CallerDep,
    c: ContainerDep,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> PageOut[TenantOut]:
    page = c.tenants.list_tenants(caller, limit, cursor)
    return PageOut[TenantOut](items=[TenantOut.of(t) for t in page.items], next_cursor=page.next_cursor)


@router.get("/{tenant}", response_model=TenantOut, summary="One tenant")
def get_tenant(tenant: TenantId, caller: CallerDep, c: ContainerDep) -> TenantOut:
    return TenantOut.of(c.tenants.get(caller, tenant))


@router.patch(
    "/{tenant}",
    response_model=TenantOut,
    summary="Rename, suspend or reactivate a tenant, or change its settings and quotas",
)
def update_tenant(tenant: TenantId, body: TenantPatch, caller: CallerDep, c: ContainerDep) -> TenantOut:
    changes = TenantChanges(
        name=body.name,
        status=body.status,
        settings=_sent(body.settings),
        quotas=_sent(body.quotas),
    )
    return TenantOut.of(c.tenants.update(caller, tenant, changes))


@router.get("/{tenant}/usage", response_model=UsageOut, summary="Use against limit, per quota")
def tenant_usage(tenant: TenantId, caller: CallerDep, c: ContainerDep) -> UsageOut:
    found, uses = c.tenant_usage.report(caller, tenant)
    return UsageOut(
        tenant_id=found.id,
        status=found.status,
        quotas={str(use.quota): QuotaUseOut.of(use) for use in uses},
    )


class ErasureOut(ApiModel):
    tenant_id: str
    erased: dict[str, int] = Field(
        description="What was erased, by kind: models, versions, aliases, artifacts, trainingJobs, "
        "trainingJobEvents, datasets, apiKeys, outboxEvents"
    )


@router.delete(
    "/{tenant}/data",
    response_model=ErasureOut,
    summary="Erase every model, artifact, training job, dataset and API key of a tenant (GDPR)",
    description="The tenant itself (and its status) and its audit log stay; the erasure is recorded "
    "there as `tenant.erase`. Erasing again erases nothing more.",
)
def erase_tenant(tenant: TenantId, caller: CallerDep, c: ContainerDep) -> ErasureOut:
    report = c.erasure.erase(caller, tenant)
    return ErasureOut(tenant_id=report.tenant_id, erased=report.counts)
