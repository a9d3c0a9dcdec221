"""A deployment replica (``aiservice serve-model``, ADR 20): the service built as usual, then narrowed
to one deployment revision. It finds its revision in the database, serves that version only, trusts
the fronts' replica token, and runs no background work (``Container.model_server``)."""

from __future__ import annotations

from dataclasses import dataclass

from aiservice.application.deploying.experiment_pools import is_pool_revision, pool_version
from aiservice.application.serving.replica import (
    PinnedVersion,
    ReplicaTokenAuthenticator,
    replica_principal,
)
from aiservice.application.serving.routing import VersionRouter
from aiservice.bootstrap.container import Container
from aiservice.bootstrap.wiring import bootstrap
from aiservice.domain.deployments import Deployment, Revision
from aiservice.domain.errors import NotFound
from aiservice.infrastructure.db.deployment_repositories import SqlAlchemyDeploymentDirectory
from aiservice.settings import Settings


@dataclass(frozen=True)
class ReplicaOf:
    """The revision a replica serves."""

    tenant_id: str
    deployment: str
    deployment_id: str
    revision: int
    model_id: str
    version: int


def model_server(
    settings: Settings, tenant_id: str, deployment: str, revision: int | None = None
) -> tuple[Container, ReplicaOf]:
    """The container of a replica of ``deployment``'s ``revision`` (default: the one asked for last).

    Raises ``NotFound`` when the deployment is not live or no longer knows that revision."""
    container = bootstrap(settings)
    try:
        found = SqlAlchemyDeploymentDirectory(container.engine).find(tenant_id, deployment)
        if found is None:
            raise NotFound(f"Tenant {tenant_id!r} has no live deployment {deployment!r}.")
        chosen = _revision(found, revision)
        target = ReplicaOf(tenant_id, found.name, found.id, chosen.number, found.model_id, chosen.version)
        container.model_server = True
        inference = container.inference
        inference.router = VersionRouter(PinnedVersion(container.versions, target.model_id, target.version))
        token = settings.replica_token
        if token is not None and token.get_secret_value():
            principal = replica_principal(tenant_id, found.name, found.model_id)
            container.authenticator = ReplicaTokenAuthenticator(
                container.authenticator, token.get_secret_value(), principal
            )
    except BaseException:
        container.close()
        raise
    return container, target


def _revision(deployment: Deployment, number: int | None) -> Revision:
    """The deployment keeps three revisions (asked for, serving, previous); a replica runs one of them."""
    if number is None:
        return deployment.revision
    if is_pool_revision(number):  # a pool of an experiment arm's version (deploying/experiment_pools)
        return Revision(number, pool_version(number), "experiment", deployment.created_at)
    for known in (deployment.revision, deployment.serving, deployment.previous):
        if known is not None and known.number == number:
            return known
    raise NotFound(
        f"Deployment {deployment.name!r} no longer knows revision {number} (it is at revision "
        f"{deployment.revision.number}).",
        extra={"deployment": deployment.name, "revision": number},
    )
