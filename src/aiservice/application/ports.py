"""Every port the use cases talk to, in one place. Adapters in ``infrastructure`` implement them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Protocol, Self

import numpy as np

from aiservice.application.deploying.ports import DeploymentRepository
from aiservice.domain.api_keys import ApiKey
from aiservice.domain.audit import AuditEntry, AuditQuery, AuditRecord
from aiservice.domain.events import DomainEvent
from aiservice.domain.models import Alias, Framework, Model, ModelVersion, Stage
from aiservice.domain.pagination import Page
from aiservice.domain.signature import Signature
from aiservice.domain.tenancy import Principal, Tenant
from aiservice.domain.training import JobEvent, JobKind, JobStatus, TrainingJob
from aiservice.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery

Clock = Callable[[], datetime]

ModelSort = Literal["createdAt", "-createdAt", "updatedAt", "-updatedAt", "name", "-name"]


@dataclass(frozen=True)
class ModelQuery:
    framework: Framework | None = None
    category: str | None = None
    tag: str | None = None
    text: str | None = None
    sort: ModelSort = "-createdAt"
    limit: int = 50
    cursor: str | None = None


class ModelRepository(Protocol):
    """Models of the unit of work's tenant; soft-deleted models are invisible."""

    def add(self, model: Model) -> None: ...
    def save(self, model: Model) -> None: ...
    def get(self, model_id: str) -> Model | None: ...
    def get_by_name(self, name: str) -> Model | None: ...
    def search(self, query: ModelQuery) -> Page[Model]: ...
    def deleted_before(self, cutoff: datetime) -> list[Model]:
        """Soft-deleted models whose deletion is older than ``cutoff``."""
        ...

    def erase(self, model_id: str) -> list[str]:
        """Remove a model with its versions and aliases for good; returns its artifact keys."""
        ...

    def next_version_number(self, model_id: str) -> int:
        """Atomically bump the model's version counter, holding it until commit."""
        ...


class VersionRepository(Protocol):
    def add(self, version: ModelVersion) -> None: ...
    def get(self, model_id: str, number: int) -> ModelVersion | None: ...
    def page(self, model_id: str, limit: int, cursor: str | None) -> Page[ModelVersion]: ...
    def in_stage(self, model_id: str, stage: Stage) -> list[ModelVersion]: ...
    def set_stage(self, version: ModelVersion) -> None: ...
    def set_serving(self, version: ModelVersion) -> None: ...


class AliasRepository(Protocol):
    def get(self, model_id: str, name: str) -> Alias | None: ...
    def set(self, alias: Alias) -> None: ...
    def delete(self, model_id: str, name: str) -> None: ...
    def for_model(self, model_id: str) -> list[Alias]: ...


class TenantRepository(Protocol):
    """Tenants are platform-wide, so this repository is not tenant-scoped."""

    def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        """With ``for_update`` the row stays locked until the transaction ends: quota checks that
        count and then write hold it, so two concurrent writes cannot both pass one limit."""
        ...

    def add(self, tenant: Tenant) -> None: ...
    def save(self, tenant: Tenant) -> None:
        """Store name, status, settings and quotas."""
        ...

    def all_ids(self) -> list[str]: ...
    def page(self, limit: int, cursor: str | None) -> Page[Tenant]: ...


class UsageRepository(Protocol):
    """What the unit of work's tenant uses of its quotas, counted in the unit of work's transaction."""

    def models(self) -> int: ...
    def versions(self, model_id: str) -> int: ...
    def most_versions(self) -> int:
        """The most versions any one live model has."""
        ...

    def artifact_bytes(self) -> int:
        """Bytes of the uploaded artifacts of the tenant's live models."""
        ...

    def active_jobs(self) -> int:
        """Training jobs queued or running."""
        ...


class TrainingJobRepository(Protocol):
    def add(self, job: TrainingJob) -> None: ...
    def get(self, job_id: str, *, for_update: bool = False) -> TrainingJob | None: ...
    def page(
        self,
        model_id: str | None,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        *,
        kind: JobKind | None = None,
        study_id: str | None = None,
    ) -> Page[TrainingJob]:
        """Newest first; ``kind`` keeps training jobs or AutoML trials, ``study_id`` one study's trials."""
        ...

    def save(self, job: TrainingJob) -> None: ...
    def unfinished(self) -> list[TrainingJob]:
        """The tenant's queued and running jobs."""
        ...

    def append_event(self, job_id: str, type: str, data: dict[str, Any], at: datetime) -> int:
        """Number the job's next event (1, 2, ...) and store it; returns its number."""
        ...

    def events_after(self, job_id: str, seq: int, limit: int) -> list[JobEvent]: ...


