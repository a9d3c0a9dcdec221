"""``/permissions``: the published role -> permission matrix and what each endpoint needs.

The use cases enforce permissions (``Principal.require``); this table describes the same rules per
endpoint, and the role-matrix test walks every (role x endpoint) pair to prove the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from aiservice.domain.tenancy import (
    PLATFORM_ROLES,
    PLATFORM_TENANT,
    ROLE_PERMISSIONS,
    Permission,
)
from aiservice.interfaces.http.deps import CallerDep
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel

router = APIRouter(prefix=API_PREFIX, tags=["security"])

P = Permission


@dataclass(frozen=True)
class Rule:
    """An endpoint's requirement: any one of ``any_of``, each a set of permissions all needed."""

    method: str
    path: str
    any_of: tuple[tuple[Permission, ...], ...]
    when: str | None = None  # the condition under which this rule (rather than the plain one) applies
    note: str | None = None


def _full(path: str) -> str:
    return path if path.startswith("/v2/") else API_PREFIX + path


def _rule(method: str, path: str, *needed: Permission, when: str | None = None) -> Rule:
    return Rule(method, _full(path), (tuple(needed),), when)


_M = "/models/{model}"
_V = f"{_M}/versions/{{version}}"
_STAGE = f"{_V}/stage"
_V2 = "/v2/models/{name}"
_W = "/webhooks/{webhook_id}"
_D = "/deployments/{name}"
_X = "/experiments/{experiment_id}"
_PROMOTE = (
    "and alias:write to move the champion's alias, or stage:write and stage:production when the "
    "champion names a version or a stage"
)
PRODUCTION_DEPLOYMENT = "the deployment's environment is production"
_ALSO_PRODUCTION = "and deployment:production when the deployment's environment is production"

