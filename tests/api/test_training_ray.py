"""Training jobs on the Ray runner (``JOB_RUNNER=ray``), against a real Ray head started by the test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.interfaces.http.app import create_app
from tests.api.test_training import (
    API,
    FINISHED,
    IRIS_FEATURES,
    iris_model,
    own_service,
    parse_sse,
    slow_torch_job,
    train_body,
    wait_for,
    wait_for_epoch,
    write_iris_csv,
)
from tests.helpers import create_model, wait_until
from tests.ray_cluster import RayCluster
from tests.ray_cluster import ray_cluster as ray_cluster  # the module's Ray head

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture
def ray_service(
    ray_cluster: RayCluster, engine: Any, database_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    container, headers = own_service(
        database_url, tmp_path / "data", job_runner="ray", ray_address=ray_cluster.address
    )
    datasets = container.settings.dataset_root_paths[0]
    datasets.mkdir(parents=True)
    with TestClient(create_app(container)) as client:
        yield client, headers, datasets


def test_a_job_on_ray_trains_streams_progress_and_its_version_predicts(
    ray_service: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, datasets = ray_service
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    job = client.post(f"{API}/models/iris/train", json=train_body(data), headers=headers)
    assert job.status_code == 202, job.text

    with client.stream("GET", f"{API}/training-jobs/{job.json()['id']}/events", headers=headers) as stream:
        events = parse_sse("".join(stream.iter_text()))
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    done = wait_for(client, headers, job.json()["id"], *FINISHED)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_accuracy"] > 0.8

    row = dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
    answer = client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "virginica"


def training_on_ray(client: TestClient, headers: dict[str, str], datasets: Path) -> dict[str, Any]:
    """A long PyTorch job, once it has finished an epoch on the cluster."""
    job = slow_torch_job(client, headers, datasets)
    wait_for(client, headers, job["id"], "running")
    wait_for_epoch(client, headers, job["id"])
    return job


def test_cancelling_a_job_on_ray_ends_its_ray_worker(
    ray_cluster: RayCluster, ray_service: tuple[TestClient, dict[str, str], Path]
) -> None:
    client, headers, datasets = ray_service
    job = training_on_ray(client, headers, datasets)
    workers = ray_cluster.job_processes()
    assert workers, "the job runs in a Ray worker process"

    cancelled = client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=headers)
    assert cancelled.json()["status"] == "cancelled"
    wait_until(lambda: not workers & ray_cluster.job_processes(), 15, what="the worker process to end")
    assert client.get(f"{API}/models/net/versions", headers=headers).json()["items"] == []


def test_a_ray_worker_killed_mid_way_fails_its_job_with_the_reason(
    ray_cluster: RayCluster, ray_service: tuple[TestClient, dict[str, str], Path]
) -> None:
    client, headers, datasets = ray_service
    job = training_on_ray(client, headers, datasets)
    for pid in ray_cluster.job_processes():
        os.kill(pid, signal.SIGKILL)

    failed = wait_for(client, headers, job["id"], *FINISHED, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "crashed"
    assert "Traceback" not in failed["error"]["message"]
    assert client.get(f"{API}/models/net/versions", headers=headers).json()["items"] == []
    assert client.get("/health").status_code == 200


def test_a_gpu_required_job_on_a_cluster_without_gpus_fails_at_once(
    ray_service: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, datasets = ray_service
    x, y = load_iris(return_X_y=True)
    np.savez(datasets / "iris.npz", X=x.astype(np.float32), y=y)
    create_model(client, headers, "net", framework="pytorch", configuration={"inputShape": [4]})
    body = {
        "trainingConfig": {"algorithm": "mlp", "epochs": 2},
        "datasetConfig": {"trainPath": str(datasets / "iris.npz"), "format": "npz"},
        "resourceConfig": {"gpu": "required"},
    }
    job = client.post(f"{API}/models/net/train", json=body, headers=headers).json()
    failed = wait_for(client, headers, job["id"], *FINISHED, timeout=30)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "device"
    assert "GPU" in failed["error"]["message"]


def pytorch_body(datasets: Path, **resources: Any) -> dict[str, Any]:
    x, y = load_iris(return_X_y=True)
    np.savez(datasets / "iris.npz", X=x.astype(np.float32), y=y)
    return {
        "trainingConfig": {"algorithm": "mlp", "params": {"hiddenSizes": [32]}, "epochs": 40,
                           "learningRate": 0.01},
        "datasetConfig": {"trainPath": str(datasets / "iris.npz"), "format": "npz"},
        "resourceConfig": resources,
    }  # fmt: skip


def test_a_pytorch_job_trains_data_parallel_over_ray_train_workers(
    ray_service: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, datasets = ray_service
    configuration = {"inputShape": [4], "task": "classification"}
    create_model(client, headers, "net", framework="pytorch", configuration=configuration)
    job = client.post(f"{API}/models/net/train", json=pytorch_body(datasets, workers=2), headers=headers)
    assert job.status_code == 202, job.text
    done = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["validation_accuracy"] > 0.8
    assert len(done["history"]) == 40  # one progress report per epoch, from the first worker only
    version = client.get(f"{API}/models/net/versions/1", headers=headers).json()
    assert version["params"]["dataParallelWorkers"] == 2  # Ray Train ran two processes

    row = {"input": {"features": [6.7, 3.0, 5.2, 2.3]}}
    answer = client.post(f"{API}/models/net/predict", json=row, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == 2


def test_a_data_parallel_job_is_refused_for_a_framework_other_than_pytorch(
    ray_service: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, datasets = ray_service
    iris_model(client, headers)
    data = write_iris_csv(datasets / "iris.csv")
    response = client.post(
        f"{API}/models/iris/train", json=train_body(data, resourceConfig={"workers": 2}), headers=headers
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["resourceConfig.workers"]


def test_a_job_on_ray_past_its_memory_limit_is_stopped_with_the_reason(
    ray_service: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, datasets = ray_service
    configuration = {"inputShape": [4], "task": "classification"}
    create_model(client, headers, "net", framework="pytorch", configuration=configuration)
    body = pytorch_body(datasets, memory=64)  # MB: less than torch alone takes
    job = client.post(f"{API}/models/net/train", json=body, headers=headers)
    assert job.status_code == 202, job.text
    failed = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "memory"
    assert "64 MB" in failed["error"]["message"]
    assert client.get(f"{API}/models/net/versions", headers=headers).json()["items"] == []