class JobQueue(Protocol):
    """The runners' view of every tenant's jobs: claim the oldest queued one, keep claims alive."""

    def claim_next(self, runner_id: str, now: datetime) -> TrainingJob | None:
        """Atomically move the oldest queued job to running for this runner; None when none waits."""
        ...

    def heartbeat(self, runner_id: str, job_ids: list[str], now: datetime) -> None: ...
    def stale_running(self, before: datetime) -> list[tuple[str, str]]:
        """(tenant_id, job_id) of running jobs whose runner has not been heard of since ``before``."""
        ...


class ApiKeyRepository(Protocol):
    """API keys of the unit of work's tenant, revoked ones included."""

    def add(self, key: ApiKey) -> None: ...
    def get(self, key_id: str) -> ApiKey | None: ...
    def all(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str, at: datetime) -> None: ...


class ApiKeyLookup(Protocol):
    """Any tenant's key by id, for authentication only: a key names its own tenant."""

    def find(self, key_id: str) -> ApiKey | None: ...


@dataclass(frozen=True)
class ErasedRows:
    """What a tenant's erasure removed from the database: row counts by kind, the models that were
    there (their caches are forgotten) and the artifact keys whose bytes go next."""

    counts: dict[str, int]
    models: dict[str, str]  # id -> name
    artifact_keys: list[str]


class TenantDataRepository(Protocol):
    def erase_all(self) -> ErasedRows:
        """Delete every row the tenant owns but the tenant itself and its audit chain."""
        ...


class UnitOfWork(Protocol):
    """One transaction for one tenant: its repositories add the tenant to every query.

    Leaving the block without ``commit()`` rolls back. ``commit()`` writes the changed rows and the
    outbox rows of every recorded event atomically.
    """

    @property
    def tenant_id(self) -> str: ...
    @property
    def models(self) -> ModelRepository: ...
    @property
    def versions(self) -> VersionRepository: ...
    @property
    def aliases(self) -> AliasRepository: ...
    @property
    def tenants(self) -> TenantRepository: ...
    @property
    def jobs(self) -> TrainingJobRepository: ...
    @property
    def deployments(self) -> DeploymentRepository: ...
    @property
    def usage(self) -> UsageRepository: ...
    @property
    def api_keys(self) -> ApiKeyRepository: ...
    @property
    def tenant_data(self) -> TenantDataRepository: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def record(self, *events: DomainEvent) -> None: ...
    def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str, *, writes: bool = True) -> UnitOfWork: ...


@dataclass(frozen=True)
class OutboxMessage:
    """An event as stored in the outbox, ready for delivery."""

    position: int
    event_id: str
    event_type: str
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None  # W3C trace context of the request that committed it


class Outbox(Protocol):
    def pending(self, limit: int) -> list[OutboxMessage]: ...
    def mark_published(self, positions: list[int]) -> None: ...
    def mark_failed(self, position: int, error: str) -> None: ...


EventHandler = Callable[[OutboxMessage], None]


