"""Who is calling and what they may do: roles map to permissions as data, not ``if`` chains."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from aiservice.domain.errors import FieldError, Forbidden, InvalidInput, QuotaExceeded


class Permission(StrEnum):
    MODEL_READ = "model:read"  # models, versions, aliases, training jobs, datasets
    PREDICT = "model:predict"  # predictions (also the v2 inference protocol's metadata and readiness)
    PREDICTION_READ = "prediction:read"  # logged predictions (their inputs and outputs) and feedback
    MODEL_WRITE = "model:write"
    MODEL_DELETE = "model:delete"
    VERSION_WRITE = "version:write"
    STAGE_WRITE = "stage:write"  # move versions between none, staging and archived
    STAGE_PRODUCTION = "stage:production"  # and, with stage:write, into or out of production
    ALIAS_WRITE = "alias:write"
    TRAIN = "training:write"  # submit and cancel training jobs
    DATASET_WRITE = "dataset:write"  # upload and delete training datasets
    APIKEY_MANAGE = "apikey:manage"  # create, list and revoke the tenant's API keys
    AUDIT_READ = "audit:read"  # read the tenant's audit log
    WEBHOOK_MANAGE = "webhook:manage"  # subscribe URLs to the tenant's events, read their delivery logs
    DEPLOY = "deployment:write"  # create, change, roll back and delete dev and staging deployments
    DEPLOY_PRODUCTION = "deployment:production"  # and, with deployment:write, production ones
    EXPERIMENT_WRITE = "experiment:write"  # create, start, pause, stop, promote and delete experiments
    TENANT_READ = "tenant:read"  # the caller's own tenant: its quotas and their use
    TENANTS_MANAGE = "tenants:manage"  # the platform: create, list and change every tenant


class Role(StrEnum):
    VIEWER = "viewer"
    PREDICTOR = "predictor"
    EDITOR = "editor"
    DEPLOYER = "deployer"
    ADMIN = "admin"
    SUPERADMIN = "superadmin"


# The reserved tenant of platform operators: it holds no data and needs no row. A token for it counts
# only platform roles, and a token for any other tenant counts only tenant roles, so no tenant's
# token (or API key) can ever carry a platform permission.
PLATFORM_TENANT = "platform"
PLATFORM_ROLES = frozenset({Role.SUPERADMIN})
PLATFORM_PERMISSIONS = frozenset({Permission.TENANTS_MANAGE})

_READ = frozenset({Permission.MODEL_READ})
_EDIT = _READ | {
    Permission.PREDICT,
    Permission.MODEL_WRITE,
    Permission.VERSION_WRITE,
    Permission.STAGE_WRITE,
    Permission.ALIAS_WRITE,
    Permission.TRAIN,
    Permission.DATASET_WRITE,
    Permission.DEPLOY,
    Permission.PREDICTION_READ,
    Permission.EXPERIMENT_WRITE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _READ,
    Role.PREDICTOR: frozenset({Permission.PREDICT}),
    Role.EDITOR: _EDIT,
    Role.DEPLOYER: _EDIT | {Permission.STAGE_PRODUCTION, Permission.DEPLOY_PRODUCTION},
    # Everything in the tenant, including permissions added later; nothing of the platform's.
    Role.ADMIN: frozenset(Permission) - PLATFORM_PERMISSIONS,
    Role.SUPERADMIN: PLATFORM_PERMISSIONS,
}


def permissions_of(roles: frozenset[Role], tenant_id: str) -> frozenset[Permission]:
    """What ``roles`` grant in a token for ``tenant_id`` (platform roles count only on the platform)."""
    platform = tenant_id == PLATFORM_TENANT
    granted: set[Permission] = set()
    for role in roles:
        if (role in PLATFORM_ROLES) == platform:
            granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, always bound to exactly one tenant."""

    subject: str
    tenant_id: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    # Set for an API key limited to some models: every other model is invisible to it (None: all models).
    model_ids: frozenset[str] | None = None

    def sees_model(self, model_id: str) -> bool:
        return self.model_ids is None or model_id in self.model_ids

    @cached_property  # asked on every request: computed once per principal
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles, self.tenant_id)

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(
                f"This action needs the permission '{permission}', which roles "
                f"{[str(r) for r in sorted(self.roles)]} do not grant in tenant {self.tenant_id!r}.",
                extra={"permission": str(permission)},
            )


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Quota(StrEnum):
    """A tenant's limits, named as the API names them. A quota without a limit is unlimited."""

    MODELS = "maxModels"  # live models (a deleted model frees its place)
    VERSIONS_PER_MODEL = "maxVersionsPerModel"
    ARTIFACT_BYTES = "maxArtifactBytes"  # uploaded artifacts of live models, in bytes
    CONCURRENT_TRAINING_JOBS = "maxConcurrentTrainingJobs"  # queued + running
    LOADED_MODELS = "maxLoadedModels"  # in one replica's serving cache
    DEPLOYMENTS = "maxDeployments"  # live deployments


