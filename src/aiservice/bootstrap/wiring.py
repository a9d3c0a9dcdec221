"""Settings -> adapters -> use cases: the one function that builds the whole service."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from aiservice.application.api_keys import ApiKeys
from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.audit import AuditLog
from aiservice.application.automl import AutoMLStudies
from aiservice.application.compilation import OnnxCompilation
from aiservice.application.datasets import Datasets
from aiservice.application.erasure import TenantErasure
from aiservice.application.event_handlers import (
    EventConsumption,
    EventHandlers,
    EventProcessor,
    ServingCacheHandlers,
)
from aiservice.application.experimenting.deployment_arms import winner_rollout
from aiservice.application.export import ModelExports
from aiservice.application.imports import ModelImports
from aiservice.application.inference import InferenceService
from aiservice.application.optimization import ModelOptimization
from aiservice.application.outbox import EventBus, OutboxRelay, OutboxStatus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import (
    ArtifactStore,
    OutboxMessage,
    Tracer,
    WorkerPeers,
)
from aiservice.application.quotas import TenantUsage
from aiservice.application.registry import ModelRegistry
from aiservice.application.security import TokenAuthenticator
from aiservice.application.serving.fleet import WorkerFleet
from aiservice.application.tenants import Tenants
from aiservice.application.tracing import NO_TRACER
from aiservice.application.training import TrainingExecution, TrainingJobs
from aiservice.application.versions import ModelVersions
from aiservice.application.webhooks import Webhooks
from aiservice.bootstrap.backends import (
    compile_dir,
    default_quotas,
    forget_erased_tenant,
    health_check,
    job_launcher,
    leftover_sweeper,
    logged,
    rate_limits,
    s3_options,
    webhook_parts,
)
from aiservice.bootstrap.container import Container
from aiservice.bootstrap.deployments import deployment_parts
from aiservice.bootstrap.events import consumer_group, event_consumer, event_publisher, log_event, traced
from aiservice.bootstrap.experiments import experiment_parts
from aiservice.bootstrap.monitoring import closing_the_loop, monitoring_parts
from aiservice.bootstrap.payload_logging import payload_logging_parts
from aiservice.bootstrap.secrets import artifact_store, jwt_service, signing_secret
from aiservice.domain.clock import utcnow
from aiservice.domain.events import DomainEvent
from aiservice.domain.tenancy import Quota
from aiservice.infrastructure.auth.api_keys import SqlAlchemyApiKeyLookup
from aiservice.infrastructure.automl.runner import StudyThreads
from aiservice.infrastructure.automl.search import OptunaSearch
from aiservice.infrastructure.datasets.checks import format_problems
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db.audit_repository import SqlAlchemyAuditStore
from aiservice.infrastructure.db.automl_repositories import SqlAlchemySilentStudies
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.job_repositories import SqlAlchemyJobQueue
from aiservice.infrastructure.db.unit_of_work import SqlAlchemyOutbox, SqlAlchemyUnitOfWorkFactory
from aiservice.infrastructure.events.database import (
    SqlAlchemyOutboxLease,
    SqlAlchemyOutboxMonitor,
    SqlAlchemyProcessedEvents,
)
from aiservice.infrastructure.export.bundles import ZipBundleBuilder
from aiservice.infrastructure.images.pillow import PillowImageDecoder
from aiservice.infrastructure.imports import FolderReader
from aiservice.infrastructure.jobs.adapters import LocatedDatasets, TrainerCatalog
from aiservice.infrastructure.jobs.supervisor import JobSupervisor
from aiservice.infrastructure.observability.logging import log_prediction
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.observability.tracing import (
    TracedArtifactStore,
    configure_tracing,
    instrument_engine,
)
from aiservice.infrastructure.optimization.optimizer import RuntimeOptimizer
from aiservice.infrastructure.optimization.samples import LocatedSamples
from aiservice.infrastructure.process_memory import resident_bytes
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.compiler import SubprocessOnnxCompiler
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
from aiservice.infrastructure.storage.encrypted import (
    EncryptedArtifactStore,
    PlaintextSweeper,
)
from aiservice.infrastructure.workers.peers import UnixPeers
from aiservice.infrastructure.workers.slots import WorkerSlot
from aiservice.settings import Settings


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
    tokens = jwt_service(settings, secret)
    metrics = ServiceMetrics(
        multiprocess_dir=settings.prometheus_multiproc_dir,
        max_label_values=settings.metrics_max_label_values,
    )
    bus = EventBus()
    bus.subscribe("*", log_event)
    bus.subscribe("*", lambda m: metrics.events_published.labels(m.event_type).inc())
    webhook_store, webhook_guard, dispatcher = webhook_parts(settings, engine, metrics)
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
        publisher=traced(event_publisher(settings, processor, peers), tracer),
        lease=SqlAlchemyOutboxLease(engine, utcnow, settings.outbox_lease_seconds),
        max_backoff=settings.outbox_max_backoff_seconds,
    )
    metrics.watch_outbox_lag(relay.lag_seconds)
    archive_limits = ArchiveLimits(
        settings.max_archive_members, settings.max_unpacked_bytes, settings.max_compression_ratio
    )
    in_flight = InFlightKeys()  # keys this worker is writing: never swept (the host asks the others)
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
    payload_logging = payload_logging_parts(engine, uow, metrics, bus, store)
    uow.payload_files = payload_logging.files  # the repositories read the Parquet sink's files
    dataset_store = DatasetStore(settings.data_dir / "uploaded-datasets")
    monitoring = monitoring_parts(engine, uow, metrics, bus, dataset_store)
    experiments = experiment_parts(engine, uow, versions, metrics, bus)
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
        model_threads=settings.threads_per_model(workers),
        payload_log=payload_logging.recorder,
        experiments=experiments.traffic,
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
        work_dir=compile_dir(settings),
    )
    compile_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-compile")
    if settings.onnx_compile:

        def compile_new_version(message: OutboxMessage) -> None:
            version = int(message.data["version"])
            compile_pool.submit(
                logged, compilation.compile_version, message.tenant_id, message.aggregate_id, version
            )

        bus.subscribe("ModelVersionCreated", compile_new_version)

    def on_events(events: list[DomainEvent]) -> None:
        relay.notify()
        peers.wake_host()  # the relay runs in the host worker
        for event in events:  # this replica forgets stale resolutions at once; others via the relay
            inference.invalidate(event.tenant_id, event.aggregate_id)

    uow.on_events = on_events

    locator = DatasetLocator(settings.dataset_root_paths, dataset_store, s3_options(settings))
    execution = TrainingExecution(
        uow, SqlAlchemyJobQueue(engine), versions, utcnow, on_registered=monitoring.monitor.training_profile
    )
    runner = JobSupervisor(
        execution,
        job_launcher(settings),
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
    deployments, traffic, reconcile, deployers = deployment_parts(
        settings, engine, uow, secret, peers.wake_host, experiments.traffic
    )
    experiments.experiments.roll_deployment = winner_rollout(deployments)
    closing_the_loop(
        monitoring,
        uow,
        bus,
        training,
        experiments.experiments,
        deployments,
        dataset_store,
        locator,
        inference,
    )
    fleet = WorkerFleet(inference, peers, in_flight=in_flight)
    registry = ModelRegistry(uow, utcnow, frameworks, wake_runner=wake_runner)
    optimization = ModelOptimization(
        uow,
        store,
        versions,
        registry,
        compilation,
        RuntimeOptimizer(plugins),
        settings.data_dir / "optimize",
        datasets=LocatedDatasets(locator),
        samples=LocatedSamples(locator),
    )
    leftovers = leftover_sweeper(
        settings, engine, inventory, dataset_store, runner, in_flight, metrics, fleet.siblings_in_flight
    )
    automl = AutoMLStudies(
        uow,
        utcnow,
        OptunaSearch(locator.storage_options),
        LocatedDatasets(locator),
        versions,
        training,
        StudyThreads(),
        settings.data_dir / "automl",
        SqlAlchemySilentStudies(engine),
        max_timeout_s=settings.training_timeout_seconds,
        parallel_trials=settings.training_concurrency,
    )
    return Container(
        settings=settings,
        engine=engine,
        registry=registry,
        versions=versions,
        imports=ModelImports(
            versions, store, uow, FolderReader(archive_limits, settings.data_dir / "imports")
        ),
        inference=inference,
        executor=executor,
        compilation=compilation,
        compile_pool=compile_pool,
        exports=ModelExports(
            uow,
            store,
            ZipBundleBuilder(
                memory_bytes=settings.inspect_memory_mb * 1024**2, archive_limits=archive_limits
            ),
            SubprocessOnnxCompiler(
                memory_bytes=settings.inspect_memory_mb * 1024**2, archive_limits=archive_limits
            ),
            frameworks,
            work_dir=compile_dir(settings),
        ),
        tenants=Tenants(
            uow, default_quotas(settings), on_change=authenticator.forget_tenant, frameworks=frameworks
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
        health=health_check(settings, engine, store),
        bus=bus,
        relay=relay,
        events=EventConsumption(
            event_handlers,
            processor,
            ServingCacheHandlers(inference, warm=settings.event_warm_on_promotion),
            event_consumer(settings, processor.consumer),
        ),
        fleet=fleet,
        peers=peers,
        slot=slot,
        outbox=OutboxStatus(SqlAlchemyOutboxMonitor(engine), relay, utcnow),
        metrics=metrics,
        secret_is_generated=generated,
        secret_created_now=created,
        rate_limits=rate_limits(settings, metrics, workers),
        erasure=TenantErasure(
            uow,
            store,
            dataset_store,
            on_erased=lambda tenant: forget_erased_tenant(tenant, inference, runner),
        ),
        webhooks=Webhooks(webhook_store, webhook_guard, dispatcher, utcnow),
        webhook_dispatcher=dispatcher,
        leftovers=leftovers,
        leftover_sweeps=PeriodicTask("leftover-sweeper", settings.sweep_interval_seconds, leftovers.sweep),
        tracer=tracer,
        plaintext_sweeper=sweeper,
        deployments=deployments,
        deployment_traffic=traffic,
        deployment_reconcile=reconcile,
        deployers=deployers,
        payload_logging=payload_logging,
        monitoring=monitoring,
        experiments=experiments,
        optimization=optimization,
        automl=automl,
        automl_recovery=PeriodicTask("automl-recovery", 30.0, automl.recover_silent),
    )
