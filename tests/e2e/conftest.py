"""A live server started the way a user starts it: ``aiservice serve`` in a fresh folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

# Settings a developer's shell might carry; a fresh user has none of them.
_SCRUB = ("JWT_SECRET", "DATABASE_URL", "DB_HOST", "DATA_DIR", "ARTIFACT_ROOT", "PORT", "HOST", "ENVIRONMENT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiservice", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class LiveServer:
    folder: Path
    port: int
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def line_starting(self, prefix: str) -> str:
        return next(line for line in self.output if line.startswith(prefix))


@contextmanager
def serving(folder: Path, **env: str) -> Iterator[LiveServer]:
    """``aiservice serve`` started in ``folder`` on a free port (with ``env`` on top of a fresh user's
    environment), stopped on leaving."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiservice", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = LiveServer(folder, port, process)

    def drain() -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                server.output.append(line.rstrip("\n"))
        except (ValueError, OSError):  # closed at teardown while a slow machine was still reading
            return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError("server exited:\n" + "\n".join(server.output))
            try:
                if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not start:\n" + "\n".join(server.output))
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with serving(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def module_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a module whose tests only read from it or leave nothing another test sees."""
    with serving(tmp_path_factory.mktemp("served")) as server:
        yield server
