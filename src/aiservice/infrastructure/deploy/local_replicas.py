"""One local replica: an ``aiservice serve-model`` child process, the socket that reaches it alone, and
what it last said on stderr.

The replica gets two sockets, both bound but not listening, so neither takes a connection before the
model is warm: the revision's shared port (it binds that one itself, with SO_REUSEPORT) and a port of
its own, bound here and handed over by file descriptor. The deployer probes that own port
(``GET /health/replica``): refused means still loading, an answer means ready (and brings the requests
in flight and the recent p95), silence from a replica that was ready means hung.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import orjson
import psutil

log = logging.getLogger(__name__)

STATUS_PATH = "/health/replica"
TAIL_LINES = 20


class ProbeRefused(Exception):
    """Nothing listens on the replica's own port yet (it is loading) or any more (it exited)."""


@dataclass
class LocalReplica:
    index: int  # the replica's number in its group, sent back in X-Aiservice-Replica
    process: subprocess.Popen[bytes]
    status_port: int
    started: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    stop_by: float | None = None  # asked to stop: killed if still running then
    killed_for: str | None = None  # why the deployer killed it (hung, memory, never ready)
    failed_probes: int = 0
    in_flight: float = 0.0
    p95_ms: float | None = None
    cpu_percent: float = 0.0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    @property
    def serving(self) -> bool:
        """Warm, answering its probes, not asked to stop, and not known to have exited."""
        return (
            self.ready_at is not None and not self.failed_probes and self.stop_by is None and not self.exited
        )

    def stop(self, drain_s: float) -> None:
        """SIGTERM: the replica stops listening, answers what it holds, then exits (killed after
        ``drain_s`` if it has not)."""
        deadline = time.monotonic() + drain_s
        self.stop_by = deadline if self.stop_by is None else min(self.stop_by, deadline)
        self._signal(signal.SIGTERM)

    def kill(self, reason: str | None = None) -> None:
        if reason and self.killed_for is None:
            self.killed_for = reason
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def last_words(self) -> str:
        """Why it ended, from what it said last: the line ``serve-model`` writes when it cannot serve,
        else the last lines of its stderr (a traceback's end names the error)."""
        lines = [line for line in self.tail if line.strip()]
        for line in reversed(lines):
            if line.startswith("error: "):
                return line.removeprefix("error: ")
        return " | ".join(lines[-3:])[-1000:]

    def probe(self, timeout_s: float) -> None:
        """Ask the replica's own port how it is; raises ``ProbeRefused`` when nothing listens there and
        ``OSError`` (a timeout among them) when it does not answer properly."""
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=timeout_s)
        try:
            try:
                conn.request("GET", STATUS_PATH)
            except ConnectionRefusedError:
                raise ProbeRefused from None
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise OSError(f"status {response.status}")
        status = orjson.loads(body)
        # Autoscaling wants a steady figure: the recent mean, or the count now when more are waiting.
        self.in_flight = max(float(status.get("inFlight", 0)), float(status.get("meanInFlight", 0.0)))
        self.p95_ms = status.get("p95Ms")

    def sample(self) -> int:
        """CPU use since the last sample (percent of one core), kept; returns the resident memory."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
            with self._ps.oneshot():
                self.cpu_percent = self._ps.cpu_percent(None)
                return int(self._ps.memory_info().rss)
        except psutil.Error:
            return 0


def spawn(
    command: Sequence[str],
    arguments: Sequence[str],
    index: int,
    env: Mapping[str, str],
    *,
    echo: IO[str] | None = None,
) -> LocalReplica:
    """Start ``command serve-model arguments...`` as replica ``index``, with a port of its own.

    Call it from the thread that watches the replicas: the child dies when the thread that started it
    ends (``PR_SET_PDEATHSIG``), which is what ties replicas to the service's life."""
    own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        own.bind(("127.0.0.1", 0))  # not listening: the replica listens on it once warm
        status_port = own.getsockname()[1]
        args = [
            *command,
            "serve-model",
            *arguments,
            "--replica-id",
            str(index),
            "--status-fd",
            str(own.fileno()),
            "--spawner-pid",
            str(os.getpid()),
        ]
        process = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(own.fileno(),),
        )
    finally:
        own.close()  # the child holds its own copy
    replica = LocalReplica(index, process, status_port)
    threading.Thread(
        target=_read_stderr,
        args=(process, replica.tail, echo if echo is not None else sys.stderr),
        name=f"replica-{process.pid}-stderr",
        daemon=True,
    ).start()
    return replica


def _read_stderr(process: subprocess.Popen[bytes], tail: deque[str], echo: IO[str]) -> None:
    """Keep the last lines (the reason a replica could not start) and pass every line on to our own
    stderr, so nothing a replica says is lost; reading also keeps the child from blocking on a full pipe."""
    assert process.stderr is not None
    with process.stderr:
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            with contextlib.suppress(ValueError, OSError):  # our stderr closed at interpreter exit
                echo.write(f"[replica {process.pid}] {line}\n")
                echo.flush()
