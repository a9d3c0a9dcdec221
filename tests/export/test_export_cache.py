"""Export bundles are built once per version, format and schema, and served from the work folder after
that with their sha256 as a strong ETag; ``If-None-Match`` gets a 304. What the cache holds is never
served for another artifact or schema, and unused bundles go with the sweeper of compile folders."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from aiservice.bootstrap.backends import compile_dir
from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"
X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
CLASSES = ["setosa", "versicolor", "virginica"]
BUILT = "export bundle built"


def onnx_bytes(c: float) -> bytes:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=500).fit(X, Y)
    return bytes(to_onnx(model, X[:1], options={id(model): {"zipmap": False}}).SerializeToString())


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    """An ONNX model ``iris`` with two versions of different artifacts."""
    features = [{"name": f"f{i}", "type": "number"} for i in range(4)]
    create_model(
        client,
        auth(),
        "iris",
        framework="onnx",
        inputSchema={"type": "tabular", "features": features},
        outputSchema={"classes": CLASSES},
    )
    for c in (1.0, 0.01):
        response = upload(client, auth(), "iris", onnx_bytes(c), filename="model.onnx")
        assert response.status_code == 201, response.text
    return "iris"


def kept(container: Container) -> list[Path]:
    return sorted(compile_dir(container.settings).glob("onnx-bundle-*.zip"))


def builds(caplog: pytest.LogCaptureFixture) -> int:
    return sum(BUILT in r.getMessage() for r in caplog.records)


def test_the_second_export_is_served_from_the_cache_with_a_strong_etag(
    client: TestClient, auth: Auth, container: Container, iris: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aiservice.application.export"):
        first = client.get(f"{API}/iris/versions/1/export", headers=auth())
        second = client.get(f"{API}/iris/versions/1/export", headers=auth("viewer"))
    assert first.status_code == second.status_code == 200, first.text
    assert builds(caplog) == 1  # the second call built nothing
    assert first.headers["etag"] == second.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'
    assert second.content == first.content
    assert second.headers["content-disposition"] == first.headers["content-disposition"]
    [bundle] = kept(container)
    assert bundle.read_bytes() == first.content
    assert list(compile_dir(container.settings).glob("onnx-export-*")) == []  # no scratch left behind
    with zipfile.ZipFile(io.BytesIO(second.content)) as archive:
        assert json.loads(archive.read("schema.json"))["classes"] == CLASSES


def test_if_none_match_with_the_etag_is_a_304_after_the_usual_checks(
    client: TestClient, auth: Auth, iris: str
) -> None:
    url = f"{API}/iris/versions/1/export"
    etag = client.get(url, headers=auth()).headers["etag"]
    for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get(url, headers={**auth(), "If-None-Match": held})
        assert response.status_code == 304, held
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert client.get(url, headers={**auth(), "If-None-Match": '"other"'}).status_code == 200
    # A 304 says the bundle exists: only to callers who may download it, for versions that exist.
    assert client.get(url, headers={**auth("predictor"), "If-None-Match": etag}).status_code == 403
    missing = client.get(f"{API}/iris/versions/3/export", headers={**auth(), "If-None-Match": "*"})
    assert missing.status_code == 404


def test_another_version_or_schema_is_another_bundle(
    client: TestClient, auth: Auth, container: Container, iris: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aiservice.application.export"):
        one = client.get(f"{API}/iris/versions/1/export", headers=auth())
        two = client.get(f"{API}/iris/versions/2/export", headers=auth())
        assert one.status_code == two.status_code == 200
        assert one.headers["etag"] != two.headers["etag"]
        with zipfile.ZipFile(io.BytesIO(one.content)) as a, zipfile.ZipFile(io.BytesIO(two.content)) as b:
            assert a.read("model.onnx") != b.read("model.onnx")
        assert builds(caplog) == 2 and len(kept(container)) == 2
        assert client.get(f"{API}/iris/versions/1/export", headers=auth()).content == one.content
        assert builds(caplog) == 2

        # The model's schema is written into the bundle and may change: a new one is built.
        labels = ["a", "b", "c"]
        changed = client.patch(f"{API}/iris", json={"outputSchema": {"classes": labels}}, headers=auth())
        assert changed.status_code == 200, changed.text
        renamed = client.get(f"{API}/iris/versions/1/export", headers=auth())
        assert builds(caplog) == 3
    assert renamed.headers["etag"] != one.headers["etag"]
    with zipfile.ZipFile(io.BytesIO(renamed.content)) as archive:
        assert json.loads(archive.read("schema.json"))["classes"] == labels


def test_unused_bundles_are_swept_with_the_compile_folders_and_rebuilt_alike(
    client: TestClient, auth: Auth, container: Container, iris: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aiservice.application.export"):
        first = client.get(f"{API}/iris/versions/1/export", headers=auth())
        [bundle] = kept(container)
        long_ago = time.time() - 7 * 24 * 3600
        os.utime(bundle, (long_ago, long_ago))
        container.leftovers.sweep()
        assert kept(container) == []
        again = client.get(f"{API}/iris/versions/1/export", headers=auth())
        assert builds(caplog) == 2
    # The zip is reproducible: a rebuild (or another replica) gives the same bytes and ETag.
    assert again.headers["etag"] == first.headers["etag"]
    assert again.content == first.content


def test_a_bundle_in_use_is_not_swept(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    client.get(f"{API}/iris/versions/1/export", headers=auth())
    [bundle] = kept(container)
    long_ago = time.time() - 7 * 24 * 3600
    os.utime(bundle, (long_ago, long_ago))
    assert client.get(f"{API}/iris/versions/1/export", headers=auth()).status_code == 200  # renews it
    container.leftovers.sweep()
    assert kept(container) == [bundle]