ENDPOINT_RULES: tuple[Rule, ...] = (
    _rule("GET", "/permissions"),  # any authenticated caller
    _rule("GET", "/models", P.MODEL_READ),
    _rule("POST", "/models", P.MODEL_WRITE),
    _rule("GET", _M, P.MODEL_READ),
    _rule("PATCH", _M, P.MODEL_WRITE),
    _rule("DELETE", _M, P.MODEL_DELETE),
    _rule("POST", f"{_M}/versions", P.VERSION_WRITE),
    _rule("POST", f"{_M}/import", P.VERSION_WRITE),
    _rule("GET", f"{_M}/versions", P.MODEL_READ),
    _rule("GET", _V, P.MODEL_READ),
    _rule("GET", f"{_V}/artifact", P.MODEL_READ),
    _rule("GET", f"{_V}/export", P.MODEL_READ),
    _rule("POST", _STAGE, P.STAGE_WRITE),
    _rule(
        "POST",
        _STAGE,
        P.STAGE_WRITE,
        P.STAGE_PRODUCTION,
        when="the version moves into or out of production",
    ),
    _rule("GET", f"{_M}/aliases", P.MODEL_READ),
    _rule("PUT", f"{_M}/aliases/{{alias}}", P.ALIAS_WRITE),
    _rule("DELETE", f"{_M}/aliases/{{alias}}", P.ALIAS_WRITE),
    _rule("GET", "/resolve/{reference}", P.MODEL_READ),
    _rule("POST", f"{_M}/predict", P.PREDICT),
    _rule("POST", f"{_M}/batch-predict", P.PREDICT),
    _rule("POST", f"{_V}/load", P.VERSION_WRITE, P.PREDICT),
    _rule("POST", f"{_V}/unload", P.VERSION_WRITE, P.PREDICT),
    _rule("POST", f"{_M}/train", P.TRAIN),
    _rule("POST", f"{_M}/automl", P.TRAIN),
    _rule("GET", f"{_M}/automl", P.MODEL_READ),
    _rule("GET", f"{_M}/automl/{{study}}", P.MODEL_READ),
    _rule("GET", f"{_M}/automl/{{study}}/events", P.MODEL_READ),
    _rule("POST", f"{_M}/automl/{{study}}/cancel", P.TRAIN),
    Rule(
        "POST",
        _full(f"{_V}/optimize"),
        ((P.VERSION_WRITE,),),
        note="and model:write when the ONNX model for the result is created",
    ),
    _rule("GET", "/training-jobs", P.MODEL_READ),
    _rule("GET", "/training-jobs/{job}", P.MODEL_READ),
    _rule("GET", "/training-jobs/{job}/events", P.MODEL_READ),
    _rule("POST", "/training-jobs/{job}/cancel", P.TRAIN),
    _rule("POST", f"{_M}/deploy", P.DEPLOY),
    _rule("POST", f"{_M}/deploy", P.DEPLOY, P.DEPLOY_PRODUCTION, when=PRODUCTION_DEPLOYMENT),
    _rule("GET", "/deployments", P.MODEL_READ),
    _rule("GET", _D, P.MODEL_READ),
    Rule("PATCH", _full(_D), ((P.DEPLOY,),), note=_ALSO_PRODUCTION),
    Rule("POST", _full(f"{_D}/rollback"), ((P.DEPLOY,),), note=_ALSO_PRODUCTION),
    Rule("DELETE", _full(_D), ((P.DEPLOY,),), note=_ALSO_PRODUCTION),
    _rule("GET", f"{_M}/payload-logging", P.MODEL_READ),
    _rule("PUT", f"{_M}/payload-logging", P.MODEL_WRITE),
    _rule("GET", f"{_M}/predictions", P.PREDICTION_READ),
    _rule("DELETE", f"{_M}/predictions", P.MODEL_WRITE),
    _rule("GET", "/predictions/{request_id}", P.PREDICTION_READ),
    _rule("POST", "/predictions/{request_id}/feedback", P.PREDICT),
    _rule("POST", "/predictions/feedback", P.PREDICT),
    _rule("PUT", f"{_V}/reference-profile", P.MODEL_WRITE),
    _rule("GET", f"{_V}/reference-profile", P.MODEL_READ),
    _rule("GET", f"{_M}/monitoring", P.MODEL_READ),
    _rule("GET", f"{_M}/monitoring/actions", P.MODEL_READ),
    _rule("PUT", f"{_M}/monitoring", P.MODEL_WRITE),
    _rule("POST", f"{_M}/drift", P.MODEL_WRITE),
    _rule("GET", f"{_M}/drift", P.MODEL_READ),
    _rule("GET", f"{_M}/performance", P.MODEL_READ),
    _rule("POST", "/experiments", P.EXPERIMENT_WRITE),
    _rule("GET", "/experiments", P.MODEL_READ),
    _rule("GET", _X, P.MODEL_READ),
    _rule("GET", f"{_X}/results", P.MODEL_READ),
    _rule("POST", f"{_X}/start", P.EXPERIMENT_WRITE),
    _rule("POST", f"{_X}/pause", P.EXPERIMENT_WRITE),
    _rule("POST", f"{_X}/resume", P.EXPERIMENT_WRITE),
    _rule("POST", f"{_X}/stop", P.EXPERIMENT_WRITE),
    Rule("POST", _full(f"{_X}/promote"), ((P.EXPERIMENT_WRITE,),), note=_PROMOTE),
    _rule("DELETE", _X, P.EXPERIMENT_WRITE),
    _rule("POST", f"{_D}/predict", P.PREDICT),
    _rule("POST", f"{_D}/batch-predict", P.PREDICT),
    _rule("POST", "/datasets", P.DATASET_WRITE),
    _rule("GET", "/datasets", P.MODEL_READ),
    _rule("GET", "/datasets/{name}", P.MODEL_READ),
    _rule("DELETE", "/datasets/{name}", P.DATASET_WRITE),
    _rule("POST", "/api-keys", P.APIKEY_MANAGE),
    _rule("GET", "/api-keys", P.APIKEY_MANAGE),
    _rule("DELETE", "/api-keys/{key_id}", P.APIKEY_MANAGE),
    _rule("GET", "/audit", P.AUDIT_READ),
    _rule("POST", "/webhooks", P.WEBHOOK_MANAGE),
    _rule("GET", "/webhooks", P.WEBHOOK_MANAGE),
    _rule("GET", _W, P.WEBHOOK_MANAGE),
    _rule("PATCH", _W, P.WEBHOOK_MANAGE),
    _rule("DELETE", _W, P.WEBHOOK_MANAGE),
    _rule("POST", f"{_W}/rotate-secret", P.WEBHOOK_MANAGE),
    _rule("POST", f"{_W}/ping", P.WEBHOOK_MANAGE),
    _rule("GET", f"{_W}/deliveries", P.WEBHOOK_MANAGE),
    _rule("GET", "/admin/outbox", P.TENANTS_MANAGE),
    _rule("GET", "/admin/workers", P.TENANTS_MANAGE),
    _rule("POST", "/tenants", P.TENANTS_MANAGE),
    _rule("GET", "/tenants", P.TENANTS_MANAGE),
    _rule("GET", "/tenants/{tenant}", P.TENANTS_MANAGE),
    _rule("PATCH", "/tenants/{tenant}", P.TENANTS_MANAGE),
    _rule("DELETE", "/tenants/{tenant}/data", P.TENANTS_MANAGE),
    Rule(
        "GET",
        _full("/tenants/{tenant}/usage"),
        ((P.TENANTS_MANAGE,), (P.TENANT_READ,)),
        note="tenant:read covers the caller's own tenant only; another tenant is a 404",
    ),
    _rule("GET", _V2, P.PREDICT),
    _rule("GET", f"{_V2}/versions/{{version}}", P.PREDICT),
    _rule("GET", f"{_V2}/ready", P.PREDICT),
    _rule("GET", f"{_V2}/versions/{{version}}/ready", P.PREDICT),
    _rule("POST", f"{_V2}/infer", P.PREDICT),
    _rule("POST", f"{_V2}/versions/{{version}}/infer", P.PREDICT),
)


class EndpointOut(ApiModel):
    method: str
    path: str
    any_of: list[list[str]]
    when: str | None = None
    note: str | None = None


class PermissionsOut(ApiModel):
    roles: dict[str, list[str]]
    permissions: list[str]
    platform_tenant: str
    platform_roles: list[str]
    endpoints: list[EndpointOut]


@router.get(
    "/permissions",
    response_model=PermissionsOut,
    summary="Roles, the permissions each grants, and the permissions each endpoint needs",
)
async def permissions(caller: CallerDep) -> PermissionsOut:
    return PermissionsOut(
        roles={str(role): sorted(granted) for role, granted in ROLE_PERMISSIONS.items()},
        permissions=[str(p) for p in Permission],
        platform_tenant=PLATFORM_TENANT,
        platform_roles=sorted(PLATFORM_ROLES),
        endpoints=[
            EndpointOut(
                method=r.method,
                path=r.path,
                any_of=[[str(p) for p in alt] for alt in r.any_of],
                when=r.when,
                note=r.note,
            )
            for r in ENDPOINT_RULES
        ],
    )
