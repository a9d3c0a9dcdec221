"""The isolated children that load untrusted artifacts: a crash is reported at once, and no child (nor
the fork server) outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from aiservice.infrastructure.runtimes.inspector import IsolatedFailure, run_isolated
from tests.helpers import wait_until

SERVICE = """
import time
from aiservice.infrastructure.runtimes.inspector import tied_process

if __name__ == "__main__":
    child = tied_process(time.sleep, 120)
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def _exit_at_once(request: dict[str, Any], sender: Connection) -> None:
    os._exit(3)


def test_a_child_that_dies_without_answering_is_reported_at_once_with_its_exit_status() -> None:
    outcome: list[BaseException] = []

    def inspect() -> None:
        try:
            run_isolated(_exit_at_once, {}, timeout_s=60, memory_bytes=1 << 30)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=inspect, daemon=True)  # a supervisor that never returns fails, not hangs
    worker.start()
    worker.join(timeout=30)  # well before the 60 s timeout
    assert len(outcome) == 1 and isinstance(outcome[0], IsolatedFailure), outcome
    assert "crashed the worker process (exit status 3)" in str(outcome[0])


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_and_the_fork_server_die_when_their_service_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    service = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    left: list[psutil.Process] = []
    try:
        assert service.stdout is not None
        child = psutil.Process(int(service.stdout.readline()))
        fork_server = child.parent()
        assert fork_server is not None and fork_server.ppid() == service.pid  # service, fork server, child
        left = [child, fork_server]
        os.kill(service.pid, signal.SIGKILL)
        service.wait(timeout=10)
        wait_until(lambda: all(_gone(p) for p in left), 5, what="the child and the fork server to die")
    finally:
        for process in left:  # never leave one behind, whatever the test found
            if not _gone(process):
                process.kill()
        service.kill()
        service.wait(timeout=10)
        assert service.stdout is not None
        service.stdout.close()
