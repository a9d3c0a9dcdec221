"""The composition root: Settings -> adapters -> use cases. The only module that knows every adapter."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aiservice import __version__
from aiservice.application.compilation import OnnxCompilation
from aiservice.application.datasets import Datasets
from aiservice.application.health import HealthCheck
from aiservice.application.inference import InferenceService
from aiservice.application.outbox import EventBus, OutboxRelay
from aiservice.application.ports import Authenticator, OutboxMessage, TokenService
from aiservice.application.registry import ModelRegistry
from aiservice.application.security import TokenAuthenticator
from aiservice.application.tenants import Tenants
from aiservice.application.training import TrainingExecution, TrainingJobs
from aiservice.application.versions import ModelVersions
from aiservice.domain.clock import utcnow
from aiservice.domain.events import DomainEvent
from aiservice.domain.models import Framework
from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService
from aiservice.infrastructure.auth.secret_file import load_or_create_secret
from aiservice.infrastructure.datasets.checks import format_problems
from aiservice.infrastructure.datasets.locator import DatasetLocator, S3Options
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.job_repositories import SqlAlchemyJobQueue
from aiservice.infrastructure.db.probe import SqlAlchemyDatabaseProbe
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyOutbox, SqlAlchemyUnitOfWorkFactory
from aiservice.infrastructure.images.pillow import PillowImageDecoder
from aiservice.infrastructure.jobs.adapters import FrameworkCatalog, LocatedDatasets
from aiservice.infrastructure.jobs.local import ProcessLauncher
from aiservice.infrastructure.jobs.supervisor import JobSupervisor, WorkerLauncher
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.process_memory import resident_bytes
from aiservice.infrastructure.runtimes.compiler import SubprocessOnnxCompiler
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector, warm_fork_server
from aiservice.infrastructure.runtimes.registry import RuntimeRegistry
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.settings import Settings

DEFAULT_TENANT = "default"

log = logging.getLogger("aiservice.events")


class ConfigurationError(RuntimeError):
    """The settings cannot work; the message says which one and how to fix it."""


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
    tenants: Tenants
    training: TrainingJobs
    training_runner: JobSupervisor
    datasets: DatasetStore
    dataset_uploads: Datasets
    tokens: TokenService
    authenticator: Authenticator
    health: HealthCheck
    bus: EventBus
    relay: OutboxRelay
    metrics: ServiceMetrics
    secret_is_generated: bool
    secret_created_now: bool

    def prepare(self) -> bool:
        """Apply migrations and make sure the default tenant exists; True if it was created now."""
        migrate.upgrade(self.engine)
        return self.tenants.ensure(DEFAULT_TENANT, "Default tenant")[1]

    def start(self) -> None:
        self.relay.start()
        self.training_runner.start()
        threading.Thread(target=warm_fork_server, name="warm-fork-server", daemon=True).start()

    def close(self) -> None:
        self.training_runner.stop()
        self.relay.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.compile_pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


def signing_secret(settings: Settings) -> tuple[str, bool, bool]:
    """(secret, generated into DATA_DIR, created just now)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value(), False, False
    if settings.environment == "production":
        raise ConfigurationError("JWT_SECRET must be set when ENVIRONMENT=production.")
    secret, created = load_or_create_secret(settings.secret_file)
    return secret, True, created


def _logged(task: Callable[..., object], *args: object) -> None:
    """Background work reports its failures in the log instead of losing them in a future."""
    try:
        task(*args)
    except Exception:
        log.exception("background task %s failed", getattr(task, "__name__", task))


def token_service(settings: Settings) -> TokenService:
    return JwtTokenService(signing_secret(settings)[0])


def _log_event(message: OutboxMessage) -> None:
    log.info(
        "event %s",
        message.event_type,
        extra={
            "eventId": message.event_id,
            "aggregateId": message.aggregate_id,
            "tenantId": message.tenant_id,
        },
    )


