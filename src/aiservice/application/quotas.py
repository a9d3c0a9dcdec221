"""Tenant quotas: checked inside the unit of work that writes, and reported as use against limit.

A writing use case calls ``admit_*`` in its own transaction, before it writes. That locks the
tenant's row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL; SQLite writers hold the database's
write lock from ``BEGIN IMMEDIATE``), then counts: a second concurrent write of the same tenant waits
for the first to commit and counts its row, so two writes can never both take the last place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiservice.application.ports import UnitOfWork, UnitOfWorkFactory
from aiservice.domain.errors import NotFound
from aiservice.domain.models import Framework, Model
from aiservice.domain.tenancy import Permission, Principal, Quota, Tenant


def _locked_tenant(uow: UnitOfWork) -> Tenant | None:
    # A unit of work's tenant always has its row (every tenant-scoped row's foreign key needs it);
    # without one there is nothing to enforce and the write's foreign key refuses it anyway.
    return uow.tenants.get(uow.tenant_id, for_update=True)


def admit_model(uow: UnitOfWork, framework: Framework) -> None:
    """Refuse a new model of a framework the tenant does not allow, or past ``maxModels``."""
    tenant = _locked_tenant(uow)
    if tenant is not None:
        tenant.check_framework(framework.value)
        tenant.check_quota(Quota.MODELS, uow.usage.models())


def admit_version(uow: UnitOfWork, model: Model, size_bytes: int, *, lock: bool = True) -> None:
    """Refuse version N+1 of ``model`` past ``maxVersionsPerModel``, or ``size_bytes`` more past
    ``maxArtifactBytes``. Without ``lock`` it is an early look (before any byte is read), not a promise."""
    tenant = _locked_tenant(uow) if lock else uow.tenants.get(uow.tenant_id)
    if tenant is None:
        return
    tenant.check_framework(model.framework.value)
    tenant.check_quota(Quota.VERSIONS_PER_MODEL, uow.usage.versions(model.id))
    tenant.check_quota(Quota.ARTIFACT_BYTES, uow.usage.artifact_bytes(), size_bytes)


def admit_training_job(uow: UnitOfWork) -> None:
    """Refuse a job past ``maxConcurrentTrainingJobs`` (jobs queued or running)."""
    tenant = _locked_tenant(uow)
    if tenant is not None:
        tenant.check_quota(Quota.CONCURRENT_TRAINING_JOBS, uow.usage.active_jobs())


def admit_deployment(uow: UnitOfWork) -> None:
    """Refuse a deployment past ``maxDeployments`` (live deployments)."""
    tenant = _locked_tenant(uow)
    if tenant is not None:
        tenant.check_quota(Quota.DEPLOYMENTS, uow.deployments.count_live())


@dataclass(frozen=True)
class QuotaUse:
    quota: Quota
    limit: int | None
    current: int
    enforced: bool = True
    scope: str = "tenant"  # "replica": counted in the serving cache of the replica that answered


class TenantUsage:
    """Use against limit per quota, for a platform operator or the tenant's own admin."""

    def __init__(self, uow: UnitOfWorkFactory, loaded_models: Callable[[str], int] = lambda _: 0) -> None:
        self._uow = uow
        self._loaded_models = loaded_models

    def report(self, principal: Principal, tenant_id: str) -> tuple[Tenant, list[QuotaUse]]:
        if Permission.TENANTS_MANAGE not in principal.permissions:
            principal.require(Permission.TENANT_READ)
            if principal.tenant_id != tenant_id:  # another tenant's existence is not revealed
                raise NotFound(f"No tenant {tenant_id!r} exists.", extra={"tenant": tenant_id})
        with self._uow(tenant_id, writes=False) as uow:
            tenant = uow.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound(f"No tenant {tenant_id!r} exists.", extra={"tenant": tenant_id})
            current = {
                Quota.MODELS: uow.usage.models(),
                Quota.VERSIONS_PER_MODEL: uow.usage.most_versions(),
                Quota.ARTIFACT_BYTES: uow.usage.artifact_bytes(),
                Quota.CONCURRENT_TRAINING_JOBS: uow.usage.active_jobs(),
                Quota.DEPLOYMENTS: uow.deployments.count_live(),
            }
        current[Quota.LOADED_MODELS] = self._loaded_models(tenant_id)
        uses = [
            QuotaUse(
                quota,
                tenant.quotas.get(quota),
                current[quota],
                scope="replica" if quota == Quota.LOADED_MODELS else "tenant",
            )
            for quota in Quota
        ]
        return tenant, uses

    def limit(self, tenant_id: str, quota: Quota) -> int | None:
        """One quota's limit, read now (the serving cache asks on a cold load only)."""
        with self._uow(tenant_id, writes=False) as uow:
            tenant = uow.tenants.get(tenant_id)
        return tenant.quotas.get(quota) if tenant is not None else None
