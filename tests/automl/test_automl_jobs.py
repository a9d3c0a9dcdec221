"""AutoML trials are training jobs (ADR 28): each trial is a job of the study's model that registers no
version, trials run in parallel as the job runner allows (local processes, or a Ray cluster), a pruned
trial's job is cancelled, a study whose service died is ended and its queued trials cancelled, and each
study's start and end are events in the outbox."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer

from aiservice.application.automl import SearchPlan, Study, TrialLook
from aiservice.application.registry import NewModel
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.domain.tenancy import Principal, Role
from aiservice.domain.training import DatasetConfig, ResourceConfig, TrainingConfig
from aiservice.infrastructure.automl.search import OptunaSearch
from aiservice.infrastructure.db.tables import automl_studies, outbox
from aiservice.interfaces.http.app import create_app
from tests.api.test_training import own_service
from tests.automl.test_automl_api import API, wait_for
from tests.conftest import Auth
from tests.helpers import create_model, wait_until
from tests.ray_cluster import RayCluster
from tests.ray_cluster import ray_cluster as ray_cluster  # the module's Ray head, for the Ray test


def write_cancer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.to_csv(folder / "cancer.csv", index=False)
    return folder / "cancer.csv"


def study_body(data: Path, **extra: Any) -> dict[str, Any]:
    return {
        "datasetConfig": {"trainPath": str(data), "format": "csv", "target": "target"},
        "task": "classification",
        "metric": "accuracy",
        "algorithms": ["linear", "random_forest"],
        "searchSpaces": {"random_forest": {"n_estimators": {"type": "int", "low": 10, "high": 40}}},
        "budget": {"maxTrials": 4},
        "seed": 0,
        **extra,
    }


def job_of(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"{API}/training-jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def overlapping(jobs: list[dict[str, Any]]) -> bool:
    """Whether any two jobs were running at the same time."""
    spans = sorted(
        (datetime.fromisoformat(j["startedAt"]), datetime.fromisoformat(j["finishedAt"])) for j in jobs
    )
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def events(container: Container, kind: str) -> list[dict[str, Any]]:
    with container.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.payload).where(outbox.c.event_type == kind).order_by(outbox.c.position)
        ).all()
    return [dict(row.payload) for row in rows]


@pytest.fixture
def parallel_service(
    engine: Any, database_url: str, tmp_path: Path
) -> Iterator[tuple[Container, TestClient]]:
    container, _ = own_service(database_url, tmp_path / "data", training_concurrency=2)
    with TestClient(create_app(container)) as client:
        yield container, client


def test_each_trial_is_a_training_job_and_trials_run_in_parallel(
    parallel_service: tuple[Container, TestClient], tmp_path: Path
) -> None:
    container, client = parallel_service
    token = container.tokens.issue("tester", "acme", ["editor"], 600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
    data = write_cancer(container.settings.dataset_root_paths[0])
    create_model(client, headers, "cancer")
    started = client.post(f"{API}/models/cancer/automl", json=study_body(data), headers=headers)
    assert started.status_code == 202, started.text
    assert started.json()["parallelTrials"] == 2  # the runner's concurrency
    study = wait_for(client, headers, started.headers["location"])
    assert study["status"] == "succeeded", study["error"]
    assert len(study["trials"]) == 4

    jobs = [job_of(client, headers, trial["jobId"]) for trial in study["trials"]]
    for trial, job in zip(study["trials"], jobs, strict=True):
        assert job["modelId"] == study["modelId"]
        assert job["trainingConfig"]["automlTrial"]["studyId"] == study["id"]
        assert job["trainingConfig"]["automlTrial"]["number"] == trial["number"]
        assert job["trainingConfig"]["algorithm"] == trial["algorithm"]
        if trial["state"] == "complete":
            assert job["status"] == "succeeded"
            assert job["metrics"]["accuracy"] == trial["cvScore"]
            assert job["version"] is None  # a trial registers nothing
            assert len(trial["folds"]) == 3  # the job reported each fold
    assert overlapping(jobs), [(j["startedAt"], j["finishedAt"]) for j in jobs]

    def listed(**query: str) -> set[str]:
        response = client.get(f"{API}/training-jobs", params=query, headers=headers)
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["items"]}

    assert listed(automlStudy=study["id"]) == {j["id"] for j in jobs}
    assert listed(modelId="cancer", kind="trial") == {j["id"] for j in jobs}
    assert listed(modelId="cancer", kind="training") == set()
    assert listed(automlStudy="another-study") == set()

    versions = client.get(f"{API}/models/cancer/versions", headers=headers).json()["items"]
    assert [v["version"] for v in versions] == [1]  # the study's best, not one per trial
    started_events = events(container, "AutoMLStudyStarted")
    assert [e["study_id"] for e in started_events] == [study["id"]]
    assert started_events[0]["algorithms"] == ["linear", "random_forest"]
    ended = events(container, "AutoMLStudyEnded")
    assert [(e["study_id"], e["status"], e["version"]) for e in ended] == [(study["id"], "succeeded", 1)]
    assert ended[0]["best"]["number"] == study["result"]["best"]["number"]
    scored = events(container, "TrainingTrialScored")
    complete = {t["number"] for t in study["trials"] if t["state"] == "complete"}
    assert {e["number"] for e in scored} == complete
    assert not events(container, "TrainingJobSucceeded")  # no consumer mistakes a trial for a training


def test_cancelling_a_study_cancels_its_running_trial_jobs(
    client: TestClient, container: Container, auth: Auth
) -> None:
    headers = auth("editor")
    create_model(client, headers, "cancer")
    data = write_cancer(container.settings.dataset_root_paths[0])
    slow = study_body(
        data,
        algorithms=["random_forest"],
        searchSpaces={"random_forest": {"n_estimators": 3000}},
        budget={"maxTrials": 50},
    )
    started = client.post(f"{API}/models/cancer/automl", json=slow, headers=headers)
    assert started.status_code == 202, started.text
    url = started.headers["location"]
    job_ids: list[str] = []

    def a_trial_runs() -> bool:
        listed = client.get(f"{API}/training-jobs", params={"modelId": "cancer"}, headers=headers).json()
        job_ids[:] = [j["id"] for j in listed["items"] if j["status"] == "running"]
        return bool(job_ids)

    wait_until(a_trial_runs, 60, 0.1, "a trial job to run")
    assert client.post(f"{url}/cancel", headers=headers).json()["status"] == "cancelled"

    def all_cancelled() -> bool:
        return all(job_of(client, headers, job_id)["status"] == "cancelled" for job_id in job_ids)

    wait_until(all_cancelled, 30, 0.1, "the study's trial jobs to be cancelled")
    assert client.get(f"{API}/models/cancer/versions", headers=headers).json()["items"] == []


def test_a_study_whose_service_died_is_ended_and_its_queued_trials_cancelled(container: Container) -> None:
    """No runner runs here (no client: the service is not started), as after a kill."""
    tenant = "acme"
    editor = Principal(subject="tester", tenant_id=tenant, roles=frozenset({Role.EDITOR}))
    created = container.registry.create_model(editor, NewModel(name="cancer", framework="sklearn"))
    long_ago = utcnow() - timedelta(minutes=10)
    study = Study(
        id="00000000-0000-0000-0000-00000000a0a0",
        tenant_id=tenant,
        model_id=created.id,
        status="running",
        request={"task": "classification", "metric": "accuracy", "algorithms": ["linear"]},
        trials=[],
        created_at=long_ago,
        updated_at=long_ago,
    )
    with container.engine.begin() as conn:
        conn.execute(
            automl_studies.insert().values(
                tenant_id=tenant,
                id=study.id,
                model_id=study.model_id,
                status="running",
                request=study.request,
                trials=[],
                created_at=long_ago,
                started_at=long_ago,
                updated_at=long_ago,
            )
        )
    trial = container.training.submit_trial(
        tenant,
        created.id,
        TrainingConfig(algorithm="linear", automl_trial={"studyId": study.id, "number": 0}),
        DatasetConfig(train_path="/nowhere.csv", format="csv", target="target"),
        ResourceConfig(cpu=1),
        f"automl-study:{study.id}",
    )
    other = container.training.submit_trial(  # another study's trial is left alone
        tenant,
        created.id,
        TrainingConfig(algorithm="linear", automl_trial={"studyId": "another", "number": 0}),
        DatasetConfig(train_path="/nowhere.csv", format="csv", target="target"),
        ResourceConfig(cpu=1),
        "automl-study:another",
    )
    assert container.automl is not None
    assert container.automl.recover_silent(silent_for_s=3600) == 0  # silent for 10 minutes only
    assert container.automl.recover_silent() == 1
    with container.engine.connect() as conn:
        row = conn.execute(sa.select(automl_studies).where(automl_studies.c.id == study.id)).one()
    assert row.status == "failed" and "interrupted" in row.error
    assert container.training.get(editor, trial.id).status.value == "cancelled"
    assert container.training.get(editor, other.id).status.value == "queued"
    ended = events(container, "AutoMLStudyEnded")
    assert [(e["study_id"], e["status"]) for e in ended] == [(study.id, "failed")]
    assert container.automl.recover_silent() == 0  # once


class ScriptedTrials:
    """Trial jobs whose fold reports are scripted, to drive the pruner deterministically: trials after
    the first ``good`` report a poor first fold and never finish unless they are stopped."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.submitted: list[tuple[int, str]] = []
        self.stopped: set[str] = set()

    def submit(self, number: int, algorithm: str, params: dict[str, Any]) -> str | None:
        self.submitted.append((number, algorithm))
        return f"job-{number}"

    def look(self, job_id: str) -> TrialLook:
        number = int(job_id.split("-")[1])
        if job_id in self.stopped:
            return TrialLook("cancelled", [0.1])
        if number < self.good:
            return TrialLook("succeeded", [0.9, 0.92, 0.91], score=0.91, seconds=0.1)
        return TrialLook("running", [0.1])

    def stop(self, job_id: str) -> None:
        self.stopped.add(job_id)


