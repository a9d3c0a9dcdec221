"""AutoML on an xgboost model (ADR 28): a seeded study searches XGBoost and registers its best trial as
the booster a training job would save, which serves what the same XGBoost refitted in this process
predicts; bad xgboost spaces are refused naming the field; sklearn models are not offered XGBoost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes, load_wine
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from aiservice.bootstrap import Container
from tests.automl.test_automl_api import body, wait_for
from tests.conftest import Auth
from tests.helpers import create_model

xgboost = pytest.importorskip("xgboost")

API = "/api/v1/ai"
SEED = 0
FIXED = {"n_jobs": 1, "tree_method": "hist", "random_state": SEED}  # what the study sets on every fit


def write_split(container: Container, frame: pd.DataFrame, task: str) -> tuple[Path, Path]:
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    stratify = frame["target"] if task == "classification" else None
    train, held_out = train_test_split(frame, test_size=0.25, random_state=SEED, stratify=stratify)
    train.to_csv(root / "train.csv", index=False)
    held_out.to_csv(root / "heldout.csv", index=False)
    return root / "train.csv", root / "heldout.csv"


def run_study(
    client: TestClient, headers: dict[str, str], model: str, split: tuple[Path, Path], **extra: Any
) -> dict[str, Any]:
    sent = body(split, budget={"maxTrials": 4}, **extra)
    started = client.post(f"{API}/models/{model}/automl", json=sent, headers=headers)
    assert started.status_code == 202, started.text
    assert started.json()["algorithms"] == ["xgboost"]  # an xgboost model's default search
    return wait_for(client, headers, f"{API}/models/{model}/automl/{started.json()['id']}")


def served(client: TestClient, headers: dict[str, str], model: str, rows: pd.DataFrame) -> list[Any]:
    inputs = [{"features": row} for row in rows.to_numpy().tolist()]
    sent = {"inputs": inputs, "options": {"includeConfidence": True}}
    answer = client.post(f"{API}/models/{model}/batch-predict", json=sent, headers=headers)
    assert answer.status_code == 200, answer.text
    outputs: list[Any] = answer.json()["outputs"]
    return outputs


def wine() -> pd.DataFrame:
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    frame.columns = [c.replace("/", "_") for c in frame.columns]
    return frame


def diabetes() -> pd.DataFrame:
    frame: pd.DataFrame = load_diabetes(as_frame=True).frame
    return frame


@pytest.mark.parametrize(
    ("task", "metric", "data", "wrapper"),
    [
        ("classification", "accuracy", wine, "XGBClassifier"),
        ("regression", "rmse", diabetes, "XGBRegressor"),
    ],
)
def test_a_seeded_xgboost_study_registers_a_booster_that_serves_the_refitted_best_trial(
    client: TestClient,
    auth: Auth,
    container: Container,
    task: str,
    metric: str,
    data: Callable[[], pd.DataFrame],
    wrapper: str,
) -> None:
    headers = auth("editor")
    create_model(client, headers, "boosted", framework="xgboost", category=task)
    split = write_split(container, data(), task)

    done = run_study(client, headers, "boosted", split, task=task, metric=metric)
    assert done["status"] == "succeeded", done["error"]
    assert len(done["trials"]) == 4
    assert {t["algorithm"] for t in done["trials"]} == {"xgboost"}
    result = done["result"]
    assert result["best"]["algorithm"] == "xgboost"
    assert result["best"]["estimator"] == f"xgboost.{wrapper}"
    assert {"n_estimators", "max_depth", "learning_rate", "reg_lambda"} <= set(result["best"]["params"])

    assert done["version"] == 1
    version = client.get(f"{API}/models/boosted/versions/1", headers=headers).json()
    assert version["lineage"]["automlStudyId"] == done["id"]
    assert version["params"]["automlStudyId"] == done["id"]
    assert version["metrics"][metric] == result["heldOut"][metric]

    # The same XGBoost with the best trial's parameters, refitted here on the same training part.
    train, held_out = (pd.read_csv(p) for p in split)
    refit = getattr(xgboost, wrapper)(**result["best"]["params"], **FIXED)
    refit.fit(train.drop(columns="target"), train["target"])
    rows = held_out.drop(columns="target")
    outputs = served(client, headers, "boosted", rows)
    if task == "classification":
        assert [o["prediction"] for o in outputs] == refit.predict(rows).tolist()
        expected = refit.predict_proba(rows)
        got = [list(o["probabilities"].values()) for o in outputs]
        assert np.allclose(got, expected, atol=1e-6)
        accuracy = float(np.mean(refit.predict(rows) == held_out["target"].to_numpy()))
        assert result["heldOut"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert version["params"]["classes"] == [0, 1, 2]
    else:
        assert [o["prediction"] for o in outputs] == pytest.approx(refit.predict(rows).tolist(), rel=1e-5)
        residuals = refit.predict(rows) - held_out["target"].to_numpy()
        rmse = float(np.sqrt(np.mean(residuals**2)))
        assert result["heldOut"]["rmse"] == pytest.approx(rmse, rel=1e-4)


def cultivars_study(
    client: TestClient, headers: dict[str, str], container: Container
) -> tuple[dict[str, Any], list[Any], np.ndarray, Any, pd.DataFrame]:
    """A study of wine labelled by name (not in sorted order); its served outputs on the held-out rows,
    the sorted labels, the refit (on their positions, as the trainer encodes them) and its rows."""
    create_model(client, headers, "cultivars", framework="xgboost", category="classification")
    frame = wine()
    names = np.array(["nebbiolo", "grignolino", "barbera"], dtype=object)
    frame["target"] = names[frame["target"].to_numpy()]
    split = write_split(container, frame, "classification")
    done = run_study(client, headers, "cultivars", split, metric="f1_macro")
    assert done["status"] == "succeeded", done["error"]
    train, held_out = (pd.read_csv(p) for p in split)
    classes, positions = np.unique(train["target"], return_inverse=True)
    refit = xgboost.XGBClassifier(**done["result"]["best"]["params"], **FIXED)
    refit.fit(train.drop(columns="target"), positions)
    rows = held_out.drop(columns="target")
    return done, served(client, headers, "cultivars", rows), classes, refit, held_out


def test_string_labels_are_encoded_as_the_xgboost_trainer_encodes_them(
    client: TestClient, auth: Auth, container: Container
) -> None:
    headers = auth("editor")
    done, outputs, classes, refit, held_out = cultivars_study(client, headers, container)
    assert all(t["state"] != "fail" for t in done["trials"]), done["trials"]  # none failed on the labels
    version = client.get(f"{API}/models/cultivars/versions/1", headers=headers).json()
    assert version["params"]["classes"] == ["barbera", "grignolino", "nebbiolo"]  # sorted, by position
    rows = held_out.drop(columns="target")
    predicted = classes[refit.predict(rows)]
    f1 = f1_score(held_out["target"], predicted, average="macro")
    assert done["result"]["heldOut"]["f1_macro"] == pytest.approx(f1, abs=1e-6)  # scored in the labels
    got = [list(o["probabilities"].values()) for o in outputs]
    assert np.allclose(got, refit.predict_proba(rows), atol=1e-6)  # the booster's columns, by position


def test_string_labels_are_served_as_labels(client: TestClient, auth: Auth, container: Container) -> None:
    _, outputs, classes, refit, held_out = cultivars_study(client, auth("editor"), container)
    expected = classes[refit.predict(held_out.drop(columns="target"))].tolist()
    assert [o["prediction"] for o in outputs] == expected


def test_bad_xgboost_spaces_are_refused_naming_the_field(
    client: TestClient, auth: Auth, container: Container
) -> None:
    headers = auth("editor")
    create_model(client, headers, "boosted", framework="xgboost", category="classification")
    split = write_split(container, wine(), "classification")
    cases = [
        ({"no_such": {"type": "float", "low": 0.1, "high": 1}}, "searchSpaces.xgboost.no_such"),
        ({"subsample": {"type": "float", "low": 0.5, "high": 1.5}}, "searchSpaces.xgboost.subsample"),
        ({"max_depth": {"type": "float", "low": 2, "high": 6}}, "searchSpaces.xgboost.max_depth"),
        ({"objective": "reg:squarederror"}, "searchSpaces.xgboost.objective"),
        ({"n_jobs": 8}, "searchSpaces.xgboost.n_jobs"),  # the study fits on one core
        ({"early_stopping_rounds": 5}, "searchSpaces.xgboost.early_stopping_rounds"),
    ]
    for spaces, field in cases:
        sent = body(split, budget={"maxTrials": 4}, searchSpaces={"xgboost": spaces})
        response = client.post(f"{API}/models/boosted/automl", json=sent, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (field, response.text)

    # A scikit-learn model is not offered XGBoost: skops would save xgboost types its runtime refuses.
    create_model(client, headers, "forest")
    sent = body(split, budget={"maxTrials": 4}, algorithms=["random_forest", "xgboost"])
    response = client.post(f"{API}/models/forest/automl", json=sent, headers=headers)
    assert response.status_code == 422, response.text
    assert "algorithms[1]" in [e["field"] for e in response.json()["errors"]]
