"""``aiservice train --follow`` and ``aiservice jobs`` against a live server, as a user runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import httpx
import pytest
from sklearn.datasets import load_iris

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def cli(server: LiveServer, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "aiservice",
            *args,
            "--url",
            server.base_url,
            "--token",
            token,
            "--tenant",
            "default",
        ],
        cwd=server.folder,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_train_follows_a_job_to_its_version_and_jobs_lists_and_shows_it(live_server: LiveServer) -> None:
    token = live_server.line_starting("export TOKEN=").removeprefix("export TOKEN=")
    datasets = live_server.folder / "var" / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    iris = load_iris()
    with (datasets / "iris.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        writer.writerows([*row, iris.target_names[t]] for row, t in zip(iris.data, iris.target, strict=True))
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "default"}
    schema = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in FEATURES]}
    created = httpx.post(
        f"{live_server.base_url}/api/v1/ai/models",
        json={"name": "iris", "framework": "sklearn", "inputSchema": schema},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    (live_server.folder / "train.yaml").write_text(
        "trainingConfig:\n"
        "  algorithm: sklearn.linear_model.LogisticRegression\n"
        "  params: {max_iter: 500}\n"
        "datasetConfig:\n"
        f"  trainPath: {datasets / 'iris.csv'}\n"
        "  format: csv\n"
        "  target: species\n"
    )

    trained = cli(live_server, token, "train", "iris", "--config", "train.yaml", "--follow")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "succeeded" in trained.stdout
    assert "registered version 1 of model" in trained.stdout
    job_id = trained.stdout.split("job ", 1)[1].split()[0]

    listed = cli(live_server, token, "jobs", "list", "--model", "iris")
    assert listed.returncode == 0, listed.stderr
    assert job_id[:8] in listed.stdout and "succeeded" in listed.stdout

    shown = cli(live_server, token, "jobs", "show", job_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == 1

    refused = cli(live_server, token, "jobs", "cancel", job_id)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: 409 ") and "already succeeded" in refused.stderr


def test_train_reports_an_invalid_request_with_its_fields(live_server: LiveServer) -> None:
    token = live_server.line_starting("export TOKEN=").removeprefix("export TOKEN=")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "default"}
    httpx.post(
        f"{live_server.base_url}/api/v1/ai/models",
        json={"name": "m", "framework": "sklearn"},
        headers=headers,
    )
    (live_server.folder / "train.yaml").write_text(
        "trainingConfig: {algorithm: os.system}\n"
        "datasetConfig: {trainPath: /etc/passwd, format: csv, target: y}\n"
    )
    result = cli(live_server, token, "train", "m", "--config", "train.yaml")
    assert result.returncode == 1
    assert "trainingConfig.algorithm" in result.stderr
    assert "datasetConfig.trainPath" in result.stderr