def test_the_pruner_cancels_a_hopeless_trials_job(tmp_path: Path) -> None:
    data = write_cancer(tmp_path)
    frame = pd.read_csv(data)
    assert len(frame) > 100
    trials = ScriptedTrials(good=5)
    records: list[dict[str, Any]] = []
    plan = SearchPlan(
        study_id="s",
        dataset=DatasetConfig(train_path=str(data), format="csv", target="target"),
        task="classification",
        metric="accuracy",
        algorithms=("linear",),
        search_spaces={},
        max_trials=8,
        timeout_seconds=None,
        seed=0,
        cv_folds=3,
        work_dir=tmp_path / "work",
        parallel=1,
    )
    outcome = OptunaSearch().run(plan, trials, lambda r: records.append(r) is None, lambda: False)
    assert outcome is not None
    states = [(r["number"], r["state"]) for r in records]
    assert states == [(n, "complete") for n in range(5)] + [(n, "pruned") for n in range(5, 8)]
    assert trials.stopped == {"job-5", "job-6", "job-7"}  # each pruned trial's job was cancelled
    assert outcome.result["best"]["cvScore"] == 0.91


@pytest.mark.xdist_group("ray")
def test_trials_run_as_jobs_on_ray(
    ray_cluster: RayCluster, engine: Any, database_url: str, tmp_path: Path
) -> None:
    container, headers = own_service(
        database_url,
        tmp_path / "data",
        job_runner="ray",
        ray_address=ray_cluster.address,
        training_concurrency=2,
    )
    data = write_cancer(container.settings.dataset_root_paths[0])
    with TestClient(create_app(container)) as client:
        create_model(client, headers, "cancer")
        started = client.post(f"{API}/models/cancer/automl", json=study_body(data), headers=headers)
        assert started.status_code == 202, started.text
        study = wait_for(client, headers, started.headers["location"], timeout=240)
        assert study["status"] == "succeeded", study["error"]
        jobs = [job_of(client, headers, t["jobId"]) for t in study["trials"]]
        assert all(j["trainingConfig"]["automlTrial"]["studyId"] == study["id"] for j in jobs)
        assert overlapping([j for j in jobs if j["finishedAt"]])
        assert study["version"] == 1


