"""SQL-injection, script and template strings in every free-text field are stored and returned verbatim,
served as JSON (never HTML), and leave every table in place; fields with a format refuse them by name."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.infrastructure.db.tables import metadata
from tests.conftest import Auth
from tests.helpers import create_model, row_count, upload

API = "/api/v1/ai"
HOSTILE = [
    "'; DROP TABLE models;--",
    '" OR 1=1 --',
    "<script>alert(1)</script>",
    "{{7*7}} ${7*7} <%= 7*7 %>",
    "\u202egnp.exe\u202c \u05e9\u05dc\u05d5\u05dd \U0001f600 ünïcödé",
    "back\\slash %s %n %x \r\n\t",
]
NUL = "before\x00after"


def json_response(response: httpx2.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.json()


def assert_tables_intact(engine: Engine) -> None:
    for table in metadata.sorted_tables:
        row_count(engine, table.name)  # raises if the table were gone


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_model_free_text_is_stored_and_returned_verbatim(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    created = create_model(
        client,
        auth(),
        "hostile",
        description=text,
        category=text[:100],
        tags=[text, "plain"],
        configuration={"note": text, text: 1},
    )
    fetched = json_response(client.get(f"{API}/models/hostile", headers=auth()), 200)
    for model in (created, fetched):
        assert model["description"] == text
        assert model["category"] == text[:100]
        assert model["tags"] == [text, "plain"]
        assert model["configuration"] == {"note": text, text: 1}
    found = json_response(client.get(f"{API}/models", params={"q": text}, headers=auth()), 200)
    assert [m["name"] for m in found["items"]] == ["hostile"]
    patched = client.patch(f"{API}/models/hostile", json={"description": text + "!"}, headers=auth())
    assert json_response(patched, 200)["description"] == text + "!"
    assert_tables_intact(engine)
    assert row_count(engine, "models") == 1


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_search_and_filters_find_nothing_and_break_nothing(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    create_model(client, auth(), "plain")
    for params in ({"q": text}, {"tag": text[:64]}, {"category": text}):
        assert json_response(client.get(f"{API}/models", params=params, headers=auth()), 200)["items"] == []
    assert_tables_intact(engine)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_version_metadata_is_stored_and_returned_verbatim(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    create_model(client, auth(), "m")
    metadata = {"description": text, "metrics": {text: 0.5}, "params": {"why": text}, "sourceRun": text}
    uploaded = json_response(upload(client, auth(), "m", metadata=metadata), 201)
    fetched = json_response(client.get(f"{API}/models/m/versions/1", headers=auth()), 200)
    for version in (uploaded, fetched):
        assert (version["description"], version["metrics"], version["params"], version["sourceRun"]) == (
            text,
            {text: 0.5},
            {"why": text},
            text,
        )
    assert_tables_intact(engine)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_api_key_and_tenant_names_are_stored_and_returned_verbatim(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    key = client.post(f"{API}/api-keys", json={"name": text, "roles": ["viewer"]}, headers=auth("admin"))
    assert json_response(key, 201)["name"] == text
    listed = json_response(client.get(f"{API}/api-keys", headers=auth("admin")), 200)["items"]
    assert [k["name"] for k in listed] == [text]
    root = auth("superadmin", tenant="platform")
    tenant = client.post(f"{API}/tenants", json={"id": "initech", "name": text}, headers=root)
    assert json_response(tenant, 201)["name"] == text
    assert json_response(client.get(f"{API}/tenants/initech", headers=root), 200)["name"] == text
    assert_tables_intact(engine)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_training_params_are_kept_verbatim_or_refused_by_name(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    create_model(client, auth(), "m")
    dataset = client.post(f"{API}/datasets", files={"file": ("rows.csv", b"a,y\n1,0\n2,1\n")}, headers=auth())
    assert dataset.status_code == 201, dataset.text
    body = {
        "trainingConfig": {
            "algorithm": "sklearn.linear_model.LogisticRegression",
            "params": {"solver": text},
        },
        "datasetConfig": {"trainPath": "dataset://rows", "format": "csv", "target": "y"},
    }
    response = client.post(f"{API}/models/m/train", json=body, headers=auth())
    if response.status_code == 422:
        assert response.headers["content-type"] == "application/problem+json"
        assert any(e["field"].startswith("trainingConfig.params") for e in response.json()["errors"])
    else:
        job = json_response(response, response.status_code)
        assert response.status_code in (201, 202)
        assert job["trainingConfig"]["params"] == {"solver": text}
    assert_tables_intact(engine)


@pytest.mark.parametrize("text", [*HOSTILE, NUL], ids=range(len(HOSTILE) + 1))
def test_formatted_names_refuse_hostile_strings_by_field(
    client: TestClient, auth: Auth, engine: Engine, text: str
) -> None:
    model = client.post(f"{API}/models", json={"name": text, "framework": "sklearn"}, headers=auth())
    dataset = client.post(
        f"{API}/datasets", data={"name": text}, files={"file": ("rows.csv", b"a\n1\n")}, headers=auth()
    )
    tenant = client.post(f"{API}/tenants", json={"id": text}, headers=auth("superadmin", tenant="platform"))
    for response, field in ((model, "body.name"), (dataset, "name"), (tenant, "body.id")):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]]
    assert_tables_intact(engine)
    assert row_count(engine, "models") == 0


def test_nul_characters_are_refused_by_field_on_every_database(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    """PostgreSQL's text type cannot hold a NUL, so no backend accepts one: a 422, not a 500."""
    response = client.post(
        f"{API}/models",
        json={"name": "nul", "framework": "sklearn", "description": NUL, "tags": [NUL]},
        headers=auth(),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "body.description"
    assert_tables_intact(engine)
    assert row_count(engine, "models") == 0


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", f"{API}/models", {"q": NUL}),
        ("GET", f"{API}/models", {"tag": NUL}),
        ("GET", f"{API}/models/before%00after", None),
        ("DELETE", f"{API}/datasets/before%00after", None),
        ("GET", f"{API}/resolve/before%00after:1", None),
    ],
    ids=["search", "tag", "model-path", "dataset-path", "reference"],
)
def test_nul_in_a_query_or_path_is_refused_by_name(
    client: TestClient, auth: Auth, engine: Engine, method: str, path: str, params: dict[str, str] | None
) -> None:
    response = client.request(method, path, params=params, headers=auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    expected = f"query.{next(iter(params))}" if params else "path"
    assert response.json()["errors"] == [{"field": expected, "message": "must not contain NUL characters"}]
    assert_tables_intact(engine)


def test_nul_in_upload_form_fields_is_refused_by_field(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    create_model(client, auth(), "m")
    response = upload(client, auth(), "m", metadata={"description": NUL})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "form.metadata.description"
    assert_tables_intact(engine)
    assert row_count(engine, "model_versions") == 0
