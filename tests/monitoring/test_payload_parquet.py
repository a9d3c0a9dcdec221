"""The payload logs' Parquet sink through the API: a model whose policy says ``sink: parquet`` keeps a
thin row per logged prediction in the database and the inputs and outputs in one Parquet file per
flush in the artifact store; they read back (pages, by request id, drift checks, feedback) as the
database sink's would, and erasure and retention delete the files."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db.tables import payload_log_files, prediction_logs
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, row_count, upload
from tests.monitoring.test_drift_api import iris_rows
from tests.moto_s3 import CREDENTIALS, MotoServer

API = "/api/v1/ai"
ROW = {"features": [5.1, 3.5, 1.4, 0.2]}
OTHER_ROW = {"features": [6.7, 3.0, 5.2, 2.3]}


@pytest.fixture(autouse=True)
def manual_flush(client: TestClient, container: Container) -> None:
    """Tests flush the recorder themselves (its task is stopped) and drive the drift scheduler."""
    container.payload_logging.flusher.stop()
    container.monitoring.scheduler.stop()


@pytest.fixture
def iris(client: TestClient, auth: Auth) -> str:
    model = create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    return str(model["id"])


def set_policy(client: TestClient, auth: Auth, **policy: Any) -> dict[str, Any]:
    body = {"enabled": True, "sampleRate": 1.0, "retentionDays": 30, "sink": "parquet", **policy}
    response = client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor"))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def predict(client: TestClient, auth: Auth, request_id: str, row: dict[str, Any] = ROW) -> dict[str, Any]:
    headers = {**auth("predictor"), "X-Request-ID": request_id}
    response = client.post(f"{API}/models/iris/predict", json={"input": row}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def batch(client: TestClient, auth: Auth, request_id: str, rows: list[dict[str, Any]]) -> None:
    headers = {**auth("predictor"), "X-Request-ID": request_id}
    response = client.post(f"{API}/models/iris/batch-predict", json={"inputs": rows}, headers=headers)
    assert response.status_code == 200, response.text


def logged(client: TestClient, auth: Auth, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/models/iris/predictions", params=params, headers=auth("editor"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def by_request(client: TestClient, auth: Auth, request_id: str) -> dict[str, Any]:
    response = client.get(f"{API}/predictions/{request_id}", headers=auth("editor"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def flush(container: Container) -> int:
    return container.payload_logging.recorder.flush()


def files(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(payload_log_files)).mappings()]


def local_file(settings: Settings, key: str) -> Path:
    return settings.artifact_path / key


# -- the policy ------------------------------------------------------------------------------------


def test_the_sink_is_stored_with_the_policy(client: TestClient, auth: Auth, iris: str) -> None:
    assert client.get(f"{API}/models/iris/payload-logging", headers=auth()).json()["sink"] == "database"
    assert set_policy(client, auth)["sink"] == "parquet"
    assert client.get(f"{API}/models/iris/payload-logging", headers=auth()).json()["sink"] == "parquet"
    assert set_policy(client, auth, sink="database")["sink"] == "database"


@pytest.mark.parametrize("sink", ["csv", "", 1, None])
def test_an_unknown_sink_is_a_422_naming_it(client: TestClient, auth: Auth, iris: str, sink: Any) -> None:
    body = {"enabled": True, "sink": sink}
    response = client.put(f"{API}/models/iris/payload-logging", json=body, headers=auth("editor"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "body.sink" in [e["field"] for e in response.json()["errors"]]


# -- writing and reading ---------------------------------------------------------------------------


def test_the_inputs_and_outputs_go_to_one_parquet_file_per_flush(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "pq-1")
    batch(client, auth, "pq-b", [ROW, OTHER_ROW])
    assert flush(container) == 3

    (file,) = files(engine)
    assert file["key"].startswith(f"payload-logs/acme/{iris}/") and file["key"].endswith(".parquet")
    assert (file["model_id"], file["rows"]) == (iris, 3)
    table = pq.read_table(local_file(settings, file["key"]))
    assert table.column("request_id").to_pylist() == ["pq-1", "pq-b:0", "pq-b:1"]
    assert [json.loads(v) for v in table.column("inputs").to_pylist()] == [ROW, ROW, OTHER_ROW]
    with engine.connect() as conn:  # the table keeps thin rows: no inputs or outputs
        thin = conn.execute(
            sa.select(prediction_logs.c.inputs, prediction_logs.c.outputs, prediction_logs.c.file_key)
        ).all()
    assert thin == [(None, None, file["key"])] * 3


def test_parquet_logs_read_back_as_the_database_sinks_do(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    set_policy(client, auth, sink="database")
    predict(client, auth, "in-db")
    flush(container)
    set_policy(client, auth, sink="parquet")
    answer = predict(client, auth, "in-file")
    batch(client, auth, "in-file-b", [OTHER_ROW, ROW])
    flush(container)

    in_db, in_file = by_request(client, auth, "in-db"), by_request(client, auth, "in-file")
    assert in_file["inputs"] == in_db["inputs"] == ROW
    assert in_file["outputs"] == in_db["outputs"]
    assert in_file["outputs"]["prediction"] == answer["prediction"]
    assert in_file["payloadUnavailable"] is in_db["payloadUnavailable"] is False
    assert by_request(client, auth, "in-file-b:0")["inputs"] == OTHER_ROW
    items = logged(client, auth)  # newest first (a batch's rows share their moment)
    assert [i["requestId"] for i in items][2:] == ["in-file", "in-db"]
    assert {i["requestId"]: i["inputs"] for i in items} == {
        "in-db": ROW,
        "in-file": ROW,
        "in-file-b:0": OTHER_ROW,
        "in-file-b:1": ROW,
    }
    first = logged(client, auth, limit=2)
    cursor = client.get(f"{API}/models/iris/predictions", params={"limit": 2}, headers=auth("editor")).json()[
        "nextCursor"
    ]
    rest = logged(client, auth, limit=2, cursor=cursor)
    assert [i["inputs"] for i in first + rest] == [i["inputs"] for i in items]


def test_feedback_joins_a_prediction_logged_to_parquet(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    set_policy(client, auth)
    answer = predict(client, auth, "fb-pq")
    flush(container)
    response = client.post(
        f"{API}/predictions/fb-pq/feedback", json={"label": answer["prediction"]}, headers=auth("predictor")
    )
    assert response.status_code == 200, response.text
    got = by_request(client, auth, "fb-pq")
    assert (got["inputs"], got["feedback"]["label"]) == (ROW, answer["prediction"])
    items = [{"requestId": "fb-pq", "reward": 0.5}, {"requestId": "nobody", "reward": 1}]
    response = client.post(f"{API}/predictions/feedback", json={"items": items}, headers=auth("predictor"))
    assert response.status_code == 200, response.text
    assert logged(client, auth)[0]["feedback"]["reward"] == 0.5


def test_a_drift_check_reads_the_parquet_logs(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    set_policy(client, auth)
    response = client.put(
        f"{API}/models/iris/versions/1/reference-profile",
        json={"rows": iris_rows(1000, seed=0)},
        headers=auth("editor"),
    )
    assert response.status_code == 200, response.text
    batch(client, auth, "shifted", iris_rows(600, seed=1, shift={2: 1.5}))
    flush(container)
    response = client.post(f"{API}/models/iris/drift", json={}, headers=auth("editor"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["verdict"], report["windowSize"]) == ("drift", 600)
    assert "f2" in {f["feature"] for f in report["features"] if f["drifted"]}


def test_a_missing_file_gives_null_payloads_flagged_not_an_error(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "lost")
    flush(container)
    (file,) = files(engine)
    local_file(settings, file["key"]).unlink()
    got = by_request(client, auth, "lost")
    assert (got["inputs"], got["outputs"], got["payloadUnavailable"]) == (None, None, True)
    assert logged(client, auth)[0]["payloadUnavailable"] is True


def test_a_file_that_fails_its_digest_is_not_read(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "tampered")
    flush(container)
    (file,) = files(engine)
    path = local_file(settings, file["key"])
    path.write_bytes(path.read_bytes() + b"x")
    got = by_request(client, auth, "tampered")
    assert (got["inputs"], got["payloadUnavailable"]) == (None, True)


# -- erasure and retention -------------------------------------------------------------------------


def test_erasing_a_models_predictions_deletes_its_files(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "erase-1")
    flush(container)
    predict(client, auth, "erase-2")
    flush(container)
    keys = [f["key"] for f in files(engine)]
    assert len(keys) == 2 and all(local_file(settings, k).is_file() for k in keys)
    response = client.delete(f"{API}/models/iris/predictions", headers=auth("editor"))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == 2
    assert files(engine) == [] and not any(local_file(settings, k).exists() for k in keys)
    assert logged(client, auth) == []


def test_the_purge_deletes_a_file_once_all_its_rows_are_past_retention(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth, retentionDays=7)
    predict(client, auth, "old")
    flush(container)
    predict(client, auth, "new")
    flush(container)
    old_key = _file_of(engine, "old")
    with engine.begin() as conn:
        conn.execute(
            prediction_logs.update()
            .where(prediction_logs.c.request_id == "old")
            .values(created_at=datetime.now(UTC) - timedelta(days=8))
        )
    assert container.payload_logging.logs.purge() == 1
    assert [f["key"] for f in files(engine)] == [_file_of(engine, "new")]
    assert not local_file(settings, old_key).exists()
    assert [(i["requestId"], i["inputs"]) for i in logged(client, auth)] == [("new", ROW)]


def test_a_failed_object_delete_is_tried_again_by_the_next_purge(
    client: TestClient,
    auth: Auth,
    container: Container,
    engine: Engine,
    settings: Settings,
    iris: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_policy(client, auth)
    predict(client, auth, "stubborn")
    flush(container)
    (file,) = files(engine)
    parquet_files = container.payload_logging.files
    monkeypatch.setattr(parquet_files, "delete", lambda key: False)  # the store refuses, for now
    assert client.delete(f"{API}/models/iris/predictions", headers=auth("editor")).status_code == 200
    assert [f["key"] for f in files(engine)] == [file["key"]]  # kept until its object is gone
    monkeypatch.undo()
    container.payload_logging.logs.purge()
    assert files(engine) == [] and not local_file(settings, file["key"]).exists()


def test_deleting_the_model_deletes_its_files(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "doomed")
    flush(container)
    (file,) = files(engine)
    assert client.delete(f"{API}/models/iris", headers=auth("admin")).status_code == 204
    container.payload_logging.logs.purge()  # and the ModelDeleted handler, once the relay delivers it
    assert files(engine) == [] and not local_file(settings, file["key"]).exists()
    assert row_count(engine, "prediction_logs") == 0


def test_tenant_erasure_deletes_the_files(
    client: TestClient, auth: Auth, container: Container, engine: Engine, settings: Settings, iris: str
) -> None:
    set_policy(client, auth)
    predict(client, auth, "erased")
    flush(container)
    (file,) = files(engine)
    root = auth("superadmin", tenant="platform")
    response = client.delete(f"{API}/tenants/acme/data", headers=root)
    assert response.status_code == 200, response.text
    assert response.json()["erased"]["payloadLogFiles"] == 1
    assert files(engine) == [] and not local_file(settings, file["key"]).exists()


def _file_of(engine: Engine, request_id: str) -> str:
    with engine.connect() as conn:
        key: str = conn.execute(
            sa.select(prediction_logs.c.file_key).where(prediction_logs.c.request_id == request_id)
        ).scalar_one()
    return key


# -- on S3, encrypted ------------------------------------------------------------------------------


@pytest.fixture
def s3_service(
    engine: Engine, database_url: str, tmp_path: Path, moto_server: MotoServer
) -> Iterator[tuple[TestClient, Container, str]]:
    import base64
    import os
    import uuid

    bucket = f"pq-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=bucket)
    settings = make_settings(
        database_url,
        tmp_path / "s3-data",
        artifact_store_url=f"s3://{bucket}/artifacts",
        artifact_encryption_key=base64.b64encode(os.urandom(32)).decode(),
        s3_endpoint_url=moto_server.endpoint,
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
        aws_default_region=CREDENTIALS["region"],
    )
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        container.payload_logging.flusher.stop()
        yield client, container, bucket
    container.close()


def test_the_parquet_sink_on_an_encrypted_s3_store(
    s3_service: tuple[TestClient, Container, str], moto_server: MotoServer
) -> None:
    client, container, bucket = s3_service

    def auth(*roles: str) -> dict[str, str]:
        token = container.tokens.issue("tester", "acme", list(roles) or ["admin"], 3600)
        return {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}

    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    set_policy(client, auth)
    predict(client, auth, "on-s3")
    assert flush(container) == 1
    s3 = moto_server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    (stored,) = [k for k in keys if "payload-logs/" in k and k.endswith(".parquet")]
    raw = s3.get_object(Bucket=bucket, Key=stored)["Body"].read()
    with pytest.raises(pa.ArrowInvalid):  # encrypted at rest: not Parquet as stored
        pq.read_table(io.BytesIO(raw))
    assert by_request(client, auth, "on-s3")["inputs"] == ROW
    assert client.delete(f"{API}/models/iris/predictions", headers=auth("editor")).status_code == 200
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any("payload-logs/" in k for k in keys)
