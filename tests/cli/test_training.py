"""``aiservice train --follow`` and ``aiservice jobs`` against a live service."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sklearn.datasets import load_iris

from aiservice.client import Client
from tests.cli.conftest import Run, error_line

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def uploaded_dataset(service: str, token: str, tmp_path: Path, rows: int = 150) -> str:
    """The iris data set's first ``rows`` rows (the first 50 are all setosa), uploaded; its URI."""
    iris = load_iris()
    path = tmp_path / "iris.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        pairs = list(zip(iris.data, iris.target, strict=True))[:rows]
        writer.writerows([*row, iris.target_names[t]] for row, t in pairs)
    with Client(service, token, "acme") as sdk:
        return sdk.datasets.upload(path, name="iris").uri


def test_train_follows_a_job_to_its_version_and_jobs_show_it(
    cli: Run, service: str, token: str, tmp_path: Path
) -> None:
    uri = uploaded_dataset(service, token, tmp_path)
    cli("models", "create", "iris", "--framework", "sklearn")
    config = tmp_path / "train.yaml"
    config.write_text(
        "trainingConfig:\n"
        "  algorithm: sklearn.linear_model.LogisticRegression\n"
        "  params: {max_iter: 500}\n"
        f"datasetConfig: {{trainPath: '{uri}', format: csv, target: species}}\n"
    )
    trained = cli("train", "iris", "--config", str(config), "--follow")
    assert trained.exit_code == 0, trained.stdout + trained.stderr
    assert "succeeded" in trained.stdout and "registered version 1 of model" in trained.stdout
    job_id = trained.stdout.split("job ", 1)[1].split()[0]

    listed = json.loads(cli("jobs", "list", "--model", "iris", "-o", "json").stdout)
    assert [(j["id"], j["status"], j["version"]) for j in listed] == [(job_id, "succeeded", 1)]
    assert job_id in cli("jobs", "list").stdout
    shown = cli("jobs", "show", job_id[:8], "-o", "json")
    assert json.loads(shown.stdout)["version"] == 1
    assert "succeeded" in cli("jobs", "show", job_id[:8]).stdout

    refused = cli("jobs", "cancel", job_id[:8])
    assert refused.exit_code == 1 and "already succeeded" in error_line(refused)


def test_a_job_that_fails_while_followed_exits_1(cli: Run, service: str, token: str, tmp_path: Path) -> None:
    uri = uploaded_dataset(service, token, tmp_path, rows=40)  # one class: nothing to tell apart
    cli("models", "create", "iris", "--framework", "sklearn")
    config = tmp_path / "train.yaml"
    config.write_text(
        "trainingConfig: {algorithm: sklearn.linear_model.LogisticRegression}\n"
        f"datasetConfig: {{trainPath: '{uri}', format: csv, target: species}}\n"
    )
    result = cli("train", "iris", "--config", str(config), "--follow")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "failed" in result.stdout and "registered version" not in result.stdout


def test_an_invalid_training_request_names_its_fields(cli: Run, tmp_path: Path) -> None:
    cli("models", "create", "m", "--framework", "sklearn")
    config = tmp_path / "train.yaml"
    config.write_text(
        "trainingConfig: {algorithm: os.system}\n"
        "datasetConfig: {trainPath: /etc/passwd, format: csv, target: y}\n"
    )
    result = cli("train", "m", "--config", str(config))
    line = error_line(result)
    assert result.exit_code == 1 and "trainingConfig.algorithm" in line
