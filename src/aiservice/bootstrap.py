"""The composition root: Settings -> adapters -> use cases. The only module that knows every adapter."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from aiservice import __version__
from aiservice.application.api_keys import ApiKeys
from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.audit import AuditLog
from aiservice.application.compilation import COMPILE_FOLDER, OnnxCompilation
from aiservice.application.datasets import Datasets
from aiservice.application.erasure import TenantErasure
from aiservice.application.event_handlers import (
    EventConsumption,
    EventHandlers,
    EventProcessor,
    ServingCacheHandlers,
)
from aiservice.application.health import HealthCheck
from aiservice.application.inference import InferenceService
from aiservice.application.leftovers import LeftoverSweeper, StaleWork
from aiservice.application.outbox import EventBus, OutboxRelay, OutboxStatus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import (
    ArtifactStore,
    Authenticator,
    CloudEvent,
    EventConsumer,
    EventPublisher,
    OutboxMessage,
    RateLimiter,
    TokenService,
    Tracer,
    WorkerPeers,
)
from aiservice.application.quotas import TenantUsage
from aiservice.application.rate_limits import RateClass, RateLimit, RateLimitPolicy, RateLimits
from aiservice.application.registry import ModelRegistry
from aiservice.application.security import TokenAuthenticator
from aiservice.application.serving.fleet import WorkerFleet
from aiservice.application.tenants import Tenants
from aiservice.application.tracing import NO_TRACER
from aiservice.application.training import TrainingExecution, TrainingJobs
from aiservice.application.versions import ModelVersions
from aiservice.application.webhook_delivery import WebhookDispatcher, WebhookUrlGuard
from aiservice.application.webhooks import Webhooks
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import InvalidInput
from aiservice.domain.events import DomainEvent
from aiservice.domain.tenancy import Quota, parse_limits
from aiservice.infrastructure.auth.api_keys import SqlAlchemyApiKeyLookup
from aiservice.infrastructure.auth.jwks import JwksKeySet, jwks_from_file, jwks_from_url
from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService
from aiservice.infrastructure.auth.secret_file import load_or_create_secret, read_secret
from aiservice.infrastructure.datasets.checks import format_problems
from aiservice.infrastructure.datasets.locator import DatasetLocator, S3Options
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.db.artifact_references import SqlAlchemyArtifactReferences
from aiservice.infrastructure.db.audit_repository import SqlAlchemyAuditStore
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.job_repositories import SqlAlchemyJobQueue
from aiservice.infrastructure.db.probe import SqlAlchemyDatabaseProbe
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyOutbox, SqlAlchemyUnitOfWorkFactory
from aiservice.infrastructure.db.webhook_repositories import (
    SecretCipher,
    SqlAlchemyWebhookDeliveryQueue,
    SqlAlchemyWebhookStore,
    rewrap_webhook_secrets,
)
from aiservice.infrastructure.events.database import (
    SqlAlchemyOutboxLease,
    SqlAlchemyOutboxMonitor,
    SqlAlchemyProcessedEvents,
)
from aiservice.infrastructure.events.inprocess import InProcessEventPublisher
from aiservice.infrastructure.images.pillow import PillowImageDecoder
from aiservice.infrastructure.jobs.adapters import LocatedDatasets, TrainerCatalog
from aiservice.infrastructure.jobs.local import ProcessLauncher
from aiservice.infrastructure.jobs.supervisor import JobSupervisor, WorkerLauncher
from aiservice.infrastructure.observability.logging import log_prediction
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.observability.probes import dependency_probes
from aiservice.infrastructure.observability.tracing import (
    TracedArtifactStore,
    TracedEventPublisher,
    configure_tracing,
    instrument_engine,
)
from aiservice.infrastructure.process_memory import resident_bytes
from aiservice.infrastructure.ratelimit.memory import InMemoryRateLimiter
from aiservice.infrastructure.ratelimit.shared_memory import SharedMemoryRateLimiter
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.compiler import COMPILE_TIMEOUT_S, SubprocessOnnxCompiler
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector, warm_fork_server
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
from aiservice.infrastructure.stale_files import StaleEntries
from aiservice.infrastructure.storage.encrypted import (
    EncryptedArtifactStore,
    PlaintextSweeper,
    RotationReport,
)
from aiservice.infrastructure.storage.keys import KeyConfigError, Keyring, generate_key, load_keyring
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.infrastructure.webhooks.http import HttpxWebhookSender, SocketHostResolver
from aiservice.infrastructure.workers.peers import UnixPeers
from aiservice.infrastructure.workers.slots import WorkerSlot
from aiservice.infrastructure.workers.supervisor import RATE_LIMIT_FILE
from aiservice.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

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
    tracer: Tracer = NO_TRACER
    plaintext_sweeper: PlaintextSweeper | None = None  # with encryption at rest only
    slot: WorkerSlot | None = None  # one of WORKERS processes; None: the only one

    def prepare(self) -> bool:
        """Apply migrations and make sure the default tenant exists; True if it was created now."""
        migrate.upgrade(self.engine)
        return self.tenants.ensure(DEFAULT_TENANT, "Default tenant")[1]

    def start(self) -> None:
        """Start the background work: all of it in the host worker (the only one by default), only
        what serves this process's own caches in the others (ADR 19)."""
        if self.peers.slot == 0:
            if self.settings.prometheus_port:
                self.metrics.serve(self.settings.prometheus_port)
            self.relay.start()
            self.webhook_dispatcher.start()
            self.training_runner.start()
            self.leftover_sweeps.start()
            if self.plaintext_sweeper is not None:
                self.plaintext_sweeper.start()
            threading.Thread(target=warm_fork_server, name="warm-fork-server", daemon=True).start()
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

    def close(self) -> None:
        self.peers.stop()
        self.training_runner.stop()
        self.events.stop()
        self.relay.stop()
        self.webhook_dispatcher.stop()
        self.leftover_sweeps.stop()
        if self.plaintext_sweeper is not None:
            self.plaintext_sweeper.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.compile_pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()
        self.rate_limits.close()
        self.metrics.stop_serving()
        self.tracer.shutdown()


