"""AutoML studies, optimised versions, edge export bundles and imported MLflow folders through the SDK against
a live service (sync and async): a study streams its trials and registers its best, a cancelled one
raises on ``wait()``; an optimised version is measured and an accuracy drop raises ``AccuracyDropError``
with its figures; a bundle is streamed to disk and matches its ETag; a hand-built MLflow folder imports
and predicts like the estimator it holds."""

from __future__ import annotations

import csv
import inspect
import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io as sio
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from aiservice.client import (
    AccuracyDropError,
    AutoMLStudyError,
    Client,
    JobEvent,
    NotFoundError,
    ServiceUnreachableError,
    StudyState,
    ValidationError,
    Version,
    _follow,
    studies,
)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
X, Y = load_iris(return_X_y=True)


def iris_csv(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        writer.writerows([*row, label] for row, label in zip(X, Y, strict=True))
    return path


@cache
def mlp() -> MLPClassifier:
    return MLPClassifier((16,), max_iter=2000, random_state=0).fit(X, Y)


def test_the_async_handles_and_resources_have_the_sync_surface() -> None:
    from aiservice.client import aio_resources, resources, studies

    pairs = [
        (studies.AutoMLStudy, studies.AsyncAutoMLStudy),
        (resources.AutoML, aio_resources.AsyncAutoML),
        (resources.Versions, aio_resources.AsyncVersions),
        (resources.Models, aio_resources.AsyncModels),
    ]
    for sync_kind, async_kind in pairs:
        public = {n for n in dir(sync_kind) if not n.startswith("_")}
        assert public == {n for n in dir(async_kind) if not n.startswith("_")}, sync_kind
        for name in public:
            ours, theirs = getattr(sync_kind, name), getattr(async_kind, name)
            if callable(ours):
                assert (
                    inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
                )


def test_a_study_streams_its_trials_and_registers_its_best_trial(sdk: Any, tmp_path: Path) -> None:
    sdk.models.create("iris", "sklearn")
    dataset = sdk.datasets.upload(iris_csv(tmp_path / "iris.csv"))
    with pytest.raises(ValidationError) as refused:
        sdk.automl.start("iris", dataset, target="species", task="classification", metric="rmse?")
    assert {"metric", "budget"} <= set(refused.value.fields)  # no budget given: the service wants one

    study = sdk.automl.start(
        "iris",
        dataset,
        target="species",
        task="classification",
        metric="accuracy",
        max_trials=2,
        algorithms=["linear"],
        cv_folds=2,
        seed=0,
    )
    assert study.status in ("queued", "running")
    events = list(study.stream())
    assert all(isinstance(e, JobEvent) for e in events)
    assert [e.event for e in events] == ["trial", "trial", "status"]
    assert [e.id for e in events] == [1, 2, 3]
    assert {e.data["algorithm"] for e in events[:2]} == {"linear"}
    assert events[-1].data["status"] == "succeeded" and events[-1].data["version"] == 1
    # the stream's end refreshed the handle
    assert (study.status, study.version) == ("succeeded", 1)
    assert study.best is not None and study.best["algorithm"] == "linear"
    assert "status='succeeded', trials=2, best='linear accuracy=" in repr(study)
    assert repr(study).endswith("version=1)")

    assert study.wait(timeout=60).version == 1
    assert isinstance(study.state, StudyState) and study.state.best_score is not None
    assert sdk.versions.get("iris", 1).raw["lineage"]["automlStudyId"] == study.id
    assert sdk.automl.get("iris", study.id).leaderboard[0]["cvScore"] == study.state.best_score
    trial_jobs = {job.id for job in sdk.jobs.list(automl_study=study.id)}
    assert trial_jobs == {t["jobId"] for t in study.state.trials}
    assert {job.id for job in sdk.jobs.list(model="iris", kind="trial")} == trial_jobs
    assert list(sdk.jobs.list(model="iris", kind="training")) == []


def test_a_cancelled_study_is_listed_newest_first_and_raises_on_wait(sdk: Any, tmp_path: Path) -> None:
    sdk.models.create("iris", "sklearn")
    dataset = sdk.datasets.upload(iris_csv(tmp_path / "iris.csv"))
    started = [
        sdk.automl.start(
            "iris",
            dataset,
            target="species",
            task="classification",
            metric="accuracy",
            max_trials=50,
            algorithms=["random_forest"],
        )
        for _ in range(2)
    ]
    cancelled = [sdk.automl.cancel("iris", s.id) for s in started[:1]] + [started[1].cancel()]
    assert [s.status for s in cancelled] == ["cancelled", "cancelled"]
    listed = list(sdk.automl.list("iris", page_size=1))  # one page at a time
    assert [s.id for s in listed] == [s.id for s in reversed(started)]
    with pytest.raises(AutoMLStudyError) as caught:
        listed[0].wait(timeout=30)
    assert (caught.value.study_id, caught.value.status) == (started[1].id, "cancelled")
    assert list(sdk.versions.list("iris")) == []
    with pytest.raises(NotFoundError):
        sdk.automl.get("iris", "0" * 32)


def test_an_optimised_version_is_registered_and_a_drop_past_the_bound_raises(sdk: Any) -> None:
    sdk.models.create("skl", "sklearn", category="classification")
    sdk.models.upload_version("skl", mlp())
    rows, labels = X[::3], Y[::3]  # numpy arrays are sent as lists

    created = sdk.versions.optimize(
        "skl", 1, "quantization", rows=rows, labels=labels, max_accuracy_drop=0.05, latency_calls=5
    )
    assert isinstance(created, Version) and created.version == 1
    record = created.raw["lineage"]["optimization"]
    assert (record["method"], record["sourceVersion"]) == ("quantization", 1)
    assert sdk.models.get("skl-onnx").id == created.model_id

    with pytest.raises(AccuracyDropError) as caught:  # calibrated on rows far out of range: useless INT8
        sdk.versions.optimize(
            "skl",
            1,
            "quantization",
            mode="static",
            calibration_rows=np.full((4, 4), 1e4),
            rows=rows,
            labels=labels,
            target_model="skl-int8",
            max_accuracy_drop=0.01,
            latency_calls=5,
        )
    error = caught.value
    assert isinstance(error, ValidationError) and error.code == "accuracy-drop-too-large"
    assert "body.maxAccuracyDrop" in error.fields
    assert error.optimization["accuracyAfter"] < error.optimization["accuracyBefore"]
    assert [v.version for v in sdk.versions.list("skl-int8")] == []


def test_a_bundle_is_streamed_to_disk_and_matches_its_etag(sdk: Any, tmp_path: Path) -> None:
    schema = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in FEATURES]}
    sdk.models.create("iris", "sklearn", input_schema=schema)
    sdk.models.upload_version("iris", LogisticRegression(max_iter=500).fit(X, Y))

    out = tmp_path / "out"
    out.mkdir()
    written = sdk.versions.export("iris", 1, "onnx", out)  # a folder: the service's file name in it
    assert written == out / "iris-v1-onnx.zip"
    with zipfile.ZipFile(written) as bundle:
        assert sorted(bundle.namelist()) == ["README.md", "model.onnx", "run.py", "schema.json"]
        assert json.loads(bundle.read("schema.json"))["features"] == FEATURES
    chosen = sdk.versions.export("iris", 1, path=out / "edge.zip")
    assert chosen.read_bytes() == written.read_bytes()  # the bundle is reproducible

    with pytest.raises(NotFoundError):
        sdk.versions.export("iris", 9, "onnx", out / "missing.zip")
    with pytest.raises(ValueError, match="format must be one of"):
        sdk.versions.export("iris", 1, "coreml", out / "x.zip")
    assert sorted(p.name for p in out.iterdir()) == ["edge.zip", "iris-v1-onnx.zip"]  # nothing half-done


