"""Deployment use cases: deploy a model version under a stable name, change it, roll it back, delete it.

Each one writes the desired state (and its events) in one transaction and wakes the reconcile loop;
the loop moves traffic once the replicas are warm. Production deployments need ``deployment:production``
(the deployer and admin roles); the tenant's ``maxDeployments`` quota counts live deployments.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiservice.application.audit import note_changes
from aiservice.application.deploying.ports import DeploymentRepository
from aiservice.application.ports import Clock, UnitOfWork, UnitOfWorkFactory
from aiservice.application.quotas import admit_deployment
from aiservice.application.registry import find_model
from aiservice.application.versions import resolve_in
from aiservice.domain.deployments import (
    Autoscaling,
    Deployment,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Scaling,
    check_deployment_name,
    with_scaling,
)
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.pagination import Page
from aiservice.domain.references import ModelReference
from aiservice.domain.tenancy import Permission, Principal


@dataclass(frozen=True)
class NewDeployment:
    """The deploy body, as the product spec writes it (camelCase names are the HTTP layer's)."""

    name: str
    environment: Environment = Environment.PRODUCTION
    target: DeploymentTarget = DeploymentTarget.LOCAL
    min_replicas: int = 1
    max_replicas: int | None = None  # default: min_replicas (at least 1)
    resource_limits: Mapping[str, Any] | None = None
    autoscaling: Mapping[str, Any] | None = None
    version: int | None = None
    alias: str | None = None


@dataclass(frozen=True)
class DeploymentChanges:
    """A PATCH: a new version or alias rolls out a new revision; replica and autoscaling fields rescale."""

    version: int | None = None
    alias: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    autoscaling: Mapping[str, Any] | None = None

    @property
    def rolls(self) -> bool:
        return self.version is not None or self.alias is not None

    @property
    def scales(self) -> bool:
        return any(v is not None for v in (self.min_replicas, self.max_replicas, self.autoscaling))


@dataclass(frozen=True)
class DeploymentFilter:
    model: str | None = None
    status: DeploymentStatus | None = None
    environment: Environment | None = None
    limit: int = 50
    cursor: str | None = None


def find_deployment(repo: DeploymentRepository, name: str, *, for_update: bool = False) -> Deployment:
    deployment = repo.get_by_name(name, for_update=for_update)
    if deployment is None:
        raise NotFound(f"No deployment {name!r} exists.", extra={"deployment": name})
    return deployment


class Deployments:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        targets: Collection[DeploymentTarget],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._targets = targets  # the targets this service has a deployer for (a live view)
        self._wake = wake  # the reconcile loop looks again now, not at its next tick

    def deploy(self, principal: Principal, model_ident: str, spec: NewDeployment) -> Deployment:
        _require_deploy(principal, spec.environment)
        check_deployment_name(spec.name)
        self._check_target(spec.target)
        scaling = Scaling(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas if spec.max_replicas is not None else max(1, spec.min_replicas),
            autoscaling=Autoscaling.parse(spec.autoscaling),
        ).check(spec.environment)
        resources = ResourceLimits.parse(spec.resource_limits)
        with self._uow(principal.tenant_id) as uow:
            admit_deployment(uow)  # locks the tenant's row until commit
            model = find_model(uow, model_ident, principal)
            version, reference = _target_version(uow, model, spec.version, spec.alias)
            if uow.deployments.get_by_name(spec.name) is not None:
                raise Conflict(
                    f"A deployment named {spec.name!r} already exists in this tenant.",
                    code="deployment-exists",
                    errors=[FieldError("body.deploymentName", "already taken")],
                )
            deployment = Deployment.create(
                tenant_id=principal.tenant_id,
                name=spec.name,
                model_id=model.id,
                environment=spec.environment,
                target=spec.target,
                scaling=scaling,
                resources=resources,
                version=version.version,
                reference=reference,
                now=self._clock(),
                created_by=principal.subject,
            )
            uow.deployments.add(deployment)
            uow.commit()
        self._wake()
        return deployment

    def list(self, principal: Principal, query: DeploymentFilter) -> Page[Deployment]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model_id = None if query.model is None else find_model(uow, query.model, principal).id
            page = uow.deployments.page(
                model_id=model_id,
                status=query.status,
                environment=query.environment,
                limit=query.limit,
                cursor=query.cursor,
            )
        if principal.model_ids is None:
            return page
        return Page([d for d in page.items if principal.sees_model(d.model_id)], page.next_cursor)

    def get(self, principal: Principal, name: str) -> tuple[Deployment, Model]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            deployment = self._visible(uow, principal, name)
            return deployment, find_model(uow, deployment.model_id, principal)

    def update(self, principal: Principal, name: str, changes: DeploymentChanges) -> Deployment:
        principal.require(Permission.DEPLOY)  # before the lookup; production is checked after it
        _one_target(changes.version, changes.alias)  # a bad body is told so before any lookup
        with self._uow(principal.tenant_id) as uow:
            deployment = self._visible(uow, principal, name, for_update=True)
            _require_deploy(principal, deployment.environment)
            now = self._clock()
            before = _summary(deployment)
            if changes.scales:
                scaling = with_scaling(
                    deployment.scaling,
                    min_replicas=changes.min_replicas,
                    max_replicas=changes.max_replicas,
                    autoscaling=changes.autoscaling,
                )
                deployment.rescale(scaling, now)
            if changes.rolls:
                model = find_model(uow, deployment.model_id, principal)
                version, reference = _target_version(uow, model, changes.version, changes.alias)
                deployment.roll_to(version.version, reference, now)
            after = _summary(deployment)
            if after != before:
                note_changes(before, after)
                uow.deployments.save(deployment)
                uow.commit()
        self._wake()
        return deployment

    def rollback(self, principal: Principal, name: str) -> Deployment:
        principal.require(Permission.DEPLOY)
        with self._uow(principal.tenant_id) as uow:
            deployment = self._visible(uow, principal, name, for_update=True)
            _require_deploy(principal, deployment.environment)
            before = _summary(deployment)
            deployment.rollback(self._clock())
            note_changes(before, _summary(deployment))
            uow.deployments.save(deployment)
            uow.commit()
        self._wake()
        return deployment

    def delete(self, principal: Principal, name: str) -> None:
        principal.require(Permission.DEPLOY)
        with self._uow(principal.tenant_id) as uow:
            deployment = self._visible(uow, principal, name, for_update=True)
            _require_deploy(principal, deployment.environment)
            deployment.delete(self._clock())
            uow.deployments.save(deployment)
            uow.commit()
        self._wake()

    def wake(self, tenant_id: str, name: str) -> None:
        """A request reached a dev deployment scaled to zero: ask for one replica."""
        with self._uow(tenant_id) as uow:
            deployment = find_deployment(uow.deployments, name, for_update=True)
            if deployment.scale_to(
                max(1, deployment.replicas_desired), "a request arrived while scaled to zero", self._clock()
            ):
                uow.deployments.save(deployment)
                uow.commit()
        self._wake()

    def _visible(
        self, uow: UnitOfWork, principal: Principal, name: str, *, for_update: bool = False
    ) -> Deployment:
        deployment = find_deployment(uow.deployments, name, for_update=for_update)
        if not principal.sees_model(deployment.model_id):  # a key limited to other models
            raise NotFound(f"No deployment {name!r} exists.", extra={"deployment": name})
        return deployment

    def _check_target(self, target: DeploymentTarget) -> None:
        if target not in self._targets:
            configured = ", ".join(sorted(t.value for t in self._targets)) or "none"
            raise InvalidInput(
                f"This service has no {target.value} deployer configured (configured: {configured}); "
                "the kubernetes target needs K8S_ENABLED=true and a cluster to reach.",
                errors=[FieldError("body.target", f"not configured; configured: {configured}")],
            )


def _require_deploy(principal: Principal, environment: Environment) -> None:
    principal.require(Permission.DEPLOY)
    if environment == Environment.PRODUCTION:
        principal.require(Permission.DEPLOY_PRODUCTION)


def _target_version(
    uow: UnitOfWork, model: Model, version: int | None, alias: str | None
) -> tuple[ModelVersion, str]:
    """The version a deploy or PATCH names, and the name it was asked by (for the revision)."""
    _one_target(version, alias)
    ref = ModelReference(model.id, version=version) if version is not None else None
    name = str(version) if version is not None else alias or "production"
    try:
        return resolve_in(uow, model, ref or ModelReference(model.id, alias=name)), name
    except NotFound as missing:
        field = "body.version" if version is not None or not alias else "body.alias"
        hint = "" if version is not None or alias else ", or move a version to production first"
        raise InvalidInput(
            f"{missing.detail} Name a version or an alias to deploy{hint}.",
            code="nothing-to-deploy",
            errors=[FieldError(field, "names no version of the model")],
        ) from None


def _summary(d: Deployment) -> dict[str, Any]:
    return {
        "version": d.revision.version,
        "revision": d.revision.number,
        "minReplicas": d.scaling.min_replicas,
        "maxReplicas": d.scaling.max_replicas,
        "autoscaling": d.scaling.autoscaling.to_json(),
    }


def _one_target(version: int | None, alias: str | None) -> None:
    if version is not None and alias is not None:
        raise InvalidInput(
            "Give a version or an alias, not both.",
            errors=[FieldError("body.alias", "not with body.version")],
        )
