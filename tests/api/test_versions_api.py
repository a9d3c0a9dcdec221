"""Versions: streamed uploads, immutable numbering, downloads that are verified, stages and aliases."""

from __future__ import annotations

import hashlib
import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, iris_model_bytes, row_count, stored_files, upload

MODELS = "/api/v1/ai/models"


def test_upload_creates_version_one_with_checksum_and_metadata(client: TestClient, auth: Auth) -> None:
    model = create_model(client, auth(), "iris")
    payload = iris_model_bytes()
    metadata = {
        "description": "first",
        "metrics": {"accuracy": 0.97},
        "params": {"depth": 3},
        "sourceRun": "r1",
    }
    response = upload(client, auth("editor"), "iris", payload, metadata, filename="../../etc/model.skops")
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1
    assert version["modelId"] == model["id"]
    assert version["artifact"]["digest"] == hashlib.sha256(payload).hexdigest()
    assert version["artifact"]["sizeBytes"] == len(payload)
    assert version["artifact"]["filename"] == "model.skops"
    assert (version["description"], version["metrics"], version["params"], version["sourceRun"]) == (
        "first",
        {"accuracy": 0.97},
        {"depth": 3},
        "r1",
    )
    assert version["stage"] == "none"
    assert response.headers["location"] == f"{MODELS}/{model['id']}/versions/1"
    assert client.get(f"{MODELS}/iris", headers=auth()).json()["latestVersion"] == 1