def mlflow_folder(folder: Path, estimator: Any) -> Path:
    """An MLflow sklearn model folder saved with skops, laid out as ``mlflow.sklearn.save_model`` does."""
    folder.mkdir(parents=True)
    document = {
        "artifact_path": "model",
        "flavors": {
            "sklearn": {
                "pickled_model": "model.skops",
                "serialization_format": "skops",
                "sklearn_version": "1.5.2",
                "code": None,
            },
            "python_function": {
                "loader_module": "mlflow.sklearn",
                "data": "model.skops",
                "python_version": "3.11",
            },
        },
        "mlflow_version": "2.17.2",
        "run_id": "5a2b0c9d8e7f4a1b9c3d2e1f0a9b8c7d",
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    (folder / "model.skops").write_bytes(bytes(sio.dumps(estimator)))
    return folder


def test_an_mlflow_folder_is_imported_and_predicts_like_its_estimator(sdk: Any, tmp_path: Path) -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y)
    folder = mlflow_folder(tmp_path / "model", estimator)
    sdk.models.create("imported", "sklearn")

    version = sdk.models.import_model(
        "imported", folder, source="mlflow", metadata={"description": "from mlflow"}
    )
    assert isinstance(version, Version) and version.version == 1
    assert version.description == "from mlflow"
    assert version.raw["lineage"]["importedFrom"] == "mlflow"
    answers = sdk.predict("imported", X[::25].tolist())
    assert [a.prediction for a in answers] == estimator.predict(X[::25]).tolist()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"model/{file.name}")
    assert (
        sdk.models.import_model("imported", buffer.getvalue()).version == 2
    )  # bytes; source told by MLmodel

    with pytest.raises(ValidationError) as refused:
        sdk.models.import_model("imported", b"PK\x03\x04 not a zip")
    assert refused.value.status == 422
    with pytest.raises(ValueError, match="source must be one of"):
        sdk.models.import_model("imported", folder, source="tensorflow-hub")


