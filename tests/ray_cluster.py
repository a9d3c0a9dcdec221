"""A real Ray cluster for the tests: ``ray start --head --block`` in a child process on free local ports.

Ray is in the ``ray`` extra, which ``make test`` installs. Port 6379 belongs to Redis here, so the head
takes a free one. Some Ray processes ignore SIGTERM, and ``ray stop`` would end every Ray process on the
machine, so ``stop`` kills exactly the processes this cluster started, by PID. ``ray_cluster`` is the
fixture (import it where a module needs one): the head takes seconds to start, so a module shares one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RayCluster:
    """One head node with ``cpus`` CPUs and no GPU; ``address`` is what ``RAY_ADDRESS`` takes."""

    def __init__(self, log: Path, cpus: int = 2) -> None:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        # Ray's Unix sockets live under its temp dir, whose path must stay short.
        self._temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        self._log_path = log
        self._log = log.open("wb")
        ray = Path(sys.executable).with_name("ray")
        self.process = subprocess.Popen(
            [
                *(str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1"),
                *(f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"),
                *(f"--temp-dir={self._temp}", "--object-store-memory=200000000"),
                f"--ray-client-server-port={_free_port()}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            start_new_session=True,
        )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"ray start exited early:\n{self.log_text()}")
            if "Ray runtime started" in self.log_text():
                return
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the Ray head did not start within 90 s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the head's descendants, workers included."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def job_processes(self, task: str = "run_on_ray") -> set[int]:
        """The worker processes running ``task`` now (Ray names a busy worker ``ray::<task>``)."""
        found = set()
        for process in self.processes():
            try:
                if task in " ".join(process.cmdline()):
                    found.add(process.pid)
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self) -> None:
        found = [psutil.Process(self.process.pid), *self.processes()] if self.process.poll() is None else []
        for process in found:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(found, timeout=10)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    cluster = RayCluster(tmp_path_factory.mktemp("ray") / "head.log")
    yield cluster
    cluster.stop()
