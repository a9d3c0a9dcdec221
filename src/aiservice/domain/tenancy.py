"""Who is calling and what they may do: roles map to permissions as data, not ``if`` chains."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from aiservice.domain.errors import Forbidden


class Permission(StrEnum):
    MODEL_READ = "model:read"
    MODEL_WRITE = "model:write"
    MODEL_DELETE = "model:delete"
    VERSION_WRITE = "version:write"
    STAGE_WRITE = "stage:write"
    ALIAS_WRITE = "alias:write"
    TRAIN = "training:write"  # submit and cancel training jobs
    DATASET_WRITE = "dataset:write"  # upload and delete training datasets


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


_READ = frozenset({Permission.MODEL_READ})
_WRITE = _READ | {
    Permission.MODEL_WRITE,
    Permission.VERSION_WRITE,
    Permission.STAGE_WRITE,
    Permission.ALIAS_WRITE,
    Permission.TRAIN,
    Permission.DATASET_WRITE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _READ,
    Role.EDITOR: _WRITE,
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, always bound to exactly one tenant."""

    subject: str
    tenant_id: str
    roles: frozenset[Role] = field(default_factory=frozenset)

    @cached_property  # asked on every request: computed once per principal
    def permissions(self) -> frozenset[Permission]:
        granted: set[Permission] = set()
        for role in self.roles:
            granted |= ROLE_PERMISSIONS[role]
        return frozenset(granted)

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(
                f"This action needs the permission '{permission}', which roles "
                f"{sorted(self.roles) or '[]'} do not grant.",
                extra={"permission": str(permission)},
            )


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass
class Tenant:
    id: str
    name: str
    status: TenantStatus = TenantStatus.ACTIVE
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def allow_pickle(self) -> bool:
        """Pickle runs code when loaded, so a tenant must opt in to it."""
        return bool(self.settings.get("allowPickle", False))
