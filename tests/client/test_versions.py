"""Versions through the SDK against a live service: uploads of files and of live scikit-learn, XGBoost and
PyTorch objects (saved in the safe formats the service loads) whose predictions equal the objects' own,
a DataFrame in and out on its index, downloads checked against their digest, stages and aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from aiservice.client import Client, NotFoundError, Version

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
X, Y = load_iris(return_X_y=True)
ROWS = X[::7]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame(X, columns=FEATURES)


@pytest.fixture(scope="module")
def fitted_on_frame(frame: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(frame, Y)


def test_a_live_sklearn_estimator_predicts_a_dataframe_on_its_own_index(
    sdk: Any, frame: pd.DataFrame, fitted_on_frame: LogisticRegression
) -> None:
    sdk.models.create("iris", "sklearn")
    version = sdk.models.upload_version("iris", fitted_on_frame, description="live", metrics={"acc": 0.97})
    assert isinstance(version, Version)
    assert (version.version, version.artifact.filename, version.metrics) == (1, "model.skops", {"acc": 0.97})

    rows = frame.iloc[::9].set_index(pd.Index([f"row-{i}" for i in range(len(frame.iloc[::9]))]))
    answered = sdk.predict("iris", rows, include_confidence=True)
    assert isinstance(answered, pd.DataFrame)
    assert list(answered.index) == list(rows.index)
    assert answered["prediction"].tolist() == fitted_on_frame.predict(rows).tolist()
    np.testing.assert_allclose(
        answered[["probability_0", "probability_1", "probability_2"]].to_numpy(),
        fitted_on_frame.predict_proba(rows),
        rtol=1e-6,
    )


def test_a_live_xgboost_classifier_predicts_as_it_does_locally(sdk: Any) -> None:
    import xgboost as xgb

    booster = xgb.XGBClassifier(n_estimators=8, max_depth=2).fit(X, Y)
    sdk.models.create("iris-xgb", "xgboost")
    version = sdk.models.upload_version("iris-xgb", booster)
    assert version.artifact.filename == "model.ubj"

    answers = sdk.predict("iris-xgb", ROWS)  # a 2-D array: one prediction per row
    assert [a.prediction for a in answers] == booster.predict(ROWS).tolist()


def test_a_live_torch_module_predicts_as_it_does_locally(sdk: Any) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()
    sdk.models.create("iris-net", "pytorch")
    version = sdk.models.upload_version("iris-net", net)
    assert version.artifact.filename == "model.pt2"

    one = sdk.predict("iris-net", ROWS[0].tolist())
    with torch.inference_mode():
        expected = net(torch.from_numpy(ROWS.astype(np.float32))).numpy().reshape(-1)
    assert one.prediction == pytest.approx(float(expected[0]), rel=1e-5)
    many = sdk.batch_predict("iris-net", ROWS, chunk_size=4)
    np.testing.assert_allclose([a.prediction for a in many], expected, rtol=1e-5)


def test_a_file_uploads_with_a_progress_bar_and_downloads_back_checked(sdk: Any, tmp_path: Path) -> None:
    artifact = tmp_path / "iris.skops"
    artifact.write_bytes(sio.dumps(LogisticRegression(max_iter=500).fit(X, Y)))
    sdk.models.create("iris", "sklearn")
    version = sdk.models.upload_version("iris", artifact, progress=True)
    assert version.artifact.filename == "iris.skops"
    assert version.artifact.size_bytes == artifact.stat().st_size

    assert sdk.versions.download("iris", 1) == artifact.read_bytes()
    written = sdk.versions.download("iris", 1, tmp_path / "copy.skops")
    assert Path(written).read_bytes() == artifact.read_bytes()


def test_versions_are_listed_read_staged_and_aliased(sdk: Any, fitted_on_frame: LogisticRegression) -> None:
    sdk.models.create("iris", "sklearn")
    for _ in range(3):
        sdk.models.upload_version("iris", fitted_on_frame)

    assert [v.version for v in sdk.versions.list("iris", page_size=2)] == [3, 2, 1]
    assert sdk.versions.get("iris", 2).stage == "none"

    promoted = sdk.versions.promote("iris", 2, stage="production", alias="champion")
    assert (promoted.version, promoted.stage) == (2, "production")
    assert sdk.models.get("iris").aliases == {"champion": 2}
    assert [(a.alias, a.version) for a in sdk.versions.aliases("iris")] == [("champion", 2)]
    assert sdk.predict("iris", dict(zip(FEATURES, X[0], strict=True)), alias="champion").version == 2

    sdk.versions.delete_alias("iris", "champion")
    assert sdk.versions.aliases("iris") == []
    with pytest.raises(NotFoundError):
        sdk.versions.get("iris", 9)


# Keras (with TensorFlow 2.21 under numpy 2) warns from its own tensor conversion while saving.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_a_live_keras_model_predicts_as_it_does_locally(service: str, token: str) -> None:
    """Once, with the sync client (Keras costs seconds to import; the async path is the same bytes)."""
    keras = pytest.importorskip("keras")

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with Client(service, token, "acme") as sdk:
        sdk.models.create("iris-keras", "keras")
        assert sdk.models.upload_version("iris-keras", net).artifact.filename == "model.keras"
        answers = sdk.predict("iris-keras", ROWS)
    np.testing.assert_allclose(
        [a.prediction for a in answers], net.predict(ROWS, verbose=0).reshape(-1), rtol=1e-5
    )
