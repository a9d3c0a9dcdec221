"""Every metric the service exports, owned by one module so names stay consistent."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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

    def observe_request(self, method: str, route: str, status: int, duration_ms: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.request_duration.labels(*labels).observe(duration_ms)

    def render(self) -> bytes:
        return generate_latest(self.registry)
