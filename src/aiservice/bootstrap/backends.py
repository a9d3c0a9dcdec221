"""The adapters chosen by settings other than the event bus: the artifact store, rate limits, job launcher,
health probes, webhooks, leftovers, quotas and S3 options."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from aiservice import __version__
from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.compilation import COMPILE_FOLDER
from aiservice.application.health import HealthCheck
from aiservice.application.inference import InferenceService
from aiservice.application.leftovers import LeftoverSweeper, StaleWork
from aiservice.application.ports import (
    ArtifactStore,
    RateLimiter,
)
from aiservice.application.rate_limits import RateClass, RateLimit, RateLimitPolicy, RateLimits
from aiservice.application.webhook_delivery import WebhookDispatcher, WebhookUrlGuard
from aiservice.bootstrap.secrets import master_keys
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import InvalidInput
from aiservice.domain.tenancy import Quota, parse_limits
from aiservice.infrastructure.datasets.locator import S3Options
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db.artifact_references import SqlAlchemyArtifactReferences
from aiservice.infrastructure.db.probe import SqlAlchemyDatabaseProbe
from aiservice.infrastructure.db.webhook_repositories import (
    SecretCipher,
    SqlAlchemyWebhookDeliveryQueue,
    SqlAlchemyWebhookStore,
)
from aiservice.infrastructure.jobs.local import ProcessLauncher
from aiservice.infrastructure.jobs.supervisor import JobSupervisor, WorkerLauncher
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.observability.probes import dependency_probes
from aiservice.infrastructure.ratelimit.memory import InMemoryRateLimiter
from aiservice.infrastructure.ratelimit.shared_memory import SharedMemoryRateLimiter
from aiservice.infrastructure.runtimes.compiler import COMPILE_TIMEOUT_S
from aiservice.infrastructure.stale_files import StaleEntries
from aiservice.infrastructure.storage.encrypted import (
    EncryptedArtifactStore,
)
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.infrastructure.storage.s3 import S3ArtifactStore
from aiservice.infrastructure.webhooks.http import HttpxWebhookSender, SocketHostResolver
from aiservice.infrastructure.workers.supervisor import RATE_LIMIT_FILE
from aiservice.settings import ConfigurationError, Settings

log = logging.getLogger("aiservice.events")


def logged(task: Callable[..., object], *args: object) -> None:
    """Background work reports its failures in the log instead of losing them in a future."""
    try:
        task(*args)
    except Exception:
        log.exception("background task %s failed", getattr(task, "__name__", task))


def leftover_sweeper(
    settings: Settings,
    engine: Engine,
    inventory: LocalArtifactStore | S3ArtifactStore | EncryptedArtifactStore,
    datasets: DatasetStore,
    runner: JobSupervisor,
    in_flight: InFlightKeys,
    metrics: ServiceMetrics,
    siblings_in_flight: Callable[[], set[str]] = set,
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
                StaleEntries(compile_dir(s), f"{COMPILE_FOLDER}*"),
                timedelta(seconds=COMPILE_TIMEOUT_S) + upload,
            ),
        ],
        grace=timedelta(seconds=s.artifact_orphan_grace_seconds),
        on_swept=metrics.swept,
        siblings_in_flight=siblings_in_flight,
    )


def artifact_backend(settings: Settings) -> LocalArtifactStore | S3ArtifactStore:
    """Where artifact bytes live, before any encryption wraps them: ``ARTIFACT_STORE_URL``
    (``s3://bucket/prefix``, reached with the S3 settings datasets use) or else ``ARTIFACT_ROOT``."""
    url = settings.artifact_store_url
    if not url:
        return LocalArtifactStore(settings.artifact_path)
    try:
        return S3ArtifactStore(
            url,
            (s3_options(settings) or S3Options()).storage_options(),
            settings.artifact_cache_path,
            cache_max_bytes=settings.artifact_cache_max_bytes,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigurationError(f"ARTIFACT_STORE_URL={url}: {exc}") from None


def compile_dir(settings: Settings) -> Path:
    return settings.data_dir / "compile"


def forget_erased_tenant(tenant_id: str, inference: InferenceService, runner: JobSupervisor) -> None:
    """This replica forgets the tenant's models at once, and its job runner looks at its jobs now: a
    worker whose job row the erasure deleted is stopped, and its model is never registered."""
    inference.invalidate(tenant_id)
    runner.wake()


def webhook_parts(
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


def health_check(settings: Settings, engine: Engine, store: ArtifactStore) -> HealthCheck:
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


def default_quotas(settings: Settings) -> dict[Quota, int]:
    """TENANT_DEFAULT_QUOTAS, checked: the limits each newly created tenant starts with."""
    try:
        limits = parse_limits(settings.tenant_default_quotas, "TENANT_DEFAULT_QUOTAS")
    except InvalidInput as exc:
        raise ConfigurationError(f"{exc.detail} Known quotas: {', '.join(Quota)}.") from exc
    return {quota: limit for quota, limit in limits.items() if limit is not None}


def s3_options(settings: Settings) -> S3Options | None:
    """S3 datasets are on when an endpoint or credentials are configured (empty values count as unset);
    an S3 artifact store uses the same options."""
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


def _ray_launcher(settings: Settings) -> WorkerLauncher:
    from aiservice.infrastructure.jobs.ray_runner import RayLauncher

    return RayLauncher(settings.ray_address)


# Where training jobs run (JOB_RUNNER); each imports its client only when chosen.
LAUNCHERS: dict[str, Callable[[Settings], WorkerLauncher]] = {
    "local": lambda settings: ProcessLauncher(),
    "ray": _ray_launcher,
}


def job_launcher(settings: Settings) -> WorkerLauncher:
    return LAUNCHERS[settings.job_runner](settings)
