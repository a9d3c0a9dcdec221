"""PyTorch and Keras train from batches streamed off disk: they learn as they do from memory, scale inputs
with the whole file's statistics, fail with the same stages, and a job streams a file above its threshold
through to the metrics it registers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_classification, make_regression

from aiservice.infrastructure.datasets import DatasetError, Table, read_table
from aiservice.infrastructure.datasets.streaming import TableStream, stream_table
from aiservice.infrastructure.jobs import worker
from aiservice.infrastructure.training import trainers
from aiservice.infrastructure.training.spec import FittedModel, Progress, TrainingError, TrainSpec

FEATURES = [f"x{i}" for i in range(8)]
LABELS = np.asarray(["no", "yes"])
NETS = ["pytorch", "keras"]


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "label"])
        writer.writerows([*row, label] for row, label in zip(X.tolist(), y.tolist(), strict=True))
    return str(path)


class Files:
    """A separable two-class problem (labels "no"/"yes", features far from standardised) and a regression,
    as csv files split into training, validation and test rows."""

    def __init__(self, folder: Path) -> None:
        X, y = make_classification(
            1500, len(FEATURES), n_informative=4, class_sep=2.0, flip_y=0.0, random_state=0
        )
        X = X * 50 + 1000  # unscaled inputs: the network must standardise them with the file's statistics
        self.X, self.y = X, LABELS[y]
        self.train = write_csv(folder / "train.csv", X[:1000], self.y[:1000])
        self.validation = write_csv(folder / "validation.csv", X[1000:1250], self.y[1000:1250])
        self.test = write_csv(folder / "test.csv", X[1250:], self.y[1250:])
        R, target = make_regression(1200, len(FEATURES), n_informative=4, noise=5.0, random_state=0)
        self.regression = write_csv(folder / "regression.csv", R, target + 300)
        self.target_std = float(np.std(target))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("streams"))


def stream(uri: str, batch_rows: int = 128) -> TableStream:
    return stream_table(uri, "csv", "label", None, {}, batch_rows)


def table(uri: str) -> Table:
    return read_table(uri, "csv", "label", None, {})


def mlp(framework: str, task: str = "classification", **overrides: Any) -> TrainSpec:
    options: dict[str, Any] = {"epochs": 8, "batch_size": 32, "learning_rate": 1e-2, **overrides}
    return TrainSpec(framework, "mlp", {"hiddenSizes": [16]}, task, **options)


def accuracy(fitted: FittedModel, data: Table) -> float:
    return float(np.mean(fitted.predict(data.X).values == data.y))


# --- trainers ---


@pytest.mark.parametrize("framework", NETS)
def test_network_trained_on_a_stream_classifies_held_out_rows_well(files: Files, framework: str) -> None:
    reports: list[Progress] = []
    fitted = trainers.fit(mlp(framework), stream(files.train), stream(files.validation), reports.append)
    assert accuracy(fitted, table(files.test)) >= 0.9
    assert [report.epoch for report in reports] == list(range(1, 9))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(reports[-1].metrics)


@pytest.mark.parametrize("framework", NETS)
def test_stream_trains_a_classifier_with_the_labels_of_the_file(files: Files, framework: str) -> None:
    fitted = trainers.fit(mlp(framework, epochs=1), stream(files.train), None, lambda _: None)
    probabilities = fitted.predict(table(files.test).X).probabilities
    assert probabilities is not None
    assert probabilities.shape == (250, 2)
    assert set(fitted.predict(table(files.test).X).values.tolist()) <= {"no", "yes"}


@pytest.mark.parametrize("framework", NETS)
def test_regression_on_a_stream_beats_predicting_the_mean(files: Files, framework: str) -> None:
    data = stream(files.regression)
    fitted = trainers.fit(mlp(framework, "regression", epochs=20), data, None, lambda _: None)
    whole = table(files.regression)
    rmse = float(np.sqrt(np.mean((np.asarray(fitted.predict(whole.X).values) - whole.y) ** 2)))
    assert np.isfinite(rmse)
    assert rmse < 0.5 * files.target_std


def test_a_stream_and_the_same_table_standardise_inputs_alike(files: Files) -> None:
    from_stream = trainers.fit(mlp("pytorch", epochs=1), stream(files.train), None, lambda _: None)
    from_table = trainers.fit(mlp("pytorch", epochs=1), table(files.train), None, lambda _: None)
    layers = [fitted.module[0][0] for fitted in (from_stream, from_table)]  # type: ignore[attr-defined]
    np.testing.assert_allclose(layers[0].mean.numpy(), layers[1].mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(layers[0].std.numpy(), layers[1].std.numpy(), rtol=1e-5)


@pytest.mark.parametrize("framework", NETS)
def test_stream_and_table_can_be_mixed(files: Files, framework: str) -> None:
    reports: list[Progress] = []
    trainers.fit(mlp(framework, epochs=2), stream(files.train), table(files.validation), reports.append)
    assert all("val_accuracy" in report.metrics for report in reports)


def relabelled(path: Path, uri: str, label: str) -> str:
    data = table(uri)
    y = data.y.astype(object)
    y[-1] = label
    return write_csv(path, data.X, y)


@pytest.mark.parametrize("framework", NETS)
def test_validation_label_the_stream_never_trained_on_is_a_data_error(
    files: Files, framework: str, tmp_path: Path
) -> None:
    validation = relabelled(tmp_path / "v.csv", files.validation, "maybe")
    with pytest.raises(TrainingError, match="labels the training data never shows: 'maybe'") as caught:
        trainers.fit(mlp(framework, epochs=2), stream(files.train), stream(validation), lambda _: None)
    assert caught.value.stage == "data"


@pytest.mark.parametrize("framework", NETS)
def test_a_bad_value_far_down_the_stream_fails_with_its_row(
    files: Files, framework: str, tmp_path: Path
) -> None:
    lines = Path(files.train).read_text().splitlines()
    lines[900] = ",".join(["oops"] * len(FEATURES) + ["no"])
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError, match=r"bad\.csv: column 'x0' has a non-numeric value 'oops' at row 900"
    ):
        trainers.fit(mlp(framework, epochs=1), stream(str(bad)), None, lambda _: None)


def test_single_class_stream_is_a_data_error(tmp_path: Path) -> None:
    only = write_csv(tmp_path / "one.csv", np.ones((10, len(FEATURES))), np.asarray(["no"] * 10))
    with pytest.raises(TrainingError, match="at least 2 classes; the training data has 1") as caught:
        trainers.fit(mlp("pytorch"), stream(only), None, lambda _: None)
    assert caught.value.stage == "data"


def test_text_target_cannot_be_regressed_from_a_stream(files: Files) -> None:
    with pytest.raises(TrainingError, match="Regression needs a numeric target"):
        trainers.fit(mlp("keras", "regression"), stream(files.train), None, lambda _: None)


def test_frameworks_that_train_in_memory_refuse_a_stream(files: Files) -> None:
    spec = TrainSpec("sklearn", "sklearn.linear_model.LogisticRegression", {}, "classification")
    with pytest.raises(TrainingError, match="sklearn trains on data in memory") as caught:
        trainers.fit(spec, stream(files.train), None, lambda _: None)
    assert caught.value.stage == "data"


# --- a job through the worker ---


def job(files: Files, out: Path, framework: str = "pytorch", **dataset: Any) -> dict[str, Any]:
    """A training request as the job runners send it, streaming every file (``streamAboveBytes`` 0)."""
    return {
        "jobId": "job-1",
        "framework": framework,
        "configuration": {},
        "inputSchema": {"type": "tabular", "features": [{"name": n, "type": "number"} for n in FEATURES]},
        "outputSchema": {},
        "training": {"algorithm": "mlp", "params": {"hiddenSizes": [16]}, "epochs": 6, "learningRate": 0.01},
        "dataset": {"trainPath": files.train, "format": "csv", "target": "label", **dataset},
        "gpu": "none",
        "outDir": str(out),
        "storageOptions": {},
        "streamAboveBytes": 0,
    }


def run(request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    return worker.train_request(request, messages.append), messages


@pytest.fixture
def no_whole_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to read a dataset whole: what the job does must be streamed."""

    def refuse(*args: Any, **kwargs: Any) -> Table:
        raise AssertionError("read whole")

    monkeypatch.setattr(worker, "read_table", refuse)


