"""Datasets and training through the SDK against a live service: a CSV uploaded, a job trained on it whose
progress streams as events, waited for, listed, and a failed job raised as such."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from aiservice.client import Dataset, JobEvent, TrainingJobError

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]


def iris_csv(path: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        writer.writerows([*row, SPECIES[label]] for row, label in zip(x, y, strict=True))
    return path


@pytest.fixture
def iris(sdk: Any) -> str:
    schema = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in FEATURES]}
    sdk.models.create("iris", "sklearn", input_schema=schema)
    return "iris"


def test_a_dataset_is_uploaded_listed_and_read(sdk: Any, tmp_path: Path) -> None:
    uploaded = sdk.datasets.upload(iris_csv(tmp_path / "iris.csv"), name="flowers")
    assert isinstance(uploaded, Dataset)
    assert (uploaded.name, uploaded.format, uploaded.uri) == ("flowers", "csv", "dataset://flowers")
    assert [d.name for d in sdk.datasets.list()] == ["flowers"]
    assert sdk.datasets.get("flowers").size_bytes == (tmp_path / "iris.csv").stat().st_size
    sdk.datasets.delete("flowers")
    assert list(sdk.datasets.list()) == []


def test_a_job_streams_its_progress_and_registers_a_version(sdk: Any, iris: str, tmp_path: Path) -> None:
    dataset = sdk.datasets.upload(iris_csv(tmp_path / "iris.csv"))
    job = sdk.train(
        iris,
        dataset,
        target="species",
        algorithm="sklearn.ensemble.RandomForestClassifier",
        params={"n_estimators": 10, "random_state": 0},
    )
    assert job.status == "queued"
    assert f"TrainingJob(id='{job.id}', status='queued'" in repr(job)

    events = list(job.stream())
    assert all(isinstance(e, JobEvent) for e in events)
    assert [e.data["status"] for e in events if e.event == "status"] == ["queued", "running", "succeeded"]
    assert job.status == "succeeded" and job.version == 1  # the stream's end refreshed the job

    assert job.wait(timeout=60).metrics["validation_accuracy"] > 0.8
    assert [j.id for j in sdk.jobs.list(model=iris)] == [job.id]
    assert sdk.jobs.get(job.id).version == 1
    row = dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
    assert sdk.predict(iris, row).prediction == "virginica"


def test_waiting_on_a_job_that_ends_without_a_version_raises(
    sdk: Any, iris: str, container: Container
) -> None:
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    job = sdk.train(iris, iris_csv(root / "iris.csv"), target="species")  # a path the service reads
    assert job.cancel().status == "cancelled"
    with pytest.raises(TrainingJobError) as caught:
        job.wait(timeout=60)
    assert caught.value.status == "cancelled" and caught.value.job_id == job.id
