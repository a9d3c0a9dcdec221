"""Named features reach the model's own columns: the same names in another order are mapped, other
names are refused at upload, a model without a schema serves its version's own, text columns get their
values, and null is a missing value only where the feature is nullable and the version answers it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, row_count, stored_files, upload

API = "/api/v1/ai/models"
ABC = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 3)), columns=["a", "b", "c"])
LINEAR = LinearRegression().fit(ABC, 100 * ABC.a + 10 * ABC.b + ABC.c)


def tabular(*names: str, **types: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tabular", "features": [{"name": n, **types.get(n, {})} for n in names]}


def predict(client: TestClient, auth: Auth, name: str, row: dict[str, Any]) -> Any:
    return client.post(f"{API}/{name}/predict", json={"input": row}, headers=auth("predictor"))


def shop_pipeline() -> Pipeline:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], 60), "age": rng.normal(40, 9, 60)})
    y = np.where((frame.color == "red") | (frame.age > 45), "yes", "no")
    return Pipeline(
        [
            (
                "pre",
                ColumnTransformer([("cat", OneHotEncoder(), ["color"]), ("num", StandardScaler(), ["age"])]),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)


def test_the_same_names_in_another_order_are_mapped_so_the_answer_is_right(
    client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(), "abc", inputSchema=tabular("c", "b", "a"))
    assert upload(client, auth(), "abc", bytes(sio.dumps(LINEAR))).status_code == 201
    response = predict(client, auth, "abc", {"a": 1, "b": 2, "c": 3})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == pytest.approx(123.0)


def test_other_names_are_refused_at_upload_naming_both_lists(
    client: TestClient, auth: Auth, engine: Engine, container: Container
) -> None:
    create_model(client, auth(), "xyz", inputSchema=tabular("x", "y", "z"))
    response = upload(client, auth(), "xyz", bytes(sio.dumps(LINEAR)))
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "inputSchema.features"
    assert "['x', 'y', 'z']" in error["message"] and "['a', 'b', 'c']" in error["message"]
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


def test_without_a_schema_a_version_serves_the_one_its_columns_give(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "shop")
    assert upload(client, auth(), "shop", bytes(sio.dumps(shop_pipeline()))).status_code == 201
    schema = client.get(f"{API}/shop/versions/1", headers=auth()).json()["inputSchema"]
    # LogisticRegression fails on NaN after the scaler passes it on: age is not nullable.
    assert schema == {
        "type": "tabular",
        "features": [
            {"name": "color", "type": "category", "values": ["blue", "green", "red"]},
            {"name": "age", "type": "number"},
        ],
    }
    ok = predict(client, auth, "shop", {"age": 50.0, "color": "red"})
    assert (ok.status_code, ok.json()["prediction"]) == (200, "yes")
    unknown = predict(client, auth, "shop", {"age": 50.0, "color": "purple"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "input.color"


def test_a_bare_model_still_takes_a_features_list_in_its_column_order(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "abc")
    assert upload(client, auth(), "abc", bytes(sio.dumps(LINEAR))).status_code == 201
    named = predict(client, auth, "abc", {"a": 1, "b": 2, "c": 3}).json()["prediction"]
    listed = predict(client, auth, "abc", {"features": [1, 2, 3]}).json()["prediction"]
    assert named == pytest.approx(123.0) and listed == pytest.approx(123.0)


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"color": {"type": "number"}}, "reads 'color' as text"),
        ({"color": {"type": "category", "values": ["red", "teal"]}}, "does not know the categories ['teal']"),
        ({"age": {"type": "string"}}, "reads 'age' as a number"),
    ],
)
def test_a_type_the_model_cannot_take_is_refused_at_upload(
    client: TestClient, auth: Auth, declared: dict[str, dict[str, Any]], message: str
) -> None:
    colors = {"color": {"type": "category", "values": ["blue", "green", "red"]}}
    create_model(client, auth(), "shop", inputSchema=tabular("color", "age", **{**colors, **declared}))
    response = upload(client, auth(), "shop", bytes(sio.dumps(shop_pipeline())))
    assert response.status_code == 422, response.text
    assert message in response.json()["errors"][0]["message"]


# -- missing values ------------------------------------------------------------------------------------


def test_null_is_refused_for_a_feature_that_is_not_nullable(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "abc", inputSchema=tabular("a", "b", "c"))
    upload(client, auth(), "abc", bytes(sio.dumps(LINEAR)))
    response = predict(client, auth, "abc", {"a": 1, "b": None, "c": 3})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "input.b" and "not declared nullable" in error["message"]


def test_null_is_refused_where_the_version_cannot_answer_it(client: TestClient, auth: Auth) -> None:
    """LinearRegression fails on NaN: found at upload, so a nullable feature's null is a clear 422."""
    create_model(client, auth(), "abc", inputSchema=tabular("a", "b", "c", b={"nullable": True}))
    upload(client, auth(), "abc", bytes(sio.dumps(LINEAR)))
    columns = client.get(f"{API}/abc/versions/1", headers=auth()).json()["signature"]["columns"]
    assert [c["nullable"] for c in columns] == [False, False, False]
    response = predict(client, auth, "abc", {"a": 1, "b": None, "c": 3})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "input.b"
    assert "version 1 of this model does not answer with 'b' missing" in error["message"]


@pytest.mark.parametrize("flag", ["nullable", "allowNaN"])
def test_null_is_nan_for_a_model_that_answers_it(client: TestClient, auth: Auth, flag: str) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(200, 2)), columns=["u", "v"])
    frame.loc[rng.random(200) < 0.2, "u"] = np.nan
    model = HistGradientBoostingRegressor(max_iter=20).fit(frame, frame.v * 3 + frame.u.fillna(0))
    create_model(client, auth(), "hgb", inputSchema=tabular("u", "v", u={flag: True}))
    upload(client, auth(), "hgb", bytes(sio.dumps(model)))
    response = predict(client, auth, "hgb", {"u": None, "v": 0.5})
    assert response.status_code == 200, response.text
    expected = model.predict(pd.DataFrame({"u": [np.nan], "v": [0.5]}))[0]
    assert response.json()["prediction"] == pytest.approx(expected, abs=1e-9)
    schema = client.get(f"{API}/hgb", headers=auth()).json()["inputSchema"]
    assert schema["features"][0].get(flag) is True  # the schema is stored as the caller sent it