def master_keys(settings: Settings) -> Keyring | None:
    """The master keys of encryption at rest (artifacts, webhook secrets); None when it is off."""
    secret = settings.artifact_encryption_key
    listed = settings.artifact_encryption_keys
    try:
        return load_keyring(
            secret.get_secret_value() if secret else None,
            listed.get_secret_value() if listed else None,
            settings.artifact_encryption_key_file,
        )
    except KeyConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def artifact_store(settings: Settings) -> LocalArtifactStore | EncryptedArtifactStore:
    """The local store, wrapped to encrypt at rest when a master key is configured."""
    store = LocalArtifactStore(settings.artifact_path)
    keys = master_keys(settings)
    if keys is None:
        return store
    return EncryptedArtifactStore(store, keys, plaintext_ttl_seconds=settings.artifact_plaintext_ttl_seconds)


def rotate_artifact_keys(settings: Settings) -> tuple[str, RotationReport, RotationReport]:
    """Re-wrap every artifact's data key and every webhook's signing secret under the current master
    key: (its id, what was done to artifacts, what was done to webhook secrets)."""
    store = artifact_store(settings)
    if not isinstance(store, EncryptedArtifactStore):
        raise ConfigurationError(
            "No ARTIFACT_ENCRYPTION_KEY, ARTIFACT_ENCRYPTION_KEYS or ARTIFACT_ENCRYPTION_KEY_FILE is set: "
            "nothing to rotate."
        )
    engine = create_engine(settings.resolved_database_url)
    try:
        secrets = rewrap_webhook_secrets(engine, store.keys)
    finally:
        engine.dispose()
    return store.keys.current.id, store.rotate(), secrets


