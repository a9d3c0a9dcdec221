"""Readiness: each dependency is probed and reported with its latency or its error."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiservice.application.ports import ArtifactStore, Clock, DatabaseProbe


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    body: dict[str, Any]


class HealthCheck:
    def __init__(self, db: DatabaseProbe, store: ArtifactStore, version: str, clock: Clock) -> None:
        self._db = db
        self._store = store
        self._version = version
        self._clock = clock
        self._started = time.monotonic()
        self._started_at = clock()

    def detailed(self) -> HealthReport:
        checks = {
            "database": self._probe(self._db.ping),
            "artifactStore": self._probe(self._store.check_writable),
            "migrations": self._probe(self._require_current_migrations),
        }
        healthy = all(c["status"] == "up" for c in checks.values())
        return HealthReport(
            healthy=healthy,
            body={
                "status": "ok" if healthy else "degraded",
                "version": self._version,
                "startedAt": self._started_at.isoformat(),
                "uptimeSeconds": round(time.monotonic() - self._started, 3),
                "checks": checks,
            },
        )

    def _require_current_migrations(self) -> None:
        if not self._db.migrations_current():
            raise RuntimeError("the database schema is behind; run 'aiservice migrate'")

    @staticmethod
    def _probe(check: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "up", "latencyMs": round((time.perf_counter() - started) * 1000, 3)}