Limits = dict[Quota, int]
_QUOTA_NAMES = frozenset(q.value for q in Quota)


def parse_limits(raw: Mapping[str, Any], where: str = "quotas") -> dict[Quota, int | None]:
    """Quota names to limits (a non-negative integer, or None for unlimited); unknown names are refused."""
    limits: dict[Quota, int | None] = {}
    errors: list[FieldError] = []
    for name, value in raw.items():
        if name not in _QUOTA_NAMES:
            errors.append(FieldError(f"{where}.{name}", f"unknown quota; known: {', '.join(Quota)}"))
        elif value is not None and (type(value) is not int or value < 0):
            errors.append(FieldError(f"{where}.{name}", "must be a non-negative integer or null"))
        else:
            limits[Quota(name)] = value
    if errors:
        raise InvalidInput("Invalid quotas: " + "; ".join(e.field for e in errors) + ".", errors=errors)
    return limits


def parse_settings(
    raw: Mapping[str, Any], frameworks: Collection[str], where: str = "settings"
) -> dict[str, Any]:
    """A tenant's settings, checked: ``allowPickle`` (bool), ``allowedFrameworks`` (names among the
    installed ``frameworks``, or None for every framework)."""
    settings: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in raw.items():
        if name == "allowPickle" and isinstance(value, bool):
            settings[name] = value
        elif name == "allowedFrameworks" and value is None:
            settings[name] = None
        elif name == "allowedFrameworks" and isinstance(value, list | tuple):
            unknown = [f for f in value if f not in frameworks]
            if unknown:
                errors.append(FieldError(f"{where}.{name}", f"unknown frameworks: {unknown}"))
            settings[name] = sorted({str(f) for f in value})
        elif name in ("allowPickle", "allowedFrameworks"):
            expected = "a boolean" if name == "allowPickle" else "a list of frameworks or null"
            errors.append(FieldError(f"{where}.{name}", f"must be {expected}"))
        else:
            errors.append(
                FieldError(f"{where}.{name}", "unknown setting; known: allowPickle, allowedFrameworks")
            )
    if errors:
        raise InvalidInput(
            "Invalid tenant settings: " + "; ".join(e.field for e in errors) + ".", errors=errors
        )
    return settings


@dataclass
class Tenant:
    id: str
    name: str
    status: TenantStatus = TenantStatus.ACTIVE
    settings: dict[str, Any] = field(default_factory=dict)
    quotas: Limits = field(default_factory=dict)  # only quotas that have a limit
    created_at: datetime | None = None

    @property
    def allow_pickle(self) -> bool:
        """Pickle runs code when loaded, so a tenant must opt in to it."""
        return bool(self.settings.get("allowPickle", False))

    @property
    def allowed_frameworks(self) -> list[str] | None:
        """The frameworks this tenant's models may use; None: every framework."""
        allowed = self.settings.get("allowedFrameworks")
        return None if allowed is None else list(allowed)

    def check_framework(self, framework: str) -> None:
        allowed = self.allowed_frameworks
        if allowed is not None and framework not in allowed:
            raise Forbidden(
                f"Tenant {self.id!r} does not allow {framework} models; allowed: "
                f"{', '.join(allowed) or 'none'}.",
                code="framework-not-allowed",
                extra={"framework": framework, "allowedFrameworks": allowed},
            )

    def set_limits(self, limits: Mapping[Quota, int | None]) -> None:
        """Change some limits; None removes one (unlimited)."""
        for quota, limit in limits.items():
            if limit is None:
                self.quotas.pop(quota, None)
            else:
                self.quotas[quota] = limit

    def check_quota(self, quota: Quota, current: int, adding: int = 1) -> None:
        """Refuse taking ``adding`` more of ``quota`` when ``current`` already counts towards it."""
        limit = self.quotas.get(quota)
        if limit is not None and current + adding > limit:
            raise QuotaExceeded(
                f"Tenant {self.id!r} has reached its {quota} quota: {current} of {limit} used"
                + (f", {adding} more requested." if adding != 1 else "."),
                extra={"quota": str(quota), "limit": limit, "current": current, "requested": adding},
            )
