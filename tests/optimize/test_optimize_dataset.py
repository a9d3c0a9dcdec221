"""Optimisation measured (and calibrated) on a dataset the tenant uploaded: the recorded accuracy is the
new version's accuracy on the dataset's rows (a seeded sample of them), the version records where its
validation came from, and bad or foreign references are 422s naming the field, with nothing made."""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from tests.conftest import Auth
from tests.helpers import create_model, upload
from tests.optimize.test_optimize_api import torch_model

API = "/api/v1/ai"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
X, Y = load_iris(return_X_y=True)


@cache
def sklearn_mlp_bytes() -> bytes:
    """An MLP fitted on a DataFrame, as users fit one: its version knows its feature columns by name."""
    from sklearn.neural_network import MLPClassifier

    frame = pd.DataFrame(X, columns=FEATURES)
    estimator = MLPClassifier((32,), max_iter=2000, random_state=0).fit(frame, Y)
    return bytes(sio.dumps(estimator))


def iris_frame(copies: int = 1) -> pd.DataFrame:
    """Iris with a text column the model does not take, its columns in another order than the model's,
    and the species as 0/1/2; ``copies`` stacks it with a little noise (a larger file)."""
    rng = np.random.default_rng(1)
    x = np.vstack([X + (rng.normal(0, 0.05, X.shape) if i else 0) for i in range(copies)])
    y = np.tile(Y, copies)
    frame = pd.DataFrame(x, columns=FEATURES)[list(reversed(FEATURES))]
    frame.insert(0, "note", [f"flower {i}" for i in range(len(frame))])
    frame["species"] = y
    return frame


def post_dataset(client: TestClient, headers: dict[str, str], name: str, frame: pd.DataFrame) -> None:
    content = frame.to_csv(index=False).encode()
    response = client.post(
        f"{API}/datasets", data={"name": name}, files={"file": (f"{name}.csv", content)}, headers=headers
    )
    assert response.status_code == 201, response.text


def sklearn_model(client: TestClient, auth: Auth, name: str = "skl") -> None:
    create_model(client, auth(), name, category="classification")
    response = upload(client, auth(), name, sklearn_mlp_bytes())
    assert response.status_code == 201, response.text


def by_dataset(name: str, sample: int | None = None, **config: Any) -> dict[str, Any]:
    validation: dict[str, Any] = {
        "datasetConfig": {"trainPath": f"dataset://{name}", "format": "csv", "target": "species", **config}
    }
    if sample is not None:
        validation["sample"] = sample
    return validation


def optimize(client: TestClient, auth: Auth, model: str, validation: Any, **body: Any) -> Any:
    return client.post(
        f"{API}/models/{model}/versions/1/optimize",
        json={"method": "quantization", "validation": validation, "maxAccuracyDrop": 0.05, **body},
        headers=auth(),
    )


