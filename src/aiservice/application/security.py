"""Authentication: a bearer token and the tenant header become a Principal, or the call is refused."""

from __future__ import annotations

import threading
import time

from aiservice.application.ports import TokenService, UnitOfWorkFactory
from aiservice.domain.errors import FieldError, Forbidden, InvalidInput, Unauthenticated
from aiservice.domain.tenancy import PLATFORM_TENANT, Principal, Role, TenantStatus

_KNOWN_ROLES = {r.value for r in Role}


class TokenAuthenticator:
    """Checks ``Authorization: Bearer`` and ``X-Tenant-ID`` against the token and the tenant table.

    Known active tenants are cached for ``tenant_ttl`` seconds so a request costs no database trip.
    """

    def __init__(self, tokens: TokenService, uow: UnitOfWorkFactory, tenant_ttl: float = 30.0) -> None:
        self._tokens = tokens
        self._uow = uow
        self._ttl = tenant_ttl
        self._active: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, tenant_header: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("Send 'Authorization: Bearer <token>'.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
        claims = self._tokens.verify(token.strip())
        if not tenant_header:
            raise InvalidInput(
                "Send the 'X-Tenant-ID' header naming the tenant of your token.",
                errors=[FieldError("header.X-Tenant-ID", "required")],
            )
        if tenant_header != claims.tenant_id:
            raise Forbidden(
                "The X-Tenant-ID header does not match the tenant of the token.",
                code="tenant-mismatch",
            )
        self._check_tenant(claims.tenant_id)
        roles = frozenset(Role(r) for r in claims.roles if r in _KNOWN_ROLES)
        return Principal(subject=claims.subject, tenant_id=claims.tenant_id, roles=roles)

    def tenant_known(self, tenant_header: str | None) -> bool:
        """Whether authenticating for this tenant needs no database trip (its status is cached)."""
        with self._lock:
            return self._active.get(tenant_header or "", 0.0) > time.monotonic()

    def forget_tenant(self, tenant_id: str) -> None:
        """The tenant changed (suspended, say): read its status again on its next request."""
        with self._lock:
            self._active.pop(tenant_id, None)

    def _check_tenant(self, tenant_id: str) -> None:
        if tenant_id == PLATFORM_TENANT:  # the operators' reserved tenant has no row and no data
            return
        now = time.monotonic()
        with self._lock:
            if self._active.get(tenant_id, 0.0) > now:
                return
        with self._uow(tenant_id, writes=False) as uow:
            tenant = uow.tenants.get(tenant_id)
        if tenant is None:
            raise Forbidden(f"Tenant {tenant_id!r} does not exist.", code="unknown-tenant")
        if tenant.status != TenantStatus.ACTIVE:
            raise Forbidden(f"Tenant {tenant_id!r} is suspended.", code="tenant-suspended")
        with self._lock:
            self._active[tenant_id] = now + self._ttl
