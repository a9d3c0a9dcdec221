"""Models, versions and predictions from the command line against a live service: tables for people,
``-o json`` for scripts, files in and out, ids by a unique prefix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.cli.conftest import Run, error_line

X, Y = load_iris(return_X_y=True)


def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(X, Y), path)
    return path


def test_a_model_is_created_shown_listed_and_deleted(cli: Run) -> None:
    created = cli("models", "create", "iris", "--framework", "sklearn", "--tag", "demo", "-o", "json")
    assert created.exit_code == 0, created.stderr
    model = json.loads(created.stdout)
    assert (model["name"], model["tags"]) == ("iris", ["demo"])

    table = cli("models", "list")
    assert model["id"] in table.stdout and "iris" in table.stdout and "sklearn" in table.stdout
    shown = cli("models", "show", "iris", "-o", "json")
    assert json.loads(shown.stdout)["id"] == model["id"]
    sheet = cli("models", "show", model["id"][:8])  # a unique prefix of the id
    assert model["id"] in sheet.stdout and "demo" in sheet.stdout

    assert cli("models", "delete", model["id"][:6], "--yes").exit_code == 0
    assert json.loads(cli("models", "list", "-o", "json").stdout) == []


def test_an_ambiguous_id_prefix_names_the_candidates(cli: Run) -> None:
    ids = [
        json.loads(cli("models", "create", f"m{i}", "--framework", "sklearn", "-o", "json").stdout)["id"]
        for i in range(17)  # two of them start with the same hex digit
    ]
    first, _ = Counter(i[0] for i in ids).most_common(1)[0]
    sharing = sorted(i for i in ids if i.startswith(first))
    result = cli("models", "show", first)
    line = error_line(result)
    assert result.exit_code == 2
    assert "ambiguous" in line and all(i in line for i in sharing)


def test_versions_are_uploaded_listed_promoted_and_downloaded(cli: Run, tmp_path: Path) -> None:
    cli("models", "create", "iris", "--framework", "sklearn")
    artifact = model_file(tmp_path)
    uploaded = cli("versions", "upload", "iris", str(artifact), "--metric", "accuracy=0.97")
    assert uploaded.exit_code == 0, uploaded.stderr
    assert "uploaded version 1 of model" in uploaded.stdout
    listed = json.loads(cli("versions", "list", "iris", "-o", "json").stdout)
    assert [(v["version"], v["metrics"]) for v in listed] == [(1, {"accuracy": 0.97})]

    promoted = cli("versions", "promote", "iris", "1", "--stage", "production", "--alias", "champion")
    assert promoted.exit_code == 0, promoted.stderr
    assert json.loads(cli("models", "show", "iris", "-o", "json").stdout)["aliases"] == {"champion": 1}

    target = tmp_path / "copy.skops"
    downloaded = cli("versions", "download", "iris", "1", "--out", str(target))
    assert downloaded.exit_code == 0, downloaded.stderr
    assert target.read_bytes() == artifact.read_bytes()

    missing = cli("versions", "download", "iris", "9", "--out", str(tmp_path / "none"))
    assert missing.exit_code == 1 and error_line(missing).startswith("error: 404 ")


def test_predict_one_input_and_a_file_with_a_progress_bar(cli: Run, tmp_path: Path) -> None:
    cli("models", "create", "iris", "--framework", "sklearn")
    cli("versions", "upload", "iris", str(model_file(tmp_path)))
    expected = LogisticRegression(max_iter=500).fit(X, Y).predict(X[::10]).tolist()

    one = cli("predict", "iris", "--input", json.dumps({"features": X[0].tolist()}), "--confidence")
    assert one.exit_code == 0, one.stderr
    answer = json.loads(one.stdout)
    assert (answer["prediction"], answer["version"]) == (expected[0], 1) and "confidence" in answer

    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(row.tolist()) + "\n" for row in X[::10]))
    out = tmp_path / "preds.jsonl"
    batch = cli("predict", "iris", "--file", str(inputs), "--out", str(out), "--chunk-size", "4")
    assert batch.exit_code == 0, batch.stderr
    assert "Predicting" in batch.stdout  # the progress bar
    assert f"wrote {len(expected)} predictions to {out}" in batch.stderr
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == expected


def test_a_file_with_a_bad_input_keeps_the_others_and_exits_1(cli: Run, tmp_path: Path) -> None:
    cli("models", "create", "iris", "--framework", "sklearn")
    cli("versions", "upload", "iris", str(model_file(tmp_path)))
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(f"{json.dumps(X[0].tolist())}\n[1, 2]\n{json.dumps(X[1].tolist())}\n")
    result = cli("predict", "iris", "--file", str(inputs))
    assert result.exit_code == 1
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("prediction" in a, "error" in a) for a in answers] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert result.stderr.startswith("error: 1 of 3 inputs failed")

    many = cli("predict", "iris", "--input", json.dumps([{"features": X[0].tolist()}]))
    assert many.exit_code == 2 and "--file" in error_line(many)

    not_json = tmp_path / "bad.jsonl"
    not_json.write_text("{oops\n")
    bad = cli("predict", "iris", "--file", str(not_json))
    assert bad.exit_code == 2 and "line 1" in error_line(bad)
