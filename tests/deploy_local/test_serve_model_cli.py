"""``aiservice serve-model`` as a process, started by hand the way a Kubernetes pod starts it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.deploy_local.conftest import TENANT, TOKEN, World, predict_path, row, sklearn_label
from tests.e2e.conftest import free_port

SERVE_MODEL = (sys.executable, "-m", "aiservice", "serve-model")
pytestmark = pytest.mark.xdist_group("serve-model-cli")  # one worker starts the module's replica


@pytest.fixture(scope="module")
def started(world: World) -> Iterator[tuple[str, float, subprocess.Popen[str]]]:
    port = free_port()
    env = world.settings.child_environment(REPLICA_TOKEN=TOKEN, WORKERS="1", PROMETHEUS_MULTIPROC_DIR=None)
    began = time.monotonic()
    process = subprocess.Popen(
        [
            *SERVE_MODEL,
            "--deployment",
            "iris-direct",
            "--tenant",
            TENANT,
            "--port",
            str(port),
            "--replica-id",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/replica", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        startup_s = time.monotonic() - began
        print(f"\nserve-model: warm and listening {startup_s:.1f} s after it was started")
        yield base, startup_s, process
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_model_answers_what_sklearn_answers_with_the_replica_token(
    started: tuple[str, float, subprocess.Popen[str]], world: World
) -> None:
    base, _, _ = started
    response = httpx.post(
        base + predict_path(world), json={"input": row(100)}, headers={"X-Aiservice-Replica-Token": TOKEN}
    )
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == sklearn_label(100)
    assert response.headers["x-aiservice-replica"] == "4"


def test_serve_model_refuses_a_request_without_the_token(
    started: tuple[str, float, subprocess.Popen[str]], world: World
) -> None:
    base, _, _ = started
    assert httpx.post(base + predict_path(world), json={"input": row(100)}).status_code == 401


def test_serve_model_of_an_unknown_deployment_says_why_and_exits(world: World) -> None:
    env = world.settings.child_environment(REPLICA_TOKEN=TOKEN, WORKERS="1", PROMETHEUS_MULTIPROC_DIR=None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [*SERVE_MODEL, "--deployment", "ghost", "--tenant", TENANT, "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1
    assert "no live deployment 'ghost'" in done.stderr.splitlines()[-1]
