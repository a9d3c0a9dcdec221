"""Every metric the service exports, owned by one module so names stay consistent."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, start_http_server

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_MS_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


_MAX_REMEMBERED = 10_000
OTHER = "other"  # the label value every value past a label's bound is counted under


class BoundedLabel:
    """Keeps a label's cardinality bounded: the first ``limit`` distinct values are kept as they are,
    later ones are counted under ``other``, so a tenant or model flood cannot blow up the series count."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = value or "none"
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


class ServiceMetrics:
    """One registry per app instance, so two apps in one process (tests) never collide.

    ``multiprocess_dir`` (PROMETHEUS_MULTIPROC_DIR, which prometheus_client also reads from the
    environment when it is imported) makes ``render`` aggregate the values every worker process wrote
    there. ``max_label_values`` bounds the distinct tenants and models each labelled metric keeps.
    """

    content_type = CONTENT_TYPE

    def __init__(self, *, multiprocess_dir: Path | None = None, max_label_values: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir
        self.tenant_label = BoundedLabel(max_label_values)
        self.model_label = BoundedLabel(max_label_values)
        self._server: Any = None
        self.requests = Counter(
            "ai_service_requests",
            "HTTP requests handled, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "ai_service_request_duration_ms",
            "HTTP request duration in milliseconds, by method, route template and status.",
            ["method", "route", "status"],
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )
        self.events_published = Counter(
            "ai_service_events_published",
            "Outbox events delivered to subscribers, by event type.",
            ["event_type"],
            registry=self.registry,
        )
        self.outbox_lag = Gauge(
            "ai_service_outbox_lag",
            "Seconds the oldest outbox event not yet published has waited, as this replica's relay sees it "
            "(0 on replicas that do not hold the relay lease: take the max over replicas).",
            registry=self.registry,
            multiprocess_mode="max",
        )

        self.predictions = Counter(
            "ai_service_model_predictions",
            "Prediction requests by model, version and outcome (success, partial, invalid, error).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "ai_service_inference_duration_ms",
            "Time from a prediction request reaching the engine to its answer, in milliseconds.",
            ["model", "version"],
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "ai_service_batch_size",
            "Rows in each vectorised model call the batcher formed.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "ai_service_batch_requests",
            "Requests merged into each vectorised model call.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=self.registry,
        )
        self.cache_hits = Counter("ai_service_model_cache_hits", "Model cache hits.", registry=self.registry)
        self.cache_misses = Counter(
            "ai_service_model_cache_misses", "Model cache misses (loads).", registry=self.registry
        )
        self.cache_evictions = Counter(
            "ai_service_model_cache_evictions", "Models evicted from the cache.", registry=self.registry
        )
        self.cache_models = Gauge(
            "ai_service_model_cache_models",
            "Models loaded in the cache.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "ai_service_model_cache_loaded_bytes",
            "Measured memory of the models loaded in the cache, in bytes.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.training_jobs = Counter(
            "ai_service_model_training_jobs",
            "Training jobs by framework and outcome (started, succeeded, failed).",
            ["framework", "outcome"],
            registry=self.registry,
        )
        self.training_running = Gauge(
            "ai_service_training_jobs_running",
            "Training jobs this replica's runner is supervising now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.training_duration = Histogram(
            "ai_service_training_job_duration_seconds",
            "Wall time of finished training jobs, from start to success or failure, by framework.",
            ["framework"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600),
            registry=self.registry,
        )
        self.quota_exceeded = Counter(
            "ai_service_quota_exceeded",
            "Calls refused because a tenant reached a quota, by tenant (bounded) and quota.",
            ["tenant", "quota"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "ai_service_rate_limited",
            "Calls refused (429) by a rate limit, by rate class (predict, management).",
            ["rate_class"],
            registry=self.registry,
        )
        self.payload_logs_written = Counter(
            "ai_service_payload_logs_written",
            "Predictions written to the payload log (one per answered input of a logged call).",
            registry=self.registry,
        )
        self.payload_logs_dropped = Counter(
            "ai_service_payload_logs_dropped",
            "Predictions not logged because the payload log's queue was full or the database refused them.",
            registry=self.registry,
        )
        self.experiment_observations_dropped = Counter(
            "ai_service_experiment_observations_dropped",
            "Experiment observations not recorded: the recorder's queue was full or the database "
            "refused them.",
            registry=self.registry,
        )
        self.experiment_shadow_dropped = Counter(
            "ai_service_experiment_shadow_dropped",
            "Shadow copies of requests not sent to a challenger because too many were in flight.",
            registry=self.registry,
        )
        self.model_drift_score = Gauge(
            "ai_service_model_drift_score",
            "The latest drift check's score (its largest PSI), by model and version.",
            ["model", "version"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.rate_limit_unchecked = Counter(
            "ai_service_rate_limit_unchecked",
            "Calls let through unchecked because the shared rate limit store (Redis) was unreachable.",
            registry=self.registry,
        )
        self.tenant_predictions = Counter(
            "ai_service_tenant_predictions",
            "Authenticated prediction calls by tenant and outcome (success, failed): counted here "
            "instead of audited one by one, unless the tenant sets auditPredictions.",
            ["tenant", "outcome"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "ai_service_webhook_deliveries",
            "Webhook delivery attempts by outcome: succeeded, retried (failed, another attempt follows), "
            "failed (given up, or refused before sending).",
            ["outcome"],
            registry=self.registry,
        )
        self.swept_files = Counter(
            "ai_service_swept_files",
            "Leftovers of work a crash or a kill interrupted, removed by the sweeper, by kind: "
            "artifact-staging, dataset-staging, training-folders, compile-folders, orphan-artifacts.",
            ["what"],
            registry=self.registry,
        )
        self.swept_bytes = Counter(
            "ai_service_swept_bytes",
            "Bytes of those leftovers, by kind.",
            ["what"],
            registry=self.registry,
        )
        self._cache_seen = (0, 0, 0)
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._prediction_series: dict[tuple[str, int, str], tuple[Any, Any]] = {}

    def training_job(self, framework: str, outcome: str, duration_s: float | None = None) -> None:
        """A job started (``duration_s`` None) or ended (succeeded or failed after ``duration_s``)."""
        self.training_jobs.labels(framework, outcome).inc()
        if duration_s is None:
            self.training_running.inc()
        else:
            self.training_running.dec()
            self.training_duration.labels(framework).observe(duration_s)

    def swept(self, what: str, files: int, size_bytes: int) -> None:
        self.swept_files.labels(what).inc(files)
        self.swept_bytes.labels(what).inc(size_bytes)

    def webhook_attempt(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome).inc()

    def rate_limited_call(self, rate_class: str) -> None:
        self.rate_limited.labels(rate_class).inc()

    def tenant_prediction(self, tenant_id: str, outcome: str) -> None:
        self.tenant_predictions.labels(self.tenant_label(tenant_id), outcome).inc()

    def quota_refused(self, tenant: str | None, quota: str) -> None:
        self.quota_exceeded.labels(self.tenant_label(tenant), quota).inc()

    def prediction(self, model: str, version: int, outcome: str, duration_ms: float) -> None:
        key = (model, version, outcome)
        series = self._prediction_series.get(key)
        if series is None:
            label = self.model_label(model)
            series = self._remember(
                self._prediction_series,
                key,
                (
                    self.predictions.labels(label, str(version), outcome),
                    self.inference_duration.labels(label, str(version)),
                ),
            )
        series[0].inc()
        series[1].observe(duration_ms)

    def drift_score(self, model: str, version: int, score: float) -> None:
        self.model_drift_score.labels(self.model_label(model), str(version)).set(score)

    def batch(self, requests: int, rows: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)

    def cache_hit(self) -> None:
        self.cache_hits.inc()
        hits, misses, evictions = self._cache_seen
        self._cache_seen = (hits + 1, misses, evictions)

    def cache(self, stats: Any, models: int, loaded_bytes: int) -> None:
        hits, misses, evictions = self._cache_seen
        self.cache_hits.inc(stats.hits - hits)
        self.cache_misses.inc(stats.misses - misses)
        self.cache_evictions.inc(stats.evictions - evictions)
        self._cache_seen = (stats.hits, stats.misses, stats.evictions)
        self.cache_models.set(models)
        self.cache_bytes.set(loaded_bytes)

    def watch_outbox_lag(self, lag_seconds: Callable[[], float]) -> None:
        """Read the outbox lag from the relay whenever metrics are scraped (no I/O: the relay keeps it).

        Several workers' values are read from their files, where a function's value never lands: a
        thread writes it there every second instead (the scrape takes the max over workers)."""
        if self._multiprocess_dir is None:
            self.outbox_lag.set_function(lag_seconds)
            return

        def write_every_second() -> None:
            while True:
                self.outbox_lag.set(lag_seconds())
                time.sleep(1.0)

        threading.Thread(target=write_every_second, name="outbox-lag-gauge", daemon=True).start()

    def watch_replica(self, in_flight: Callable[[], float], p95_ms: Callable[[], float | None]) -> None:
        """A deployment replica's load, read at each scrape: the ``Pods`` metrics a Kubernetes
        HorizontalPodAutoscaler scales on by concurrency or latency (``k8s_render``), named as there.
        A replica is one process, so no multi-process files are involved."""
        inflight = Gauge(
            "aiservice_inflight_requests",
            "Requests this replica is answering now.",
            registry=self.registry,
        )
        latency = Gauge(
            "aiservice_request_latency_p95_ms",
            "95th percentile of this replica's prediction latency over the last minute, in ms (0: none).",
            registry=self.registry,
        )
        inflight.set_function(in_flight)
        latency.set_function(lambda: p95_ms() or 0.0)

    def observe_request(self, method: str, route: str, status: int, duration_ms: float) -> None:
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            labels = (method, route, str(status))
            series = self._remember(
                self._request_series,
                key,
                (self.requests.labels(*labels), self.request_duration.labels(*labels)),
            )
        series[0].inc()
        series[1].observe(duration_ms)

    @staticmethod
    def _remember(found: dict[Any, tuple[Any, Any]], key: Any, series: tuple[Any, Any]) -> tuple[Any, Any]:
        """A labelled series looked up once, not on every call (``labels`` takes a lock and a few
        microseconds); the lookups are bounded like the labels themselves."""
        if len(found) >= _MAX_REMEMBERED:
            found.clear()
        found[key] = series
        return series

    def exposed_registry(self) -> CollectorRegistry:
        """What a scrape reads: this registry, or every worker's values when multi-process."""
        if self._multiprocess_dir is None:
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return merged

    def render(self) -> bytes:
        return generate_latest(self.exposed_registry())

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on a port of its own (PROMETHEUS_PORT), besides the API's ``/metrics``."""
        self._server, _thread = start_http_server(port, addr=addr, registry=self.exposed_registry())

    def stop_serving(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def forget_dead_processes(folder: Path) -> None:
    """Drop the live gauges of workers that died without saying so (a crash, a kill), as
    prometheus_client asks a multi-process server to; the survivors' values stay."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
        except PermissionError:
            continue  # alive, another user's
