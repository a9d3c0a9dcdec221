"""Every metric the service exports, owned by one module so names stay consistent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_MS_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


class ServiceMetrics:
    """One registry per app instance, so two apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
            "ai_service_model_cache_models", "Models loaded in the cache.", registry=self.registry
        )
        self.cache_bytes = Gauge(
            "ai_service_model_cache_loaded_bytes",
            "Measured memory of the models loaded in the cache, in bytes.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "ai_service_rate_limited",
            "Calls refused (429) by a rate limit, by rate class (predict, management).",
            ["rate_class"],
            registry=self.registry,
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
        self._cache_seen = (0, 0, 0)

    def prediction(self, model: str, version: int, outcome: str, duration_ms: float) -> None:
        self.predictions.labels(model, str(version), outcome).inc()
        self.inference_duration.labels(model, str(version)).observe(duration_ms)

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
        """Read the outbox lag from the relay whenever metrics are scraped (no I/O: the relay keeps it)."""
        self.outbox_lag.set_function(lag_seconds)

    def observe_request(self, method: str, route: str, status: int, duration_ms: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.request_duration.labels(*labels).observe(duration_ms)

    def render(self) -> bytes:
        return generate_latest(self.registry)