@dataclass(frozen=True)
class CloudEvent:
    """An outbox event as every broker carries it: a CloudEvents 1.0 envelope (``application/events.py``
    builds it and defines the JSON form). ``family`` and ``name`` route it: a stream or topic per family,
    a NATS subject per name."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    tenant_id: str
    data: dict[str, Any]
    family: str  # model, training, deployment, experiment, tenant
    name: str  # the type without "ai." and its version, e.g. "model.version.created"
    traceparent: str | None = None  # CloudEvents distributed-tracing extension: the producer's trace


class PublishFailed(Exception):
    """The broker acknowledged only the first ``published`` events of a batch; the rest must be retried."""

    def __init__(self, published: int, reason: str) -> None:
        super().__init__(reason)
        self.published = published


class EventPublisher(Protocol):
    """Delivers committed events to a broker, in the order given, at least once."""

    name: str  # "inprocess", "redis", "nats", "kafka": shown by the admin outbox report

    def publish(self, events: list[CloudEvent]) -> None:
        """Returns once the broker acknowledged every event; else raises ``PublishFailed``."""
        ...

    def close(self) -> None: ...


class EventConsumer(Protocol):
    """A durable subscription to the broker: hands each event to ``handle`` and acknowledges it after.

    An event whose ``handle`` raised is not acknowledged, so the broker delivers it again later."""

    def start(self, handle: Callable[[CloudEvent], object]) -> None: ...
    def stop(self) -> None: ...


class OutboxLease(Protocol):
    """One relay at a time: the holder renews the lease before each pass; an expired lease is free."""

    holder: str  # this relay's name

    def acquire(self) -> bool:
        """Take the lease or renew it; True while this relay holds it."""
        ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class OutboxFailure:
    event_id: str
    event_type: str
    tenant_id: str
    error: str
    attempts: int
    occurred_at: datetime


@dataclass(frozen=True)
class OutboxReport:
    pending: int
    oldest_pending_at: datetime | None
    failures: list[OutboxFailure]
    lease_holder: str | None
    lease_expires_at: datetime | None


class OutboxMonitor(Protocol):
    def report(self, failures: int) -> OutboxReport:
        """Pending events, the oldest of them, the ``failures`` most recent failing ones and the lease."""
        ...


class ProcessedEvents(Protocol):
    """Event ids a consumer has handled, so an event delivered twice is handled once."""

    def seen(self, consumer: str, event_id: str) -> bool: ...
    def record(self, consumer: str, event: CloudEvent, at: datetime) -> None: ...
    def prune(self, before: datetime) -> int:
        """Forget ids processed before ``before``; returns how many."""
        ...


class AuditStore(Protocol):
    """The append-only audit log: one hash chain per tenant (see ``domain/audit.py``)."""

    def append(self, entry: AuditEntry) -> AuditRecord | None:
        """Chain and store one entry in a transaction of its own; None if its tenant does not exist."""
        ...

    def page(self, tenant_id: str, query: AuditQuery) -> Page[AuditRecord]: ...
    def records(self, tenant_id: str, after_seq: int, limit: int) -> list[AuditRecord]:
        """The tenant's records with ``seq > after_seq``, in ``seq`` order."""
        ...

    def head(self, tenant_id: str) -> tuple[int, str] | None:
        """The tenant's last (seq, hash) as stored with the chain; None before its first record."""
        ...

    def chained_tenants(self) -> list[str]: ...


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    digest: str
    size_bytes: int


class ArtifactWriter(Protocol):
    """An artifact being written: bytes are hashed and counted as they arrive."""

    def write(self, chunk: bytes | memoryview) -> None:
        """Append bytes; raises ``PayloadTooLarge`` past the writer's limit."""
        ...

    def commit(self) -> StoredArtifact: ...
    def abort(self) -> None: ...


class ArtifactStore(Protocol):
    def writer(self, key: str, max_bytes: int) -> ArtifactWriter: ...
    def open(self, key: str, digest: str) -> BinaryIO:
        """Open verified bytes; raises ``ArtifactCorrupt`` if they do not hash to ``digest``."""
        ...

    def delete(self, key: str) -> None: ...
    def check_writable(self) -> None: ...
    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        """A local file holding the artifact (verified against ``digest`` unless told not to)."""
        ...


class DatabaseProbe(Protocol):
    def ping(self) -> float:
        """Round-trip latency in milliseconds; raises if the database is unreachable."""
        ...

    def migrations_current(self) -> bool: ...


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    tenant_id: str
    roles: tuple[str, ...]
    expires_at: datetime


class TokenService(Protocol):
    def issue(self, subject: str, tenant_id: str, roles: list[str], ttl_seconds: int) -> str: ...
    def verify(self, token: str) -> TokenClaims:
        """Raises ``Unauthenticated`` for a bad, expired or malformed token."""
        ...

    def needs_io(self, token: str) -> bool:
        """Whether verifying ``token`` may fetch signing keys (so it must not run on an event loop)."""
        ...


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None, tenant_header: str | None) -> Principal: ...
    def tenant_known(self, tenant_header: str | None) -> bool: ...
    def needs_io(self, authorization: str | None, tenant_header: str | None) -> bool:
        """Whether authenticating this request may touch the database or the network."""
        ...


