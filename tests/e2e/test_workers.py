"""``aiservice serve`` with WORKERS=2, as an operator runs it: two processes on one port that share
rate limits, metrics, events and operator requests, and a supervisor that replaces and drains them."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService
from tests.e2e.conftest import LiveServer, serving
from tests.helpers import iris_model_bytes

API = "/api/v1/ai"
SECRET = "workers-test-secret-of-enough-length-0123456789"
TOKENS = JwtTokenService(SECRET, 30)
pytestmark = pytest.mark.xdist_group("workers")


def token(*roles: str, tenant: str = "default", subject: str = "tester") -> dict[str, str]:
    """Headers of a caller; each subject has its own rate-limit bucket."""
    signed = TOKENS.issue(subject, tenant, list(roles), 3600)
    return {"Authorization": f"Bearer {signed}", "X-Tenant-ID": tenant}


ADMIN = token("admin", subject="fleet-admin")
OPERATOR = token("superadmin", tenant="platform")


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


@contextmanager
def pinned(server: LiveServer) -> Iterator[dict[int, httpx.Client]]:
    """One keep-alive connection to each worker: a connection stays with the worker that accepted it."""
    clients: dict[int, httpx.Client] = {}
    try:
        for _ in range(400):
            client = httpx.Client(
                base_url=server.base_url, limits=httpx.Limits(max_connections=1), timeout=30
            )
            worker = client.get("/health").json()["worker"]
            if worker in clients:
                client.close()
            else:
                clients[worker] = client
            if len(clients) == 2:
                break
        assert sorted(clients) == [0, 1], f"only workers {sorted(clients)} accepted connections"
        yield clients
    finally:
        for client in clients.values():
            client.close()


def workers_view(server: LiveServer) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.base_url}{API}/admin/workers", headers=OPERATOR, timeout=30)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def all_up(server: LiveServer) -> list[dict[str, Any]]:
    """The workers view once every worker runs (the port answers as soon as the first one does)."""

    def every_worker() -> list[dict[str, Any]] | None:
        view = workers_view(server)
        return view if all(w["ok"] for w in view) else None

    result: list[dict[str, Any]] = wait_until(every_worker, 60, "every worker up")
    return result


def upload_iris(base_url: str, name: str, kinds: tuple[str, ...] = ("logistic",)) -> None:
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=120) as client:
        created = client.post(f"{API}/models", json={"name": name, "framework": "sklearn"})
        assert created.status_code == 201, created.text
        for kind in kinds:
            files = {"file": ("model.skops", iris_model_bytes(kind), "application/octet-stream")}
            uploaded = client.post(f"{API}/models/{name}/versions", files=files)
            assert uploaded.status_code == 201, uploaded.text


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(
        tmp_path_factory.mktemp("workers"),
        WORKERS="2",
        JWT_SECRET=SECRET,
        RATE_LIMIT_MANAGEMENT_RPS="0.001",
        RATE_LIMIT_MANAGEMENT_BURST="10",
        ONNX_COMPILE="false",
    ) as server:
        all_up(server)
        yield server


def test_two_workers_accept_on_one_port_and_only_slot_0_holds_the_host_duties(
    two_workers: LiveServer,
) -> None:
    with pinned(two_workers) as clients:
        assert sorted(clients) == [0, 1]
    view = workers_view(two_workers)
    assert [(w["worker"], w["ok"], w["hostDuties"]) for w in view] == [(0, True, True), (1, True, False)]
    assert len({w["pid"] for w in view}) == 2


def test_a_rate_limit_is_one_budget_for_both_workers(two_workers: LiveServer) -> None:
    headers = token("viewer", subject="limited")  # a bucket of 10 for this caller
    with pinned(two_workers) as clients:
        statuses = [clients[n % 2].get(f"{API}/models", headers=headers).status_code for n in range(30)]
    assert statuses.count(200) == 10, statuses  # not 10 per worker
    assert statuses.count(429) == 20


NOT_FOUND_COUNT = re.compile(
    r'^ai_service_requests_total\{method="GET",route="/api/v1/ai/models/\{model\}",status="404"\} (\S+)$',
    re.M,
)


def not_found_counted(client: httpx.Client) -> float:
    found = NOT_FOUND_COUNT.search(client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_metrics_add_up_every_workers_requests(two_workers: LiveServer) -> None:
    headers = token("editor", subject="counted")
    with pinned(two_workers) as clients:
        before = not_found_counted(clients[0])
        for worker, count in ((0, 3), (1, 4)):
            for _ in range(count):
                assert clients[worker].get(f"{API}/models/nothing-here", headers=headers).status_code == 404
        # Whichever worker answers the scrape counts both workers' requests.
        assert [not_found_counted(client) - before for client in clients.values()] == [7, 7]


def test_a_load_reaches_both_workers_and_an_alias_move_reaches_both_caches(two_workers: LiveServer) -> None:
    upload_iris(two_workers.base_url, "iris-fleet", ("logistic", "forest"))
    loaded = httpx.post(
        f"{two_workers.base_url}{API}/models/iris-fleet/versions/1/load", headers=ADMIN, timeout=120
    )
    assert loaded.status_code == 200, loaded.text
    fleet = loaded.json()["workers"]
    assert sorted(w["worker"] for w in fleet) == [0, 1]
    assert all(w["ok"] and w["memoryBytes"] > 0 for w in fleet), fleet
    assert all(w["cachedModels"] == 1 for w in workers_view(two_workers))

    predictor = token("predictor", subject="predicting")
    body = {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}
    with pinned(two_workers) as clients:

        def versions_served() -> set[int]:
            served = set()
            for client in clients.values():
                answer = client.post(
                    f"{API}/models/iris-fleet@champion/predict", json=body, headers=predictor
                )
                assert answer.status_code == 200, answer.text
                served.add(answer.json()["version"])
            return served

        moved = clients[0].put(
            f"{API}/models/iris-fleet/aliases/champion", json={"version": 1}, headers=ADMIN
        )
        assert moved.status_code == 200, moved.text
        wait_until(lambda: versions_served() == {1}, 10, "both workers serve version 1")  # routes cached
        # Moved through each worker in turn; each time the other one must forget its resolution well
        # inside the 5 s it would keep it: worker 0 hears of it from its relay, worker 1 over the link.
        for through, version in ((1, 2), (0, 1)):
            moved = clients[through].put(
                f"{API}/models/iris-fleet/aliases/champion", json={"version": version}, headers=ADMIN
            )
            assert moved.status_code == 200, moved.text
            wait_until(
                lambda v=version: versions_served() == {v}, 2.5, f"both workers serve version {version}"
            )

    unloaded = httpx.post(f"{two_workers.base_url}{API}/models/iris-fleet/versions/1/unload", headers=ADMIN)
    assert unloaded.status_code == 204
    assert all(w["cachedModels"] == 1 for w in workers_view(two_workers))  # version 2 only, in each


def test_a_killed_worker_is_replaced_in_its_slot(tmp_path: Path) -> None:
    with serving(tmp_path, WORKERS="2", JWT_SECRET=SECRET) as server:
        before = {w["worker"]: w["pid"] for w in all_up(server)}
        os.kill(before[1], signal.SIGKILL)

        def replaced() -> bool:
            view = workers_view(server)
            return all(w["ok"] for w in view) and view[1]["pid"] not in (None, before[1])

        wait_until(replaced, 60, "worker 1 was replaced")
        after = {w["worker"]: w["pid"] for w in workers_view(server)}
        assert after[0] == before[0]  # the host worker and its duties were not disturbed
        with pinned(server) as clients:  # both slots accept connections again
            assert sorted(clients) == [0, 1]


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    with serving(tmp_path, WORKERS="2", JWT_SECRET=SECRET, ONNX_COMPILE="false") as server:
        assert (
            httpx.post(
                f"{server.base_url}{API}/models",
                json={"name": "drained", "framework": "sklearn"},
                headers=ADMIN,
            ).status_code
            == 201
        )
        artifact = iris_model_bytes()
        halfway = threading.Event()
        boundary = "drain-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="model.skops"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

        def body() -> Iterator[bytes]:
            yield head + artifact[: len(artifact) // 2]
            halfway.set()
            time.sleep(1.5)  # SIGTERM arrives while the upload is in flight
            yield artifact[len(artifact) // 2 :] + f"\r\n--{boundary}--\r\n".encode()

        result: dict[str, Any] = {}

        def send() -> None:
            result["response"] = httpx.post(
                f"{server.base_url}{API}/models/drained/versions",
                content=body(),
                headers={**ADMIN, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=60,
            )

        sender = threading.Thread(target=send)
        sender.start()
        assert halfway.wait(10)
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        sender.join(60)
        assert result["response"].status_code == 201, result["response"].text
        assert server.process.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):  # and it took no new connection after draining
            httpx.get(f"{server.base_url}/health", timeout=2)