@pytest.mark.usefixtures("no_whole_reads")
def test_job_streams_a_file_above_its_threshold_and_scores_held_out_rows(
    files: Files, tmp_path: Path
) -> None:
    result, messages = run(job(files, tmp_path))
    assert Path(result["artifact"]).is_file()
    assert result["metrics"]["validation_accuracy"] >= 0.85
    assert result["params"]["validationSplit"] == 0.2
    assert result["params"]["classes"] == ["no", "yes"]
    assert [m["epoch"] for m in messages if "epoch" in m] == list(range(1, 7))


@pytest.mark.usefixtures("no_whole_reads")
def test_job_streams_validation_and_test_files_and_scores_both(files: Files, tmp_path: Path) -> None:
    result, _ = run(job(files, tmp_path, "keras", validationPath=files.validation, testPath=files.test))
    metrics = result["metrics"]
    assert metrics["validation_accuracy"] >= 0.85
    assert metrics["test_accuracy"] >= 0.85
    assert "validationSplit" not in result["params"]


@pytest.mark.usefixtures("no_whole_reads")
def test_job_maps_streamed_labels_onto_the_declared_classes(files: Files, tmp_path: Path) -> None:
    request = job(files, tmp_path, testPath=files.test)
    request["outputSchema"] = {"classes": ["yes", "no"]}  # not in sorted order: served by position
    result, _ = run(request)
    assert result["params"]["classes"] == ["yes", "no"]
    assert result["metrics"]["test_accuracy"] >= 0.85


