"""``aiservice automl``, ``optimize``, ``export`` and ``import`` against a live service: a followed study
shows its leaderboard and registers its best trial (a failed one exits 1), studies are listed, shown and
cancelled by an id prefix; a version is optimised (a drop past the bound is one error line), exported as
a bundle and a hand-built MLflow folder imported."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import skops.io as sio
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from aiservice.client import Client
from tests.cli.conftest import Run, error_line
from tests.cli.test_training import uploaded_dataset

X, Y = load_iris(return_X_y=True)


def study_config(path: Path, uri: str, **extra: object) -> Path:
    body = {
        "datasetConfig": {"trainPath": uri, "format": "csv", "target": "species"},
        "task": "classification",
        "metric": "accuracy",
        "budget": {"maxTrials": 2},
        "algorithms": ["linear"],
        "cvFolds": 2,
        **extra,
    }
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_followed_study_shows_its_leaderboard_and_studies_are_listed_shown_and_cancelled(
    cli: Run, service: str, token: str, tmp_path: Path
) -> None:
    uri = uploaded_dataset(service, token, tmp_path)
    cli("models", "create", "iris", "--framework", "sklearn")
    followed = cli(
        "automl", "start", "iris", "--config", str(study_config(tmp_path / "s.yaml", uri)), "--follow"
    )
    assert followed.exit_code == 0, followed.stdout + followed.stderr
    assert "succeeded: 2 trials" in followed.stdout and "algorithm" in followed.stdout  # the leaderboard
    assert "best: linear accuracy" in followed.stdout
    assert "registered version 1 of model" in followed.stdout
    study_id = followed.stdout.split("study ", 1)[1].split()[0]

    slow = study_config(tmp_path / "slow.yaml", uri, budget={"maxTrials": 50}, algorithms=["random_forest"])
    started = cli("automl", "start", "iris", "--config", str(slow), "-o", "json")
    assert started.exit_code == 0, started.stderr
    slow_id = json.loads(started.stdout)["id"]

    listed = json.loads(cli("automl", "list", "iris", "-o", "json").stdout)
    assert [s["id"] for s in listed] == [slow_id, study_id]  # newest first
    assert study_id in cli("automl", "list", "iris").stdout
    shown = json.loads(cli("automl", "get", "iris", study_id[:8], "-o", "json").stdout)
    assert (shown["status"], shown["version"]) == ("succeeded", 1)
    assert "linear accuracy" in cli("automl", "get", "iris", study_id[:8]).stdout

    asked = cli("automl", "cancel", "iris", slow_id[:8], input="n\n")  # not confirmed: nothing happens
    assert (
        asked.exit_code == 1
        and cli("automl", "get", "iris", slow_id, "-o", "json").stdout.count("cancelled") == 0
    )
    cancelled = cli("automl", "cancel", "iris", slow_id[:8], "--yes")
    assert cancelled.exit_code == 0 and cancelled.stdout.strip() == f"study {slow_id}: cancelled"
    again = cli("automl", "cancel", "iris", slow_id, "--yes")
    assert again.exit_code == 1 and "already cancelled" in error_line(again)

    bad = cli(
        "automl", "start", "iris", "--config", str(study_config(tmp_path / "b.yaml", uri, metric="rmse"))
    )
    assert bad.exit_code == 1 and "metric" in error_line(bad)


def test_a_followed_study_that_fails_exits_1(cli: Run, service: str, token: str, tmp_path: Path) -> None:
    uri = uploaded_dataset(service, token, tmp_path, rows=40)  # one class: no trial can be scored
    cli("models", "create", "iris", "--framework", "sklearn")
    config = study_config(tmp_path / "s.yaml", uri)
    result = cli("automl", "start", "iris", "--config", str(config), "--follow")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "failed" in result.stdout and "registered version" not in result.stdout


def test_a_version_is_optimised_exported_and_a_folder_imported(
    cli: Run, service: str, token: str, tmp_path: Path
) -> None:
    estimator = MLPClassifier((16,), max_iter=2000, random_state=0).fit(X, Y)
    with Client(service, token, "acme") as sdk:
        sdk.models.create("skl", "sklearn", category="classification")
        sdk.models.upload_version("skl", estimator)
    validation = {"validation": {"rows": X[::3].tolist(), "labels": Y[::3].tolist()}, "latencyCalls": 5}
    config = tmp_path / "optimize.json"
    config.write_text(json.dumps(validation))

    made = cli(
        "optimize",
        "skl",
        "1",
        "--method",
        "quantization",
        "--config",
        str(config),
        "--max-accuracy-drop",
        "0.05",
    )
    assert made.exit_code == 0, made.stdout + made.stderr
    assert made.stdout.startswith("created version 1 of model ") and "accuracy: " in made.stdout
    useless = tmp_path / "useless.json"
    useless.write_text(json.dumps({**validation, "mode": "static", "calibrationRows": [[1e4] * 4] * 4}))
    refused = cli("optimize", "skl", "1", "--method", "quantization", "--config", str(useless))
    assert refused.exit_code == 1 and "body.maxAccuracyDrop: the drop is" in error_line(refused)
    missing = cli("optimize", "skl", "1", "--method", "quantization")
    assert missing.exit_code == 2 and "validation" in error_line(missing)

    exported = cli("export", "skl", "1", "--format", "onnx", "--out", str(tmp_path / "edge.zip"))
    assert exported.exit_code == 0, exported.stderr
    with zipfile.ZipFile(tmp_path / "edge.zip") as bundle:
        assert "model.onnx" in bundle.namelist() and "run.py" in bundle.namelist()
    assert cli("export", "skl", "1", "--format", "coreml").exit_code == 2
    assert cli("export", "skl", "7", "--out", str(tmp_path / "no.zip")).exit_code == 1
    assert not (tmp_path / "no.zip").exists()

    folder = tmp_path / "model"
    folder.mkdir()
    flavor = {"pickled_model": "model.skops", "serialization_format": "skops", "sklearn_version": "1.5.2"}
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": flavor}, "run_id": "r1"}))
    (folder / "model.skops").write_bytes(bytes(sio.dumps(LogisticRegression(max_iter=500).fit(X, Y))))
    cli("models", "create", "imported", "--framework", "sklearn")
    imported = cli(
        "import", "imported", str(folder), "--source", "mlflow", "--description", "from mlflow", "-o", "json"
    )
    assert imported.exit_code == 0, imported.stderr
    version = json.loads(imported.stdout)
    assert (version["version"], version["description"]) == (1, "from mlflow")
    assert version["lineage"]["importedFrom"] == "mlflow"
    assert cli("import", "imported", str(folder), "--source", "hub").exit_code == 2
