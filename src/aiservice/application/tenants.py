"""Tenant administration available before the tenants API exists: used by bootstrap and the CLI."""

from __future__ import annotations

import re

from aiservice.application.ports import UnitOfWorkFactory
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.tenancy import Tenant

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Tenants:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    def ensure(self, tenant_id: str, name: str | None = None) -> tuple[Tenant, bool]:
        """The tenant, created if missing; the flag says whether it was created now."""
        if not TENANT_ID.fullmatch(tenant_id):
            raise InvalidInput(
                f"Tenant id {tenant_id!r} must be 1-63 lowercase letters, digits, '_' or '-'.",
                errors=[FieldError("tenant", "invalid tenant id")],
            )
        with self._uow(tenant_id) as uow:
            existing = uow.tenants.get(tenant_id)
            if existing is not None:
                return existing, False
            tenant = Tenant(id=tenant_id, name=name or tenant_id)
            uow.tenants.add(tenant)
            uow.commit()
            return tenant, True

    def configure(self, tenant_id: str, *, allow_pickle: bool) -> Tenant:
        """Change a tenant's settings (an operator's action until the tenants API exists)."""
        with self._uow(tenant_id) as uow:
            tenant = uow.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound(f"No tenant {tenant_id!r} exists.")
            tenant.settings = {**tenant.settings, "allowPickle": allow_pickle}
            uow.tenants.save_settings(tenant)
            uow.commit()
            return tenant