CODES = {"kind": "position", "values": {"0": "no", "1": "yes"}}


def label_codes(files: Files, folder: Path) -> str:
    """The training rows with their labels written as positions in ["no", "yes"]: 0 and 1."""
    return write_csv(folder / "codes.csv", files.X[:1000], (files.y[:1000] == "yes").astype(int))


@pytest.mark.usefixtures("no_whole_reads")
def test_job_reads_streamed_label_codes_as_the_classes_its_mapping_names(
    files: Files, tmp_path: Path
) -> None:
    request = job(files, tmp_path, trainPath=label_codes(files, tmp_path), labelMapping=CODES)
    request["configuration"] = {"classes": ["no", "yes"]}
    result, _ = run(request)
    assert result["configuration"]["classes"] == ["no", "yes"]  # what the version serves, not 0 and 1
    assert result["metrics"]["validation_accuracy"] >= 0.85


def test_a_mapping_onto_classes_the_model_no_longer_declares_fails_the_job(
    files: Files, tmp_path: Path
) -> None:
    request = job(files, tmp_path, trainPath=label_codes(files, tmp_path), labelMapping=CODES)
    request["outputSchema"] = {"classes": ["nay", "yea"]}  # renamed after the job was submitted
    with pytest.raises(
        TrainingError, match=r"maps the label 0 to 'no' by position.*no longer declares"
    ) as caught:
        run(request)
    assert caught.value.stage == "dataset"


def test_job_refuses_a_streamed_label_the_declaration_lacks(files: Files, tmp_path: Path) -> None:
    request = job(files, tmp_path)
    request["outputSchema"] = {"classes": ["no", "maybe"]}
    with pytest.raises(TrainingError, match=r"outputSchema\.classes does not know: yes") as caught:
        run(request)
    assert caught.value.stage == "dataset"


def test_job_below_its_threshold_reads_the_file_whole(
    files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> TableStream:
        raise AssertionError("streamed")

    monkeypatch.setattr(worker, "stream_table", refuse)
    request = job(files, tmp_path)
    del request["streamAboveBytes"]  # the default: far above these small files
    result, _ = run(request)
    assert result["metrics"]["validation_accuracy"] >= 0.85


def test_streamed_regression_job_reports_a_finite_rmse(files: Files, tmp_path: Path) -> None:
    request = job(files, tmp_path, trainPath=files.regression)
    request["training"]["epochs"] = 15
    result, _ = run(request)
    assert np.isfinite(result["metrics"]["validation_rmse"])
    assert result["metrics"]["validation_rmse"] < 0.5 * files.target_std


def test_streamed_parquet_job_trains_and_evaluates(files: Files, tmp_path: Path) -> None:
    data = table(files.train)
    columns = {name: data.X[:, i] for i, name in enumerate(FEATURES)}
    pq.write_table(pa.table({**columns, "label": data.y}), tmp_path / "train.parquet", row_group_size=256)
    result, _ = run(job(files, tmp_path, trainPath=str(tmp_path / "train.parquet"), format="parquet"))
    assert result["metrics"]["validation_accuracy"] >= 0.85
