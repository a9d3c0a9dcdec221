"""Every setting in one class, read once from the environment and an optional ``.env`` file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """The settings cannot work; the message says which one and how to fix it."""


class Settings(BaseSettings):
    # An empty value means "not set": a .env copied from .env.example keeps every default.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    host: str = "0.0.0.0"
    port: int = Field(default=3004, ge=1, le=65535)
    # Server processes on the one port (unset: one per CPU this process may use; 1: a single process).
    workers: int | None = Field(default=None, ge=1, le=64)
    # On SIGTERM, requests in flight get this long to finish before the workers stop anyway.
    graceful_shutdown_seconds: float = Field(default=30.0, gt=0)
    environment: Literal["development", "production"] = "development"

    database_url: str | None = None
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "aiservice"
    db_user: str = "aiservice"
    db_password: SecretStr = SecretStr("")
    auto_migrate: bool = True

    jwt_secret: SecretStr | None = None
    # RS256/ES256 tokens from an identity provider: its JWKS by URL or from a local file (not both).
    jwt_jwks_url: str | None = None
    jwt_jwks_file: str | None = None
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwt_jwks_min_refetch_seconds: float = Field(default=30.0, ge=0)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    data_dir: Path = Path("./var")
    artifact_root: str | None = None
    # Artifacts in an object store instead (s3://bucket/prefix, reached with S3_ENDPOINT_URL and the AWS_*
    # settings); runtimes load from copies downloaded once per digest into ARTIFACT_CACHE_DIR.
    artifact_store_url: str | None = Field(
        default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
    )
    artifact_cache_dir: Path | None = None
    artifact_cache_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_artifact_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Archives (torch .pt, .keras, skops, zipped SavedModels): bounds checked before anything unpacks.
    max_unpacked_bytes: int = Field(default=8 * 1024**3, gt=0)
    max_archive_members: int = Field(default=10_000, gt=0)
    max_compression_ratio: int = Field(default=100, gt=1)
    # Encryption at rest (off unless one of the three is set; see .env.example for the formats).
    artifact_encryption_key: SecretStr | None = None
    artifact_encryption_keys: SecretStr | None = None
    artifact_encryption_key_file: Path | None = None
    artifact_plaintext_ttl_seconds: float = Field(default=600.0, ge=0)
    max_json_body_bytes: int = Field(default=1024**2, gt=0)
    max_json_depth: int = Field(default=64, ge=1, le=512)
    inspect_timeout_seconds: float = Field(default=120.0, gt=0)
    inspect_memory_mb: int = Field(default=4096, gt=0)
    # Uploads taking longer are refused (408); staging files older than this are abandoned and swept.
    upload_timeout_seconds: float = Field(default=3600.0, gt=0)
    # What a crash leaves (staging, job folders, unreferenced artifacts) is swept at start and this often;
    # an artifact no version refers to goes once older than the grace (other replicas' inspections).
    sweep_interval_seconds: float = Field(default=600.0, gt=0)
    artifact_orphan_grace_seconds: float = Field(default=86400.0, gt=0)

    model_cache_size: int = Field(default=10, ge=1)
    model_cache_memory_mb: int = Field(default=2048, ge=1)
    max_batch_size: int = Field(default=1000, ge=1)  # inputs one /batch-predict request may hold
    # The adaptive batcher: concurrent requests merge into one model call of at most this many rows,
    # waiting at most MAX_BATCH_DELAY_MS for a fuller batch while load is present.
    batcher_max_rows: int = Field(default=32, ge=1)
    max_batch_delay_ms: float = Field(default=2.0, ge=0)
    inference_threads: int = Field(default=0, ge=0)
    # Threads a model's framework may use when its configuration names no numThreads. Unset: each
    # worker's share of the cores (cores / WORKERS) with several workers, the framework's default
    # (every core) with one; 0: always the framework's default.
    model_threads: int | None = Field(default=None, ge=0)

    def threads_per_model(self, workers: int) -> int | None:
        """MODEL_THREADS for a process among ``workers``; None leaves the framework's default."""
        if self.model_threads is not None:
            return self.model_threads or None
        return max(1, self.cpus // workers) if workers > 1 else None

    onnx_compile: bool = True
    predict_timeout_seconds: float = Field(default=30.0, gt=0)
    pytorch_backend: Literal["cpu", "cuda", "mps"] = "cpu"
    tensorflow_backend: Literal["cpu", "gpu"] = "cpu"

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    # Observability: OpenTelemetry traces go to OTLP/HTTP when an endpoint is set (JAEGER_ENDPOINT is
    # mapped to the same Jaeger's OTLP receiver); no endpoint = tracing off.
    otel_exporter_otlp_endpoint: str | None = None
    jaeger_endpoint: str | None = None
    otel_service_name: str = "aiservice"
    otel_traces_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # /metrics also on a port of its own; several workers' metrics merged from this folder.
    prometheus_port: int | None = Field(default=None, ge=1, le=65535)
    prometheus_multiproc_dir: Path | None = None
    metrics_max_label_values: int = Field(default=200, ge=1)
    # Fraction of predictions logged (modelId, tenantId, duration, confidence) at info.
    prediction_log_sample_rate: float = Field(default=0.01, ge=0, le=1)
    # Readiness fails once the event broker has been unreachable for this long.
    broker_down_grace_seconds: float = Field(default=30.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # Events: where the outbox relay publishes (inprocess | redis | nats | kafka), see .env.example.
    event_bus: Literal["inprocess", "redis", "nats", "kafka"] = "inprocess"
    event_destination_prefix: str = Field(
        default="ai-service", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )
    event_consumer_group: str | None = None
    event_warm_on_promotion: bool = True
    event_publish_timeout_seconds: float = Field(default=10.0, gt=0)
    outbox_lease_seconds: float = Field(default=30.0, gt=0)
    outbox_max_backoff_seconds: float = Field(default=60.0, gt=0)
    redis_stream_maxlen: int = Field(default=1_000_000, ge=0)
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = Field(default="AI_SERVICE", pattern=r"^[A-Za-z0-9_-]+$")
    kafka_broker: str = "127.0.0.1:9092"
    kafka_idempotent: bool = True
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_topic_replication: int = Field(default=1, ge=1)
    # Webhooks: private, loopback, link-local... targets refused unless allowed; attempts and backoff.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_max_backoff_seconds: float = Field(default=300.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_workers: int = Field(default=4, ge=1, le=64)
    webhook_delivery_retention_days: float = Field(default=30.0, gt=0)  # finished deliveries kept this long

    training_concurrency: int = Field(default=1, ge=1)
    training_heartbeat_seconds: float = Field(default=5.0, gt=0)
    training_timeout_seconds: int = Field(default=6 * 3600, gt=0)
    job_runner: Literal["local", "ray"] = "local"
    # A Ray cluster's GCS address (host:port); empty means the one `ray start` left for this machine.
    ray_address: str | None = None
    # Comma-separated folders a training job may read local datasets from (default DATA_DIR/datasets).
    dataset_roots: str = ""
    max_dataset_bytes: int = Field(default=10 * 1024**3, gt=0)
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_default_region: str | None = None

    # Token buckets (requests a second, burst; 0 = off) per principal and per tenant, for predict
    # calls and for management calls. Shared through Redis when REDIS_HOST is set.
    rate_limit_predict_rps: float = Field(default=0, ge=0)
    rate_limit_predict_burst: int = Field(default=0, ge=0)
    rate_limit_management_rps: float = Field(default=0, ge=0)
    rate_limit_management_burst: int = Field(default=0, ge=0)
    rate_limit_tenant_predict_rps: float = Field(default=0, ge=0)
    rate_limit_tenant_predict_burst: int = Field(default=0, ge=0)
    rate_limit_tenant_management_rps: float = Field(default=0, ge=0)
    rate_limit_tenant_management_burst: int = Field(default=0, ge=0)
    rate_limit_key_prefix: str = "aiservice:ratelimit:"
    redis_host: str | None = None
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_password: SecretStr | None = None
    redis_db: int = Field(default=0, ge=0)
    cors_origins: str = ""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The Kubernetes deployment target: each deployment's objects go to K8S_NAMESPACE, its pods run
    # K8S_IMAGE as model servers with the Secret K8S_SECRET_NAME as their environment (DATABASE_URL,
    # REPLICA_TOKEN, the artifact store's settings). The cluster is KUBECONFIG's (a file, or several
    # joined by ':'), else the one this process runs in (its service account).
    k8s_enabled: bool = False  # offer the "kubernetes" target (needs the kubernetes extra and a cluster)
    kubeconfig: Path | None = None
    k8s_namespace: str = Field(default="aiservice", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    k8s_image: str = Field(default="ghcr.io/aiservice/aiservice:0.1.0", min_length=1)
    k8s_secret_name: str = Field(default="aiservice", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    k8s_request_timeout_seconds: float = Field(default=30.0, gt=0)

    # Quota limits every tenant created from now on starts with, as JSON ({"maxModels": 100}); a quota
    # left out is unlimited. Known: maxModels, maxVersionsPerModel, maxArtifactBytes,
    # maxConcurrentTrainingJobs, maxLoadedModels, maxDeployments.
    tenant_default_quotas: dict[str, int] = Field(default_factory=dict)

    # Deployment replicas (`aiservice serve-model`, ADR 20). A request carrying this token in
    # X-Aiservice-Replica-Token acts as the deployment's tenant, allowed to predict with its model only:
    # local replicas get one made per service start, Kubernetes ones read it from a Secret.
    replica_token: SecretStr | None = None
    # Local replicas: one not warm within the start timeout is a failed start; a warm one is probed
    # this often and replaced after so many probes in a row go unanswered within the probe timeout.
    replica_start_timeout_seconds: float = Field(default=300.0, gt=0)
    replica_probe_seconds: float = Field(default=2.0, gt=0)
    replica_probe_timeout_seconds: float = Field(default=2.0, gt=0)
    replica_hung_probes: int = Field(default=3, ge=1)

    def child_environment(self, **overrides: str | None) -> dict[str, str]:
        """This process's environment with every setting given explicitly (by the environment, ``.env``
        or arguments) written over it, and ``overrides`` on top (None removes a variable): a child
        process started with it (a deployment replica) reads the very settings this process runs with."""
        env = dict(os.environ)
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None:
                env.pop(name.upper(), None)
            elif isinstance(value, dict):
                env[name.upper()] = json.dumps(value)
            elif isinstance(value, bool):
                env[name.upper()] = "true" if value else "false"
            else:
                env[name.upper()] = str(value)
        for key, override in overrides.items():
            if override is None:
                env.pop(key, None)
            else:
                env[key] = override
        return env

    @property
    def resolved_database_url(self) -> str:
        """``DATABASE_URL`` wins; else PostgreSQL when ``DB_HOST`` is set; else SQLite under ``DATA_DIR``."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            password = self.db_password.get_secret_value()
            auth = quote(self.db_user, safe="") + (f":{quote(password, safe='')}" if password else "")
            return f"postgresql+psycopg://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return f"sqlite:///{(self.data_dir / 'aiservice.db').resolve()}"

    @property
    def artifact_path(self) -> Path:
        return Path(self.artifact_root) if self.artifact_root else self.data_dir / "artifacts"

    @property
    def artifact_cache_path(self) -> Path:
        return self.artifact_cache_dir or self.data_dir / "artifact-cache"

    @property
    def dataset_root_paths(self) -> list[Path]:
        roots = [Path(p.strip()) for p in self.dataset_roots.split(",") if p.strip()]
        return roots or [self.data_dir / "datasets"]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "jwt_secret"

    @property
    def cpus(self) -> int:
        """The CPUs this process may run on (a container's CPU set, not the host's)."""
        return len(os.sched_getaffinity(0)) or 1

    @property
    def worker_count(self) -> int:
        """WORKERS, else one per CPU this process may run on."""
        return self.workers or self.cpus

    @property
    def workers_dir(self) -> Path:
        """What the workers of one ``aiservice serve`` share on this host: metrics, rate-limit buckets."""
        return self.data_dir / "workers"