def bootstrap(settings: Settings | None = None) -> Container:
    settings = settings or Settings()
    secret, generated, created = signing_secret(settings)
    engine = create_engine(settings.resolved_database_url)
    uow = SqlAlchemyUnitOfWorkFactory(engine, utcnow)
    store = LocalArtifactStore(settings.artifact_path)
    tokens = JwtTokenService(secret)
    metrics = ServiceMetrics()
    bus = EventBus()
    bus.subscribe("*", _log_event)
    bus.subscribe("*", lambda m: metrics.events_published.labels(m.event_type).inc())
    relay = OutboxRelay(SqlAlchemyOutbox(engine, utcnow), bus, interval=settings.outbox_poll_seconds)
    versions = ModelVersions(
        uow,
        store,
        utcnow,
        settings.max_artifact_bytes,
        SubprocessArtifactInspector(settings.inspect_timeout_seconds, settings.inspect_memory_mb * 1024**2),
    )
    threads = settings.inference_threads or os.cpu_count() or 2
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")
    inference = InferenceService(
        versions,
        store,
        RuntimeRegistry.discover(),
        executor,
        metrics,
        resident_bytes=resident_bytes,
        images=PillowImageDecoder(),
        max_models=settings.model_cache_size,
        max_memory_bytes=settings.model_cache_memory_mb * 1024**2,
        max_batch_size=settings.max_batch_size,
        max_batch_delay_s=settings.max_batch_delay_ms / 1000,
        batch_workers=min(threads, 2),
        timeout_s=settings.predict_timeout_seconds,
        devices={
            Framework.PYTORCH: settings.pytorch_backend,
            Framework.KERAS: settings.tensorflow_backend,
            Framework.TENSORFLOW: settings.tensorflow_backend,
        },
    )

    compilation = OnnxCompilation(
        uow,
        store,
        SubprocessOnnxCompiler(memory_bytes=settings.inspect_memory_mb * 1024**2),
        settings.max_artifact_bytes,
    )
    compile_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-compile")
    if settings.onnx_compile:

        def compile_new_version(message: OutboxMessage) -> None:
            version = int(message.data["version"])
            compile_pool.submit(
                _logged, compilation.compile_version, message.tenant_id, message.aggregate_id, version
            )

        bus.subscribe("ModelVersionCreated", compile_new_version)

    def on_events(events: list[DomainEvent]) -> None:
        relay.notify()
        for event in events:  # this replica forgets stale resolutions at once; others via the relay
            inference.invalidate(event.tenant_id, event.aggregate_id)

    uow.on_events = on_events

    dataset_store = DatasetStore(settings.data_dir / "uploaded-datasets")
    locator = DatasetLocator(settings.dataset_root_paths, dataset_store, _s3_options(settings))
    execution = TrainingExecution(uow, SqlAlchemyJobQueue(engine), versions, utcnow)
    runner = JobSupervisor(
        execution,
        _launcher(settings),
        concurrency=settings.training_concurrency,
        heartbeat_s=settings.training_heartbeat_seconds,
        default_timeout_s=settings.training_timeout_seconds,
        work_dir=settings.data_dir / "training",
        resolve=locator.resolve,
        storage_options=locator.storage_options,
        fingerprint=locator.fingerprint,
    )
    training = TrainingJobs(
        uow,
        utcnow,
        FrameworkCatalog(),
        LocatedDatasets(locator),
        wake_runner=runner.wake,
        data_parallel=settings.job_runner == "ray",
        max_timeout_s=settings.training_timeout_seconds,
    )
    return Container(
        settings=settings,
        engine=engine,
        registry=ModelRegistry(uow, utcnow),
        versions=versions,
        inference=inference,
        executor=executor,
        compilation=compilation,
        compile_pool=compile_pool,
        tenants=Tenants(uow),
        training=training,
        training_runner=runner,
        datasets=dataset_store,
        dataset_uploads=Datasets(dataset_store, format_problems, settings.max_dataset_bytes),
        tokens=tokens,
        authenticator=TokenAuthenticator(tokens, uow),
        health=HealthCheck(SqlAlchemyDatabaseProbe(engine), store, __version__, utcnow),
        bus=bus,
        relay=relay,
        metrics=metrics,
        secret_is_generated=generated,
        secret_created_now=created,
    )


def _s3_options(settings: Settings) -> S3Options | None:
    """S3 datasets are on when an endpoint or credentials are configured (empty values count as unset)."""
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    if not (settings.s3_endpoint_url or settings.aws_access_key_id):
        return None
    return S3Options(
        endpoint_url=settings.s3_endpoint_url or None,
        key=settings.aws_access_key_id or None,
        secret=secret or None,
        region=settings.aws_default_region or None,
    )


def _launcher(settings: Settings) -> WorkerLauncher:
    if settings.job_runner == "ray":
        from aiservice.infrastructure.jobs.ray_runner import RayLauncher

        return RayLauncher(settings.ray_address)
    return ProcessLauncher()