@dataclass(frozen=True)
class LoadSpec:
    """How to load one artifact: what it is, what the tenant allows, what the model declares."""

    framework: Framework
    filename: str
    allow_pickle: bool = False
    configuration: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class Prediction:
    """One vectorised call's result: a value per row and, for classifiers, class probabilities."""

    values: np.ndarray  # shape [N] (labels or regression values) or [N, ...] for tensors
    probabilities: np.ndarray | None = None  # shape [N, C], columns in ``signature.classes`` order


@dataclass
class Attributions:
    method: str  # e.g. "tree-shap", "coefficient-x-value", "gradient-x-input"
    values: np.ndarray  # shape [N, F]


class LoadedModel(Protocol):
    """A model in memory, ready for vectorised calls. Thread-safe for concurrent ``predict``."""

    @property
    def signature(self) -> Signature: ...
    def predict(self, batch: np.ndarray) -> Prediction: ...
    def explain(self, batch: np.ndarray) -> Attributions | None: ...


class Runtime(Protocol):
    """Loads one framework's artifacts; its plugin (an ``aiservice.runtimes`` entry point) names it."""

    def available(self) -> str | None:
        """None when the framework can be imported; else why not (shown to users)."""
        ...

    def load(self, artifact: Path, spec: LoadSpec) -> LoadedModel:
        """Raises ``InvalidArtifact`` (or a subclass) for bytes it cannot or must not load."""
        ...


class ArtifactInspector(Protocol):
    """Loads an artifact once, isolated and bounded, and reports its signature."""

    def inspect(self, artifact: Path, spec: LoadSpec) -> Signature: ...


@dataclass(frozen=True)
class TokenBucket:
    """One budget, named by ``key``: ``rate`` tokens a second refill it up to ``burst``."""

    key: str
    rate: float
    burst: int


@dataclass(frozen=True)
class RateDecision:
    """The verdict on one call, told by its tightest bucket (the one with the fewest tokens left)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until that bucket is full again
    retry_after_seconds: float  # until a refused call would be let through (0 when allowed)


class RateLimiter(Protocol):
    """Token buckets. ``blocking`` adapters do network I/O, so async callers run them in a thread."""

    blocking: bool

    def acquire(self, buckets: list[TokenBucket]) -> RateDecision | None:
        """Take a token from every bucket, or from none when any is empty, atomically. ``None``: the
        budgets cannot be read now (a shared store is down), and the call is let through."""
        ...

    def close(self) -> None: ...


SpanValue = str | int | float | bool


class Span(Protocol):
    """One traced operation, as the code that runs it sees it."""

    def set_attribute(self, key: str, value: SpanValue) -> None: ...
    def add_event(self, name: str, attributes: dict[str, SpanValue] | None = None) -> None: ...
    def record_error(self, error: BaseException) -> None: ...
    def update_name(self, name: str) -> None: ...
    def end(self) -> None: ...
    def traceparent(self) -> str | None:
        """This span's W3C ``traceparent``: work started later (a job's steps) joins it as a child."""
        ...


class Tracer(Protocol):
    """Distributed tracing, vendor-free: the adapter is OpenTelemetry, the default does nothing."""

    def span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> AbstractContextManager[Span]:
        """A span that is current while the block runs (a child of the current one, or of
        ``traceparent`` when given); an exception leaving the block is recorded on it."""
        ...

    def start_span(
        self, name: str, attributes: dict[str, SpanValue] | None = None, *, traceparent: str | None = None
    ) -> Span:
        """A span that outlives a block (a training job): the caller ends it. A child of ``traceparent``
        when given (the request that asked for the work, long gone), else of the current span."""
        ...

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the current span, to carry into messages; None when not tracing."""
        ...

    def shutdown(self) -> None: ...


def chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Read a binary stream in fixed-size chunks, so nothing holds a whole artifact in memory."""
    while chunk := stream.read(size):
        yield chunk


# -- webhooks (see domain/webhooks.py) --------------------------------------------------------------


class WebhookRepository(Protocol):
    """One tenant's webhooks and their delivery log; each call is a transaction of its own."""

    def add(self, webhook: Webhook, secret: str) -> None: ...
    def get(self, webhook_id: str) -> Webhook | None: ...
    def page(self, limit: int, cursor: str | None) -> Page[Webhook]:
        """Newest first."""
        ...

    def save(self, webhook: Webhook, secret: str | None = None) -> None:
        """Store url, event types, description, active and updated_at (and a new secret when given)."""
        ...

    def delete(self, webhook_id: str) -> bool:
        """Remove the webhook with its delivery log; False when there was none."""
        ...

    def subscribed(self, event_type: str) -> list[Webhook]:
        """The active webhooks that want ``event_type``."""
        ...

    def add_delivery(self, delivery: WebhookDelivery) -> bool:
        """Queue a delivery; False (and nothing written) when its webhook already has that event."""
        ...

    def delivery(self, delivery_id: str) -> WebhookDelivery | None: ...
    def deliveries(self, webhook_id: str, limit: int, cursor: str | None) -> Page[WebhookDelivery]:
        """Newest first."""
        ...


class WebhookStore(Protocol):
    def __call__(self, tenant_id: str) -> WebhookRepository: ...


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery one worker holds until ``token``'s claim expires: what it needs to send it."""

    delivery: WebhookDelivery
    url: str
    secret: str | None  # None: it cannot be read (its encryption key is gone)
    active: bool
    token: str


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended, as the delivery row records it."""

    status: DeliveryStatus
    attempts: int
    status_code: int | None
    error: str | None
    duration_ms: float | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class WebhookDeliveryQueue(Protocol):
    """Every tenant's pending deliveries, for the delivery workers of every replica."""

    def claim_next(self, now: datetime, until: datetime) -> ClaimedDelivery | None:
        """Claim the most overdue pending delivery no live claim holds, until ``until``; None when none
        is due. A conditional update takes it, so two workers never hold one delivery at once."""
        ...

    def claim(
        self, tenant_id: str, delivery_id: str, now: datetime, until: datetime
    ) -> ClaimedDelivery | None:
        """Claim one pending delivery no live claim holds, due or not (a ping is sent at once)."""
        ...

    def finish(self, claimed: ClaimedDelivery, result: AttemptResult) -> None:
        """Record an attempt and release the claim (nothing happens if the claim was lost)."""
        ...

    def prune(self, before: datetime) -> int:
        """Delete the finished (succeeded or failed) deliveries made before ``before``; how many."""
        ...


class HostResolver(Protocol):
    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, as text; raises ``OSError`` when it does not resolve."""
        ...


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int | None  # None: no answer (refused, timed out, broken connection)
    error: str | None
    duration_ms: float


class WebhookSender(Protocol):
    def post(self, url: str, address: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        """POST ``body`` to ``url``, connecting to ``address`` (checked already) rather than resolving
        the host again; never follows redirects, never raises for the receiver's failures."""
        ...

    def close(self) -> None: ...


class RequestMetrics(Protocol):
    """What the HTTP layer counts and exposes; the adapter decides how (Prometheus, one or many
    processes), so the HTTP code never imports it."""

    content_type: str

    def observe_request(self, method: str, route: str, status: int, duration_ms: float) -> None: ...
    def rate_limited_call(self, rate_class: str) -> None: ...
    def tenant_prediction(self, tenant_id: str, outcome: str) -> None: ...
    def quota_refused(self, tenant: str | None, quota: str) -> None: ...
    def render(self) -> bytes: ...


@dataclass(frozen=True)
class PeerAnswer:
    """What one sibling worker said to an ask (``answered`` is False when it was silent or gone)."""

    worker: int
    pid: int | None
    answered: bool
    result: dict[str, Any]
    error: str | None


class WorkerPeers(Protocol):
    """The other server processes of this host (WORKERS > 1); a single worker has none.

    ``slot`` 0 is the host worker: it alone runs the outbox relay, the webhook dispatcher, the job
    supervisor and the sweepers. Events reach every other worker through ``publish``."""

    slot: int
    count: int

    def start(
        self,
        loop: asyncio.AbstractEventLoop | None,
        *,
        on_event: Callable[[CloudEvent], object],
        on_wake: Callable[[], object],
        on_ask: Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]],
    ) -> None: ...
    def stop(self) -> None: ...
    def publish(self, event: CloudEvent) -> None: ...
    def wake_host(self) -> None: ...
    async def ask(self, op: str, args: dict[str, Any], timeout_s: float) -> list[PeerAnswer]: ...
    def ask_from_thread(self, op: str, args: dict[str, Any], timeout_s: float) -> list[PeerAnswer]: ...
