"""Automatic ONNX compilation: kept only where outputs match, and served when it is faster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, iris_model_bytes, upload, wait_until

API = "/api/v1/ai/models"
X, _ = load_iris(return_X_y=True)


def test_compiled_version_records_its_checks_and_predicts_the_same(
    client: TestClient, auth: Auth, container: Container
) -> None:
    create_model(client, auth(), "forest")
    upload(client, auth(), "forest", iris_model_bytes("forest"))
    model_id = client.get(f"{API}/forest", headers=auth()).json()["id"]
    serving = container.compilation.compile_version("acme", model_id, 1)
    assert serving is not None and serving["kept"] is True
    version = client.get(f"{API}/forest/versions/1", headers=auth()).json()
    shown = version["serving"]
    assert shown["form"] in ("onnx", "native")
    assert shown["tolerance"] == 1e-4 and shown["maxAbsDiff"] <= 1e-4
    assert {"nativeRow", "onnxRow"} <= set(shown["latencyUs"])
    assert shown["onnxSizeBytes"] > 0
    assert "onnx" in shown["reason"].lower()

    reference = sio.loads(
        iris_model_bytes("forest"), trusted=sio.get_untrusted_types(data=iris_model_bytes("forest"))
    )
    features = [float(v) for v in X[120]]
    body = client.post(
        f"{API}/forest/predict",
        json={"input": {"features": features}, "options": {"includeConfidence": True}},
        headers=auth(),
    ).json()
    expected = reference.predict_proba(np.asarray([features], dtype=np.float32))[0]
    assert list(body["probabilities"].values()) == pytest.approx(list(expected), abs=1e-4)
    loaded = client.post(f"{API}/forest/versions/1/load", headers=auth()).json()
    assert loaded["form"] == shown["form"]


def test_compiling_twice_is_a_no_op(client: TestClient, auth: Auth, container: Container) -> None:
    create_model(client, auth(), "lr")
    upload(client, auth(), "lr")
    model_id = client.get(f"{API}/lr", headers=auth()).json()["id"]
    assert container.compilation.compile_version("acme", model_id, 1) is not None
    assert container.compilation.compile_version("acme", model_id, 1) is None


def test_frameworks_without_a_converter_are_left_native(
    client: TestClient, auth: Auth, container: Container
) -> None:
    create_model(client, auth(), "lr")
    upload(client, auth(), "lr")
    model_id = client.get(f"{API}/lr", headers=auth()).json()["id"]
    assert container.compilation.compile_version("acme", model_id, 99) is None
    assert container.compilation.compile_version("globex", model_id, 1) is None  # not that tenant's model


@pytest.fixture
def compiling_client(
    database_url: str, engine: object, tmp_path: Path
) -> Iterator[tuple[TestClient, Container]]:
    container = bootstrap(make_settings(database_url, tmp_path / "data", onnx_compile=True))
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        yield client, container
    container.close()


def test_new_versions_are_compiled_in_the_background(
    compiling_client: tuple[TestClient, Container], auth: Auth
) -> None:
    client, _ = compiling_client
    create_model(client, auth(), "auto")
    assert upload(client, auth(), "auto").status_code == 201

    def compiled() -> dict[str, object] | None:
        serving: dict[str, object] = client.get(f"{API}/auto/versions/1", headers=auth()).json()["serving"]
        return serving if "compiled" in serving else None

    serving = wait_until(compiled, 90, 0.2, "the background compilation to end")
    assert serving.get("compiled") is True
    assert serving["kept"] is True


def test_a_forest_compiled_to_onnx_answers_missing_values_as_the_forest_does(
    client: TestClient, auth: Auth, container: Container
) -> None:
    """scikit-learn's trees send NaN down the side chosen at fit; the compiled form does the same, so
    it serves a nullable feature's null (skl2onnx alone sends every NaN to the false branch)."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=["u", "v", "w"])
    frame.loc[rng.random(300) < 0.2, "u"] = np.nan
    y = np.where(frame.u.fillna(1.0) + frame.v > 0, "up", "down")
    forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(frame, y)
    schema = {"type": "tabular", "features": [{"name": "u", "nullable": True}, {"name": "v"}, {"name": "w"}]}
    create_model(client, auth(), "forest", inputSchema=schema)
    upload(client, auth(), "forest", bytes(sio.dumps(forest)))
    model_id = client.get(f"{API}/forest", headers=auth()).json()["id"]
    serving = container.compilation.compile_version("acme", model_id, 1)
    assert serving is not None and (serving["kept"], serving["missingValues"]) == (True, "same")
    response = client.post(
        f"{API}/forest/predict",
        json={"input": {"u": None, "v": 0.3, "w": -1.0}, "options": {"includeConfidence": True}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    expected = forest.predict_proba(pd.DataFrame({"u": [np.nan], "v": [0.3], "w": [-1.0]}))[0]
    body = response.json()
    assert body["form"] == serving["form"]
    assert list(body["probabilities"].values()) == pytest.approx(list(expected), abs=1e-4)