def new_master_key() -> tuple[str, str]:
    """A random master key for artifact encryption: (base64, id)."""
    return generate_key()


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


def token_service(settings: Settings) -> tuple[TokenService, str]:
    """Tokens signed with the server's own secret, and where it came from (``JWT_SECRET`` or the file).

    Unlike the server's start, this never creates a secret file: one made here, in a folder the server
    does not use, would sign tokens the server rejects. With neither, a ConfigurationError says which
    file was looked for."""
    if settings.jwt_secret is not None:
        return _jwt_service(settings, settings.jwt_secret.get_secret_value()), "JWT_SECRET"
    if settings.environment == "production":
        raise ConfigurationError("JWT_SECRET must be set when ENVIRONMENT=production.")
    path = settings.secret_file.resolve()
    secret = read_secret(path)
    if not secret:
        raise ConfigurationError(
            f"no signing secret: {path} {'is empty' if secret == '' else 'does not exist'} and JWT_SECRET "
            "is not set. The server writes that file on its first start: run this in the server's folder, "
            "or set DATA_DIR to the server's data folder, or JWT_SECRET to its secret."
        )
    return _jwt_service(settings, secret), str(path)


def _jwt_service(settings: Settings, secret: str) -> JwtTokenService:
    return JwtTokenService(
        secret,
        settings.jwt_leeway_seconds,
        keys=_jwks(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


def _jwks(settings: Settings) -> JwksKeySet | None:
    """The identity provider's public keys, when JWT_JWKS_URL or JWT_JWKS_FILE names them."""
    if settings.jwt_jwks_url and settings.jwt_jwks_file:
        raise ConfigurationError("Set JWT_JWKS_URL or JWT_JWKS_FILE, not both.")
    if settings.jwt_jwks_url:
        fetch, source = jwks_from_url(settings.jwt_jwks_url), settings.jwt_jwks_url
    elif settings.jwt_jwks_file:
        fetch, source = jwks_from_file(Path(settings.jwt_jwks_file)), settings.jwt_jwks_file
    else:
        return None
    return JwksKeySet(
        fetch,
        source,
        ttl_s=settings.jwt_jwks_cache_seconds,
        min_refetch_s=settings.jwt_jwks_min_refetch_seconds,
    )


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


def bootstrap(
    settings: Settings | None = None, *, tracer: Tracer | None = None, slot: WorkerSlot | None = None
) -> Container:
    """The service built from ``settings``; ``tracer`` replaces the one the settings configure (tests);
    ``slot`` makes it one of several worker processes on this host (ADR 19)."""
    settings = settings or Settings()
    workers = slot.count if slot is not None else 1
    peers: WorkerPeers = UnixPeers(settings.workers_dir, slot.index if slot is not None else 0, workers)
    secret, generated, created = signing_secret(settings)
    engine = create_engine(settings.resolved_database_url)
    tracer = tracer or configure_tracing(
        settings.otel_exporter_otlp_endpoint,
        settings.jaeger_endpoint,
        service_name=settings.otel_service_name,
        sample_ratio=settings.otel_traces_sample_ratio,
    )
    instrument_engine(engine, tracer)
    uow = SqlAlchemyUnitOfWorkFactory(engine, utcnow, trace_context=tracer.traceparent)
    inventory = artifact_store(settings)
    store: ArtifactStore = inventory
    sweeper = (
        PlaintextSweeper(store, settings.artifact_plaintext_ttl_seconds)
        if isinstance(store, EncryptedArtifactStore)
        else None
    )
    if tracer is not NO_TRACER:
        store = TracedArtifactStore(store, tracer)
    tokens = _jwt_service(settings, secret)
    metrics = ServiceMetrics(
        multiprocess_dir=settings.prometheus_multiproc_dir,
        max_label_values=settings.metrics_max_label_values,
    )
    bus = EventBus()
    bus.subscribe("*", _log_event)
    bus.subscribe("*", lambda m: metrics.events_published.labels(m.event_type).inc())
    webhook_store, webhook_guard, dispatcher = _webhooks(settings, engine, metrics)
    bus.subscribe("*", dispatcher.on_event)  # on the lease holder, once per event: queues deliveries
    event_handlers = EventHandlers()
    # Each worker consumes as its own consumer: every one of them must see every event.
    consumer = consumer_group(settings) + (f"-w{peers.slot}" if workers > 1 else "")
    processor = EventProcessor(
        event_handlers, SqlAlchemyProcessedEvents(engine), consumer, utcnow, tracer=tracer
    )
    relay = OutboxRelay(
        SqlAlchemyOutbox(engine, utcnow),
        bus,
        interval=settings.outbox_poll_seconds,
        publisher=_traced(event_publisher(settings, processor, peers), tracer),
        lease=SqlAlchemyOutboxLease(engine, utcnow, settings.outbox_lease_seconds),
        max_backoff=settings.outbox_max_backoff_seconds,
    )
    metrics.watch_outbox_lag(relay.lag_seconds)
    archive_limits = ArchiveLimits(
        settings.max_archive_members, settings.max_unpacked_bytes, settings.max_compression_ratio
    )
    in_flight = InFlightKeys()  # keys this replica is writing: never swept
    plugins = FrameworkRegistry.discover(archive_limits)
    frameworks = plugins.catalog()
    versions = ModelVersions(
        uow,
        store,
        utcnow,
        settings.max_artifact_bytes,
        SubprocessArtifactInspector(
            settings.inspect_timeout_seconds,
            settings.inspect_memory_mb * 1024**2,
            archive_limits,
        ),
        in_flight=in_flight,
        upload_timeout_s=settings.upload_timeout_seconds,
    )
    threads = settings.inference_threads or os.cpu_count() or 2
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")
    inference = InferenceService(
        versions,
        store,
        plugins,
        executor,
        metrics,
        resident_bytes=resident_bytes,
        images=PillowImageDecoder(),
        max_models=settings.model_cache_size,
        max_memory_bytes=settings.model_cache_memory_mb * 1024**2 // workers,  # the host's budget, shared
        max_batch_size=settings.max_batch_size,
        max_batch_rows=settings.batcher_max_rows,
        max_batch_delay_s=settings.max_batch_delay_ms / 1000,
        batch_workers=min(threads, 2),
        timeout_s=settings.predict_timeout_seconds,
        devices=plugins.devices(
            {"torch": settings.pytorch_backend, "tensorflow": settings.tensorflow_backend}
        ),
        loaded_model_limit=lambda tenant_id: tenant_usage.limit(tenant_id, Quota.LOADED_MODELS),
        tracer=tracer,
        prediction_log=log_prediction,
        prediction_log_rate=settings.prediction_log_sample_rate,
    )
    tenant_usage = TenantUsage(uow, loaded_models=inference.loaded_models)

    compilation = OnnxCompilation(
        uow,
        store,
        SubprocessOnnxCompiler(
            memory_bytes=settings.inspect_memory_mb * 1024**2, archive_limits=archive_limits
        ),
        settings.max_artifact_bytes,
        frameworks,
        in_flight,
        work_dir=_compile_dir(settings),
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
        peers.wake_host()  # the relay runs in the host worker
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
        tracer=tracer,
        on_job=metrics.training_job,
    )

    def wake_runner() -> None:
        runner.wake()
        peers.wake_host()  # the job supervisor runs in the host worker

    training = TrainingJobs(
        uow,
        utcnow,
        TrainerCatalog(),
        LocatedDatasets(locator),
        frameworks,
        wake_runner=wake_runner,
        data_parallel=settings.job_runner == "ray",
        max_timeout_s=settings.training_timeout_seconds,
        trace_context=tracer.traceparent,
    )
    authenticator = TokenAuthenticator(tokens, uow, api_keys=SqlAlchemyApiKeyLookup(engine))
    leftovers = _leftovers(settings, engine, inventory, dataset_store, runner, in_flight, metrics)
    return Container(
        settings=settings,
        engine=engine,
        registry=ModelRegistry(uow, utcnow, frameworks, wake_runner=wake_runner),
        versions=versions,
        inference=inference,
        executor=executor,
        compilation=compilation,
        compile_pool=compile_pool,
        tenants=Tenants(
            uow, _default_quotas(settings), on_change=authenticator.forget_tenant, frameworks=frameworks
        ),
        tenant_usage=tenant_usage,
        training=training,
        training_runner=runner,
        datasets=dataset_store,
        dataset_uploads=Datasets(
            dataset_store,
            format_problems,
            settings.max_dataset_bytes,
            uow,
            upload_timeout_s=settings.upload_timeout_seconds,
        ),
        tokens=tokens,
        authenticator=authenticator,
        api_keys=ApiKeys(uow, utcnow),
        audit=AuditLog(SqlAlchemyAuditStore(engine), uow, utcnow),
        health=_health(settings, engine, store),
        bus=bus,
        relay=relay,
        events=EventConsumption(
            event_handlers,
            processor,
            ServingCacheHandlers(inference, warm=settings.event_warm_on_promotion),
            event_consumer(settings, processor.consumer),
        ),
        fleet=WorkerFleet(inference, peers),
        peers=peers,
        slot=slot,
        outbox=OutboxStatus(SqlAlchemyOutboxMonitor(engine), relay, utcnow),
        metrics=metrics,
        secret_is_generated=generated,
        secret_created_now=created,
        rate_limits=rate_limits(settings, metrics, workers),
        erasure=TenantErasure(
            uow, store, dataset_store, on_erased=lambda tenant: _erased(tenant, inference, runner)
        ),
        webhooks=Webhooks(webhook_store, webhook_guard, dispatcher, utcnow),
        webhook_dispatcher=dispatcher,
        leftovers=leftovers,
        leftover_sweeps=PeriodicTask("leftover-sweeper", settings.sweep_interval_seconds, leftovers.sweep),
        tracer=tracer,
        plaintext_sweeper=sweeper,
    )


def _leftovers(
    settings: Settings,
    engine: Engine,
    inventory: LocalArtifactStore | EncryptedArtifactStore,
    datasets: DatasetStore,
    runner: JobSupervisor,
    in_flight: InFlightKeys,
    metrics: ServiceMetrics,
) -> LeftoverSweeper:
    """What crashed work leaves on disk, each kind judged by the longest that work may take."""
    s = settings
    if s.artifact_orphan_grace_seconds <= s.inspect_timeout_seconds:
        log.warning(
            "ARTIFACT_ORPHAN_GRACE_SECONDS (%g) is not above INSPECT_TIMEOUT_SECONDS (%g): an upload another "
            "replica is still inspecting could be swept",
            s.artifact_orphan_grace_seconds,
            s.inspect_timeout_seconds,
        )
    upload = timedelta(seconds=s.upload_timeout_seconds)
    return LeftoverSweeper(
        inventory,
        SqlAlchemyArtifactReferences(engine),
        in_flight,
        utcnow,
        work=[
            StaleWork("artifact-staging", inventory, upload),
            StaleWork("dataset-staging", datasets, upload),
            StaleWork("training-folders", runner, timedelta(seconds=s.training_timeout_seconds) + upload),
            StaleWork(
                "compile-folders",
                StaleEntries(_compile_dir(s), f"{COMPILE_FOLDER}*"),
                timedelta(seconds=COMPILE_TIMEOUT_S) + upload,
            ),
        ],
        grace=timedelta(seconds=s.artifact_orphan_grace_seconds),
        on_swept=metrics.swept,
    )


def _compile_dir(settings: Settings) -> Path:
    return settings.data_dir / "compile"


def _erased(tenant_id: str, inference: InferenceService, runner: JobSupervisor) -> None:
    """This replica forgets the tenant's models at once, and its job runner looks at its jobs now: a
    worker whose job row the erasure deleted is stopped, and its model is never registered."""
    inference.invalidate(tenant_id)
    runner.wake()


def _webhooks(
    settings: Settings, engine: Engine, metrics: ServiceMetrics
) -> tuple[SqlAlchemyWebhookStore, WebhookUrlGuard, WebhookDispatcher]:
    cipher = SecretCipher(master_keys(settings))
    store = SqlAlchemyWebhookStore(engine, cipher, utcnow)
    guard = WebhookUrlGuard(SocketHostResolver(), allow_private=settings.webhook_allow_private)
    dispatcher = WebhookDispatcher(
        store,
        SqlAlchemyWebhookDeliveryQueue(engine, cipher),
        HttpxWebhookSender(settings.webhook_timeout_seconds),
        guard,
        timeout_s=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        max_backoff_s=settings.webhook_max_backoff_seconds,
        poll_s=settings.webhook_poll_seconds,
        workers=settings.webhook_workers,
        retention=timedelta(days=settings.webhook_delivery_retention_days),
        clock=utcnow,
        on_attempt=metrics.webhook_attempt,
    )
    return store, guard, dispatcher


def _health(settings: Settings, engine: Engine, store: ArtifactStore) -> HealthCheck:
    probes, broker, absent = dependency_probes(
        redis=f"{settings.redis_host}:{settings.redis_port}" if settings.redis_host else None,
        event_bus=settings.event_bus,
        nats_url=settings.nats_url,
        kafka_broker=settings.kafka_broker,
        ray_address=settings.ray_address,
        job_runner=settings.job_runner,
    )
    return HealthCheck(
        SqlAlchemyDatabaseProbe(engine),
        store,
        __version__,
        utcnow,
        dependencies=probes,
        broker=broker,
        not_configured=absent,
        broker_grace_s=settings.broker_down_grace_seconds,
    )


def _traced(publisher: EventPublisher, tracer: Tracer) -> EventPublisher:
    return publisher if tracer is NO_TRACER else TracedEventPublisher(publisher, tracer)


def consumer_group(settings: Settings) -> str:
    """This replica's durable consumer: EVENT_CONSUMER_GROUP, else one named after the host."""
    return settings.event_consumer_group or f"aiservice-{socket.gethostname()}"


def event_publisher(
    settings: Settings, processor: EventProcessor, peers: WorkerPeers | None = None
) -> EventPublisher:
    """Where the relay publishes (EVENT_BUS); broker clients are imported only when chosen. In-process,
    the host worker hands each event to its own processor and then to its sibling workers."""
    s = settings
    prefix, timeout = s.event_destination_prefix, s.event_publish_timeout_seconds
    if s.event_bus == "redis":
        from aiservice.infrastructure.events.redis_streams import RedisStreamsEventPublisher

        maxlen = s.redis_stream_maxlen or None
        return RedisStreamsEventPublisher(_redis_for_events(s), prefix=prefix, maxlen=maxlen)
    if s.event_bus == "nats":
        from aiservice.infrastructure.events.nats_jetstream import NatsEventPublisher

        return NatsEventPublisher(s.nats_url, prefix=prefix, stream=s.nats_stream, timeout_s=timeout)
    if s.event_bus == "kafka":
        from aiservice.infrastructure.events.kafka import KafkaEventPublisher

        return KafkaEventPublisher(
            s.kafka_broker,
            prefix=prefix,
            idempotent=s.kafka_idempotent,
            partitions=s.kafka_topic_partitions,
            replication=s.kafka_topic_replication,
            timeout_s=timeout,
        )
    if peers is None or peers.count == 1:
        return InProcessEventPublisher(processor.process)
    siblings = peers

    def handle_here_then_siblings(event: CloudEvent) -> None:
        processor.process(event)
        siblings.publish(event)

    return InProcessEventPublisher(handle_here_then_siblings)


def event_consumer(settings: Settings, group: str) -> EventConsumer | None:
    """This replica's durable consumer of the broker; None in-process (the relay hands events over)."""
    s = settings
    prefix = s.event_destination_prefix
    if s.event_bus == "redis":
        from aiservice.infrastructure.events.redis_streams import RedisStreamsEventConsumer

        return RedisStreamsEventConsumer(_redis_for_events(s), group, prefix=prefix)
    if s.event_bus == "nats":
        from aiservice.infrastructure.events.nats_jetstream import NatsEventConsumer

        return NatsEventConsumer(s.nats_url, group, prefix=prefix, stream=s.nats_stream)
    if s.event_bus == "kafka":
        from aiservice.infrastructure.events.kafka import KafkaEventConsumer

        return KafkaEventConsumer(
            s.kafka_broker,
            group,
            prefix=prefix,
            partitions=s.kafka_topic_partitions,
            replication=s.kafka_topic_replication,
        )
    return None


def _redis_for_events(settings: Settings) -> Redis:
    from aiservice.infrastructure.events.redis_streams import redis_client

    if not settings.redis_host:
        raise ConfigurationError("EVENT_BUS=redis needs REDIS_HOST (and REDIS_PORT) of the Redis to use.")
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis_client(settings.redis_host, settings.redis_port, password=password, db=settings.redis_db)


def _default_quotas(settings: Settings) -> dict[Quota, int]:
    """TENANT_DEFAULT_QUOTAS, checked: the limits each newly created tenant starts with."""
    try:
        limits = parse_limits(settings.tenant_default_quotas, "TENANT_DEFAULT_QUOTAS")
    except InvalidInput as exc:
        raise ConfigurationError(f"{exc.detail} Known quotas: {', '.join(Quota)}.") from exc
    return {quota: limit for quota, limit in limits.items() if limit is not None}


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


def rate_limits(settings: Settings, metrics: ServiceMetrics, workers: int = 1) -> RateLimits:
    """Buckets in Redis shared by every replica when ``REDIS_HOST`` is set; else in this process, or in
    shared memory that every worker of this host maps when there are several."""
    s = settings
    policy = RateLimitPolicy(
        per_principal={
            RateClass.PREDICT: RateLimit(s.rate_limit_predict_rps, s.rate_limit_predict_burst),
            RateClass.MANAGEMENT: RateLimit(s.rate_limit_management_rps, s.rate_limit_management_burst),
        },
        per_tenant={
            RateClass.PREDICT: RateLimit(s.rate_limit_tenant_predict_rps, s.rate_limit_tenant_predict_burst),
            RateClass.MANAGEMENT: RateLimit(
                s.rate_limit_tenant_management_rps, s.rate_limit_tenant_management_burst
            ),
        },
    )
    limiter: RateLimiter = (
        SharedMemoryRateLimiter(s.workers_dir / RATE_LIMIT_FILE) if workers > 1 else InMemoryRateLimiter()
    )
    if s.redis_host:
        from aiservice.infrastructure.ratelimit.redis import RedisRateLimiter

        limiter = RedisRateLimiter(
            s.redis_host,
            s.redis_port,
            password=s.redis_password.get_secret_value() if s.redis_password else None,
            db=s.redis_db,
            on_unchecked=metrics.rate_limit_unchecked.inc,
        )
    return RateLimits(limiter, policy, s.rate_limit_key_prefix)


def _launcher(settings: Settings) -> WorkerLauncher:
    if settings.job_runner == "ray":
        from aiservice.infrastructure.jobs.ray_runner import RayLauncher

        return RayLauncher(settings.ray_address)
    return ProcessLauncher()