def accuracy_of(client: TestClient, auth: Auth, model: str, frame: pd.DataFrame) -> float:
    """The registered version's own accuracy on ``frame``'s rows, predicted through the API."""
    rows = frame[FEATURES].to_numpy().tolist()
    response = client.post(
        f"{API}/models/{model}/batch-predict",
        json={"inputs": [{"features": row} for row in rows]},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    predicted = [output["prediction"] for output in response.json()["outputs"]]
    return float(np.mean(np.asarray(predicted, dtype=np.int64) == frame["species"].to_numpy()))


def fields(response: Any) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


def test_validation_on_an_uploaded_dataset_records_the_accuracy_on_its_rows(
    client: TestClient, auth: Auth
) -> None:
    frame = iris_frame()
    post_dataset(client, auth(), "iris", frame)
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", by_dataset("iris"))
    assert response.status_code == 201, response.text

    version = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()
    record = version["lineage"]["optimization"]
    assert record["validation"] == {
        "source": "dataset://iris",
        "format": "csv",
        "target": "species",
        "features": FEATURES,  # the version's columns, in its order; the text column left out
        "rows": 150,  # fewer rows than the sample (1000 by default): every row
        "datasetRows": 150,
        "sample": 1000,
        "seed": 0,
    }
    assert record["validationRows"] == 150
    assert record["accuracyAfter"] == pytest.approx(accuracy_of(client, auth, "skl-onnx", frame), abs=1e-6)
    assert version["metrics"]["accuracyAfter"] == record["accuracyAfter"]
    estimator = sio.loads(sklearn_mlp_bytes(), trusted=sio.get_untrusted_types(data=sklearn_mlp_bytes()))
    source_accuracy = estimator.score(frame[FEATURES].astype(np.float32), frame["species"])
    assert record["accuracyBefore"] == pytest.approx(source_accuracy, abs=1e-6)


def test_a_sample_is_the_seeded_uniform_sample_of_a_larger_dataset(client: TestClient, auth: Auth) -> None:
    frame = iris_frame(copies=4)  # 600 rows
    post_dataset(client, auth(), "iris-big", frame)
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", by_dataset("iris-big", sample=100))
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert (record["validation"]["rows"], record["validation"]["datasetRows"]) == (100, 600)
    # bottom-k of seed 0's keys, one per row in file order: the rows the service measured on
    keys = np.random.default_rng(0).random(len(frame))
    chosen = np.sort(np.argsort(keys, kind="stable")[:100])
    expected = accuracy_of(client, auth, "skl-onnx", frame.iloc[chosen])
    assert record["accuracyAfter"] == pytest.approx(expected, abs=1e-6)

    again = optimize(client, auth, "skl", by_dataset("iris-big", sample=100), targetModel="skl-again")
    assert again.status_code == 201, again.text
    second = client.get(f"{API}/models/skl-again/versions/1", headers=auth()).json()["lineage"]
    assert second["optimization"]["accuracyBefore"] == record["accuracyBefore"]  # the same rows


def test_static_int8_calibrates_on_a_dataset_without_labels(client: TestClient, auth: Auth) -> None:
    post_dataset(client, auth(), "iris", iris_frame())
    post_dataset(client, auth(), "unlabelled", pd.DataFrame(X[1::5], columns=FEATURES))
    sklearn_model(client, auth)
    calibration = {"datasetConfig": {"trainPath": "dataset://unlabelled", "format": "csv"}, "sample": 20}
    response = optimize(
        client, auth, "skl", by_dataset("iris"), mode="static", calibration=calibration, maxAccuracyDrop=0.1
    )
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert record["options"] == {"mode": "static", "calibrationRows": 20}
    assert record["calibration"]["source"] == "dataset://unlabelled"
    assert (record["calibration"]["rows"], record["calibration"]["datasetRows"]) == (20, 30)
    assert "target" not in record["calibration"]


def test_inline_validation_is_recorded_as_inline(client: TestClient, auth: Auth) -> None:
    sklearn_model(client, auth)
    validation = {"rows": X[::3].tolist(), "labels": Y[::3].tolist()}
    response = optimize(client, auth, "skl", validation, mode="static")
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert record["validation"] == {"source": "inline", "rows": 50}
    assert record["calibration"] == {"source": "inline", "rows": 50, "sameAsValidation": True}


@pytest.mark.parametrize(
    ("validation", "body", "field"),
    [
        (by_dataset("iris", target="colour"), {}, "body.validation.datasetConfig.target"),
        (by_dataset("iris", features=["petal_length", "stem"]), {}, "body.validation.datasetConfig.features"),
        (by_dataset("iris", features=["note"]), {}, "body.validation.datasetConfig.trainPath"),  # text
        (by_dataset("iris", features=FEATURES[:3]), {}, "body.validation.datasetConfig.features"),  # width
        (
            by_dataset("iris", features=[*FEATURES, "sepal_width"]),
            {},
            "body.validation.datasetConfig.features",
        ),
        (by_dataset("iris", features=[*FEATURES, "species"]), {}, "body.validation.datasetConfig.trainPath"),
        ({"rows": [[1.0, 2.0, 3.0]], "labels": [0]}, {}, "body.validation.rows"),  # width
        (by_dataset("nowhere"), {}, "body.validation.datasetConfig.trainPath"),
        (
            {"datasetConfig": {"trainPath": "/etc/passwd", "format": "csv", "target": "species"}},
            {},
            "body.validation.datasetConfig.trainPath",
        ),
        ({"datasetConfig": {"trainPath": "dataset://iris"}}, {}, "body.validation.datasetConfig.format"),
        (by_dataset("iris", format="npz"), {}, "body.validation.datasetConfig.format"),
        (by_dataset("iris", sample=0), {}, "body.validation.sample"),
        (by_dataset("iris", sample=100_001), {}, "body.validation.sample"),
        ({**by_dataset("iris"), "rows": [[1.0, 2.0, 3.0, 4.0]], "labels": [0]}, {}, "body.validation"),
        ({}, {}, "body.validation"),
        ({"rows": [[1.0, 2.0, 3.0, 4.0]]}, {}, "body.validation"),
        (
            by_dataset("iris"),
            {"calibration": {"datasetConfig": {"trainPath": "dataset://iris", "format": "csv"}}},
            "body.calibration",  # dynamic INT8 is not calibrated
        ),
        (
            by_dataset("iris"),
            {
                "mode": "static",
                "calibration": {"datasetConfig": {"trainPath": "dataset://gone", "format": "csv"}},
            },
            "body.calibration.datasetConfig.trainPath",
        ),
    ],
)
def test_bad_references_are_422_naming_the_field_and_make_nothing(
    client: TestClient, auth: Auth, validation: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    post_dataset(client, auth(), "iris", iris_frame())
    sklearn_model(client, auth)
    response = optimize(client, auth, "skl", validation, **body)
    assert response.status_code == 422, response.text
    assert field in fields(response)
    assert client.get(f"{API}/models/skl-onnx", headers=auth()).status_code == 404


def test_another_tenants_dataset_is_not_found(client: TestClient, auth: Auth) -> None:
    post_dataset(client, auth(tenant="globex"), "secret", iris_frame())
    sklearn_model(client, auth)
    foreign = optimize(client, auth, "skl", by_dataset("secret"))
    assert foreign.status_code == 422, foreign.text
    assert fields(foreign) == ["body.validation.datasetConfig.trainPath"]
    unknown = optimize(client, auth, "skl", by_dataset("nothing"))
    # the same answer as for a name no tenant uses: nothing says the other tenant has one
    assert foreign.json()["errors"][0]["message"] == unknown.json()["errors"][0]["message"].replace(
        "nothing", "secret"
    )
    assert client.get(f"{API}/models/skl-onnx", headers=auth()).status_code == 404


def test_a_drop_past_the_bound_on_a_dataset_registers_nothing(client: TestClient, auth: Auth) -> None:
    frame = pd.DataFrame(X, columns=FEATURES).assign(species=Y)
    post_dataset(client, auth(), "iris", frame)
    torch_model(client, auth)  # no feature names: every column but the target, in file order
    response = client.post(
        f"{API}/models/net/versions/1/optimize",
        json={"method": "pruning", "sparsity": 0.99, "maxAccuracyDrop": 0, "validation": by_dataset("iris")},
        headers=auth(),
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/accuracy-drop-too-large")
    figures = problem["optimization"]
    assert figures["accuracyAfter"] < figures["accuracyBefore"]
    assert figures["validation"]["source"] == "dataset://iris"
    assert figures["validation"]["features"] == FEATURES
    versions = client.get(f"{API}/models/net/versions", headers=auth()).json()["items"]
    assert [v["version"] for v in versions] == [1]


def test_a_parquet_file_under_the_dataset_roots_is_read_too(
    client: TestClient, auth: Auth, container: Any
) -> None:
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    iris_frame().to_parquet(buffer, index=False)
    (root / "iris.parquet").write_bytes(buffer.getvalue())
    sklearn_model(client, auth)
    validation = {
        "datasetConfig": {"trainPath": str(root / "iris.parquet"), "target": "species"},
        "sample": 50,
    }
    response = optimize(client, auth, "skl", validation, method="float16")
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert record["validation"]["format"] == "parquet" and record["validation"]["rows"] == 50


def test_a_sample_narrower_than_a_torch_versions_input_is_a_422(client: TestClient, auth: Auth) -> None:
    post_dataset(client, auth(), "iris", iris_frame())
    torch_model(client, auth)  # its declared architecture takes 4 features
    narrow = by_dataset("iris", features=FEATURES[:3])
    response = client.post(
        f"{API}/models/net/versions/1/optimize",
        json={"method": "float16", "validation": narrow},
        headers=auth(),
    )
    assert response.status_code == 422, response.text
    assert fields(response) == ["body.validation.datasetConfig.features"]
    assert "takes 4" in response.json()["errors"][0]["message"]
    versions = client.get(f"{API}/models/net/versions", headers=auth()).json()["items"]
    assert [v["version"] for v in versions] == [1]


def test_a_folder_of_csv_files_is_sampled_across_its_files(
    client: TestClient, auth: Auth, container: Any
) -> None:
    folder = container.settings.dataset_root_paths[0] / "iris-parts"
    folder.mkdir(parents=True)
    frame = iris_frame(copies=2)  # 300 rows, split over three files and an empty one
    for index, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_csv(folder / f"part-{index}.csv", index=False)
    (folder / "part-3.csv").write_text("")
    sklearn_model(client, auth)
    validation = {
        "datasetConfig": {"trainPath": str(folder), "target": "species"},  # csv: told from its files
        "sample": 120,
    }
    response = optimize(client, auth, "skl", validation, method="float16")
    assert response.status_code == 201, response.text
    record = client.get(f"{API}/models/skl-onnx/versions/1", headers=auth()).json()["lineage"]["optimization"]
    assert (record["validation"]["rows"], record["validation"]["datasetRows"]) == (120, 300)
    keys = np.random.default_rng(0).random(len(frame))
    chosen = np.sort(np.argsort(keys, kind="stable")[:120])
    assert chosen.min() < 100 and chosen.max() >= 200  # the sample spans the files
    expected = accuracy_of(client, auth, "skl-onnx", frame.iloc[chosen])
    assert record["accuracyAfter"] == pytest.approx(expected, abs=1e-6)
