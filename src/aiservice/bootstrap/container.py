"""What the service is made of once built, and how it starts and stops its background work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aiservice.application.api_keys import ApiKeys
from aiservice.application.audit import AuditLog
from aiservice.application.automl import AutoMLStudies
from aiservice.application.compilation import OnnxCompilation
from aiservice.application.datasets import Datasets
from aiservice.application.deploying.deployments import Deployments
from aiservice.application.deploying.ports import Deployer
from aiservice.application.deploying.traffic import DeploymentTraffic
from aiservice.application.erasure import TenantErasure
from aiservice.application.event_handlers import (
    EventConsumption,
)
from aiservice.application.export import ModelExports
from aiservice.application.health import HealthCheck
from aiservice.application.imports import ModelImports
from aiservice.application.inference import InferenceService
from aiservice.application.leftovers import LeftoverSweeper
from aiservice.application.optimization import ModelOptimization
from aiservice.application.outbox import EventBus, OutboxRelay, OutboxStatus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import (
    Authenticator,
    TokenService,
    Tracer,
    WorkerPeers,
)
from aiservice.application.quotas import TenantUsage
from aiservice.application.rate_limits import RateLimits
from aiservice.application.registry import ModelRegistry
from aiservice.application.serving.fleet import WorkerFleet
from aiservice.application.tenants import Tenants
from aiservice.application.tracing import NO_TRACER
from aiservice.application.training import TrainingJobs
from aiservice.application.versions import ModelVersions
from aiservice.application.webhook_delivery import WebhookDispatcher
from aiservice.application.webhooks import Webhooks
from aiservice.bootstrap.experiments import ExperimentParts
from aiservice.bootstrap.monitoring import Monitoring
from aiservice.bootstrap.payload_logging import PayloadLogging
from aiservice.domain.deployments import DeploymentTarget
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.jobs.supervisor import JobSupervisor
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.runtimes.inspector import warm_fork_server
from aiservice.infrastructure.storage.encrypted import (
    PlaintextSweeper,
)
from aiservice.infrastructure.workers.slots import WorkerSlot
from aiservice.settings import Settings

DEFAULT_TENANT = "default"


@dataclass
class Container:
    settings: Settings
    engine: Engine
    registry: ModelRegistry
    versions: ModelVersions
    inference: InferenceService
    executor: ThreadPoolExecutor
    compilation: OnnxCompilation
    compile_pool: ThreadPoolExecutor
    exports: ModelExports  # edge export bundles (ADR 30)
    imports: ModelImports  # MLflow and Hugging Face-style folders (ADR 31)
    tenants: Tenants
    tenant_usage: TenantUsage
    training: TrainingJobs
    training_runner: JobSupervisor
    datasets: DatasetStore
    dataset_uploads: Datasets
    tokens: TokenService
    authenticator: Authenticator
    api_keys: ApiKeys
    audit: AuditLog
    health: HealthCheck
    bus: EventBus
    relay: OutboxRelay
    events: EventConsumption
    outbox: OutboxStatus
    metrics: ServiceMetrics
    secret_is_generated: bool
    secret_created_now: bool
    rate_limits: RateLimits
    erasure: TenantErasure
    webhooks: Webhooks
    webhook_dispatcher: WebhookDispatcher
    leftovers: LeftoverSweeper
    leftover_sweeps: PeriodicTask  # leftovers.sweep at start and every SWEEP_INTERVAL_SECONDS
    fleet: WorkerFleet
    peers: WorkerPeers
    deployments: Deployments
    deployment_traffic: DeploymentTraffic
    deployment_reconcile: PeriodicTask  # the reconcile loop, in the host worker only
    deployers: Mapping[DeploymentTarget, Deployer]
    payload_logging: PayloadLogging  # sampled predictions: the recorder, its flushing and the purge
    experiments: ExperimentParts  # use cases, routing snapshot, observation recorder, controller
    monitoring: Monitoring  # reference profiles, drift checks (scheduled in the host worker), performance
    tracer: Tracer = NO_TRACER
    plaintext_sweeper: PlaintextSweeper | None = None  # with encryption at rest only
    slot: WorkerSlot | None = None  # one of WORKERS processes; None: the only one
    # A deployment replica (``aiservice serve-model``, ADR 20): it serves one pinned version and runs
    # no background work at all, neither the host's duties nor event consumption.
    model_server: bool = False
    optimization: ModelOptimization | None = None  # quantise, prune, halve (ADR 29)
    automl: AutoMLStudies | None = None  # hyper-parameter search studies (ADR 28)
    automl_recovery: PeriodicTask | None = None  # ends studies whose service died, in the host worker

    def prepare(self) -> bool:
        """Apply migrations and make sure the default tenant exists; True if it was created now."""
        migrate.upgrade(self.engine)
        return self.tenants.ensure(DEFAULT_TENANT, "Default tenant")[1]

    def start(self) -> None:
        """Start the background work: all of it in the host worker (the only one by default), only
        what serves this process's own caches in the others (ADR 19); in a replica (ADR 20) only the
        writer of its sampled predictions, so a deployment's traffic is logged as the service's is."""
        if self.model_server:
            self.payload_logging.start(host=False)
            return
        if self.peers.slot == 0:
            if self.settings.prometheus_port:
                self.metrics.serve(self.settings.prometheus_port)
            self.relay.start()
            self.webhook_dispatcher.start()
            self.training_runner.start()
            self.leftover_sweeps.start()
            if self.automl_recovery is not None:
                self.automl_recovery.start()
            self.deployment_reconcile.start()
            if self.plaintext_sweeper is not None:
                self.plaintext_sweeper.start()
            threading.Thread(target=warm_fork_server, name="warm-fork-server", daemon=True).start()
        self.payload_logging.start(host=self.peers.slot == 0)
        self.experiments.start(host=self.peers.slot == 0)
        self.monitoring.start(host=self.peers.slot == 0)
        self.events.start()
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.peers.start(
            loop,
            on_event=self.events.processor.process,
            on_wake=self._wake_host_duties,
            on_ask=self.fleet.handle,
        )

    def _wake_host_duties(self) -> None:
        """A sibling committed events or queued a job: publish and look at the queue now."""
        self.relay.notify()
        self.training_runner.wake()
        self.deployment_reconcile.wake()

    def close(self) -> None:
        self.peers.stop()
        if self.automl_recovery is not None:
            self.automl_recovery.stop()
        if self.automl is not None:  # before the runner: its studies end as failed, their trials cancelled
            self.automl.close()
        self.training_runner.stop()
        self.events.stop()
        self.relay.stop()
        self.webhook_dispatcher.stop()
        self.leftover_sweeps.stop()
        self.deployment_reconcile.stop()
        self.payload_logging.close()  # writes what is queued, before the engine goes
        self.experiments.close()
        self.monitoring.close()
        for deployer in self.deployers.values():
            deployer.close()
        if self.plaintext_sweeper is not None:
            self.plaintext_sweeper.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.compile_pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()
        self.rate_limits.close()
        self.metrics.stop_serving()
        self.tracer.shutdown()
