"""The embedded launcher: each training job in its own worker process on this machine.

A crash, an out-of-memory kill or a segfault in a framework ends that job's process only, never the
service. Processes come from the fork server warmed at start-up, so a job does not pay for importing
the service again, and die with the service (a killed service leaves no job training on).
"""

from __future__ import annotations

import logging
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from aiservice.infrastructure.jobs.worker import run_job
from aiservice.infrastructure.runtimes.inspector import forkserver_context, tied_process

log = logging.getLogger(__name__)
KILL_GRACE_S = 3.0


class ProcessWorker:
    def __init__(self, process: Any, receiver: Connection) -> None:
        self._process = process
        self._receiver = receiver

    def receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        try:
            while self._receiver.poll(0):
                messages.append(self._receiver.recv())
        except (EOFError, OSError):
            pass
        return messages

    def alive(self) -> bool:
        return bool(self._process.is_alive())

    def exit_reason(self) -> str:
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is not None and code < 0:
            return f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
        return f"exit status {code}"

    def kill(self) -> None:
        """SIGTERM, then SIGKILL after a grace period: a framework stuck in native code ignores the first."""
        process = self._process
        if not process.is_alive():
            return
        process.terminate()
        process.join(timeout=KILL_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)

    def resident_bytes(self) -> int | None:
        try:
            return int(psutil.Process(self._process.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            return None

    def waitables(self) -> list[Any]:
        return [self._receiver, self._process.sentinel]

    def close(self) -> None:
        self._process.join(timeout=5)
        self._receiver.close()


class ProcessLauncher:
    name = "local"

    def launch(self, request: dict[str, Any], folder: Path) -> ProcessWorker:
        context = forkserver_context()
        receiver, sender = context.Pipe(duplex=False)
        process = tied_process(run_job, request, sender)
        process.start()
        sender.close()
        log.info("training job %s runs in process %s", request["jobId"], process.pid)
        return ProcessWorker(process, receiver)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
