"""Health: each configured dependency is probed and reported with its latency or its error.

``detailed`` is the full report (503 when any configured dependency is down). ``ready`` is what an
orchestrator routes traffic by: it fails while the database is unreachable or its migrations are
pending, or once the event broker has been unreachable for longer than the grace period (a broker
blip must not take every replica out of service; the outbox keeps the events meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiservice.application.ports import ArtifactStore, Clock, DatabaseProbe

Probe = Callable[[], object]
"""Returns when the dependency answers; raises (with a reason) when it does not."""


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    body: dict[str, Any]


class HealthCheck:
    def __init__(
        self,
        db: DatabaseProbe,
        store: ArtifactStore,
        version: str,
        clock: Clock,
        *,
        dependencies: Mapping[str, Probe] | None = None,
        broker: str | None = None,
        not_configured: tuple[str, ...] = (),
        broker_grace_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``dependencies``: the optional backends this replica is configured with (Redis, the broker,
        Ray), by the name they are reported under; ``broker`` names the one that is the event broker;
        ``not_configured`` lists the kinds of backend reported as absent."""
        self._db = db
        self._store = store
        self._version = version
        self._clock = clock
        self._dependencies = dict(dependencies or {})
        self._broker = broker
        self._not_configured = not_configured
        self._grace = broker_grace_s
        self._monotonic = monotonic
        self._broker_down_since: float | None = None
        self._started = time.monotonic()
        self._started_at = clock()

    def detailed(self) -> HealthReport:
        checks = self._core_checks()
        checks.update({name: self._probe(probe) for name, probe in self._dependencies.items()})
        self._note_broker(checks)
        healthy = all(c["status"] == "up" for c in checks.values())
        body = {
            "status": "ok" if healthy else "degraded",
            "version": self._version,
            "startedAt": self._started_at.isoformat(),
            "uptimeSeconds": round(time.monotonic() - self._started, 3),
            "checks": checks,
            "notConfigured": list(self._not_configured),
        }
        return HealthReport(healthy=healthy, body=body)

    def ready(self) -> HealthReport:
        """Ready unless the database or its schema is not, or the broker is down past the grace."""
        checks = self._core_checks()
        del checks["artifactStore"]  # a full disk fails writes, not predictions: reported, not fatal
        if self._broker is not None:
            checks[self._broker] = self._probe(self._dependencies[self._broker])
            self._note_broker(checks)
        reasons = [f"{name} is down" for name, c in checks.items() if c["status"] != "up"]
        if self._broker is not None and checks[self._broker]["status"] != "up":
            since = self._broker_down_since
            down_for = 0.0 if since is None else self._monotonic() - since
            if down_for < self._grace:
                reasons.remove(f"{self._broker} is down")  # within the grace period: still ready
            checks[self._broker]["downForSeconds"] = round(down_for, 3)
        body = {"ready": not reasons, "checks": checks, "reasons": reasons}
        return HealthReport(healthy=not reasons, body=body)

    def _core_checks(self) -> dict[str, dict[str, Any]]:
        return {
            "database": self._probe(self._db.ping),
            "artifactStore": self._probe(self._store.check_writable),
            "migrations": self._probe(self._require_current_migrations),
        }

    def _note_broker(self, checks: dict[str, dict[str, Any]]) -> None:
        if self._broker is None or self._broker not in checks:
            return
        if checks[self._broker]["status"] == "up":
            self._broker_down_since = None
        elif self._broker_down_since is None:
            self._broker_down_since = self._monotonic()

    def _require_current_migrations(self) -> None:
        if not self._db.migrations_current():
            raise RuntimeError("the database schema is behind; run 'aiservice migrate'")

    @staticmethod
    def _probe(check: Probe) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "up", "latencyMs": round((time.perf_counter() - started) * 1000, 3)}
