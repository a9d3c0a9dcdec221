"""Tenant administration: the platform's superadmins create, list and change tenants (their status,
settings and quotas); bootstrap and the CLI make sure a tenant exists."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiservice.application.frameworks import NO_FRAMEWORKS, FrameworkCatalog
from aiservice.application.ports import UnitOfWorkFactory
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import (
    PLATFORM_TENANT,
    Limits,
    Permission,
    Principal,
    Quota,
    Tenant,
    TenantStatus,
    parse_limits,
    parse_settings,
)

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class NewTenant:
    id: str
    name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    quotas: dict[str, int | None] = field(default_factory=dict)  # absent: the configured default


@dataclass(frozen=True)
class TenantChanges:
    """What a PATCH changes; None leaves a part alone. Settings and quotas change key by key, and a
    quota set to None becomes unlimited."""

    name: str | None = None
    status: TenantStatus | None = None
    settings: dict[str, Any] | None = None
    quotas: dict[str, int | None] | None = None


class Tenants:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        default_quotas: Mapping[Quota, int] | None = None,
        on_change: Callable[[str], None] = lambda tenant_id: None,
        frameworks: FrameworkCatalog = NO_FRAMEWORKS,
    ) -> None:
        """``default_quotas`` are given to each tenant created from now on; ``on_change`` hears of
        every changed tenant (the authenticator forgets its cached status); ``allowedFrameworks``
        name installed ``frameworks`` (none by default: every name is refused)."""
        self._uow = uow
        self._frameworks = frameworks
        self._defaults: Limits = dict(default_quotas or {})
        self.on_change = on_change

    # -- operators (bootstrap, CLI) --------------------------------------------------------------

    def ensure(self, tenant_id: str, name: str | None = None) -> tuple[Tenant, bool]:
        """The tenant, created if missing; the flag says whether it was created now."""
        _check_id(tenant_id)
        with self._uow(tenant_id) as uow:
            existing = uow.tenants.get(tenant_id)
            if existing is not None:
                return existing, False
            tenant = Tenant(id=tenant_id, name=name or tenant_id, quotas=dict(self._defaults))
            uow.tenants.add(tenant)
            uow.commit()
            return tenant, True

    def configure(self, tenant_id: str, *, allow_pickle: bool) -> Tenant:
        """Change whether a tenant accepts pickled artifacts (an operator's shortcut)."""
        return self._change(tenant_id, TenantChanges(settings={"allowPickle": allow_pickle}))

    # -- the tenants API (superadmin) ----------------------------------------------------------

    def create(self, principal: Principal, spec: NewTenant) -> Tenant:
        principal.require(Permission.TENANTS_MANAGE)
        _check_id(spec.id)
        tenant = Tenant(
            id=spec.id,
            name=spec.name or spec.id,
            settings=parse_settings(spec.settings, self._frameworks.names(), "body.settings"),
            quotas=dict(self._defaults),
        )
        tenant.set_limits(parse_limits(spec.quotas, "body.quotas"))
        with self._uow(spec.id) as uow:
            if uow.tenants.get(spec.id) is not None:
                raise Conflict(f"A tenant {spec.id!r} already exists.", extra={"tenant": spec.id})
            uow.tenants.add(tenant)
            uow.commit()
        return tenant

    def list_tenants(self, principal: Principal, limit: int, cursor: str | None) -> Page[Tenant]:
        principal.require(Permission.TENANTS_MANAGE)
        with self._uow(PLATFORM_TENANT, writes=False) as uow:  # tenants are platform-wide
            return uow.tenants.page(limit, cursor)

    def get(self, principal: Principal, tenant_id: str) -> Tenant:
        principal.require(Permission.TENANTS_MANAGE)
        with self._uow(tenant_id, writes=False) as uow:
            return _found(uow.tenants.get(tenant_id), tenant_id)

    def update(self, principal: Principal, tenant_id: str, changes: TenantChanges) -> Tenant:
        principal.require(Permission.TENANTS_MANAGE)
        return self._change(tenant_id, changes)

    def _change(self, tenant_id: str, changes: TenantChanges) -> Tenant:
        settings = parse_settings(changes.settings or {}, self._frameworks.names(), "body.settings")
        limits = parse_limits(changes.quotas or {}, "body.quotas")
        with self._uow(tenant_id) as uow:
            tenant = _found(uow.tenants.get(tenant_id, for_update=True), tenant_id)
            if changes.name is not None:
                tenant.name = changes.name
            if changes.status is not None:
                tenant.status = changes.status
            tenant.settings = {**tenant.settings, **settings}
            tenant.set_limits(limits)
            uow.tenants.save(tenant)
            uow.commit()
        self.on_change(tenant_id)  # a suspension takes effect at once on this replica
        return tenant


def _check_id(tenant_id: str) -> None:
    if not TENANT_ID.fullmatch(tenant_id):
        raise InvalidInput(
            f"Tenant id {tenant_id!r} must be 1-63 lowercase letters, digits, '_' or '-'.",
            errors=[FieldError("tenant", "invalid tenant id")],
        )
    if tenant_id == PLATFORM_TENANT:
        raise InvalidInput(
            f"The tenant id {PLATFORM_TENANT!r} is reserved for platform operators.",
            errors=[FieldError("tenant", "reserved tenant id")],
        )


def _found(tenant: Tenant | None, tenant_id: str) -> Tenant:
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id!r} exists.", extra={"tenant": tenant_id})
    return tenant
