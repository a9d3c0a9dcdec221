"""Prometheus: every documented metric is exported, labels stay bounded, and the extra port works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from aiservice.infrastructure.observability.metrics import OTHER, BoundedLabel, ServiceMetrics
from tests.api.test_training import FINISHED, iris_model, train_body, wait_for, write_iris_csv
from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai"
SEED_METRICS = (
    "ai_service_requests_total",
    "ai_service_request_duration_ms",
    "ai_service_model_predictions_total",
    "ai_service_model_training_jobs_total",
    "ai_service_inference_duration_ms",
    "ai_service_model_cache_hits_total",
)
MORE_METRICS = (
    "ai_service_model_cache_misses_total",
    "ai_service_model_cache_models",
    "ai_service_batch_size",
    "ai_service_outbox_lag",
    "ai_service_training_jobs_running",
    "ai_service_training_job_duration_seconds",
)


def _exposed(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                name = name.removesuffix(suffix)
            names.add(name)
    return names


def test_metrics_expose_every_listed_metric_after_a_predict_and_a_training_job(
    client: TestClient, auth: Auth, container: Container
) -> None:
    headers = auth("editor")
    create_model(client, headers, "churn")
    assert upload(client, headers, "churn").status_code == 201
    answer = client.post(
        f"{API}/models/churn/predict", json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    client.post(
        f"{API}/models/churn/predict", json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}}, headers=headers
    )
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    iris_model(client, headers)
    job = client.post(
        f"{API}/models/iris/train", json=train_body(write_iris_csv(root / "iris.csv")), headers=headers
    ).json()
    assert wait_for(client, headers, job["id"], *FINISHED)["status"] == "succeeded"

    text = client.get("/metrics").text
    missing = set(SEED_METRICS + MORE_METRICS) - _exposed(text)
    assert not missing, f"not exported: {sorted(missing)}"
    assert 'ai_service_model_training_jobs_total{framework="sklearn",outcome="succeeded"} 1.0' in text
    assert 'ai_service_model_predictions_total{model="churn",outcome="success",version="1"} 2.0' in text


def test_a_label_keeps_its_first_values_and_counts_the_rest_as_other() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER, "a", OTHER]


def test_model_labels_past_the_bound_are_counted_under_other() -> None:
    metrics = ServiceMetrics(max_label_values=1)
    metrics.prediction("first", 1, "success", 1.0)
    metrics.prediction("second", 1, "success", 1.0)
    text = metrics.render().decode()
    assert 'model="first"' in text
    assert 'model="other"' in text
    assert 'model="second"' not in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_are_served_on_their_own_port_when_asked() -> None:
    metrics = ServiceMetrics()
    metrics.observe_request("GET", "/x", 200, 1.0)
    port = _free_port()
    metrics.serve(port, addr="127.0.0.1")
    try:
        text = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        metrics.stop_serving()
    assert 'ai_service_requests_total{method="GET",route="/x",status="200"} 1.0' in text


_WORKER = """
from aiservice.infrastructure.observability.metrics import ServiceMetrics
metrics = ServiceMetrics()
metrics.prediction("churn", 1, "success", 3.0)
"""


def test_several_worker_processes_are_counted_together(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=60)
    reader = (
        "import pathlib, sys\n"
        "from aiservice.infrastructure.observability.metrics import ServiceMetrics\n"
        "print(ServiceMetrics(multiprocess_dir=pathlib.Path(sys.argv[1])).render().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader, str(tmp_path)],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert 'ai_service_model_predictions_total{model="churn",outcome="success",version="1"} 2.0' in out


@pytest.mark.parametrize("name", SEED_METRICS)
def test_each_seed_metric_is_registered_before_any_traffic(name: str) -> None:
    text = ServiceMetrics().render().decode()
    assert f"# TYPE {name.removesuffix('_total')}" in text


def test_a_quota_refusal_is_counted_by_tenant_and_quota(client: TestClient, auth: Auth) -> None:
    response = client.patch(
        f"{API}/tenants/acme",
        json={"quotas": {"maxModels": 1}},
        headers=auth("superadmin", tenant="platform"),
    )
    assert response.status_code == 200, response.text
    create_model(client, auth("editor"), "a")
    refused = client.post(f"{API}/models", json={"name": "b", "framework": "onnx"}, headers=auth("editor"))
    assert refused.status_code == 429
    text = client.get("/metrics").text
    assert 'ai_service_quota_exceeded_total{quota="maxModels",tenant="acme"} 1.0' in text
