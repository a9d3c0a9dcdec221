"""Training jobs through the API: submit, follow, cancel, and predict with what they registered."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris, make_regression

from aiservice.bootstrap import Container, bootstrap
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.job_repositories import SqlAlchemyJobQueue
from aiservice.interfaces.http.app import create_app
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, wait_until
from tests.moto_s3 import CREDENTIALS, MotoServer

API = "/api/v1/ai"
SPECIES = ["setosa", "versicolor", "virginica"]
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def datasets(container: Container) -> Path:
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_iris_csv(path: Path, *, rows: slice = slice(None), label: Any = None) -> Path:
    x, y = load_iris(return_X_y=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*IRIS_FEATURES, "species"])
        for features, target in zip(x[rows], y[rows], strict=True):
            writer.writerow([*features, label if label is not None else SPECIES[target]])
    return path


def iris_model(
    client: TestClient, headers: dict[str, str], name: str = "iris", **body: Any
) -> dict[str, Any]:
    schema = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in IRIS_FEATURES]}
    return create_model(client, headers, name, inputSchema=schema, **body)


def train_body(
    path: Path | str, *, algorithm: str = "sklearn.ensemble.RandomForestClassifier", **extra: Any
) -> dict[str, Any]:
    params = extra.pop("params", {"n_estimators": 20, "random_state": 0})
    dataset = {"trainPath": str(path), "format": "csv", "target": "species", **extra.pop("dataset", {})}
    return {
        "trainingConfig": {"algorithm": algorithm, "params": params, **extra.pop("training", {})},
        "datasetConfig": dataset,
        **extra,
    }


def wait_for(
    client: TestClient, headers: dict[str, str], job_id: str, *statuses: str, timeout: float = 120
) -> dict[str, Any]:
    job: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal job
        job = client.get(f"{API}/training-jobs/{job_id}", headers=headers).json()
        return job["status"] in statuses

    wait_until(reached, timeout, 0.1, lambda: f"job {job_id} to be {' or '.join(statuses)}, not {job}")
    return job


FINISHED = ("succeeded", "failed", "cancelled")


def wait_for_epoch(client: TestClient, headers: dict[str, str], job_id: str) -> None:
    """Until a running job has finished an epoch (a PyTorch worker imports torch first: seconds)."""
    wait_until(
        lambda: client.get(f"{API}/training-jobs/{job_id}", headers=headers).json()["epoch"],
        60,
        what=f"job {job_id}'s first epoch",
    )


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_a_sklearn_job_trains_registers_an_evaluated_version_that_predicts(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    submitted = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] == "queued"
    assert submitted.headers["location"] == f"{API}/training-jobs/{job['id']}"

    done = wait_for(client, headers, job["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0
    assert done["version"] == 1
    assert done["metrics"]["validation_accuracy"] > 0.8
    assert {"validation_f1", "validation_roc_auc", "validation_log_loss"} <= set(done["metrics"])
    assert done["device"] == "cpu"

    version = client.get(f"{API}/models/iris/versions/1", headers=headers).json()
    assert version["metrics"] == done["metrics"]
    assert version["params"]["n_estimators"] == 20
    assert version["sourceRun"] == f"training-job:{job['id']}"
    lineage = version["lineage"]
    assert lineage["trainingJob"] == job["id"]
    assert lineage["datasets"][0]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()

    row = dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
    answer = client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"


def test_progress_streams_as_server_sent_events_and_resumes_after_the_last_event_id(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    job = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers).json()

    with client.stream("GET", f"{API}/training-jobs/{job['id']}/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    events = parse_sse(text)
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert any(e["event"] == "progress" and e["data"]["metrics"] for e in events)
    assert events[-1]["data"]["version"] == 1

    resumed = client.get(
        f"{API}/training-jobs/{job['id']}/events", headers={**headers, "Last-Event-ID": str(events[1]["id"])}
    )
    assert [e["id"] for e in parse_sse(resumed.text)] == [e["id"] for e in events[2:]]


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
    return events


def test_an_invalid_request_is_refused_before_anything_is_queued(
    client: TestClient, auth: Auth, datasets: Path, tmp_path: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    outside = write_iris_csv(tmp_path / "outside.csv")
    cases = [
        (train_body(data, algorithm="os.system"), "trainingConfig.algorithm"),
        (train_body(data, params={"n_estimators": -3}), "trainingConfig.params.n_estimators"),
        (train_body(data, params={"no_such_param": 1}), "trainingConfig.params.no_such_param"),
        (train_body(outside), "datasetConfig.trainPath"),
        (train_body(datasets / ".." / ".." / "outside.csv"), "datasetConfig.trainPath"),
        (train_body(datasets / "missing.csv"), "datasetConfig.trainPath"),
        (train_body(data, dataset={"target": "no_such_column"}), "datasetConfig.trainPath"),
        # Several data-parallel workers need the Ray runner (and a PyTorch model).
        (train_body(data, resourceConfig={"workers": 2}), "resourceConfig.workers"),
    ]
    for body, field in cases:
        response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (field, response.json())
    assert client.get(f"{API}/training-jobs", headers=headers).json()["items"] == []


def test_a_viewer_cannot_train_and_another_tenant_cannot_see_the_job(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    iris_model(client, auth("editor"))
    data = write_iris_csv(datasets / "iris.csv")
    refused = client.post(f"{API}/models/iris/train", json=train_body(data), headers=auth("viewer"))
    assert refused.status_code == 403
    job = client.post(f"{API}/models/iris/train", json=train_body(data), headers=auth("editor")).json()
    other = auth("admin", tenant="globex")
    assert client.get(f"{API}/training-jobs/{job['id']}", headers=other).status_code == 404
    assert client.get(f"{API}/training-jobs/{job['id']}/events", headers=other).status_code == 404
    assert client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=other).status_code == 404
    assert client.get(f"{API}/training-jobs", headers=other).json()["items"] == []
    assert client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=auth("viewer")).status_code == 403
    assert client.get(f"{API}/training-jobs/{job['id']}", headers=auth("viewer")).status_code == 200
    wait_for(client, auth("editor"), job["id"], *FINISHED)


def test_jobs_are_listed_newest_first_and_filtered_by_model_and_status(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    iris_model(client, headers, "other")
    data = write_iris_csv(datasets / "iris.csv")
    first = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers).json()
    second = client.post(f"{API}/models/other/train", json=train_body(data), headers=headers).json()
    wait_for(client, headers, first["id"], *FINISHED)
    wait_for(client, headers, second["id"], *FINISHED)
    everything = client.get(f"{API}/training-jobs", headers=headers).json()["items"]
    assert [j["id"] for j in everything] == [second["id"], first["id"]]
    page = client.get(f"{API}/training-jobs", params={"limit": 1}, headers=headers).json()
    rest = client.get(f"{API}/training-jobs", params={"cursor": page["nextCursor"]}, headers=headers).json()
    assert [j["id"] for j in page["items"] + rest["items"]] == [second["id"], first["id"]]
    assert rest["nextCursor"] is None
    only_iris = client.get(f"{API}/training-jobs", params={"modelId": "iris"}, headers=headers).json()
    assert [j["id"] for j in only_iris["items"]] == [first["id"]]
    succeeded = client.get(f"{API}/training-jobs", params={"status": "succeeded"}, headers=headers).json()
    assert len(succeeded["items"]) == 2
    queued = client.get(f"{API}/training-jobs", params={"status": "queued"}, headers=headers).json()
    assert queued["items"] == []


def slow_torch_job(client: TestClient, headers: dict[str, str], datasets: Path) -> dict[str, Any]:
    """A PyTorch MLP with far more epochs than a test waits for."""
    x, y = load_iris(return_X_y=True)
    np.savez(datasets / "iris.npz", X=np.repeat(x, 20, axis=0).astype(np.float32), y=np.repeat(y, 20))
    create_model(
        client,
        headers,
        "net",
        framework="pytorch",
        configuration={"inputShape": [4], "task": "classification"},
    )
    body = {
        "trainingConfig": {"algorithm": "mlp", "params": {"hiddenSizes": [64]}, "epochs": 10_000},
        "datasetConfig": {"trainPath": str(datasets / "iris.npz"), "format": "npz"},
    }
    response = client.post(f"{API}/models/net/train", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def training_workers() -> set[int]:
    """Job worker processes: children of the fork server this test process started."""
    workers = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "forkserver" in " ".join(child.cmdline()):
                workers |= {p.pid for p in child.children() if p.is_running()}
        except psutil.NoSuchProcess:
            continue
    return workers


def test_cancelling_a_running_job_stops_its_worker_within_seconds_and_registers_nothing(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    job = slow_torch_job(client, headers, datasets)
    running = wait_for(client, headers, job["id"], "running", *FINISHED)
    assert running["status"] == "running"
    wait_for_epoch(client, headers, job["id"])
    before = training_workers()
    assert before, "the running job has a worker process"

    cancelled = client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    started = time.monotonic()
    wait_until(lambda: not before & training_workers(), 15, what="the worker process to end")
    assert time.monotonic() - started < 10
    assert client.get(f"{API}/models/net/versions", headers=headers).json()["items"] == []
    again = client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=headers)
    assert again.status_code == 409


def test_deleting_a_model_cancels_its_running_and_queued_jobs(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    running = slow_torch_job(client, headers, datasets)
    wait_for_epoch(client, headers, running["id"])
    workers = training_workers()
    assert workers, "the running job has a worker process"
    body = {
        "trainingConfig": {"algorithm": "mlp", "params": {"hiddenSizes": [8]}, "epochs": 1},
        "datasetConfig": {"trainPath": str(datasets / "iris.npz"), "format": "npz"},
    }
    queued = client.post(f"{API}/models/net/train", json=body, headers=headers).json()  # waits its turn

    assert client.delete(f"{API}/models/net", headers=auth("admin")).status_code == 204
    for job in (running, queued):
        assert client.get(f"{API}/training-jobs/{job['id']}", headers=headers).json()["status"] == "cancelled"
    wait_until(lambda: not workers & training_workers(), 15, what="the worker process to end")


def test_a_worker_killed_mid_way_fails_its_job_and_the_service_keeps_working(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    job = slow_torch_job(client, headers, datasets)
    wait_for(client, headers, job["id"], "running")
    wait_for_epoch(client, headers, job["id"])
    workers = training_workers()
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    failed = wait_for(client, headers, job["id"], *FINISHED, timeout=30)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "crashed"
    assert "signal 9" in failed["error"]["message"]
    assert "Traceback" not in failed["error"]["message"]
    assert client.get(f"{API}/models/net/versions", headers=headers).json()["items"] == []
    assert client.get("/health").status_code == 200


def test_bad_data_past_the_checked_header_fails_the_job_with_a_clear_reason(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    path = datasets / "bad.csv"
    good = "5.1,3.5,1.4,0.2,setosa\n" * 60_000  # past the first block, which submission checks
    path.write_text(",".join([*IRIS_FEATURES, "species"]) + "\n" + good + "5.1,3.5,1.4,abc,setosa\n")
    response = client.post(f"{API}/models/iris/train", json=train_body(path), headers=headers)
    assert response.status_code == 202, response.text
    failed = wait_for(client, headers, response.json()["id"], *FINISHED)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "dataset"
    assert "petal_width" in failed["error"]["message"]
    assert "60001" in failed["error"]["message"].replace(",", "")
    assert client.get(f"{API}/models/iris/versions", headers=headers).json()["items"] == []


def test_a_non_numeric_value_in_the_checked_header_is_refused_at_submission(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    path = datasets / "bad.csv"
    path.write_text(",".join([*IRIS_FEATURES, "species"]) + "\n5.1,3.5,1.4,abc,setosa\n")
    response = client.post(f"{API}/models/iris/train", json=train_body(path), headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "datasetConfig.trainPath"
    assert "petal_width" in error["message"]


def test_an_empty_dataset_is_refused_at_submission(client: TestClient, auth: Auth, datasets: Path) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    for name, content in (
        ("empty.csv", ""),
        ("header-only.csv", ",".join([*IRIS_FEATURES, "species"]) + "\n"),
    ):
        (datasets / name).write_text(content)
        response = client.post(f"{API}/models/iris/train", json=train_body(datasets / name), headers=headers)
        if response.status_code == 202:  # found only when read: then the job fails with the reason
            failed = wait_for(client, headers, response.json()["id"], *FINISHED)
            assert failed["status"] == "failed" and failed["error"]["stage"] == "dataset", failed
        else:
            assert response.status_code == 422, response.text
            assert "datasetConfig.trainPath" in [e["field"] for e in response.json()["errors"]]


def test_a_regressor_reports_regression_metrics(client: TestClient, auth: Auth, datasets: Path) -> None:
    headers = auth("editor")
    x, y = make_regression(n_samples=300, n_features=3, noise=0.1, random_state=0)
    path = datasets / "reg.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "y"])
        writer.writerows([[*row, target] for row, target in zip(x, y, strict=True)])
    create_model(client, headers, "reg")
    body = train_body(
        path,
        algorithm="sklearn.linear_model.Ridge",
        params={"alpha": 0.1},
        dataset={"target": "y", "validationSplit": 0.25},
    )
    job = client.post(f"{API}/models/reg/train", json=body, headers=headers).json()
    done = wait_for(client, headers, job["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_r2"] > 0.99
    assert {"validation_rmse", "validation_mae"} <= set(done["metrics"])
    answer = client.post(
        f"{API}/models/reg/predict", json={"input": {"features": [0.0, 0.0, 0.0]}}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["prediction"], float)


def own_service(database_url: str, data_dir: Path, **overrides: object) -> tuple[Container, dict[str, str]]:
    """A service of the test's own settings (not yet started), and an editor's headers for it."""
    container = bootstrap(make_settings(database_url, data_dir, **overrides))
    container.tenants.ensure("acme")
    token = container.tokens.issue("tester", "acme", ["editor"], 600)
    return container, {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}


def s3_settings(server: MotoServer) -> dict[str, object]:
    return {
        "s3_endpoint_url": server.endpoint,
        "aws_access_key_id": CREDENTIALS["key"],
        "aws_secret_access_key": CREDENTIALS["secret"],
        "aws_default_region": CREDENTIALS["region"],
    }


def test_after_a_restart_running_jobs_end_as_interrupted_and_queued_ones_run(
    engine: Any, database_url: str, tmp_path: Path
) -> None:
    container, headers = own_service(database_url, tmp_path / "data", training_heartbeat_seconds=0.2)
    datasets = container.settings.dataset_root_paths[0]
    datasets.mkdir(parents=True)
    data = write_iris_csv(datasets / "iris.csv")
    # The service is down: nothing runs jobs. One job was running when it stopped, one still waits.
    app = create_app(container, manage_lifecycle=False)
    with TestClient(app) as client:
        iris_model(client, headers)
        was_running = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers).json()
        long_ago = utcnow() - timedelta(minutes=10)
        claimed = SqlAlchemyJobQueue(engine).claim_next("crashed-host:1234:dead", long_ago)
        assert claimed is not None and claimed.id == was_running["id"]
        waiting = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers).json()
        assert (
            client.get(f"{API}/training-jobs/{was_running['id']}", headers=headers).json()["status"]
            == "running"
        )

        container.start()  # the service comes back
        try:
            interrupted = wait_for(client, headers, was_running["id"], *FINISHED, timeout=30)
            assert interrupted["status"] == "failed"
            assert interrupted["error"]["stage"] == "interrupted"
            assert "interrupted" in interrupted["error"]["message"]
            ran = wait_for(client, headers, waiting["id"], *FINISHED)
            assert ran["status"] == "succeeded", ran["error"]
            assert ran["version"] == 1
        finally:
            container.close()


def iris_npz(path: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    np.savez(path, X=x.astype(np.float32), y=np.array(SPECIES)[y])
    return path


NETWORKS = {
    "xgboost": ("XGBClassifier", {"n_estimators": 30, "max_depth": 3}, {}),
    "pytorch": ("mlp", {"hiddenSizes": [32]}, {"epochs": 60, "learningRate": 0.01}),
    "keras": ("mlp", {"hiddenSizes": [32]}, {"epochs": 60, "learningRate": 0.01}),
}


@pytest.mark.parametrize("framework", list(NETWORKS))
def test_each_framework_trains_from_npz_and_its_version_predicts_labels(
    client: TestClient, auth: Auth, datasets: Path, framework: str
) -> None:
    headers = auth("editor")
    algorithm, params, training = NETWORKS[framework]
    configuration = {"inputShape": [4], "task": "classification"} if framework != "xgboost" else {}
    create_model(client, headers, "iris", framework=framework, configuration=configuration)
    body = {
        "trainingConfig": {"algorithm": algorithm, "params": params, **training},
        "datasetConfig": {"trainPath": str(iris_npz(datasets / "iris.npz")), "format": "npz"},
    }
    job = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert job.status_code == 202, job.text
    done = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_accuracy"] > 0.8
    if framework != "xgboost":
        assert [entry["epoch"] for entry in done["history"]] == list(range(1, 61))
    version = client.get(f"{API}/models/iris/versions/1", headers=headers).json()
    assert version["params"]["classes"] == SPECIES
    answer = client.post(
        f"{API}/models/iris/predict",
        json={"input": {"features": [6.7, 3.0, 5.2, 2.3]}, "options": {"includeConfidence": True}},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"
    assert set(answer.json()["probabilities"]) == set(SPECIES)


def test_a_job_reads_its_dataset_from_s3(
    moto_server: Any, engine: Any, database_url: str, tmp_path: Path
) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="training-data")
    s3.put_object(
        Bucket="training-data", Key="iris/train.csv", Body=write_iris_csv(tmp_path / "iris.csv").read_bytes()
    )
    container, headers = own_service(database_url, tmp_path / "data", **s3_settings(moto_server))
    with TestClient(create_app(container)) as client:
        iris_model(client, headers)
        missing = client.post(
            f"{API}/models/iris/train", json=train_body("s3://training-data/nope.csv"), headers=headers
        )
        assert missing.status_code == 422
        job = client.post(
            f"{API}/models/iris/train", json=train_body("s3://training-data/iris/train.csv"), headers=headers
        )
        assert job.status_code == 202, job.text
        done = wait_for(client, headers, job.json()["id"], *FINISHED)
        assert done["status"] == "succeeded", done["error"]
        assert done["datasetFingerprint"][0]["uri"] == "s3://training-data/iris/train.csv"
        row = dict(zip(IRIS_FEATURES, [5.0, 3.4, 1.5, 0.2], strict=True))
        assert (
            client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers).json()[
                "prediction"
            ]
            == "setosa"
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch_cuda_available(), reason="no CUDA GPU on this machine")
def test_a_pytorch_job_that_requires_a_gpu_trains_on_cuda(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    create_model(
        client,
        headers,
        "iris",
        framework="pytorch",
        configuration={"inputShape": [4], "task": "classification"},
    )
    body = {
        "trainingConfig": {
            "algorithm": "mlp",
            "params": {"hiddenSizes": [32]},
            "epochs": 30,
            "learningRate": 0.01,
        },
        "datasetConfig": {"trainPath": str(iris_npz(datasets / "iris.npz")), "format": "npz"},
        "resourceConfig": {"gpu": "required"},
    }
    job = client.post(f"{API}/models/iris/train", json=body, headers=headers).json()
    done = wait_for(client, headers, job["id"], *FINISHED, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["device"].startswith("cuda")
    assert done["metrics"]["validation_accuracy"] > 0.8


def test_a_gpu_required_job_without_a_gpu_fails_clearly_instead_of_using_the_cpu(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    if torch_cuda_available():
        pytest.skip("this machine has a GPU: the job would rightly succeed")
    headers = auth("editor")
    create_model(
        client,
        headers,
        "iris",
        framework="pytorch",
        configuration={"inputShape": [4], "task": "classification"},
    )
    body = {
        "trainingConfig": {"algorithm": "mlp", "params": {"hiddenSizes": [8]}, "epochs": 2},
        "datasetConfig": {"trainPath": str(iris_npz(datasets / "iris.npz")), "format": "npz"},
        "resourceConfig": {"gpu": "required"},
    }
    job = client.post(f"{API}/models/iris/train", json=body, headers=headers).json()
    failed = wait_for(client, headers, job["id"], *FINISHED)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "device"
    assert "CUDA" in failed["error"]["message"]


def test_the_s3_server_going_away_fails_the_job_with_a_clear_reason(
    start_moto: Any, engine: Any, database_url: str, tmp_path: Path
) -> None:
    server = start_moto()
    s3 = server.client()
    s3.create_bucket(Bucket="training-data")
    s3.put_object(
        Bucket="training-data", Key="train.csv", Body=write_iris_csv(tmp_path / "iris.csv").read_bytes()
    )
    container, headers = own_service(database_url, tmp_path / "data", **s3_settings(server))
    with TestClient(create_app(container, manage_lifecycle=False)) as client:
        iris_model(client, headers)
        job = client.post(
            f"{API}/models/iris/train", json=train_body("s3://training-data/train.csv"), headers=headers
        )
        assert job.status_code == 202, job.text
        server.stop()  # gone between submission and the job reading its data
        container.start()
        try:
            failed = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=90)
        finally:
            container.close()
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "dataset"
    assert "s3://training-data/train.csv" in failed["error"]["message"]
    assert "Traceback" not in failed["error"]["message"]


def write_image_folder(root: Path) -> Path:
    """Reddish and bluish 8 x 8 PNGs, twenty of each, under ``red/`` and ``blue/``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 90, size=(8, 8, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(170, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(root / label / f"{i}.png")
    return root


def test_a_cnn_trains_on_an_image_folder_and_its_version_classifies_an_uploaded_image(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    import base64
    import io

    from PIL import Image

    headers = auth("editor")
    create_model(
        client,
        headers,
        "colours",
        framework="pytorch",
        configuration={"inputShape": [8, 8, 3], "task": "classification"},
        inputSchema={"type": "image", "format": "png", "maxPixels": 1_000_000},
    )
    body = {
        "trainingConfig": {
            "algorithm": "cnn",
            "params": {"channels": [4], "kernelSize": 3, "hiddenSizes": [8]},
            "epochs": 30,
            "learningRate": 0.01,
        },
        "datasetConfig": {
            "trainPath": str(write_image_folder(datasets / "colours")),
            "format": "imagefolder",
        },
    }
    job = client.post(f"{API}/models/colours/train", json=body, headers=headers)
    assert job.status_code == 202, job.text
    done = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_accuracy"] == 1.0

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (230, 40, 30)).save(buffer, format="PNG")  # resized to 8 x 8 when served
    image = base64.b64encode(buffer.getvalue()).decode()
    answer = client.post(f"{API}/models/colours/predict", json={"input": {"image": image}}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "red"


def test_xgboost_pytorch_and_keras_jobs_read_npz_from_s3_and_their_versions_predict(
    moto_server: Any, engine: Any, database_url: str, tmp_path: Path
) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="arrays")
    s3.put_object(Bucket="arrays", Key="iris.npz", Body=iris_npz(tmp_path / "iris.npz").read_bytes())
    container, headers = own_service(database_url, tmp_path / "data", **s3_settings(moto_server))
    with TestClient(create_app(container)) as client:
        jobs = {}
        for framework, (algorithm, params, training) in NETWORKS.items():
            configuration = {"inputShape": [4], "task": "classification"} if framework != "xgboost" else {}
            create_model(client, headers, framework, framework=framework, configuration=configuration)
            body = {
                "trainingConfig": {"algorithm": algorithm, "params": params, **training},
                "datasetConfig": {"trainPath": "s3://arrays/iris.npz", "format": "npz"},
            }
            response = client.post(f"{API}/models/{framework}/train", json=body, headers=headers)
            assert response.status_code == 202, response.text
            jobs[framework] = response.json()["id"]
        for framework, job_id in jobs.items():
            done = wait_for(client, headers, job_id, *FINISHED, timeout=240)
            assert done["status"] == "succeeded", (framework, done["error"])
            assert done["datasetFingerprint"][0]["uri"] == "s3://arrays/iris.npz"
            answer = client.post(
                f"{API}/models/{framework}/predict",
                json={"input": {"features": [6.7, 3.0, 5.2, 2.3]}},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["prediction"] == "virginica", framework


def compiled_serving(client: TestClient, headers: dict[str, str], timeout: float = 90) -> dict[str, Any]:
    """Version 1 of iris's ``serving`` once its background ONNX compilation has ended."""

    def ended() -> dict[str, Any] | None:
        version = client.get(f"{API}/models/iris/versions/1", headers=headers).json()
        serving: dict[str, Any] = version["serving"]
        return serving if "compiled" in serving else None

    return wait_until(ended, timeout, 0.2, "iris version 1's ONNX compilation to end")


def test_a_trained_version_is_compiled_to_onnx_like_an_uploaded_one(
    engine: Any, database_url: str, tmp_path: Path
) -> None:
    container, headers = own_service(database_url, tmp_path / "data", onnx_compile=True)
    datasets = container.settings.dataset_root_paths[0]
    datasets.mkdir(parents=True)
    data = write_iris_csv(datasets / "iris.csv")
    with TestClient(create_app(container)) as client:
        iris_model(client, headers)
        job = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers).json()
        assert wait_for(client, headers, job["id"], *FINISHED)["status"] == "succeeded"
        serving = compiled_serving(client, headers)
        assert serving.get("compiled") is True, serving
        assert serving["kept"] is True  # the ONNX model's outputs matched the forest's


def test_a_job_past_its_memory_limit_is_stopped_with_the_reason(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    # 64 MB: less than the worker's frameworks take; and a forest big enough to still be fitting then
    body = train_body(data, params={"n_estimators": 5000}, resourceConfig={"memory": 64})
    job = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert job.status_code == 202, job.text
    failed = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "memory"
    assert "64 MB" in failed["error"]["message"]
    assert client.get(f"{API}/models/iris/versions", headers=headers).json()["items"] == []


def test_resources_take_kubernetes_quantities_as_the_product_spec_writes_them(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    spec = train_body(data, resourceConfig={"gpu": True, "memory": "8Gi", "cpu": "4"})
    response = client.post(f"{API}/models/iris/train", json=spec, headers=headers)
    assert response.status_code == 202, response.text
    resources = response.json()["resourceConfig"]
    assert (resources["memoryMb"], resources["cpu"], resources["gpu"]) == (8192, 4.0, "preferred")
    millis = train_body(data, resourceConfig={"memory": "512Mi", "cpu": "500m"})
    resources = client.post(f"{API}/models/iris/train", json=millis, headers=headers).json()["resourceConfig"]
    assert (resources["memoryMb"], resources["cpu"]) == (512, 0.5)
    plain = train_body(data, resourceConfig={"memory": 1024, "cpu": 2})  # numbers keep their old meaning
    resources = client.post(f"{API}/models/iris/train", json=plain, headers=headers).json()["resourceConfig"]
    assert (resources["memoryMb"], resources["cpu"]) == (1024, 2.0)


@pytest.mark.parametrize(
    ("resources", "field", "says"),
    [
        ({"memory": "8GB"}, "resourceConfig.memory", "Kubernetes quantity"),
        ({"memory": "32Mi"}, "resourceConfig.memory", "at least 64 MB"),
        ({"memory": 10}, "resourceConfig.memory", "at least 64 MB"),
        ({"cpu": "0"}, "resourceConfig.cpu", "more than 0"),
        ({"cpu": "2k"}, "resourceConfig.cpu", "at most 1024"),
        ({"cpu": "four"}, "resourceConfig.cpu", "Kubernetes quantity"),
    ],
)
def test_a_quantity_that_is_wrong_is_refused_naming_the_field(
    client: TestClient, auth: Auth, datasets: Path, resources: dict[str, Any], field: str, says: str
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    body = train_body(write_iris_csv(datasets / "iris.csv"), resourceConfig=resources)
    response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    named = [message for name, message in errors.items() if name.endswith(field)]
    assert named and says in named[0], errors
    assert client.get(f"{API}/training-jobs", headers=headers).json()["items"] == []


def test_the_product_specs_train_body_picks_the_algorithm_and_the_format_and_says_so(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    """The spec's body names no algorithm and no format; the job takes the framework's default for the
    model's task and the format from the file's extension, and says which."""
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    spec = {
        "trainingConfig": {"epochs": 100, "batchSize": 32, "learningRate": 0.001},
        "datasetConfig": {"trainPath": str(data), "target": "species"},
        "resourceConfig": {"gpu": True, "memory": "8Gi", "cpu": "4"},
    }
    submitted = client.post(f"{API}/models/iris/train", json=spec, headers=headers)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["trainingConfig"]["algorithm"] == "sklearn.ensemble.RandomForestClassifier"
    assert "named no algorithm" in job["trainingConfig"]["algorithmChosenBecause"]
    assert job["datasetConfig"]["format"] == "csv"
    done = wait_for(client, headers, job["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    row = dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
    assert (
        client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers).json()["prediction"]
        == "virginica"
    )


def test_a_regression_model_gets_a_regressor(client: TestClient, auth: Auth, datasets: Path) -> None:
    headers = auth("editor")
    iris_model(client, headers, "petals", category="regression")
    path = datasets / "petals.csv"
    x, _ = load_iris(return_X_y=True)
    path.write_text(",".join(IRIS_FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in x))
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": str(path), "target": "petal_width"}}
    job = client.post(f"{API}/models/petals/train", json=body, headers=headers)
    assert job.status_code == 202, job.text
    assert job.json()["trainingConfig"]["algorithm"] == "sklearn.ensemble.RandomForestRegressor"


def test_a_named_algorithm_is_kept_and_nothing_is_said_of_a_choice(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    body = train_body(
        write_iris_csv(datasets / "iris.csv"), algorithm="sklearn.tree.DecisionTreeClassifier", params={}
    )
    job = client.post(f"{API}/models/iris/train", json=body, headers=headers).json()
    assert job["trainingConfig"]["algorithm"] == "sklearn.tree.DecisionTreeClassifier"
    assert "algorithmChosenBecause" not in job["trainingConfig"]


def test_a_path_whose_format_cannot_be_told_asks_for_the_format(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.data")
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": str(data), "target": "species"}}
    response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert "extension does not say it" in errors["datasetConfig.format"]


SPEC_BODY = {
    "trainingConfig": {"epochs": 100, "batchSize": 32, "learningRate": 0.001},
    "datasetConfig": {"trainPath": "s3://bucket/train/", "validationPath": "s3://bucket/val/"},
    "resourceConfig": {"gpu": True, "memory": "8Gi", "cpu": "4"},
}


def test_the_product_specs_train_body_works_as_written_on_s3_folders(
    moto_server: Any, engine: Any, database_url: str, tmp_path: Path
) -> None:
    """The spec's body, pasted unchanged: folders (S3 prefixes) of csv parts, no format, no target, no
    algorithm, gpu true. The job tells the format from the files, takes the column named ``label`` as the
    target and the framework's default algorithm, says why for each, and trains on the CPU it has."""
    s3 = moto_server.client()
    s3.create_bucket(Bucket="bucket")
    shuffled = np.random.default_rng(0).permutation(150)
    x, y = load_iris(return_X_y=True)
    for key, rows in (
        ("train/part-0.csv", shuffled[:60]),
        ("train/part-1.csv", shuffled[60:120]),
        ("val/part-0.csv", shuffled[120:]),
    ):
        body = ",".join([*IRIS_FEATURES, "label"]) + "\n"
        body += "".join(",".join([*map(str, x[i]), SPECIES[y[i]]]) + "\n" for i in rows)
        s3.put_object(Bucket="bucket", Key=key, Body=body.encode())
    container, headers = own_service(database_url, tmp_path / "data", **s3_settings(moto_server))
    with TestClient(create_app(container)) as client:
        iris_model(client, headers)
        submitted = client.post(f"{API}/models/iris/train", json=SPEC_BODY, headers=headers)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["datasetConfig"]["format"] == "csv"
        assert job["datasetConfig"]["target"] == "label"
        assert "'label' is the one column named label" in job["datasetConfig"]["targetChosenBecause"]
        assert job["trainingConfig"]["algorithm"] == "sklearn.ensemble.RandomForestClassifier"
        assert "named no algorithm" in job["trainingConfig"]["algorithmChosenBecause"]

        done = wait_for(client, headers, job["id"], *FINISHED)
        assert done["status"] == "succeeded", done["error"]
        assert done["version"] == 1
        assert done["metrics"]["validation_accuracy"] > 0.8
        # gpu: true prefers a GPU; without one where the job ran, it trained on the CPU and says so.
        assert (done["resourceConfig"]["gpu"], done["device"]) == ("preferred", "cpu")
        assert "none is available to this job: it trains on the CPU" in done["deviceChosenBecause"]
        assert [d["uri"] for d in done["datasetFingerprint"]] == ["s3://bucket/train/", "s3://bucket/val/"]
        version = client.get(f"{API}/models/iris/versions/1", headers=headers).json()
        assert version["lineage"]["trainingJob"] == job["id"]
        row = dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
        answer = client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers)
        assert answer.json()["prediction"] == "virginica"


def write_iris_parts(folder: Path, *slices: slice, label: str = "label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(slices):
        text = write_iris_csv(folder / f"part-{index}.csv", rows=rows).read_text()
        (folder / f"part-{index}.csv").write_text(text.replace("species", label, 1))
    return folder


def test_a_local_folder_of_csv_parts_trains_without_a_format_or_target(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    folder = write_iris_parts(datasets / "iris", slice(0, 150, 2), slice(1, 150, 2))
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": f"{folder}/"}}
    submitted = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    assert (submitted.json()["datasetConfig"]["format"], submitted.json()["datasetConfig"]["target"]) == (
        "csv",
        "label",
    )
    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]


def test_a_target_no_rule_can_choose_is_asked_for_listing_the_columns(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    create_model(client, headers, "iris")  # no inputSchema: the features are not known either
    folder = write_iris_parts(datasets / "iris", slice(0, 150), label="species")
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": str(folder)}}
    response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == {"datasetConfig.target"}
    assert errors["datasetConfig.target"].endswith(
        "columns: sepal_length, sepal_width, petal_length, petal_width, species"
    )


def test_an_empty_folder_is_a_422_naming_the_path(client: TestClient, auth: Auth, datasets: Path) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    (datasets / "empty").mkdir()
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": f"{datasets / 'empty'}/"}}
    response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == {"datasetConfig.trainPath"}
    assert errors["datasetConfig.trainPath"].startswith("empty is a folder with no .csv or .parquet files")


def test_a_part_with_other_columns_is_a_422_naming_the_file(
    client: TestClient, auth: Auth, datasets: Path
) -> None:
    headers = auth("editor")
    iris_model(client, headers)
    folder = write_iris_parts(datasets / "iris", slice(0, 75), slice(75, 150))
    (folder / "part-2.csv").write_text("sepal_length,label\n5.0,setosa\n")
    body = {"trainingConfig": {}, "datasetConfig": {"trainPath": str(folder), "target": "label"}}
    response = client.post(f"{API}/models/iris/train", json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert errors["datasetConfig.trainPath"].startswith(
        "iris/part-2.csv: its columns differ from those of iris/part-0.csv"
    )
