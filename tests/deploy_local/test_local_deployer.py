"""``LocalDeployer`` with real replica processes: a group shares one port, crashed replicas are replaced,
a model that cannot load fails the revision with its reason, and stopping answers what is in flight."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from aiservice.infrastructure.deploy.local import LocalDeployer
from tests.deploy_local.conftest import TOKEN, World, predict_path, row, sklearn_label, wait_for

REPLICA = {"X-Aiservice-Replica-Token": TOKEN}


def pids(deployer: LocalDeployer, world: World, name: str) -> set[int]:
    """The pids of a group's replicas, as the operating system sees the processes on its port."""
    state = deployer.observe(world.deployment_ids[name], 1)
    assert state is not None and state.endpoint is not None
    port = urlsplit(state.endpoint).port
    listening = {
        c.pid
        for c in psutil.net_connections("tcp4")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    }
    return listening


def served_by(endpoint: str, world: World, requests: int = 50) -> Counter[str]:
    """Which replica answered each of ``requests`` predictions, each on a new connection."""
    seen: Counter[str] = Counter()
    for i in range(requests):
        response = httpx.post(endpoint + predict_path(world), json={"input": row(i)}, headers=REPLICA)
        assert response.status_code == 200, response.text
        seen[response.headers["x-aiservice-replica"]] += 1
    return seen


def test_two_replicas_get_ready_and_both_answer_on_the_one_port(
    deployer: LocalDeployer, world: World
) -> None:
    began = time.monotonic()
    first = deployer.ensure(world.spec("iris-pair", 2))
    assert (first.desired, first.ready, first.endpoint) == (2, 0, None)
    state = wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    print(f"\ntwo replicas warm {time.monotonic() - began:.1f} s after ensure")
    assert state.endpoint is not None and state.failed is None
    assert served_by(state.endpoint, world).keys() == {"0", "1"}
    assert len(pids(deployer, world, "iris-pair")) == 2
    assert deployer.revisions()[world.deployment_ids["iris-pair"]] == [1]


def test_ensure_again_with_the_same_spec_changes_nothing(deployer: LocalDeployer, world: World) -> None:
    deployer.ensure(world.spec("iris-pair", 2))
    wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    before = pids(deployer, world, "iris-pair")
    again = deployer.ensure(world.spec("iris-pair", 2))
    time.sleep(1.0)
    assert (again.desired, again.ready) == (2, 2)
    assert pids(deployer, world, "iris-pair") == before


def test_a_killed_replica_is_replaced_on_the_same_port(deployer: LocalDeployer, world: World) -> None:
    state = deployer.ensure(world.spec("iris-pair", 2))
    state = wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    victim, survivor = sorted(pids(deployer, world, "iris-pair"))
    os.kill(victim, signal.SIGKILL)
    wait_for(deployer, world, "iris-pair", lambda s: s.ready == 1, timeout=10)
    began = time.monotonic()
    after = wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    print(f"\na killed replica was replaced and warm in {time.monotonic() - began:.1f} s")
    now = pids(deployer, world, "iris-pair")
    assert survivor in now and victim not in now and len(now) == 2
    assert after.endpoint == state.endpoint
    assert served_by(after.endpoint or "", world, 10)


def test_a_hung_replica_is_killed_and_replaced(deployer: LocalDeployer, world: World) -> None:
    deployer.ensure(world.spec("iris-pair", 2))
    wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    hung = max(pids(deployer, world, "iris-pair"))
    os.kill(hung, signal.SIGSTOP)  # alive, listening, answering nothing
    try:
        wait_for(deployer, world, "iris-pair", lambda s: s.ready == 1, timeout=15)
        deadline = time.monotonic() + 30
        while not _gone(hung) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(hung), "the hung replica was not killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    assert hung not in pids(deployer, world, "iris-pair")


def test_resizing_two_to_one_stops_one_and_keeps_serving(deployer: LocalDeployer, world: World) -> None:
    deployer.ensure(world.spec("iris-pair", 2))
    state = wait_for(deployer, world, "iris-pair", lambda s: s.ready == 2)
    before = pids(deployer, world, "iris-pair")
    smaller = deployer.ensure(world.spec("iris-pair", 1))
    assert smaller.desired == 1
    wait_for(deployer, world, "iris-pair", lambda s: s.ready == 1, timeout=30)
    deadline = time.monotonic() + 30
    while len(pids(deployer, world, "iris-pair")) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = pids(deployer, world, "iris-pair")
    assert len(after) == 1 and after < before
    assert len(served_by(state.endpoint or "", world, 10)) == 1  # one replica answers them all


