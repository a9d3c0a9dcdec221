"""Authentication: a bearer token or an API key, and the tenant header, become a Principal, or the call
is refused."""

from __future__ import annotations

import threading
import time

from aiservice.application.ports import ApiKeyLookup, Clock, TokenService, UnitOfWorkFactory
from aiservice.domain.api_keys import ApiKeyStatus, parse_key
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import FieldError, Forbidden, InvalidInput, Unauthenticated
from aiservice.domain.tenancy import PLATFORM_TENANT, Principal, Role, TenantStatus

_KNOWN_ROLES = {r.value for r in Role}
SCHEMES = "'Authorization: Bearer <token>' or 'Authorization: ApiKey <key>'"


class TokenAuthenticator:
    """Checks ``Authorization`` (``Bearer <JWT>`` or ``ApiKey <key>``) and ``X-Tenant-ID`` against the
    credential and the tenant table.

    A token needs ``X-Tenant-ID`` equal to its tenant; a key names its tenant itself, so the header is
    optional with a key but must agree when sent. Keys are read from the database on every request, so
    a revoked or expired key is refused at once. Known active tenants are cached for ``tenant_ttl``
    seconds so a token costs no database trip.
    """

    def __init__(
        self,
        tokens: TokenService,
        uow: UnitOfWorkFactory,
        tenant_ttl: float = 30.0,
        api_keys: ApiKeyLookup | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._tokens = tokens
        self._uow = uow
        self._ttl = tenant_ttl
        self._keys = api_keys
        self._clock = clock
        self._active: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, tenant_header: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(f"Send {SCHEMES}.")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "apikey" and self._keys is not None and credential:
            return self._key_principal(credential, tenant_header)
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(f"The Authorization header must be {SCHEMES}.")
        claims = self._tokens.verify(credential)
        if not tenant_header:
            raise InvalidInput(
                "Send the 'X-Tenant-ID' header naming the tenant of your token.",
                errors=[FieldError("header.X-Tenant-ID", "required")],
            )
        _same_tenant(tenant_header, claims.tenant_id)
        self._check_tenant(claims.tenant_id)
        roles = frozenset(Role(r) for r in claims.roles if r in _KNOWN_ROLES)
        return Principal(subject=claims.subject, tenant_id=claims.tenant_id, roles=roles)

    def needs_io(self, authorization: str | None, tenant_header: str | None) -> bool:
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() == "apikey":
            return self._keys is not None
        if scheme.lower() == "bearer" and self._tokens.needs_io(credential.strip()):
            return True
        return not self.tenant_known(tenant_header)

    def tenant_known(self, tenant_header: str | None) -> bool:
        """Whether authenticating for this tenant needs no database trip (its status is cached)."""
        with self._lock:
            return self._active.get(tenant_header or "", 0.0) > time.monotonic()

    def _key_principal(self, credential: str, tenant_header: str | None) -> Principal:
        assert self._keys is not None
        parsed = parse_key(credential)
        key = self._keys.find(parsed[0]) if parsed else None
        if parsed is None or key is None or not key.matches(parsed[1]):
            raise Unauthenticated("The API key is not valid.")
        status = key.status(self._clock())
        if status == ApiKeyStatus.REVOKED:
            raise Unauthenticated("The API key has been revoked.")
        if status == ApiKeyStatus.EXPIRED:
            raise Unauthenticated("The API key has expired.")
        if tenant_header:
            _same_tenant(tenant_header, key.tenant_id)
        self._check_tenant(key.tenant_id)
        return key.principal()

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


def _same_tenant(tenant_header: str, tenant_id: str) -> None:
    if tenant_header != tenant_id:
        raise Forbidden(
            "The X-Tenant-ID header does not match the tenant of the credential.",
            code="tenant-mismatch",
        )
