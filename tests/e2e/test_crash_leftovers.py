"""Nothing left behind by a crash: ``kill -9`` of a live ``aiservice serve`` mid-upload, mid-inspection
and mid-training, then what the next start finds."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService
from tests.api.test_training import IRIS_FEATURES, write_iris_csv
from tests.e2e.conftest import LiveServer, serving
from tests.helpers import iris_model_bytes, slow_pickled_model, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-crash-leftovers"),  # one worker kills the module's server, once
]

SECRET = "e2e-crash-secret-0123456789-0123456789-0123"
SETTINGS = {"JWT_SECRET": SECRET, "ONNX_COMPILE": "false"}
API = "/api/v1/ai"
MIB = 1024**2


def headers(tenant: str = "default", role: str = "admin") -> dict[str, str]:
    token = JwtTokenService(SECRET).issue("e2e", tenant, [role], 3600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}


def kill_hard(server: LiveServer) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def start_streaming(server: LiveServer, path: str, filename: str, chunk: bytes, sent: int) -> socket.socket:
    """A multipart upload announcing 300 MB that sends its first ``sent`` bytes and then waits."""
    boundary = "e2e-crash-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    length = len(head) + 300 * MIB + len(f"\r\n--{boundary}--\r\n")
    request = "".join(
        [
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n",
            *(f"{name}: {value}\r\n" for name, value in headers().items()),
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n",
        ]
    ).encode()
    connection = socket.create_connection(("127.0.0.1", server.port))
    connection.sendall(request + head + chunk * (sent // len(chunk)))
    return connection


def largest(paths: list[Path]) -> int:
    return max((p.stat().st_size for p in paths if p.is_file()), default=0)


def swept_count(server: LiveServer, what: str) -> float:
    for line in httpx.get(f"{server.base_url}/metrics").text.splitlines():
        if line.startswith(f'ai_service_swept_files_total{{what="{what}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_staging_files_of_uploads_killed_midway_are_swept_at_the_next_start(tmp_path: Path) -> None:
    var = tmp_path / "var"
    with serving(tmp_path, **SETTINGS) as first:
        created = httpx.post(
            f"{first.base_url}{API}/models", json={"name": "m", "framework": "sklearn"}, headers=headers()
        )
        assert created.status_code == 201, created.text
        uploads = [
            start_streaming(first, f"{API}/models/m/versions", "model.skops", b"\0" * 4096, 3 * MIB),
            start_streaming(first, f"{API}/datasets", "big.csv", b"1,2,3\n" * 1024, 3 * MIB),
        ]
        staged = wait_until(
            lambda: (
                [
                    *(var / "artifacts" / ".staging").glob("upload-*"),
                    *(var / "uploaded-datasets").rglob(".upload-*/big"),
                ]
                if largest([*(var / "artifacts" / ".staging").glob("*")]) >= 2 * MIB
                and largest([*(var / "uploaded-datasets").rglob(".upload-*/big")]) >= 2 * MIB
                else []
            ),
            what="both uploads to reach their staging files",
        )
        kill_hard(first)
        for connection in uploads:
            connection.close()
    assert len(staged) == 2 and all(p.exists() for p in staged)  # what the crash left

    with serving(tmp_path, **SETTINGS, UPLOAD_TIMEOUT_SECONDS="1", SWEEP_INTERVAL_SECONDS="0.5") as second:
        wait_until(lambda: not any(p.exists() for p in staged), 15, what="the staging files to be swept")
        assert (swept_count(second, "artifact-staging"), swept_count(second, "dataset-staging")) == (1.0, 1.0)


@dataclass
class Killed:
    """A server killed while training a job and inspecting an upload, and what it left."""

    folder: Path
    processes: list[psutil.Process]  # every process under the server at the kill
    commands: list[str]  # their command lines
    orphan: Path  # the bytes of the upload it was inspecting: no version row refers to them
    job_folder: Path


def descendants(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def fork_server_children(server: LiveServer) -> list[psutil.Process]:
    servers = [p for p in descendants(server) if "forkserver" in " ".join(p.cmdline())]
    return [child for s in servers for child in s.children()]


def post_in_background(url: str, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """POST from a thread; the list gets the response, or the error a killed server causes."""
    answers: list[Any] = []

    def send() -> None:
        try:
            answers.append(httpx.post(url, headers=headers(), timeout=120, **kwargs))
        except httpx.TransportError as exc:
            answers.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, answers


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    folder = tmp_path_factory.mktemp("killed")
    datasets = folder / "var" / "datasets"
    datasets.mkdir(parents=True)
    iris = write_iris_csv(datasets / "iris.csv")
    processes: list[psutil.Process] = []
    try:
        with serving(folder, **SETTINGS) as first:
            base = first.base_url
            allowed = httpx.patch(
                f"{base}{API}/tenants/default",
                json={"settings": {"allowPickle": True}},
                headers=headers("platform", "superadmin"),
            )
            assert allowed.status_code == 200, allowed.text
            schema = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in IRIS_FEATURES]}
            model = httpx.post(
                f"{base}{API}/models",
                json={"name": "iris", "framework": "sklearn", "inputSchema": schema},
                headers=headers(),
            ).json()
            files = {"file": ("model.skops", iris_model_bytes())}
            assert (
                # A worker other than the host one starts its fork server on its first upload: seconds.
                httpx.post(
                    f"{base}{API}/models/iris/versions", files=files, headers=headers(), timeout=120
                ).status_code
                == 201
            )
            job = httpx.post(
                f"{base}{API}/models/iris/train",
                json={
                    "trainingConfig": {
                        "algorithm": "sklearn.neural_network.MLPClassifier",
                        "params": {"max_iter": 1_000_000, "tol": 0.0, "n_iter_no_change": 1_000_000},
                    },
                    "datasetConfig": {"trainPath": str(iris), "format": "csv", "target": "species"},
                },
                headers=headers(),
            ).json()
            wait_until(
                lambda: (
                    httpx.get(f"{base}{API}/training-jobs/{job['id']}", headers=headers()).json()["status"]
                    == "running"
                ),
                what="the training job to run",
            )
            uploading, _ = post_in_background(
                f"{base}{API}/models/iris/versions", files={"file": ("model.pkl", slow_pickled_model(60))}
            )
            stored = folder / "var" / "artifacts" / "default" / model["id"]
            wait_until(
                lambda: len(list(stored.iterdir())) == 2, what="the upload's bytes to wait for inspection"
            )
            wait_until(
                lambda: len(fork_server_children(first)) >= 2,
                what="a training worker and an inspection child",
            )
            processes = descendants(first)
            commands = [" ".join(p.cmdline()) for p in processes]
            (job_folder,) = (folder / "var" / "training").glob("job-*")
            (orphan,) = (p for p in stored.iterdir() if p.stat().st_size != len(iris_model_bytes()))
            kill_hard(first)
            uploading.join(timeout=30)
        yield Killed(folder, processes, commands, orphan, job_folder)
    finally:
        for process in processes:  # never leave one behind, whatever the test found
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def test_every_child_process_dies_with_a_killed_server(killed: Killed) -> None:
    assert (
        sum("forkserver" in c for c in killed.commands) >= 3
    )  # the fork server, a training worker, an inspection
    wait_until(lambda: alive(killed.processes) == [], 5, 0.1, lambda: f"{alive(killed.processes)} to die")


def test_the_next_start_sweeps_what_the_killed_work_left_and_keeps_what_is_in_use(killed: Killed) -> None:
    quick = {"ARTIFACT_ORPHAN_GRACE_SECONDS": "2", "SWEEP_INTERVAL_SECONDS": "0.5"}
    jobs = {"TRAINING_TIMEOUT_SECONDS": "1", "UPLOAD_TIMEOUT_SECONDS": "3"}
    with serving(killed.folder, **SETTINGS, **quick, **jobs) as second:
        uploading, answers = post_in_background(
            f"{second.base_url}{API}/models/iris/versions",
            files={"file": ("model.pkl", slow_pickled_model(6))},
        )
        wait_until(
            lambda: not killed.orphan.exists() and not killed.job_folder.exists(), 20, what="the sweep"
        )
        uploading.join(timeout=60)
        assert answers and isinstance(answers[0], httpx.Response) and answers[0].status_code == 201, answers
        number = answers[0].json()["version"]
        for version in (1, number):  # uploaded before the kill, and inspected while sweeps ran
            downloaded = httpx.get(
                f"{second.base_url}{API}/models/iris/versions/{version}/artifact", headers=headers()
            )
            assert downloaded.status_code == 200, (version, downloaded.text)