def test_a_revision_whose_model_cannot_load_fails_with_the_reason(
    deployer: LocalDeployer, world: World
) -> None:
    deployer.ensure(world.spec("broken", 1))
    state = wait_for(deployer, world, "broken", lambda s: s.failed is not None, timeout=240)
    assert state.ready == 0 and state.endpoint is None
    assert state.failed is not None
    assert "could not start (2 in a row)" in state.failed
    assert "revision 1" in state.failed and "cannot be served" in state.failed
    time.sleep(1.0)
    assert deployer.observe(world.deployment_ids["broken"], 1) == state  # no third try
    deployer.retire(world.deployment_ids["broken"], 1, drain_s=5)


def test_retire_answers_the_request_in_flight_then_stops(deployer: LocalDeployer, world: World) -> None:
    deployer.ensure(world.spec("iris-drain", 1))
    state = wait_for(deployer, world, "iris-drain", lambda s: s.ready == 1)
    assert state.endpoint is not None
    (replica,) = pids(deployer, world, "iris-drain")
    host, port = "127.0.0.1", urlsplit(state.endpoint).port or 0
    body = httpx.Request("POST", "http://x/", json={"input": row(100)}).content
    head = (
        f"POST {predict_path(world)} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Aiservice-Replica-Token: {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(head + body[:5])  # the request has begun: the replica holds it
        time.sleep(0.5)
        deployer.retire(world.deployment_ids["iris-drain"], 1, drain_s=20)
        assert deployer.observe(world.deployment_ids["iris-drain"], 1) is None
        assert world.deployment_ids["iris-drain"] not in deployer.revisions()
        deadline = time.monotonic() + 10
        while _accepts(host, port) and time.monotonic() < deadline:  # it stops listening at once
            time.sleep(0.05)
        assert not _accepts(host, port)
        conn.sendall(body[5:])
        answer = _read_response(conn)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert sklearn_label(100).encode() in answer
    deadline = time.monotonic() + 20
    while not _gone(replica) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(replica)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind(deployer: LocalDeployer) -> object:
    """After the module, closing the deployer leaves no replica running."""
    yield None
    children = [p for p in psutil.Process().children() if _replica(p)]
    running = [r.process for g in deployer._groups.values() for r in g.replicas if not r.exited]
    deployer.close()
    _gone_now, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive
    # Drained, not killed: uvicorn ends on SIGTERM by raising it again once its requests are answered.
    assert [p.returncode for p in running] == [-signal.SIGTERM] * len(running)


def _replica(process: psutil.Process) -> bool:
    try:
        return "serve-model" in process.cmdline()
    except psutil.Error:  # gone, or a zombie the deployer has not reaped yet
        return False


SERVICE = """
import sys, time
from aiservice.application.deploying.ports import ReplicaSpec
from aiservice.infrastructure.deploy.local import LocalDeployer
from aiservice.settings import Settings

deployer = LocalDeployer.from_settings(Settings(replica_probe_seconds=0.2), sys.argv[1])
spec = ReplicaSpec("acme", sys.argv[2], "iris-orphan", 1, sys.argv[3], 1, 1)
deployer.ensure(spec)
while (deployer.observe(sys.argv[2], 1) or spec).ready < 1:
    time.sleep(0.1)
with open(sys.argv[4], "w") as out:
    out.write(" ".join(str(r.pid) for g in deployer._groups.values() for r in g.replicas))
time.sleep(600)
"""


def test_a_service_killed_with_sigkill_leaves_no_replica_behind(world: World, tmp_path: Path) -> None:
    env = world.settings.child_environment(PROMETHEUS_MULTIPROC_DIR=None)
    said = tmp_path / "replicas"
    arguments = [TOKEN, world.deployment_ids["iris-orphan"], world.model_id, str(said)]
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not (said.exists() and said.read_text()) and time.monotonic() < deadline:
            assert service.poll() is None, "the service ended on its own"
            time.sleep(0.1)
        (replica,) = map(int, said.read_text().split())
        assert psutil.pid_exists(replica)
    finally:
        service.kill()
        service.wait(30)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(replica) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(replica)
