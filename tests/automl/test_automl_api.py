"""AutoML studies through the HTTP API: a seeded study beats a default random forest on held-out data
and registers its best trial as a version; bad bodies are refused naming the field; cancelling stops a
study and registers nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, wait_until

API = "/api/v1/ai"
SEED = 0
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def split(container: Container) -> tuple[Path, Path]:
    """breast_cancer, 75/25 stratified and seeded, as train.csv and heldout.csv under a dataset root."""
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    train, held_out = train_test_split(frame, test_size=0.25, random_state=SEED, stratify=frame["target"])
    train.to_csv(root / "train.csv", index=False)
    held_out.to_csv(root / "heldout.csv", index=False)
    return root / "train.csv", root / "heldout.csv"


def body(split: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    dataset = {
        "trainPath": str(split[0]),
        "validationPath": str(split[1]),
        "format": "csv",
        "target": "target",
    }
    return {
        "datasetConfig": dataset,
        "task": "classification",
        "metric": "accuracy",
        "budget": {"maxTrials": 8},
        "seed": SEED,
        **extra,
    }


def wait_for(client: TestClient, headers: dict[str, str], url: str, timeout: float = 90) -> dict[str, Any]:
    study: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal study
        study = client.get(url, headers=headers).json()
        return study["status"] in FINISHED

    wait_until(ended, timeout, 0.2, lambda: f"study to end, not {study}")
    return study


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
    return events


def test_a_seeded_study_beats_a_default_random_forest_and_registers_its_best_trial(
    client: TestClient, auth: Auth, split: tuple[Path, Path]
) -> None:
    headers = auth("editor")
    model = create_model(client, headers, "cancer")
    started = client.post(f"{API}/models/cancer/automl", json=body(split), headers=headers)
    assert started.status_code == 202, started.text
    study = started.json()
    assert study["status"] in ("queued", "running")
    assert study["algorithms"] == ["linear", "random_forest", "gradient_boosting", "mlp"]
    url = f"{API}/models/cancer/automl/{study['id']}"
    assert started.headers["location"] == f"{API}/models/{model['id']}/automl/{study['id']}"

    done = wait_for(client, headers, url)
    assert done["status"] == "succeeded", done["error"]
    assert len(done["trials"]) == 8
    assert {t["state"] for t in done["trials"]} <= {"complete", "pruned", "fail"}
    assert all(len(t["folds"]) >= 1 for t in done["trials"])  # folds reported to the pruner
    board = [t["cvScore"] for t in done["leaderboard"]]
    assert board == sorted(board, reverse=True)

    # The test's own baseline: the default forest, seeded, on the same split.
    train, held_out = (pd.read_csv(p) for p in split)
    forest = RandomForestClassifier(random_state=SEED).fit(train.drop(columns="target"), train["target"])
    baseline = accuracy_score(held_out["target"], forest.predict(held_out.drop(columns="target")))
    result = done["result"]
    assert result["baseline"]["accuracy"] == pytest.approx(baseline, abs=1e-6)
    assert done["beatsBaseline"] is True, result
    assert result["heldOut"]["accuracy"] > baseline

    assert done["version"] == 1
    version = client.get(f"{API}/models/cancer/versions/1", headers=headers).json()
    assert version["lineage"]["automlStudyId"] == study["id"]
    assert version["params"]["automlStudyId"] == study["id"]
    assert version["metrics"]["accuracy"] == result["heldOut"]["accuracy"]
    assert version["sourceRun"] == f"automl-study:{study['id']}"
    row = held_out.drop(columns="target").iloc[0].tolist()
    answer = client.post(f"{API}/models/cancer/predict", json={"input": {"features": row}}, headers=headers)
    assert answer.status_code == 200, answer.text

    events = parse_sse(client.get(f"{url}/events", headers=headers).text)
    assert [e["event"] for e in events] == ["trial"] * 8 + ["status"]
    assert [e["id"] for e in events] == list(range(1, 10))
    assert events[-1]["data"]["status"] == "succeeded" and events[-1]["data"]["version"] == 1
    assert events[3]["data"]["bestSoFar"] is not None
    resumed = parse_sse(client.get(f"{url}/events", headers={**headers, "Last-Event-ID": "6"}).text)
    assert [e["id"] for e in resumed] == [7, 8, 9]


def test_bad_bodies_are_refused_naming_the_field(
    client: TestClient, auth: Auth, split: tuple[Path, Path]
) -> None:
    headers = auth("editor")
    create_model(client, headers, "cancer")
    cases = [
        (body(split, metric="rmse"), "metric"),
        (body(split, budget={}), "budget"),
        (body(split, algorithms=["random_forest", "magic"]), "algorithms[1]"),
        (body(split, algorithms=[]), "algorithms"),
        (
            body(
                split, searchSpaces={"random_forest": {"n_estimators": {"type": "int", "low": 9, "high": 3}}}
            ),
            "searchSpaces.random_forest.n_estimators",
        ),
        (
            body(split, searchSpaces={"linear": {"no_such": {"type": "float", "low": 0.1, "high": 1}}}),
            "searchSpaces.linear.no_such",
        ),
        (
            body(split, searchSpaces={"random_forest": {"max_depth": {"type": "int", "low": -5, "high": 3}}}),
            "searchSpaces.random_forest.max_depth",
        ),
        (body(split, algorithms=["linear"], searchSpaces={"mlp": {}}), "searchSpaces.mlp"),
        (
            body(split, datasetConfig={"trainPath": "/nowhere.csv", "format": "csv", "target": "target"}),
            "datasetConfig.trainPath",
        ),
    ]
    for sent, field in cases:
        response = client.post(f"{API}/models/cancer/automl", json=sent, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        fields = [e["field"] for e in response.json()["errors"]]
        assert field in fields, (field, fields)
    missing = {k: v for k, v in body(split).items() if k != "budget"}
    response = client.post(f"{API}/models/cancer/automl", json=missing, headers=headers)
    assert response.status_code == 422
    assert any("budget" in e["field"] for e in response.json()["errors"]), response.text
    regression = client.post(
        f"{API}/models/cancer/automl", json=body(split, task="regression"), headers=headers
    )
    assert regression.status_code == 422 and "metric" in [e["field"] for e in regression.json()["errors"]]


def test_a_cancelled_study_registers_nothing_and_only_editors_start_one(
    client: TestClient, auth: Auth, split: tuple[Path, Path]
) -> None:
    headers = auth("editor")
    create_model(client, headers, "cancer")
    assert (
        client.post(f"{API}/models/cancer/automl", json=body(split), headers=auth("viewer")).status_code
        == 403
    )
    slow = body(split, algorithms=["random_forest"], budget={"maxTrials": 200, "timeoutSeconds": 120})
    study = client.post(f"{API}/models/cancer/automl", json=slow, headers=headers).json()
    url = f"{API}/models/cancer/automl/{study['id']}"
    assert client.post(f"{url}/cancel", headers=auth("viewer")).status_code == 403
    cancelled = client.post(f"{url}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"{url}/cancel", headers=headers).status_code == 409
    events = parse_sse(client.get(f"{url}/events", headers=headers).text)
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "cancelled"
    other = auth("admin", tenant="globex")
    assert client.get(url, headers=other).status_code == 404
    assert client.get(f"{API}/models/cancer/automl/not-a-study", headers=headers).status_code == 404
    wait_until(lambda: client.get(url, headers=headers).json()["status"] == "cancelled", 10)
    assert client.get(f"{API}/models/cancer/versions", headers=headers).json()["items"] == []


def test_a_regression_study_holds_out_a_seeded_split_and_reports_the_baseline(
    client: TestClient, auth: Auth, container: Container
) -> None:
    from sklearn.datasets import load_diabetes

    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    load_diabetes(as_frame=True).frame.to_csv(root / "diabetes.csv", index=False)
    headers = auth("editor")
    create_model(client, headers, "sugar")
    sent = {
        "datasetConfig": {
            "trainPath": str(root / "diabetes.csv"),
            "target": "target",
            "validationSplit": 0.25,
        },
        "task": "regression",
        "metric": "rmse",
        "budget": {"maxTrials": 4, "timeoutSeconds": 60},
        "algorithms": ["linear", "gradient_boosting"],
        "searchSpaces": {
            "gradient_boosting": {
                "max_iter": 60,
                "learning_rate": {"type": "float", "low": 0.02, "high": 0.2},
            }
        },
        "seed": 3,
    }
    study = client.post(f"{API}/models/sugar/automl", json=sent, headers=headers)
    assert study.status_code == 202, study.text
    done = wait_for(client, headers, f"{API}/models/sugar/automl/{study.json()['id']}")
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["heldOut"]["rows"] == 111  # 25 % of 442 rows
    assert result["baseline"]["estimator"] == "sklearn.ensemble.RandomForestRegressor"
    assert result["beatsBaseline"] == (result["heldOut"]["rmse"] < result["baseline"]["rmse"])
    if not result["beatsBaseline"]:
        assert "whyNotBetter" in result
    gradient = [t for t in done["trials"] if t["algorithm"] == "gradient_boosting"]
    assert all(t["params"]["max_iter"] == 60 and "learning_rate" in t["params"] for t in gradient)
    board = [t["cvScore"] for t in done["leaderboard"]]
    assert board == sorted(board)  # rmse: lower is better, best first
    version = client.get(f"{API}/models/sugar/versions/{done['version']}", headers=headers).json()
    assert {"rmse", "mae", "r2"} <= set(version["metrics"])