STUDY = {"id": "s-1", "modelId": "m-1", "status": "running", "task": "classification", "metric": "accuracy"}


class CutAfterOneTrial(httpx.SyncByteStream):
    def __iter__(self) -> Any:
        yield b'id: 1\nevent: trial\ndata: {"number": 0, "state": "complete", "cvScore": 0.9}\n\n'
        raise httpx.ReadError("connection reset by peer")


@pytest.mark.parametrize("comes_back", [True, False])
def test_a_cut_study_stream_resumes_after_the_last_trial_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch, comes_back: bool
) -> None:
    """The service is a stand-in (httpx's MockTransport) here, so the connection can be cut at will."""
    calls: list[str | None] = []

    def service(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            calls.append(request.headers.get("last-event-id"))
            if len(calls) == 1:
                return httpx.Response(200, stream=CutAfterOneTrial())
            if comes_back:
                rest = (
                    b'id: 2\nevent: trial\ndata: {"number": 1, "state": "pruned"}\n\n'
                    b'id: 3\nevent: status\ndata: {"status": "succeeded", "version": 1}\n\n'
                )
                return httpx.Response(200, content=rest)
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={**STUDY, "status": "succeeded", "version": 1})

    monkeypatch.setattr(_follow, "reconnect_delay", lambda failures: 0.0)
    with Client("http://svc.test", "t", "acme") as client:
        client._http = httpx.Client(base_url="http://svc.test", transport=httpx.MockTransport(service))
        study = studies.AutoMLStudy(client, StudyState.from_json(STUDY))
        if comes_back:
            assert [(e.id, e.event) for e in study.stream()] == [(1, "trial"), (2, "trial"), (3, "status")]
            assert calls == [None, "1"] and study.version == 1
        else:
            with pytest.raises(ServiceUnreachableError):
                list(study.stream())
            assert calls == [None] + ["1"] * _follow.RECONNECTS
