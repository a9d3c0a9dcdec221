"""The /models resource: create, list with filters and cursors, read by id or name, change, delete."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Auth
from tests.helpers import create_model

MODELS = "/api/v1/ai/models"


def test_created_model_has_id_timestamps_and_no_version(client: TestClient, auth: Auth) -> None:
    body = {
        "name": "churn",
        "description": "Predicts churn",
        "framework": "xgboost",
        "category": "classification",
        "configuration": {"threshold": 0.5},
        "inputSchema": {"type": "tabular", "features": [{"name": "age", "type": "number"}]},
        "outputSchema": {"classes": ["stay", "leave"]},
        "tags": ["crm", "beta"],
    }
    response = client.post(MODELS, json=body, headers=auth("editor"))
    assert response.status_code == 201
    model = response.json()
    assert response.headers["location"] == f"{MODELS}/{model['id']}"
    assert model["latestVersion"] is None
    assert model["createdAt"].endswith("Z") and model["updatedAt"] == model["createdAt"]
    assert {k: model[k] for k in body} == body


def test_model_is_addressable_by_id_and_by_name(client: TestClient, auth: Auth) -> None:
    created = create_model(client, auth(), "fraud")
    by_id = client.get(f"{MODELS}/{created['id']}", headers=auth("viewer")).json()
    by_name = client.get(f"{MODELS}/fraud", headers=auth("viewer")).json()
    assert by_id["id"] == by_name["id"] == created["id"]
    assert by_id["aliases"] == {}


def test_duplicate_name_is_409_naming_the_existing_model(client: TestClient, auth: Auth) -> None:
    first = create_model(client, auth(), "dup")
    response = client.post(MODELS, json={"name": "dup", "framework": "onnx"}, headers=auth())
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["existingId"] == first["id"]


def test_same_name_is_allowed_in_another_tenant(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(tenant="acme"), "shared-name")
    create_model(client, auth(tenant="globex"), "shared-name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "framework": "caffe"}, "body.framework"),
        ({"framework": "sklearn"}, "body.name"),
        ({"name": "bad name!", "framework": "sklearn"}, "body.name"),
        ({"name": "x", "framework": "sklearn", "tags": "not-a-list"}, "body.tags"),
        ({"name": "x", "framework": "sklearn", "inputSchema": [1, 2]}, "body.inputSchema"),
        ({"name": "x", "framework": "sklearn", "colour": "red"}, "body.colour"),
        ({"name": "00000000-0000-0000-0000-000000000000", "framework": "sklearn"}, "body.name"),
    ],
)
def test_invalid_body_is_422_naming_the_field_and_creates_nothing(
    client: TestClient, auth: Auth, body: dict[str, object], field: str
) -> None:
    response = client.post(MODELS, json=body, headers=auth())
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert field in [e["field"] for e in problem["errors"]]
    assert client.get(MODELS, headers=auth()).json()["items"] == []


def test_list_pages_with_a_cursor_without_gaps_or_repeats(client: TestClient, auth: Auth) -> None:
    names = [f"m{i:02d}" for i in range(7)]
    for name in names:
        create_model(client, auth(), name)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 3, "sort": "name"}
        if cursor:
            params["cursor"] = cursor
        page = client.get(MODELS, params=params, headers=auth()).json()
        seen += [m["name"] for m in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == names


@pytest.mark.parametrize("sort", ["createdAt", "-createdAt", "updatedAt", "-updatedAt", "-name"])
def test_every_sort_order_pages_through_all_models(client: TestClient, auth: Auth, sort: str) -> None:
    for i in range(5):
        create_model(client, auth(), f"s{i}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, "sort": sort, **({"cursor": cursor} if cursor else {})}
        page = client.get(MODELS, params=params, headers=auth()).json()
        seen += [m["name"] for m in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"s{i}" for i in range(5)]
    if sort == "-name":
        assert seen == sorted(seen, reverse=True)
    if sort == "createdAt":
        assert seen == [f"s{i}" for i in range(5)]


def test_list_filters_by_framework_category_tag_and_text(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn-xgb", framework="xgboost", category="classification", tags=["crm"])
    create_model(client, auth(), "price", framework="onnx", category="regression", description="House PRICES")
    create_model(client, auth(), "churn-nn", framework="pytorch", tags=["crm", "deep"])

    def names(**params: str) -> list[str]:
        page = client.get(MODELS, params={**params, "sort": "name"}, headers=auth()).json()
        return [m["name"] for m in page["items"]]

    assert names(framework="onnx") == ["price"]
    assert names(category="classification") == ["churn-xgb"]
    assert names(tag="crm") == ["churn-nn", "churn-xgb"]
    assert names(tag="deep") == ["churn-nn"]
    assert names(q="CHURN") == ["churn-nn", "churn-xgb"]
    assert names(q="prices") == ["price"]
    assert names(q="%") == []


def test_foreign_or_garbled_cursor_is_a_clear_422(client: TestClient, auth: Auth) -> None:
    response = client.get(MODELS, params={"cursor": "!!not-a-cursor"}, headers=auth())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.cursor"


def test_patch_changes_only_the_given_fields(client: TestClient, auth: Auth) -> None:
    created = create_model(client, auth(), "patchme", description="old", tags=["a"])
    response = client.patch(
        f"{MODELS}/patchme", json={"description": "new", "tags": ["b", "b", "c"]}, headers=auth("editor")
    )
    assert response.status_code == 200
    model = response.json()
    assert model["description"] == "new"
    assert model["tags"] == ["b", "c"]
    assert model["framework"] == "sklearn"
    assert model["updatedAt"] > created["updatedAt"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "renamed"}, "body.name"), ({"framework": "onnx"}, "body.framework"), ({"tags": None}, "body")],
)
def test_patch_refuses_immutable_or_null_fields(
    client: TestClient, auth: Auth, body: dict[str, object], field: str
) -> None:
    create_model(client, auth(), "fixed")
    response = client.patch(f"{MODELS}/fixed", json=body, headers=auth())
    assert response.status_code == 422
    assert any(e["field"].startswith(field) for e in response.json()["errors"])
    assert client.get(f"{MODELS}/fixed", headers=auth()).json()["tags"] == []


def test_deleted_model_disappears_and_frees_its_name(client: TestClient, auth: Auth) -> None:
    created = create_model(client, auth(), "gone")
    assert client.delete(f"{MODELS}/gone", headers=auth("admin")).status_code == 204
    assert client.get(f"{MODELS}/{created['id']}", headers=auth()).status_code == 404
    assert client.get(MODELS, headers=auth()).json()["items"] == []
    again = create_model(client, auth(), "gone")
    assert again["id"] != created["id"]


def test_missing_model_is_404_problem(client: TestClient, auth: Auth) -> None:
    response = client.get(f"{MODELS}/nope", headers=auth())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/not-found")
