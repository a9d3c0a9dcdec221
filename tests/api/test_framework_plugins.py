"""Frameworks are the installed plugins: a new model names one of them, and a model whose plugin has
gone since keeps reading but answers 503 runtime-unavailable."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import bootstrap
from aiservice.infrastructure.runtimes import registry
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"


def test_a_framework_no_plugin_provides_is_a_422_listing_the_installed_ones(
    client: TestClient, auth: Auth
) -> None:
    response = client.post(API, json={"name": "m", "framework": "catboost"}, headers=auth())
    assert response.status_code == 422
    problem = response.json()
    (error,) = problem["errors"]
    assert error["field"] == "body.framework"
    for installed in ("lightgbm", "onnx", "pytorch", "sklearn", "xgboost"):
        assert installed in error["message"]
    assert client.get(API, headers=auth()).json()["items"] == []


def test_a_model_whose_plugin_has_gone_reads_but_answers_503(
    client: TestClient, auth: Auth, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_model(client, auth(), "churn")
    assert upload(client, auth(), "churn").status_code == 201

    def without_sklearn() -> tuple[EntryPoint, ...]:
        return tuple(e for e in entry_points(group=registry.GROUP) if e.name != "sklearn")

    # the next start finds no sklearn (as if it were uninstalled before the service restarted)
    monkeypatch.setattr(registry, "_installed_entry_points", without_sklearn)
    restarted = bootstrap(settings)
    try:
        with TestClient(create_app(restarted)) as after:
            assert after.get(f"{API}/churn", headers=auth()).json()["framework"] == "sklearn"
            answer = after.post(
                f"{API}/churn/predict", json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}}, headers=auth()
            )
            assert answer.status_code == 503
            assert answer.json()["type"].endswith("/runtime-unavailable")
            refused = after.post(API, json={"name": "new", "framework": "sklearn"}, headers=auth())
            assert refused.status_code == 422
    finally:
        restarted.close()
