"""What the fuzzer found, pinned: each of these once answered 500 or broke the published schema."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Auth
from tests.helpers import create_model

PROBLEM_JSON = "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/ai/models/iris/versions/2147483648",
        "/api/v1/ai/models/iris/versions/2147483648/artifact",
        "/v2/models/iris/versions/2147483648",
        "/api/v1/ai/resolve/iris:2147483648",
        "/api/v1/ai/resolve/iris:²",
        "/api/v1/ai/resolve/iris:" + "9" * 5000,
    ],
)
def test_a_version_number_past_32_bits_is_a_422_problem(client: TestClient, auth: Auth, path: str) -> None:
    headers = auth("admin")
    create_model(client, headers, "iris")
    response = client.get(path, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON


def test_an_alias_to_a_version_past_32_bits_is_a_422_problem(client: TestClient, auth: Auth) -> None:
    headers = auth("admin")
    create_model(client, headers, "iris")
    response = client.put("/api/v1/ai/models/iris/aliases/best", json={"version": 2**31}, headers=headers)
    assert response.status_code == 422, response.text


def test_every_api_operation_declares_its_problem_responses(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert PROBLEM_JSON in responses["500"]["content"], (method, path)
            if path.startswith("/api/v1/ai"):
                for status in ("401", "403", "404", "422", "429"):
                    content = responses[status]["content"]
                    assert content == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_an_audit_time_filter_past_the_calendar_in_utc_is_a_422_problem(
    client: TestClient, auth: Auth, value: str
) -> None:
    response = client.get("/api/v1/ai/audit", params={"since": value, "until": value}, headers=auth("admin"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in response.json()["errors"]} == {"query.since"}
