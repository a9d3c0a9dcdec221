"""Deployments on a live server with real replica processes: every stable endpoint answers what the
model itself answers, a rollout under continuous load fails no request, rollback, a crashed replica,
a revision that cannot load, autoscaling up and down, scale to zero, and a restart of the service."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from tests.e2e.conftest import LiveServer, serving

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-deployments-live"),  # one worker starts the module's live server
]

API = "/api/v1/ai"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
X, Y = load_iris(return_X_y=True)
MODELS = [
    LogisticRegression(max_iter=500).fit(X, Y),
    DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, Y),
]
ROWS = X[::10]


class Api:
    def __init__(self, server: LiveServer) -> None:
        token = server.line_starting("export TOKEN=").removeprefix("export TOKEN=")
        self.headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "default"}
        self.base = server.base_url
        self.client = httpx.Client(base_url=server.base_url, headers=self.headers, timeout=60)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, f"{API}{path}", **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def deployment(self, name: str) -> dict[str, Any]:
        shown: dict[str, Any] = self.ok("GET", f"/deployments/{name}")
        return shown

    def wait(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.deployment(name)
            if check(shown):
                return shown
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)


def named(row: np.ndarray) -> dict[str, float]:
    return {f: float(v) for f, v in zip(FEATURES, row, strict=True)}


def register(api: Api, folder: Path, name: str = "iris") -> None:
    api.ok(
        "POST",
        "/models",
        json={
            "name": name,
            "framework": "sklearn",
            "inputSchema": {"type": "tabular", "features": [{"name": f} for f in FEATURES]},
            "outputSchema": {"classes": CLASSES},
        },
    )
    for number, estimator in enumerate(MODELS, start=1):
        path = folder / f"{name}-{number}.skops"
        sio.dump(estimator, path)
        with path.open("rb") as f:
            api.ok("POST", f"/models/{name}/versions", files={"file": (path.name, f)})
    api.ok("POST", f"/models/{name}/versions/1/stage", json={"stage": "production"})


def replicas_of(server: LiveServer) -> list[psutil.Process]:
    """The live replica processes of the server (a killed one not yet reaped does not count)."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "serve-model" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # gone meanwhile
            continue
    return found


class Load:
    """Threads sending predictions to a deployment without pause; counts answers by status and version."""

    def __init__(self, api: Api, name: str, threads: int = 4) -> None:
        self.url = f"{api.base}{API}/deployments/{name}/predict"
        self.headers = dict(api.headers)
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json={"input": named(ROWS[0])})
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.versions[response.json()["version"]] += 1
                else:
                    self.failures.append(response.text[:300])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Api]]:
    folder = tmp_path_factory.mktemp("deployments")
    with serving(folder, WORKERS="2", ONNX_COMPILE="false") as server:  # the native artifacts serve
        api = Api(server)
        register(api, folder)
        api.ok("POST", "/models/iris/deploy", json={"deploymentName": "iris-prod", "minReplicas": 2})
        api.wait("iris-prod", lambda d: d["status"] == "available" and d["replicas"]["ready"] == 2)
        yield server, api
        api.client.close()


