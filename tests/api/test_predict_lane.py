"""Single-row predictions take a short way through the app (``PredictLane``); a cross-origin call
takes the long way (CORS, Starlette's router). Both must answer alike: the same predictions, the same
problems, the same headers, the same audit and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from tests.api.test_predict_api import API, iris, row
from tests.conftest import make_settings

ORIGIN = "https://dashboard.example.com"


@pytest.fixture
def app_with_cors(
    engine: object, database_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Container]]:
    settings = make_settings(database_url, tmp_path / "data", cors_origins=ORIGIN)
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        yield client, container


def headers(container: Container, *roles: str) -> dict[str, str]:
    token = container.tokens.issue("tester", "acme", list(roles or ("admin",)), 60)
    return {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}


def both_ways(
    client: TestClient, path: str, hdrs: dict[str, str], **kwargs: Any
) -> tuple[httpx.Response, ...]:
    short = client.post(path, headers={**hdrs, "X-Request-ID": "same"}, **kwargs)
    long = client.post(path, headers={**hdrs, "X-Request-ID": "same", "Origin": ORIGIN}, **kwargs)
    assert long.headers["access-control-allow-origin"] == ORIGIN  # the long way was taken
    assert "access-control-allow-origin" not in short.headers
    return short, long


def same_but_timing(short: httpx.Response, long: httpx.Response) -> None:
    assert short.status_code == long.status_code
    assert short.headers["content-type"] == long.headers["content-type"]
    a, b = short.json(), long.json()
    a.pop("latencyMs", None), b.pop("latencyMs", None)
    assert a == b
    shared = {"x-request-id", "content-security-policy", "cache-control", "x-content-type-options"}
    assert {k: short.headers.get(k) for k in shared} == {k: long.headers.get(k) for k in shared}


def test_a_prediction_is_the_same_either_way(app_with_cors: tuple[TestClient, Container]) -> None:
    client, container = app_with_cors
    iris(client, lambda *roles, **_: headers(container, *roles))
    short, long = both_ways(
        client,
        f"{API}/iris/predict",
        headers(container, "predictor"),
        json={"input": row(100), "options": {"includeConfidence": True}},
    )
    assert short.status_code == 200, short.text
    same_but_timing(short, long)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "problem"),
    [
        (b'{"input": {"sepal_length": 1}, "input": {}}', "application/json", 400, "duplicate-json-key"),
        (b'{"input": ', "application/json", 400, "malformed-json"),
        (b'{"input": {"sepal_length": 1}}', "text/plain", 415, "unsupported-media-type"),
        (b'{"input": [1, 2]}', "application/json", 422, "validation-error"),
        (b'{"input": {}, "options": {"version": 0}}', "application/json", 422, "validation-error"),
        (b'{"input": {"sepal_length": "tall"}}', "application/json", 422, "validation-error"),
    ],
)
def test_a_bad_request_is_the_same_problem_either_way(
    app_with_cors: tuple[TestClient, Container], body: bytes, content_type: str, status: int, problem: str
) -> None:
    client, container = app_with_cors
    iris(client, lambda *roles, **_: headers(container, *roles))
    short, long = both_ways(
        client, f"{API}/iris/predict", {**headers(container), "Content-Type": content_type}, content=body
    )
    assert (short.status_code, short.json()["type"].rsplit("/", 1)[-1]) == (status, problem), short.text
    same_but_timing(short, long)


def test_refusals_are_the_same_either_way(app_with_cors: tuple[TestClient, Container]) -> None:
    client, container = app_with_cors
    unknown = both_ways(client, f"{API}/nope/predict", headers(container), json={"input": {}})
    assert unknown[0].status_code == 404
    same_but_timing(*unknown)
    anonymous = both_ways(client, f"{API}/nope/predict", {}, json={"input": {}})
    assert anonymous[0].status_code == 401
    assert anonymous[0].headers["www-authenticate"] == anonymous[1].headers["www-authenticate"]
    same_but_timing(*anonymous)
    viewer_cannot = both_ways(
        client, f"{API}/nope/predict", headers(container, "auditor"), json={"input": {}}
    )
    assert viewer_cannot[0].status_code in (403, 404)
    same_but_timing(*viewer_cannot)
    too_big = b'{"input": {"x": "' + b"a" * container.settings.max_json_body_bytes + b'"}}'
    large = both_ways(
        client,
        f"{API}/nope/predict",
        {**headers(container), "Content-Type": "application/json"},
        content=too_big,
    )
    assert large[0].status_code == 413
    same_but_timing(*large)


def test_a_server_fault_on_the_short_way_is_a_problem_without_a_traceback(
    app_with_cors: tuple[TestClient, Container],
) -> None:
    client, container = app_with_cors
    iris(client, lambda *roles, **_: headers(container, *roles))

    async def explode(*_args: object) -> None:
        raise RuntimeError("secret internal detail")

    container.inference.predict = explode  # type: ignore[method-assign]
    response = client.post(
        f"{API}/iris/predict", json={"input": row(1)}, headers={**headers(container), "X-Request-ID": "r-500"}
    )
    assert response.status_code == 500
    problem = response.json()
    assert (problem["type"].rsplit("/", 1)[-1], problem["requestId"]) == ("internal-error", "r-500")
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_only_the_predict_route_takes_the_short_way(app_with_cors: tuple[TestClient, Container]) -> None:
    client, container = app_with_cors
    iris(client, lambda *roles, **_: headers(container, *roles))
    wrong_method = client.get(f"{API}/iris/predict", headers=headers(container))
    assert (wrong_method.status_code, wrong_method.headers["content-type"]) == (
        405,
        "application/problem+json",
    )
    deeper = client.post(f"{API}/iris/predict/more", json={"input": row(1)}, headers=headers(container))
    assert deeper.status_code == 404
    metrics = client.get("/metrics").text
    client.post(f"{API}/iris/predict", json={"input": row(1)}, headers=headers(container))
    after = client.get("/metrics").text
    route = 'route="/api/v1/ai/models/{model}/predict"'
    assert route in after and after != metrics  # counted under the route's template, as routing names it
