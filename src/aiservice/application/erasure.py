"""GDPR erasure of a tenant's data (superadmin): every model, version, alias, artifact, training job,
dataset, API key and pending event of the tenant goes; the tenant row and its audit chain stay.

The rows go in one transaction, which also appends the ``tenant.erase`` record (with the counts) to
the tenant's audit chain; bytes on disk go after that commit, so a failure never leaves a row
pointing at erased bytes, and running the erasure again finishes what a crash left. The audit chain
is kept: it is the record of the erasure, and it holds no payloads, only who did what and from where.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiservice.application.audit import note_changes
from aiservice.application.datasets import DatasetCatalog
from aiservice.application.ports import ArtifactStore, UnitOfWorkFactory
from aiservice.domain.errors import NotFound
from aiservice.domain.events import ModelDeleted
from aiservice.domain.tenancy import Permission, Principal


@dataclass(frozen=True)
class ErasureReport:
    tenant_id: str
    counts: dict[str, int] = field(default_factory=dict)  # by kind: models, versions, artifacts, ...


class TenantErasure:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ArtifactStore,
        datasets: DatasetCatalog,
        on_erased: Callable[[str], None] = lambda tenant_id: None,
    ) -> None:
        """``on_erased`` hears of each erased tenant (this replica's serving caches forget it at once;
        other replicas through the ``ModelDeleted`` events)."""
        self._uow = uow
        self._store = store
        self._datasets = datasets
        self._on_erased = on_erased

    def erase(self, principal: Principal, tenant_id: str) -> ErasureReport:
        principal.require(Permission.TENANTS_MANAGE)
        with self._uow(tenant_id) as uow:
            # The tenant row lock: an upload or job admitted under it commits before or after, never
            # half-way through the erasure.
            if uow.tenants.get(tenant_id, for_update=True) is None:
                raise NotFound(f"No tenant {tenant_id!r} exists.", extra={"tenant": tenant_id})
            erased = uow.tenant_data.erase_all()
            counts = {**erased.counts, "artifacts": len(erased.artifact_keys)}
            counts["datasets"] = len(self._datasets.list(tenant_id))
            note_changes(counts, dict.fromkeys(counts, 0))
            uow.commit()
        for key in erased.artifact_keys:
            self._store.delete(key)
        for dataset in self._datasets.list(tenant_id):
            self._datasets.delete(tenant_id, dataset.name)
        self._forget(tenant_id, erased.models)
        return ErasureReport(tenant_id, counts)

    def _forget(self, tenant_id: str, models: dict[str, str]) -> None:
        if models:  # every replica's caches forget the models (the audit record is already written)
            with self._uow(tenant_id) as uow:
                uow.record(
                    *(ModelDeleted(tenant_id=tenant_id, aggregate_id=i, name=n) for i, n in models.items())
                )
                uow.commit()
        self._on_erased(tenant_id)
