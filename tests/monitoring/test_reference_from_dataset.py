"""A version's reference profile from an uploaded dataset (``datasetId``), through the API: the
version's feature columns of a seeded sample of the dataset's rows (the label left out), predicted by
the version and profiled, csv and parquet alike; and the requests that are refused, naming the field."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai"
PROFILE = f"{API}/models/shop/versions/1/reference-profile"


def shop_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Rows of a shop: a colour (text), an age, the label ``bought`` and a column the model ignores."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(n)],
            "color": rng.choice(["red", "green", "blue"], n),
            "age": rng.normal(40, 9, n).round(2),
        }
    )
    frame["bought"] = np.where((frame.color == "red") | (frame.age > 45), "yes", "no")
    return frame


@pytest.fixture
def shop(client: TestClient, auth: Auth) -> None:
    """A DataFrame-trained pipeline: its version's input schema is (color: category, age: number)."""
    frame = shop_frame(200, seed=1)
    pipeline = Pipeline(
        [
            (
                "pre",
                ColumnTransformer([("cat", OneHotEncoder(), ["color"]), ("num", StandardScaler(), ["age"])]),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame[["color", "age"]], frame.bought)
    create_model(client, auth(), "shop")
    assert upload(client, auth(), "shop", bytes(sio.dumps(pipeline))).status_code == 201


def put_dataset(client: TestClient, auth: Auth, name: str, frame: pd.DataFrame, format: str = "csv") -> None:
    buffer = io.BytesIO()
    if format == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    posted = client.post(
        f"{API}/datasets",
        data={"name": name, "format": format},
        files={"file": (f"{name}.{format}", buffer.getvalue())},
        headers=auth("editor"),
    )
    assert posted.status_code == 201, posted.text


def set_profile(client: TestClient, auth: Auth, body: dict[str, Any]) -> Any:
    return client.put(PROFILE, json=body, headers=auth("editor"))


def without_provenance(profile: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in profile.items() if k not in ("source", "createdAt")}


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_a_dataset_profiles_as_its_feature_rows_sent_inline_would(
    client: TestClient, auth: Auth, shop: None, format: str
) -> None:
    frame = shop_frame(300)
    put_dataset(client, auth, "shop-data", frame, format)
    inline = set_profile(client, auth, {"rows": frame[["color", "age"]].to_dict("records")})
    assert inline.status_code == 200, inline.text

    response = set_profile(client, auth, {"datasetId": "shop-data"})
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["source"] == "dataset:shop-data"
    assert [f["name"] for f in profile["features"]] == ["color", "age"]  # no label, no customer id
    assert profile["prediction"] is not None
    assert without_provenance(profile) == without_provenance(inline.json())
    stored = client.get(PROFILE, headers=auth("viewer")).json()
    assert stored["source"] == "dataset:shop-data"


def test_a_large_dataset_is_sampled_to_ten_thousand_rows_by_default_and_the_sample_is_seeded(
    client: TestClient, auth: Auth, shop: None
) -> None:
    frame = shop_frame(25_000, seed=3).sort_values("age")  # the head would be the youngest only
    put_dataset(client, auth, "big", frame)
    first = set_profile(client, auth, {"datasetId": "big"})
    assert first.status_code == 200, first.text
    assert first.json()["rows"] == 10_000
    small = set_profile(client, auth, {"datasetId": "big", "sample": 500})
    again = set_profile(client, auth, {"datasetId": "big", "sample": 500})
    assert small.json()["rows"] == 500
    assert without_provenance(small.json())["features"] == without_provenance(again.json())["features"]
    age = small.json()["features"][1]
    assert age["name"] == "age" and abs(age["mean"] - frame.age.mean()) < 2.0  # standard error ~0.4


def test_a_dataset_without_the_versions_features_is_refused_naming_the_missing_columns(
    client: TestClient, auth: Auth, shop: None
) -> None:
    put_dataset(client, auth, "no-age", shop_frame(50).drop(columns=["age"]))
    response = set_profile(client, auth, {"datasetId": "no-age"})
    assert response.status_code == 422, response.text
    problem = response.json()
    (error,) = problem["errors"]
    assert error["field"] == "body.datasetId" and "age" in error["message"]
    assert problem["missingColumns"] == ["age"]
    assert client.get(PROFILE, headers=auth("viewer")).status_code == 404


def test_an_unknown_or_another_tenants_dataset_is_refused_naming_the_field(
    client: TestClient, auth: Auth, shop: None
) -> None:
    other = io.BytesIO()
    shop_frame(20).to_csv(other, index=False)
    posted = client.post(
        f"{API}/datasets",
        data={"name": "theirs"},
        files={"file": ("theirs.csv", other.getvalue())},
        headers=auth("editor", tenant="globex"),
    )
    assert posted.status_code == 201, posted.text
    for name in ("missing", "theirs"):
        response = set_profile(client, auth, {"datasetId": name})
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["body.datasetId"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rows": [{"color": "red", "age": 30}], "datasetId": "shop-data"}, "body.datasetId"),
        ({}, "body.rows"),
        ({"rows": [{"color": "red", "age": 30}], "sample": 10}, "body.sample"),
        ({"datasetId": "shop-data", "sample": 10_001}, "body.sample"),
    ],
)
def test_exactly_one_of_rows_and_a_dataset_is_taken(
    client: TestClient, auth: Auth, shop: None, body: dict[str, Any], field: str
) -> None:
    put_dataset(client, auth, "shop-data", shop_frame(20))
    response = set_profile(client, auth, body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_a_version_without_named_features_takes_every_column_but_the_label(
    client: TestClient, auth: Auth
) -> None:
    from sklearn.datasets import load_iris

    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201  # trained on an array: no names
    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x, columns=["sl", "sw", "pl", "pw"]).assign(label=y)
    put_dataset(client, auth, "iris-data", frame)
    response = client.put(
        f"{API}/models/iris/versions/1/reference-profile",
        json={"datasetId": "iris-data"},
        headers=auth("editor"),
    )
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["rows"] == 150 and len(profile["features"]) == 4  # the label is not a feature
    assert profile["features"][3]["max"] == pytest.approx(2.5)  # petal width, not the label (2)
    assert profile["prediction"]["kind"] == "categorical"


def test_a_viewer_may_not_set_a_profile_from_a_dataset(client: TestClient, auth: Auth, shop: None) -> None:
    put_dataset(client, auth, "shop-data", shop_frame(20))
    response = client.put(PROFILE, json={"datasetId": "shop-data"}, headers=auth("viewer"))
    assert response.status_code == 403