def test_every_stable_endpoint_answers_what_the_model_answers(live: tuple[LiveServer, Api]) -> None:
    import tritonclient.http as httpclient

    server, api = live
    expected = [CLASSES[i] for i in MODELS[0].predict(ROWS)]
    one = api.ok("POST", "/deployments/iris-prod/predict", json={"input": named(ROWS[0])})
    assert (one["prediction"], one["version"]) == (expected[0], 1)
    batch = api.ok("POST", "/deployments/iris-prod/batch-predict", json={"inputs": [named(r) for r in ROWS]})
    assert [item["prediction"] for item in batch["outputs"]] == expected
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        tensor = httpclient.InferInput("input", list(ROWS.shape), "FP32")
        for binary in (False, True):
            tensor.set_data_from_numpy(ROWS.astype(np.float32), binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
            result = triton.infer(
                "iris-prod", [tensor], outputs=wanted, headers=dict(api.headers)
            )  # it adds to them
            probabilities = MODELS[0].predict_proba(ROWS.astype(np.float32))
            assert result.as_numpy("probabilities") == pytest.approx(probabilities, rel=1e-5)
    finally:
        triton.close()
    assert len(replicas_of(server)) == 2


def test_a_rollout_under_continuous_load_fails_no_request_and_rollback_returns(
    live: tuple[LiveServer, Api],
) -> None:
    _, api = live
    with Load(api, "iris-prod") as load:
        time.sleep(1)
        api.ok("PATCH", "/deployments/iris-prod", json={"version": 2})
        api.wait("iris-prod", lambda d: d["status"] == "available" and d["serving"]["version"] == 2)
        time.sleep(3)  # past the fronts' route cache and the old revision's drain start
    assert load.failures == [] and set(load.statuses) == {200}
    assert load.versions[1] > 0 and load.versions[2] > 0
    answer = api.ok("POST", "/deployments/iris-prod/predict", json={"input": named(ROWS[0])})
    assert answer["version"] == 2
    with Load(api, "iris-prod") as load:
        api.ok("POST", "/deployments/iris-prod/rollback")
        shown = api.wait("iris-prod", lambda d: d["status"] == "available" and d["serving"]["version"] == 1)
        time.sleep(2)
    assert load.failures == []
    assert shown["serving"]["rollbackOf"] == 2 and shown["previous"]["version"] == 2
    events = [e["type"] for e in shown["events"]]
    assert events[-1] == "ai.deployment.rolled_back.v1" and "ai.deployment.rolled_out.v1" in events


def test_a_crashed_replica_is_replaced_while_requests_keep_succeeding(live: tuple[LiveServer, Api]) -> None:
    server, api = live
    api.wait("iris-prod", lambda d: d["status"] == "available" and d["replicas"]["ready"] == 2)
    before = {p.pid for p in replicas_of(server)}
    with Load(api, "iris-prod") as load:
        time.sleep(0.5)
        os.kill(sorted(before)[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not ({p.pid for p in replicas_of(server)} - before and len(replicas_of(server)) >= 2):
            assert time.monotonic() < deadline, "the crashed replica was not replaced"
            time.sleep(0.2)
        api.wait("iris-prod", lambda d: d["replicas"]["ready"] == 2)
    assert load.failures == [], load.failures[:3]  # in-flight requests were sent once more elsewhere


def test_a_revision_that_cannot_load_leaves_the_deployment_serving_and_degraded(
    live: tuple[LiveServer, Api],
) -> None:
    server, api = live
    uploaded = (server.folder / "iris-2.skops").read_bytes()  # what version 2 was made from
    store = server.folder / "var" / "artifacts"
    victims = [p for p in store.rglob("*") if p.is_file() and p.read_bytes() == uploaded]
    assert victims, "version 2's artifact file was not found"
    for path in victims:  # an operator's disk fault: the stored bytes no longer match their digest
        path.write_bytes(b"not the model any more" + uploaded[22:])
    api.ok("PATCH", "/deployments/iris-prod", json={"version": 2})
    shown = api.wait("iris-prod", lambda d: d["status"] in ("degraded", "failed"), timeout=180)
    assert shown["status"] == "degraded" and shown["reason"]
    assert shown["serving"]["version"] == 1
    answer = api.ok("POST", "/deployments/iris-prod/predict", json={"input": named(ROWS[0])})
    assert answer["version"] == 1
    assert shown["events"][-1]["type"] == "ai.deployment.failed.v1"


def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(live: tuple[LiveServer, Api]) -> None:
    _, api = live
    body = {
        "deploymentName": "iris-auto",
        "environment": "staging",
        "version": 1,
        "minReplicas": 1,
        "maxReplicas": 2,
        "autoscaling": {"targetConcurrency": 0.5, "cooldownSeconds": 2},
    }
    api.ok("POST", "/models/iris/deploy", json=body)
    api.wait("iris-auto", lambda d: d["status"] == "available")
    with Load(api, "iris-auto", threads=6):
        api.wait(
            "iris-auto", lambda d: d["replicas"]["desired"] == 2 and d["replicas"]["ready"] == 2, timeout=90
        )
    shown = api.wait("iris-auto", lambda d: d["replicas"]["desired"] == 1, timeout=90)
    scaled = [e for e in shown["events"] if e["type"] == "ai.deployment.scaled.v1"]
    assert [e["to_replicas"] for e in scaled][-2:] == [2, 1]


def test_a_dev_deployment_scales_to_zero_and_wakes_for_the_next_request(live: tuple[LiveServer, Api]) -> None:
    _, api = live
    body = {
        "deploymentName": "iris-dev",
        "environment": "dev",
        "version": 1,
        "minReplicas": 0,
        "maxReplicas": 1,
        "autoscaling": {"targetConcurrency": 4, "cooldownSeconds": 3},
    }
    api.ok("POST", "/models/iris/deploy", json=body)
    answer = api.ok("POST", "/deployments/iris-dev/predict", json={"input": named(ROWS[0])})  # waits for one
    assert answer["version"] == 1
    api.wait("iris-dev", lambda d: d["replicas"]["desired"] == 0 and d["replicas"]["ready"] == 0, timeout=90)
    answer = api.ok("POST", "/deployments/iris-dev/predict", json={"input": named(ROWS[1])})
    assert answer["prediction"] == CLASSES[MODELS[0].predict(ROWS[1:2])[0]]


def test_deployments_come_back_after_the_service_restarts(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        api = Api(server)
        register(api, tmp_path)
        api.ok("POST", "/models/iris/deploy", json={"deploymentName": "iris-prod", "minReplicas": 1})
        api.wait("iris-prod", lambda d: d["status"] == "available")
        api.client.close()
    with serving(tmp_path) as again:
        api = Api(again)
        api.wait("iris-prod", lambda d: d["status"] == "available" and d["replicas"]["ready"] == 1)
        answer = api.ok("POST", "/deployments/iris-prod/predict", json={"input": named(ROWS[0])})
        assert answer["version"] == 1
        api.client.close()
