"""One background loop for housekeeping that runs every so often (sweeps, pruning), so each job is a
function and not another hand-written thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    """Runs ``task`` in a daemon thread of its own: once when started (unless ``run_at_start`` is
    False), then every ``interval_s`` until stopped. A failed run is logged; the next goes on time."""

    def __init__(
        self, name: str, interval_s: float, task: Callable[[], object], *, run_at_start: bool = True
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._task = task
        self._run_at_start = run_at_start
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run now rather than at the next interval (a change the task should see at once)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        if self._run_at_start:
            self._run()
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._run()

    def _run(self) -> None:
        try:
            self._task()
        except Exception:  # a full disk, a database restarting: the next run tries again
            log.warning("%s failed", self.name, exc_info=True)
