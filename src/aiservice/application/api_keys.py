"""API key use cases: a tenant's admin makes keys for machines, lists them and revokes them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiservice.application.ports import Clock, UnitOfWork, UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.domain.api_keys import ApiKey, generate_key
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.tenancy import ROLE_PERMISSIONS, Permission, Principal, Role


@dataclass(frozen=True)
class NewApiKey:
    name: str
    roles: list[str]
    model_ids: list[str] | None = None  # ids or names of the tenant's models; None: every model
    expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedApiKey:
    """A new key's record and, this once, the key itself."""

    record: ApiKey
    key: str


class ApiKeys:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    def create(self, principal: Principal, spec: NewApiKey) -> IssuedApiKey:
        principal.require(Permission.APIKEY_MANAGE)
        roles = _grantable_roles(principal, spec.roles)
        now = self._clock()
        if spec.expires_at is not None and spec.expires_at <= now:
            raise InvalidInput(
                "expiresAt must lie in the future.", errors=[FieldError("body.expiresAt", "in the past")]
            )
        material = generate_key()
        with self._uow(principal.tenant_id) as uow:
            model_ids = None if spec.model_ids is None else _model_ids(uow, principal, spec.model_ids)
            record = ApiKey(
                id=material.id,
                tenant_id=principal.tenant_id,
                name=spec.name,
                roles=roles,
                model_ids=model_ids,
                secret_hash=material.secret_hash,
                created_at=now,
                created_by=principal.subject,
                expires_at=spec.expires_at,
            )
            uow.api_keys.add(record)
            uow.commit()
        return IssuedApiKey(record, material.key)

    def list(self, principal: Principal) -> list[ApiKey]:
        principal.require(Permission.APIKEY_MANAGE)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return uow.api_keys.all()

    def revoke(self, principal: Principal, key_id: str) -> None:
        """Revoke a key of the caller's tenant (again is fine); the next request with it is refused."""
        principal.require(Permission.APIKEY_MANAGE)
        with self._uow(principal.tenant_id) as uow:
            if uow.api_keys.get(key_id) is None:
                raise NotFound(f"No API key {key_id!r} exists.", extra={"apiKey": key_id})
            uow.api_keys.revoke(key_id, self._clock())
            uow.commit()


def _grantable_roles(principal: Principal, requested: list[str]) -> tuple[str, ...]:
    """Roles the creator may hand to a machine: ones it has, or ones granting strictly less than it
    holds. A key never grants more than its maker, nor a role of equal reach it lacks (a platform role)."""
    roles = tuple(dict.fromkeys(requested))
    if not roles:
        raise InvalidInput("A key needs at least one role.", errors=[FieldError("body.roles", "empty")])
    known = {r.value for r in Role}
    for index, name in enumerate(roles):
        if name not in known:
            raise InvalidInput(
                f"Unknown role {name!r}; roles are {sorted(known)}.",
                errors=[FieldError(f"body.roles.{index}", "unknown role")],
            )
        granted = ROLE_PERMISSIONS.get(Role(name), frozenset())
        held = principal.permissions
        if not (granted < held or (Role(name) in principal.roles and granted <= held)):
            raise InvalidInput(
                f"A key cannot grant the role {name!r}: it has permissions you do not.",
                errors=[FieldError(f"body.roles.{index}", "exceeds your own permissions")],
            )
    return roles


def _model_ids(uow: UnitOfWork, principal: Principal, references: list[str]) -> tuple[str, ...]:
    if not references:
        raise InvalidInput(
            "modelIds, when sent, names at least one model; leave it out for a key to every model.",
            errors=[FieldError("body.modelIds", "empty")],
        )
    ids: list[str] = []
    for index, reference in enumerate(references):
        try:
            ids.append(find_model(uow, reference, principal).id)
        except NotFound as exc:
            raise InvalidInput(
                f"No model {reference!r} exists in this tenant.",
                errors=[FieldError(f"body.modelIds.{index}", "no such model")],
            ) from exc
    return tuple(dict.fromkeys(ids))