def test_a_models_studies_are_listed_newest_first_a_page_at_a_time(
    client: TestClient, container: Container, auth: Auth
) -> None:
    headers = auth("editor")
    create_model(client, headers, "cancer")
    create_model(client, headers, "other")
    data = write_cancer(container.settings.dataset_root_paths[0])
    slow = study_body(data, algorithms=["random_forest"], budget={"maxTrials": 50})
    ids = []
    for _ in range(3):
        started = client.post(f"{API}/models/cancer/automl", json=slow, headers=headers)
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])
        client.post(f"{started.headers['location']}/cancel", headers=headers)
    first = client.get(f"{API}/models/cancer/automl", params={"limit": 2}, headers=auth("viewer"))
    assert first.status_code == 200, first.text
    assert [s["id"] for s in first.json()["items"]] == ids[::-1][:2]
    rest = client.get(
        f"{API}/models/cancer/automl",
        params={"limit": 2, "cursor": first.json()["nextCursor"]},
        headers=headers,
    ).json()
    assert [s["id"] for s in rest["items"]] == ids[:1] and rest["nextCursor"] is None
    assert client.get(f"{API}/models/other/automl", headers=headers).json()["items"] == []
    assert (
        client.get(f"{API}/models/cancer/automl", headers=auth("admin", tenant="globex")).status_code == 404
    )


def test_a_study_of_a_model_declaring_its_classes_answers_the_right_names(
    client: TestClient, container: Container, auth: Auth
) -> None:
    """The declared order is not the sorted order a classifier fitted on names keeps: the study's
    version must still answer each flower's own name."""
    from sklearn.datasets import load_iris

    headers = auth("editor")
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=dict(zip(iris.feature_names, "abcd", strict=True)))
    frame["target"] = [iris.target_names[t] for t in iris.target]
    frame.to_csv(root / "iris.csv", index=False)
    create_model(
        client,
        headers,
        "iris",
        inputSchema={"type": "tabular", "features": [{"name": n, "type": "number"} for n in "abcd"]},
        outputSchema={"classes": ["virginica", "setosa", "versicolor"]},
    )
    body = {
        "datasetConfig": {"trainPath": str(root / "iris.csv"), "format": "csv", "target": "target"},
        "task": "classification",
        "metric": "accuracy",
        "algorithms": ["linear"],
        "budget": {"maxTrials": 2},
    }
    started = client.post(f"{API}/models/iris/automl", json=body, headers=headers)
    assert started.status_code == 202, started.text
    study = wait_for(client, headers, started.headers["location"])
    assert study["status"] == "succeeded", study["error"]
    rows = frame.iloc[[0, 60, 120]]
    answers = client.post(
        f"{API}/models/iris/batch-predict",
        json={"inputs": rows[list("abcd")].to_dict("records")},
        headers=headers,
    )
    assert answers.status_code == 200, answers.text
    assert [o["prediction"] for o in answers.json()["outputs"]] == ["setosa", "versicolor", "virginica"]
