"""Run WORKERS server processes on one port under uvicorn's supervisor.

uvicorn binds the socket once and every worker accepts from it; its supervisor pings each worker,
replaces one that dies or hangs, stops when a worker cannot start at all, and on SIGTERM asks every
worker to drain (no new connections, in-flight requests finish within the grace period). What the
workers share on this host lives in the workers folder: the slot locks, Prometheus' per-process
files and the rate-limit buckets; this module resets it for each start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import uvicorn

from aiservice.infrastructure.workers.slots import hold_supervisor_lock

RATE_LIMIT_FILE = "ratelimit.buckets"


def metrics_folder(workers_dir: Path, configured: Path | None) -> Path:
    return configured or workers_dir / "metrics"


def run_workers(
    app_factory: str,
    count: int,
    workers_dir: Path,
    metrics_dir: Path,
    options: dict[str, Any],
    graceful_s: float,
) -> None:
    """Serve ``app_factory`` (``module:function``) in ``count`` processes until SIGTERM or SIGINT.

    Raises ``BlockingIOError`` when another ``aiservice serve`` holds the same workers folder."""
    lock = hold_supervisor_lock(workers_dir)
    try:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):  # a previous run's values, as prometheus_client asks
            stale.unlink()
        (workers_dir / RATE_LIMIT_FILE).unlink(missing_ok=True)
        # The workers are new interpreters: they learn their count, and prometheus_client where to
        # write (it reads this variable when it is imported), from the environment they inherit.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ["WORKERS"] = str(count)
        uvicorn.run(
            app_factory,
            factory=True,
            workers=count,
            timeout_graceful_shutdown=int(graceful_s),
            **options,
        )
    finally:
        lock.close()
