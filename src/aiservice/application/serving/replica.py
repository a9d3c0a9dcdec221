"""What a deployment replica (``aiservice serve-model``) changes in the service: it serves the one
version of one model it was started for, and it trusts the token the service's fronts send it.

A replica sits behind the stable endpoint, which has already authenticated the caller, checked its
tenant and rate-limited it; the front forwards the request with the replica token instead of the
caller's credential. So the token stands for one narrow principal: the deployment's tenant, allowed to
predict with the deployment's model and nothing else. Ordinary tokens and API keys still work, so an
operator can call a replica directly.
"""

from __future__ import annotations

import hmac

from aiservice.application.inference import InferenceService
from aiservice.application.ports import Authenticator
from aiservice.application.serving.routing import ServingTargets
from aiservice.domain.errors import Forbidden, NotFound, Unauthenticated
from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.references import ModelReference
from aiservice.domain.tenancy import Principal, Role

REPLICA_SCHEME = "Replica"  # ``Authorization: Replica <token>``, made from X-Aiservice-Replica-Token


def replica_principal(tenant_id: str, deployment: str, model_id: str) -> Principal:
    """Who a request with the replica token is: a predictor of one model of the deployment's tenant."""
    return Principal(
        subject=f"deployment:{deployment}",
        tenant_id=tenant_id,
        roles=frozenset({Role.PREDICTOR}),
        model_ids=frozenset({model_id}),
    )


class ReplicaTokenAuthenticator:
    """``Authorization: Replica <token>`` acts as ``principal`` when the token matches (compared in
    constant time); every other credential is ``inner``'s to judge. A wrong replica token is refused,
    never passed on."""

    def __init__(self, inner: Authenticator, token: str, principal: Principal) -> None:
        if not token:
            raise ValueError("a replica token must not be empty")
        self._inner = inner
        self._token = token.encode()
        self._principal = principal

    def authenticate(self, authorization: str | None, tenant_header: str | None) -> Principal:
        credential = _replica_credential(authorization)
        if credential is None:
            return self._inner.authenticate(authorization, tenant_header)
        if not hmac.compare_digest(credential.encode(), self._token):
            raise Unauthenticated("The replica token is not valid.")
        if tenant_header and tenant_header != self._principal.tenant_id:
            raise Forbidden(
                "The X-Tenant-ID header does not match the tenant of the credential.",
                code="tenant-mismatch",
            )
        return self._principal

    def needs_io(self, authorization: str | None, tenant_header: str | None) -> bool:
        if _replica_credential(authorization) is not None:
            return False
        return self._inner.needs_io(authorization, tenant_header)

    def tenant_known(self, tenant_header: str | None) -> bool:
        return self._inner.tenant_known(tenant_header)


def _replica_credential(authorization: str | None) -> str | None:
    scheme, _, credential = (authorization or "").partition(" ")
    return credential.strip() if scheme.lower() == REPLICA_SCHEME.lower() else None


class PinnedVersion:
    """The serving targets of a replica: any reference of its model (a bare name or id, the pinned
    version's number, or an alias that points at it) serves the pinned version; every other model or
    version is not found here, so a replica never loads a second model."""

    def __init__(self, targets: ServingTargets, model_id: str, version: int) -> None:
        self._targets = targets
        self.model_id = model_id
        self.version = version

    def serving_target(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion, bool]:
        ref = ModelReference.parse(reference)
        if ref.version is not None and ref.version != self.version:
            raise self._elsewhere(reference)
        asked = reference if ref.alias is not None else f"{ref.model}:{self.version}"
        model, version, allow_pickle = self._targets.serving_target(principal, asked)
        if model.id != self.model_id or version.version != self.version:
            raise self._elsewhere(reference)
        return model, version, allow_pickle

    def _elsewhere(self, reference: str) -> NotFound:
        return NotFound(
            f"This deployment replica serves version {self.version} of one model only, not {reference!r}.",
            extra={"servedVersion": self.version},
        )


async def warm(
    inference: InferenceService, tenant_id: str, deployment: str, model_id: str, version: int
) -> int:
    """Load the pinned version into the cache (and run its warm-up row) before the replica takes any
    request; returns the memory it took. Load errors (a missing or corrupt artifact) propagate."""
    loader = Principal(
        subject=f"deployment:{deployment}",
        tenant_id=tenant_id,
        roles=frozenset({Role.EDITOR}),  # loading is a writer's act; this one never answers a caller
        model_ids=frozenset({model_id}),
    )
    _serving, loaded_bytes = await inference.load(loader, model_id, version)
    return loaded_bytes
