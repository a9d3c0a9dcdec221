"""Where a study runs: a daemon thread of the service's host worker (ADR 28)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class StudyThreads:
    """Runs each study's coordinator in a thread of its own and, on shutdown, waits a little for them to
    end: a coordinator sees its cancellation (or the service's end, as a failed study) at its next look."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def launch(self, name: str, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout_s)
