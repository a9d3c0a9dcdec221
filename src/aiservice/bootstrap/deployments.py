"""The deployment parts: a deployer per configured target, the use cases, the fronts' traffic and the
reconcile loop (started in the host worker only)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from sqlalchemy.engine import Engine

from aiservice.application.deploying.deployments import Deployments
from aiservice.application.deploying.experiment_pools import ExperimentPools
from aiservice.application.deploying.ports import Deployer, DeploymentDirectory
from aiservice.application.deploying.reconciler import DeploymentReconciler
from aiservice.application.deploying.traffic import DeploymentTraffic
from aiservice.application.experimenting.deployment_arms import DeploymentArms
from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import UnitOfWorkFactory
from aiservice.domain.clock import utcnow
from aiservice.domain.deployments import DeploymentTarget
from aiservice.infrastructure.db.deployment_repositories import SqlAlchemyDeploymentDirectory
from aiservice.infrastructure.db.experiment_repositories import SqlAlchemyExperimentDirectory
from aiservice.infrastructure.deploy.forwarding import HttpReplicaClient
from aiservice.settings import Settings


def replica_token(settings: Settings, signing_secret: str) -> str:
    """What fronts send replicas to be trusted: ``REPLICA_TOKEN``, else derived from the signing secret,
    so every worker of the service (and the replicas it starts) agrees on it across restarts."""
    configured = settings.replica_token
    if configured is not None:
        return str(configured.get_secret_value())
    return hmac.new(signing_secret.encode(), b"aiservice-replica-token", hashlib.sha256).hexdigest()


def deployers(
    settings: Settings, token: str, directory: DeploymentDirectory
) -> dict[DeploymentTarget, Deployer]:
    built: dict[DeploymentTarget, Deployer] = {}
    local = local_deployer(settings, token)
    if local is not None:
        built[DeploymentTarget.LOCAL] = local
    kubernetes = kubernetes_deployer(settings, directory)
    if kubernetes is not None:
        built[DeploymentTarget.KUBERNETES] = kubernetes
    return built


def local_deployer(settings: Settings, token: str) -> Deployer:
    from aiservice.infrastructure.deploy.local import LocalDeployer

    return LocalDeployer.from_settings(settings, token)


def kubernetes_deployer(settings: Settings, directory: DeploymentDirectory) -> Deployer | None:
    if not settings.k8s_enabled:
        return None
    from aiservice.infrastructure.deploy.kubernetes import KubernetesDeployer

    return KubernetesDeployer.from_settings(settings, directory)


def host_replicas(settings: Settings) -> int:
    """Local replicas one deployment may run: the CPUs this process may use."""
    return settings.cpus


def deployment_parts(
    settings: Settings,
    engine: Engine,
    uow: UnitOfWorkFactory,
    signing_secret: str,
    wake_host: Callable[[], None],
    experiments: ExperimentTraffic | None = None,
) -> tuple[Deployments, DeploymentTraffic, PeriodicTask, dict[DeploymentTarget, Deployer]]:
    token = replica_token(settings, signing_secret)
    directory = SqlAlchemyDeploymentDirectory(engine)
    built = deployers(settings, token, directory)
    reconciler = DeploymentReconciler(directory, uow, built, utcnow, host_replicas=host_replicas(settings))
    loop = PeriodicTask("deployment-reconciler", 2.0, reconciler.reconcile)

    def wake() -> None:
        loop.wake()
        wake_host()  # the loop runs in the host worker

    use_cases = Deployments(uow, utcnow, built.keys(), wake=wake)
    traffic = DeploymentTraffic(directory, HttpReplicaClient(), lambda: token, use_cases.wake)
    if experiments is not None:  # experiments on deployments: pools for their arms, routed fronts
        reconciler.pools = ExperimentPools(SqlAlchemyExperimentDirectory(engine), uow)
        traffic.experiments = DeploymentArms(experiments)
    return use_cases, traffic, loop, built