def test_versions_number_up_and_list_newest_first_with_cursor(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    for _ in range(5):
        assert upload(client, auth(), "iris").status_code == 201
    first = client.get(f"{MODELS}/iris/versions", params={"limit": 3}, headers=auth()).json()
    second = client.get(
        f"{MODELS}/iris/versions", params={"limit": 3, "cursor": first["nextCursor"]}, headers=auth()
    ).json()
    assert [v["version"] for v in first["items"]] == [5, 4, 3]
    assert [v["version"] for v in second["items"]] == [2, 1]
    assert second["nextCursor"] is None


def test_download_returns_the_exact_bytes_with_etag(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    payload = iris_model_bytes("forest")
    upload(client, auth(), "iris", payload)
    response = client.get(f"{MODELS}/iris/versions/1/artifact", headers=auth("viewer"))
    assert response.status_code == 200
    assert response.content == payload
    assert response.headers["etag"] == f'"{hashlib.sha256(payload).hexdigest()}"'
    assert "model.skops" in response.headers["content-disposition"]
    not_modified = client.get(
        f"{MODELS}/iris/versions/1/artifact", headers={**auth(), "If-None-Match": response.headers["etag"]}
    )
    assert not_modified.status_code == 304
    assert not_modified.content == b""


@pytest.mark.parametrize(
    ("header", "expected", "content_range"),
    [
        ("bytes=0-9", slice(0, 10), "bytes 0-9/{size}"),
        ("bytes=990-", slice(990, None), "bytes 990-{last}/{size}"),
        ("bytes=-5", slice(-5, None), "bytes {tail}-{last}/{size}"),
        ("bytes=100-99999999", slice(100, None), "bytes 100-{last}/{size}"),
    ],
)
def test_range_requests_return_the_requested_bytes(
    client: TestClient, auth: Auth, header: str, expected: slice, content_range: str
) -> None:
    create_model(client, auth(), "iris")
    payload = iris_model_bytes()
    upload(client, auth(), "iris", payload)
    response = client.get(f"{MODELS}/iris/versions/1/artifact", headers={**auth(), "Range": header})
    assert response.status_code == 206
    assert response.content == payload[expected]
    size = len(payload)
    assert response.headers["content-range"] == content_range.format(size=size, last=size - 1, tail=size - 5)


def test_unsatisfiable_range_is_416(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    beyond = len(iris_model_bytes()) + 10
    response = client.get(
        f"{MODELS}/iris/versions/1/artifact", headers={**auth(), "Range": f"bytes={beyond}-{beyond + 5}"}
    )
    assert response.status_code == 416
    assert response.json()["type"].endswith("/range-not-satisfiable")


def test_corrupted_artifact_is_never_served(
    client: TestClient, auth: Auth, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    (artifact,) = stored_files(container.settings.artifact_path)
    artifact.write_bytes(b"evil bytes" * 100)
    with caplog.at_level(logging.ERROR):
        response = client.get(f"{MODELS}/iris/versions/1/artifact", headers=auth())
    assert response.status_code == 500
    assert response.json()["type"].endswith("/artifact-corrupt")
    assert b"evil" not in response.content
    assert any(
        "artifact-corrupt" in str(r.msg) or "artifact-corrupt" in r.getMessage() for r in caplog.records
    )


def test_upload_without_file_is_422_and_keeps_nothing(
    client: TestClient, auth: Auth, engine: Engine, container: Container
) -> None:
    create_model(client, auth(), "iris")
    response = client.post(
        f"{MODELS}/iris/versions", data={"metadata": "{}"}, files={"x": ("a", b"1")}, headers=auth()
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} >= {"form.x"}
    response = client.post(f"{MODELS}/iris/versions", data={"metadata": "{}"}, headers=auth())
    assert response.status_code in (415, 422)
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ("not json", "form.metadata"),
        ('{"metrics": {"accuracy": "high"}}', "form.metadata.metrics.accuracy"),
        ('{"owner": "me"}', "form.metadata.owner"),
    ],
)
def test_bad_metadata_is_422_and_leaves_no_orphan_artifact(
    client: TestClient, auth: Auth, engine: Engine, container: Container, metadata: str, field: str
) -> None:
    create_model(client, auth(), "iris")
    response = client.post(
        f"{MODELS}/iris/versions",
        files={"file": ("m.bin", b"bytes" * 1000)},
        data={"metadata": metadata},
        headers=auth(),
    )
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


def test_non_multipart_upload_is_415(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    response = client.post(
        f"{MODELS}/iris/versions", content=b"raw", headers={**auth(), "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["errors"][0]["field"] == "header.Content-Type"


def test_truncated_upload_is_400_and_leaves_nothing(
    client: TestClient, auth: Auth, engine: Engine, container: Container
) -> None:
    create_model(client, auth(), "iris")
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="m.bin"\r\n\r\n' + b"a" * 5000
    response = client.post(
        f"{MODELS}/iris/versions",
        content=body,
        headers={**auth(), "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/truncated-upload")
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


def test_oversize_artifact_is_413_and_leaves_nothing(
    client: TestClient, auth: Auth, engine: Engine, container: Container
) -> None:
    create_model(client, auth(), "iris")
    size = len(iris_model_bytes())
    container.versions.max_artifact_bytes = size - 1
    response = upload(client, auth(), "iris")
    assert response.status_code == 413
    assert response.json()["limit"] == size - 1
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []
    container.versions.max_artifact_bytes = size
    assert upload(client, auth(), "iris").status_code == 201


def test_upload_to_missing_model_is_404(client: TestClient, auth: Auth, container: Container) -> None:
    response = upload(client, auth(), "nobody")
    assert response.status_code == 404
    assert stored_files(container.settings.artifact_path) == []


def test_missing_version_is_404(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    assert client.get(f"{MODELS}/iris/versions/3", headers=auth()).status_code == 404
    assert client.get(f"{MODELS}/iris/versions/0", headers=auth()).status_code == 422


def test_production_is_unique_unless_existing_is_archived(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    upload(client, auth(), "iris")
    stage = f"{MODELS}/iris/versions/{{n}}/stage"
    first = client.post(stage.format(n=1), json={"stage": "production"}, headers=auth("deployer"))
    assert first.status_code == 200 and first.json()["stage"] == "production"
    clash = client.post(stage.format(n=2), json={"stage": "production"}, headers=auth())
    assert clash.status_code == 409
    assert clash.json()["productionVersion"] == 1
    moved = client.post(
        stage.format(n=2), json={"stage": "production", "archiveExisting": True}, headers=auth()
    )
    assert moved.status_code == 200
    assert client.get(f"{MODELS}/iris/versions/1", headers=auth()).json()["stage"] == "archived"
    resolved = client.get("/api/v1/ai/resolve/iris", headers=auth()).json()
    assert resolved["version"]["version"] == 2


def test_unknown_stage_is_422(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    response = client.post(f"{MODELS}/iris/versions/1/stage", json={"stage": "prod"}, headers=auth())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.stage"


def test_alias_points_at_a_version_and_moves(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    upload(client, auth(), "iris")
    assert (
        client.put(f"{MODELS}/iris/aliases/champion", json={"version": 1}, headers=auth()).status_code == 200
    )
    assert client.get("/api/v1/ai/resolve/iris@champion", headers=auth()).json()["version"]["version"] == 1
    client.put(f"{MODELS}/iris/aliases/champion", json={"version": 2}, headers=auth())
    assert client.get("/api/v1/ai/resolve/iris@champion", headers=auth()).json()["version"]["version"] == 2
    assert client.get(f"{MODELS}/iris", headers=auth()).json()["aliases"] == {"champion": 2}
    assert client.delete(f"{MODELS}/iris/aliases/champion", headers=auth()).status_code == 204
    missing = client.get("/api/v1/ai/resolve/iris@champion", headers=auth())
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("alias", "body", "status", "field"),
    [
        ("champion", {"version": 9}, 404, "body.version"),
        ("Bad Alias", {"version": 1}, 422, "path.alias"),
        ("production", {"version": 1}, 422, "path.alias"),
        ("champion", {"version": "one"}, 422, "body.version"),
    ],
)
def test_bad_alias_requests_name_the_field(
    client: TestClient, auth: Auth, alias: str, body: dict[str, object], status: int, field: str
) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    response = client.put(f"{MODELS}/iris/aliases/{alias}", json=body, headers=auth())
    assert response.status_code == status
    assert field in [e["field"] for e in response.json()["errors"]]
    assert client.get(f"{MODELS}/iris/aliases", headers=auth()).json() == []


def test_deleting_an_unknown_alias_is_404(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    assert client.delete(f"{MODELS}/iris/aliases/nope", headers=auth()).status_code == 404


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("iris", 2),
        ("iris:1", 1),
        ("iris@latest", 3),
        ("iris@staging", 1),
        ("iris@production", 2),
        ("iris@best", 3),
    ],
)
def test_resolver_understands_every_reference_form(
    client: TestClient, auth: Auth, reference: str, expected: int
) -> None:
    model = create_model(client, auth(), "iris")
    for _ in range(3):
        upload(client, auth(), "iris")
    client.post(f"{MODELS}/iris/versions/1/stage", json={"stage": "staging"}, headers=auth())
    client.post(f"{MODELS}/iris/versions/2/stage", json={"stage": "production"}, headers=auth())
    client.put(f"{MODELS}/iris/aliases/best", json={"version": 3}, headers=auth())
    response = client.get(f"/api/v1/ai/resolve/{reference}", headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["version"]["version"] == expected
    by_id = client.get(f"/api/v1/ai/resolve/{model['id']}", headers=auth()).json()
    assert by_id["version"]["version"] == 2


def test_bare_reference_without_production_means_latest(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    upload(client, auth(), "iris")
    upload(client, auth(), "iris")
    assert client.get("/api/v1/ai/resolve/iris", headers=auth()).json()["version"]["version"] == 2


@pytest.mark.parametrize("reference", ["iris:zero", "iris@", "iris:0"])
def test_malformed_reference_is_422(client: TestClient, auth: Auth, reference: str) -> None:
    create_model(client, auth(), "iris")
    response = client.get(f"/api/v1/ai/resolve/{reference}", headers=auth())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reference"
