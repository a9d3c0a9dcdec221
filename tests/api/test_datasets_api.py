"""Datasets uploaded through the API: kept per tenant only once they read as their format, listed,
fetched, deleted, and trained on as ``dataset://NAME``."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime
from pathlib import Path

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.api.test_training import (
    FINISHED,
    IRIS_FEATURES,
    SPECIES,
    iris_model,
    own_service,
    train_body,
    wait_for,
    write_iris_csv,
)
from tests.conftest import Auth, make_settings
from tests.helpers import stored_files

API = "/api/v1/ai"
DATASETS = f"{API}/datasets"
LIMIT = 64 * 1024


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """A small upload limit, so a test can pass it."""
    return make_settings(database_url, tmp_path / "data", max_dataset_bytes=LIMIT)


@pytest.fixture
def iris_csv(tmp_path: Path) -> bytes:
    return write_iris_csv(tmp_path / "iris.csv").read_bytes()


def post_dataset(
    client: TestClient,
    headers: dict[str, str],
    content: bytes,
    filename: str = "iris.csv",
    **fields: str,
) -> httpx2.Response:
    return client.post(DATASETS, data=fields or None, files={"file": (filename, content)}, headers=headers)


def kept(container: Container) -> list[Path]:
    """Every file under the upload store, staging folders included."""
    return stored_files(container.datasets.root)


def field_errors(response: httpx2.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


def test_an_uploaded_csv_is_listed_fetched_and_deleted(
    client: TestClient, auth: Auth, iris_csv: bytes
) -> None:
    headers = auth("editor")
    response = post_dataset(client, headers, iris_csv, name="iris-train")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"{DATASETS}/iris-train"
    assert {k: v for k, v in dataset.items() if k != "createdAt"} == {
        "name": "iris-train",
        "format": "csv",
        "sizeBytes": len(iris_csv),
        "sha256": hashlib.sha256(iris_csv).hexdigest(),
        "uri": "dataset://iris-train",
        "links": {"self": f"{DATASETS}/iris-train"},
    }
    assert datetime.fromisoformat(dataset["createdAt"]).tzinfo is not None

    listed = client.get(DATASETS, headers=auth("viewer")).json()
    assert listed == {"items": [dataset], "nextCursor": None}
    assert client.get(f"{DATASETS}/iris-train", headers=auth("viewer")).json() == dataset

    assert client.delete(f"{DATASETS}/iris-train", headers=headers).status_code == 204
    missing = client.get(f"{DATASETS}/iris-train", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.get(DATASETS, headers=headers).json()["items"] == []
    assert client.delete(f"{DATASETS}/iris-train", headers=headers).status_code == 404


def test_name_and_format_default_to_the_file_name(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.eye(3, dtype=np.float32), y=np.arange(3))
    response = post_dataset(client, auth(), buffer.getvalue(), filename="C:\\data\\My iris (v2).NPZ")
    assert response.status_code == 201, response.text
    assert (response.json()["name"], response.json()["format"]) == ("My-iris-v2", "npz")


def test_the_list_is_paged_by_name(client: TestClient, auth: Auth, iris_csv: bytes) -> None:
    for name in ("c", "a", "b"):
        assert post_dataset(client, auth(), iris_csv, name=name).status_code == 201
    first = client.get(DATASETS, params={"limit": 2}, headers=auth()).json()
    second = client.get(DATASETS, params={"limit": 2, "cursor": first["nextCursor"]}, headers=auth()).json()
    assert [d["name"] for d in first["items"]] == ["a", "b"]
    assert ([d["name"] for d in second["items"]], second["nextCursor"]) == (["c"], None)


def test_a_job_trains_on_an_uploaded_dataset_and_its_version_predicts(
    client: TestClient, auth: Auth, iris_csv: bytes
) -> None:
    headers = auth("editor")
    assert post_dataset(client, headers, iris_csv, name="iris").status_code == 201
    iris_model(client, headers)
    submitted = client.post(f"{API}/models/iris/train", json=train_body("dataset://iris"), headers=headers)
    assert submitted.status_code == 202, submitted.text

    done = wait_for(client, headers, submitted.json()["id"], *FINISHED)
    assert (done["status"], done["version"]) == ("succeeded", 1), done["error"]
    # The job and the version's lineage name the dataset as the user did, never the server's folders.
    assert done["datasetConfig"]["trainPath"] == "dataset://iris"
    assert done["datasetFingerprint"][0]["uri"] == "dataset://iris"
    assert done["datasetFingerprint"][0]["sha256"] == hashlib.sha256(iris_csv).hexdigest()
    lineage = client.get(f"{API}/models/iris/versions/1", headers=headers).json()["lineage"]
    assert lineage["datasets"] == done["datasetFingerprint"]
    flowers = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
    inputs = [dict(zip(IRIS_FEATURES, flower, strict=True)) for flower in flowers]
    answer = client.post(f"{API}/models/iris/batch-predict", json={"inputs": inputs}, headers=headers)
    assert [output["prediction"] for output in answer.json()["outputs"]] == SPECIES


def test_a_dataset_a_waiting_job_names_cannot_be_deleted_until_the_job_is_cancelled(
    engine: Engine, database_url: str, tmp_path: Path, iris_csv: bytes
) -> None:
    container, headers = own_service(database_url, tmp_path / "data")
    with TestClient(create_app(container, manage_lifecycle=False)) as client:  # no runner: the job waits
        assert post_dataset(client, headers, iris_csv, name="iris").status_code == 201
        iris_model(client, headers)
        job = client.post(f"{API}/models/iris/train", json=train_body("dataset://iris"), headers=headers)
        assert job.status_code == 202, job.text

        refused = client.delete(f"{DATASETS}/iris", headers=headers)
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("dataset-in-use")
        assert refused.json()["trainingJobs"] == [job.json()["id"]]
        assert client.get(f"{DATASETS}/iris", headers=headers).status_code == 200  # kept

        cancel = client.post(f"{API}/training-jobs/{job.json()['id']}/cancel", headers=headers)
        assert cancel.status_code == 200
        assert client.delete(f"{DATASETS}/iris", headers=headers).status_code == 204
    container.close()


def test_a_dataset_gone_when_its_job_starts_fails_the_job_saying_so(
    engine: Engine, database_url: str, tmp_path: Path, iris_csv: bytes
) -> None:
    """The store lost it after the job was queued (removed by hand, or deleted in the same instant)."""
    container, headers = own_service(database_url, tmp_path / "data")
    with TestClient(create_app(container, manage_lifecycle=False)) as client:  # no runner yet
        assert post_dataset(client, headers, iris_csv, name="iris").status_code == 201
        iris_model(client, headers)
        job = client.post(f"{API}/models/iris/train", json=train_body("dataset://iris"), headers=headers)
        assert job.status_code == 202, job.text
        assert container.datasets.delete("acme", "iris")

        container.start()
        try:
            failed = wait_for(client, headers, job.json()["id"], *FINISHED, timeout=30)
        finally:
            container.close()
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "dataset"
    assert "no uploaded dataset named 'iris'" in failed["error"]["message"]
    assert str(tmp_path) not in failed["error"]["message"]


def test_a_used_name_is_409_and_the_first_upload_stays(
    client: TestClient, auth: Auth, iris_csv: bytes
) -> None:
    first = post_dataset(client, auth(), iris_csv, name="iris").json()
    again = post_dataset(client, auth(), b"a,b\n1,2\n", name="iris")
    assert again.status_code == 409
    assert field_errors(again) == ["name"]
    assert client.get(f"{DATASETS}/iris", headers=auth()).json()["sha256"] == first["sha256"]


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "white space", "x" * 129])
def test_a_bad_name_is_422_and_nothing_is_kept(
    client: TestClient, auth: Auth, container: Container, iris_csv: bytes, name: str
) -> None:
    response = post_dataset(client, auth(), iris_csv, name=name)
    assert response.status_code == 422
    assert field_errors(response) == ["name"]
    assert kept(container) == []


@pytest.mark.parametrize(
    ("filename", "fields"),
    [
        ("iris.csv", {"format": "xlsx"}),
        ("iris.xlsx", {}),
        ("iris", {}),
        ("iris.csv", {"format": "imagefolder"}),
    ],
    ids=["unknown-format", "unknown-extension", "no-extension", "folder-format"],
)
def test_an_unknown_format_is_422_naming_the_format(
    client: TestClient,
    auth: Auth,
    container: Container,
    iris_csv: bytes,
    filename: str,
    fields: dict[str, str],
) -> None:
    response = post_dataset(client, auth(), iris_csv, filename=filename, **fields)
    assert response.status_code == 422
    assert field_errors(response) == ["format"]
    assert kept(container) == []


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("rows.csv", b"a,b,label\n", "has no rows"),
        ("empty.csv", b"", "is empty"),
        ("ragged.csv", b"a,b\n1,2,3\n", "not a readable csv file"),
        ("table.parquet", b"a,b\n1,2\n", "not a valid parquet file"),
        ("arrays.npz", b"PK not really a zip", "not a valid npz file"),
    ],
)
def test_content_unreadable_as_its_format_is_422_naming_the_file_and_nothing_is_kept(
    client: TestClient, auth: Auth, container: Container, filename: str, content: bytes, reason: str
) -> None:
    response = post_dataset(client, auth(), content, filename=filename)
    assert response.status_code == 422
    assert field_errors(response) == ["file"]
    assert reason in response.json()["errors"][0]["message"]
    assert client.get(DATASETS, headers=auth()).json()["items"] == []
    assert kept(container) == []


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 2 * 1024**2], ids=["counted", "declared"])
def test_a_dataset_over_the_size_limit_is_413_and_nothing_is_kept(
    client: TestClient, auth: Auth, container: Container, size: int
) -> None:
    header = b"a,b\n"
    response = post_dataset(client, auth(), header + b"1" * (size - len(header)), name="big")
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")
    assert client.get(DATASETS, headers=auth()).json()["items"] == []
    assert kept(container) == []


def test_a_dataset_exactly_at_the_limit_is_kept(client: TestClient, auth: Auth) -> None:
    header = b"a,b\n"
    response = post_dataset(client, auth(), header + b"1," + b"2" * (LIMIT - len(header) - 2))
    assert response.status_code == 201, response.text
    assert response.json()["sizeBytes"] == LIMIT


def test_another_tenant_cannot_see_fetch_delete_or_train_on_a_dataset(
    client: TestClient, auth: Auth, iris_csv: bytes
) -> None:
    assert post_dataset(client, auth(tenant="acme"), iris_csv, name="iris").status_code == 201
    intruder = auth("admin", tenant="globex")
    assert client.get(DATASETS, headers=intruder).json()["items"] == []
    assert client.get(f"{DATASETS}/iris", headers=intruder).status_code == 404
    assert client.delete(f"{DATASETS}/iris", headers=intruder).status_code == 404
    iris_model(client, intruder)
    train = client.post(f"{API}/models/iris/train", json=train_body("dataset://iris"), headers=intruder)
    assert train.status_code == 422
    assert field_errors(train) == ["datasetConfig.trainPath"]
    assert client.get(f"{DATASETS}/iris", headers=auth(tenant="acme")).status_code == 200


def test_each_tenant_may_use_the_same_name(client: TestClient, auth: Auth, iris_csv: bytes) -> None:
    assert post_dataset(client, auth(tenant="acme"), iris_csv, name="iris").status_code == 201
    other = post_dataset(client, auth(tenant="globex"), b"a,b\n1,2\n", name="iris")
    assert other.status_code == 201
    assert other.json()["sizeBytes"] == len(b"a,b\n1,2\n")


def test_a_viewer_cannot_upload_or_delete(
    client: TestClient, auth: Auth, container: Container, iris_csv: bytes
) -> None:
    refused = post_dataset(client, auth("viewer"), iris_csv, name="iris")
    assert refused.status_code == 403
    assert refused.json()["permission"] == "dataset:write"
    assert kept(container) == []
    assert post_dataset(client, auth("editor"), iris_csv, name="iris").status_code == 201
    assert client.delete(f"{DATASETS}/iris", headers=auth("viewer")).status_code == 403
    assert client.get(f"{DATASETS}/iris", headers=auth("viewer")).status_code == 200


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "XyZ") -> bytes:
    """A multipart body with the parts in the given order: (field name, file name or None, content)."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_a_name_sent_after_the_file_is_422_and_nothing_is_kept(
    client: TestClient, auth: Auth, container: Container, iris_csv: bytes
) -> None:
    body = multipart(("file", "iris.csv", iris_csv), ("name", None, b"late"))
    headers = {**auth(), "Content-Type": "multipart/form-data; boundary=XyZ"}
    response = client.post(DATASETS, content=body, headers=headers)
    assert response.status_code == 422
    assert field_errors(response) == ["form.name"]
    assert kept(container) == []


def test_an_upload_cut_short_is_400_and_nothing_is_kept(
    client: TestClient, auth: Auth, container: Container, iris_csv: bytes
) -> None:
    body = multipart(("name", None, b"iris"), ("file", "iris.csv", iris_csv))[:-20]
    headers = {**auth(), "Content-Type": "multipart/form-data; boundary=XyZ"}
    response = client.post(DATASETS, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/truncated-upload")
    assert kept(container) == []


def test_an_upload_without_a_file_is_422(client: TestClient, auth: Auth) -> None:
    response = client.post(
        DATASETS, data={"name": "iris"}, files={"other": ("x.csv", b"a\n1\n")}, headers=auth()
    )
    assert response.status_code == 422
    assert set(field_errors(response)) == {"form.other"}
    missing = client.post(DATASETS, files={"name": (None, b"iris")}, headers=auth())
    assert missing.status_code == 422
    assert field_errors(missing) == ["form.file"]
