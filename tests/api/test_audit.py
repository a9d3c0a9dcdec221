"""The audit log through the API: what each call records, who may read it, and the chain's proof."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from aiservice.bootstrap import Container
from aiservice.infrastructure.db.tables import tenants
from aiservice.interfaces.cli.main import app as cli_app
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth
from tests.helpers import create_model, row_count, upload

API = "/api/v1/ai"
SQLITE_GUARD = (
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: its rows cannot be updated'); END"
)


def audit(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", params={"limit": 500, **params}, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def actions(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(action, outcome) oldest first."""
    return [(r["action"], r["outcome"]) for r in reversed(records)]


def tamper(engine: Engine, statement: str) -> None:
    """Change audit rows behind the service's back, as someone with database access could."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL aiservice.audit_erase = 'on'")
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            conn.exec_driver_sql(statement)
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_append_only")
            conn.exec_driver_sql(statement)
            conn.exec_driver_sql(SQLITE_GUARD)


@pytest.fixture
def verify_cli(settings: Settings) -> Iterator[Any]:
    """``aiservice audit verify`` run in-process against the test database."""
    runner = CliRunner()
    env = {
        "DATABASE_URL": settings.resolved_database_url,
        "DATA_DIR": str(settings.data_dir),
        "JWT_SECRET": "cli-secret-0123456789-0123456789-0123456789",
    }

    def run(*args: str) -> Any:
        return runner.invoke(cli_app, ["audit", "verify", *args], env=env)

    yield run


# --- what a change records -------------------------------------------------------------------------


def test_create_update_and_delete_each_write_one_success_record(client: TestClient, auth: Auth) -> None:
    admin = auth("admin", subject="alice")
    model = create_model(client, admin, "churn")
    patched = client.patch(f"{API}/models/churn", json={"description": "v2"}, headers=admin)
    assert patched.status_code == 200
    assert client.delete(f"{API}/models/churn", headers=admin).status_code == 204

    records = audit(client, admin)
    assert actions(records) == [
        ("model.create", "success"),
        ("model.update", "success"),
        ("model.delete", "success"),
    ]
    created = records[-1]
    assert created["resource"] == {"type": "model", "id": model["id"], "name": "churn"}
    assert (created["subject"], created["roles"], created["clientIp"]) == ("alice", ["admin"], "testclient")
    assert [r["seq"] for r in records] == [3, 2, 1]


def test_an_update_records_its_field_level_diff(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn", description="old", tags=["a"])
    body = {
        "description": "new",
        "tags": ["a"],
        "inputSchema": {"type": "tabular", "features": [{"name": "a", "type": "number"}]},
    }
    assert client.patch(f"{API}/models/churn", json=body, headers=auth()).status_code == 200
    update = audit(client, auth(), action="model.update")[0]
    assert update["changes"] == {
        "description": ["old", "new"],
        "inputSchema": [{}, {"type": "tabular", "features": [{"name": "a", "type": "number"}]}],
    }


def test_the_record_carries_the_request_id(client: TestClient, auth: Auth) -> None:
    client.post(
        f"{API}/models",
        json={"name": "m", "framework": "onnx"},
        headers={**auth(), "X-Request-ID": "req-audit-1"},
    )
    assert audit(client, auth())[0]["requestId"] == "req-audit-1"


def test_versions_stages_and_aliases_are_recorded_with_their_reference(
    client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    client.post(f"{API}/models/iris/versions/1/stage", json={"stage": "staging"}, headers=auth())
    client.put(f"{API}/models/iris/aliases/champion", json={"version": 1}, headers=auth())
    records = audit(client, auth())
    assert [(r["action"], r["resource"]["name"]) for r in reversed(records)] == [
        ("model.create", "iris"),
        ("version.upload", "iris:1"),
        ("stage.transition", "iris:1"),
        ("alias.set", "iris@champion"),
    ]


def test_a_change_outside_the_database_is_recorded_too(client: TestClient, auth: Auth) -> None:
    uploaded = client.post(f"{API}/datasets", files={"file": ("sales.csv", b"x,y\n1,2\n")}, headers=auth())
    assert uploaded.status_code == 201, uploaded.text
    assert client.delete(f"{API}/datasets/sales", headers=auth()).status_code == 204
    records = audit(client, auth())
    assert actions(records) == [("dataset.upload", "success"), ("dataset.delete", "success")]
    assert records[0]["resource"] == {"type": "dataset", "id": None, "name": "sales"}


def test_reads_are_not_audited(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    client.get(f"{API}/models", headers=auth())
    client.get(f"{API}/models/churn", headers=auth())
    assert actions(audit(client, auth())) == [("model.create", "success")]


# --- failed changes ---------------------------------------------------------------------------------


def test_a_conflicting_create_records_a_failure_and_no_success(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    create_model(client, auth(), "churn")
    duplicate = client.post(f"{API}/models", json={"name": "churn", "framework": "onnx"}, headers=auth())
    assert duplicate.status_code == 409
    records = audit(client, auth())
    assert actions(records) == [("model.create", "success"), ("model.create", "failed")]
    assert (records[0]["reason"], records[0]["changes"]) == ("conflict", None)
    assert row_count(engine, "models") == 1


def test_an_invalid_update_records_a_failure_without_a_diff(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    invalid = client.patch(f"{API}/models/churn", json={"inputSchema": {"type": "nonsense"}}, headers=auth())
    assert invalid.status_code == 422
    failed = audit(client, auth())[0]
    assert (failed["action"], failed["outcome"], failed["reason"], failed["changes"]) == (
        "model.update",
        "failed",
        "validation-error",
        None,
    )
    assert client.get(f"{API}/models/churn", headers=auth()).json()["inputSchema"] == {}


def test_a_change_whose_record_cannot_be_written_does_not_happen(
    container: Container, auth: Auth, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr("aiservice.infrastructure.db.unit_of_work.append_record", broken)
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        response = client.post(f"{API}/models", json={"name": "churn", "framework": "onnx"}, headers=auth())
        assert response.status_code == 500
        records = audit(client, auth())
    assert row_count(engine, "models") == 0
    assert actions(records) == [("model.create", "failed")]
    assert records[0]["reason"] == "internal-error"


# --- denied calls -----------------------------------------------------------------------------------


def test_a_viewer_deleting_a_model_writes_a_denied_record(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    refused = client.delete(f"{API}/models/churn", headers=auth("viewer", subject="victor"))
    assert refused.status_code == 403
    denied = audit(client, auth(), outcome="denied")
    assert [(r["action"], r["subject"], r["roles"], r["reason"]) for r in denied] == [
        ("model.delete", "victor", ["viewer"], "forbidden")
    ]
    assert denied[0]["resource"]["name"] == "churn"


def test_a_call_without_a_token_writes_a_denied_record_in_the_named_tenant(
    client: TestClient, auth: Auth
) -> None:
    response = client.post(
        f"{API}/models", json={"name": "m", "framework": "onnx"}, headers={"X-Tenant-ID": "acme"}
    )
    assert response.status_code == 401
    denied = audit(client, auth())
    assert [(r["action"], r["outcome"], r["subject"], r["reason"]) for r in denied] == [
        ("model.create", "denied", None, "unauthenticated")
    ]


def test_a_denied_read_is_recorded_too(client: TestClient, auth: Auth) -> None:
    assert client.get(f"{API}/models", headers={"X-Tenant-ID": "acme"}).status_code == 401
    assert actions(audit(client, auth())) == [("model.list", "denied")]


def test_calls_naming_no_known_tenant_leave_no_record(client: TestClient, auth: Auth, engine: Engine) -> None:
    client.get(f"{API}/models")
    client.get(f"{API}/models", headers={"X-Tenant-ID": "initech"})
    assert row_count(engine, "audit_log") == 0


def test_another_tenants_404_is_a_failure_of_the_caller_not_a_denial(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(tenant="acme"), "churn")
    assert client.delete(f"{API}/models/churn", headers=auth(tenant="globex")).status_code == 404
    assert actions(audit(client, auth(tenant="globex"))) == [("model.delete", "failed")]
    assert actions(audit(client, auth(tenant="acme"))) == [("model.create", "success")]


# --- reading the log --------------------------------------------------------------------------------


def test_only_admins_read_the_audit_log(client: TestClient, auth: Auth) -> None:
    for role in ("viewer", "editor"):
        refused = client.get(f"{API}/audit", headers=auth(role))
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/forbidden")
    assert actions(audit(client, auth("admin"))) == [("audit-record.list", "denied")] * 2


def test_each_tenant_sees_only_its_own_records(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(tenant="acme"), "acme-model")
    create_model(client, auth(tenant="globex"), "globex-model")
    globex = audit(client, auth(tenant="globex"))
    assert [r["resource"]["name"] for r in globex] == ["globex-model"]
    assert audit(client, auth(tenant="globex"), resource="acme-model") == []


def test_the_log_filters_by_action_principal_outcome_resource_and_time(
    client: TestClient, auth: Auth
) -> None:
    create_model(client, auth(subject="alice"), "churn")
    create_model(client, auth(subject="bob"), "fraud")
    client.patch(f"{API}/models/churn", json={"description": "x"}, headers=auth(subject="bob"))
    client.delete(f"{API}/models/fraud", headers=auth("viewer", subject="eve"))

    def names(**params: Any) -> list[tuple[str, str]]:
        return [(r["action"], r["resource"]["name"]) for r in reversed(audit(client, auth(), **params))]

    assert names(action="model.create") == [("model.create", "churn"), ("model.create", "fraud")]
    assert names(action="model.*") == names()
    assert names(principal="bob") == [("model.create", "fraud"), ("model.update", "churn")]
    assert names(outcome="denied") == [("model.delete", "fraud")]
    assert names(resource="churn") == [("model.create", "churn"), ("model.update", "churn")]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert names(since=future) == []
    assert len(names(until=future)) == 4


def test_the_log_pages_newest_first_with_a_cursor(client: TestClient, auth: Auth) -> None:
    for n in range(5):
        create_model(client, auth(), f"m{n}")
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/audit", params=params, headers=auth()).json()
        seen += [r["seq"] for r in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


# --- secrets ----------------------------------------------------------------------------------------


def test_secrets_in_a_diff_are_redacted_in_the_api_and_the_database(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    create_model(client, auth(), "churn", configuration={"password": "old-pass-123", "lr": 0.1})
    config = {"password": "new-pass-456", "lr": 0.2, "storage": {"apiKey": "key-789", "bucket": "b"}}
    assert (
        client.patch(f"{API}/models/churn", json={"configuration": config}, headers=auth()).status_code == 200
    )
    update = audit(client, auth(), action="model.update")[0]
    assert update["changes"] == {
        "configuration": [
            {"password": "[redacted]", "lr": 0.1},
            {"password": "[redacted]", "lr": 0.2, "storage": {"apiKey": "[redacted]", "bucket": "b"}},
        ]
    }
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM audit_log") for v in row)
    assert not any(secret in stored for secret in ("old-pass-123", "new-pass-456", "key-789"))


def test_an_api_key_creation_is_recorded_without_its_key(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    created = client.post(f"{API}/api-keys", json={"name": "ci", "roles": ["predictor"]}, headers=auth())
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert actions(audit(client, auth())) == [("api-key.create", "success")]
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM audit_log") for v in row)
    assert key not in stored and key.split("_", 2)[2] not in stored  # nor its secret part


# --- predictions ------------------------------------------------------------------------------------


def _predict(client: TestClient, auth: Auth) -> None:
    body = {"input": {"features": [5.1, 3.5, 1.4, 0.2]}}
    response = client.post(f"{API}/models/iris/predict", json=body, headers=auth("predictor"))
    assert response.status_code == 200, response.text


def test_predictions_are_counted_not_audited(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    for _ in range(3):
        _predict(client, auth)
    assert "model.predict" not in {r["action"] for r in audit(client, auth())}
    metrics = client.get("/metrics").text
    assert 'ai_service_tenant_predictions_total{outcome="success",tenant="acme"} 3.0' in metrics


def test_a_tenant_that_sets_audit_predictions_gets_one_record_per_prediction(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            tenants.update().where(tenants.c.tenant_id == "acme").values(settings={"auditPredictions": True})
        )
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    _predict(client, auth)
    _predict(client, auth)
    predictions = audit(client, auth(), action="model.predict")
    assert [(r["outcome"], r["roles"], r["resource"]["name"]) for r in predictions] == [
        ("success", ["predictor"], "iris")
    ] * 2


# --- the chain --------------------------------------------------------------------------------------


def _some_history(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn", configuration={"secretKey": "s"})
    client.patch(f"{API}/models/churn", json={"description": "d"}, headers=auth())
    client.delete(f"{API}/models/churn", headers=auth("viewer"))
    create_model(client, auth(tenant="globex"), "other")


def test_the_chain_verifies(client: TestClient, auth: Auth, verify_cli: Any) -> None:
    _some_history(client, auth)
    result = verify_cli()
    assert result.exit_code == 0, result.output
    assert "tenant acme: OK (3 records)" in result.output
    assert "tenant globex: OK (1 records)" in result.output


def test_an_edited_row_makes_verify_fail_naming_its_seq(
    client: TestClient, auth: Auth, engine: Engine, verify_cli: Any
) -> None:
    _some_history(client, auth)
    tamper(engine, "UPDATE audit_log SET subject = 'nobody' WHERE tenant_id = 'acme' AND seq = 2")
    result = verify_cli()
    assert result.exit_code == 1
    assert "tenant acme: BROKEN at seq 2" in result.output
    assert "tenant globex: OK" in result.output
    assert verify_cli("--tenant", "globex").exit_code == 0


def test_a_deleted_row_makes_verify_fail(
    client: TestClient, auth: Auth, engine: Engine, verify_cli: Any
) -> None:
    _some_history(client, auth)
    tamper(engine, "DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq = 3")
    result = verify_cli("--tenant", "acme")
    assert result.exit_code == 1
    assert "BROKEN at seq 3" in result.output


def test_a_deleted_chain_head_makes_verify_fail(
    client: TestClient, auth: Auth, engine: Engine, verify_cli: Any
) -> None:
    _some_history(client, auth)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_chain_heads WHERE tenant_id = 'acme'")
    result = verify_cli()
    assert result.exit_code == 1
    assert "tenant acme: BROKEN at seq 3: the tenant's chain head is missing" in result.output


def test_the_database_refuses_to_update_audit_rows(client: TestClient, auth: Auth, engine: Engine) -> None:
    create_model(client, auth(), "churn")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET subject = 'nobody'")


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_postgresql_refuses_to_delete_audit_rows(client: TestClient, auth: Auth, engine: Engine) -> None:
    create_model(client, auth(), "churn")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log")
    assert row_count(engine, "audit_log") == 1


def test_concurrent_writers_keep_each_chain_gapless(
    client: TestClient, auth: Auth, container: Container
) -> None:
    editor, viewer = auth("editor"), auth("viewer")

    def work(n: int) -> int:
        if n % 2:
            return client.delete(f"{API}/models/nothing-{n}", headers=viewer).status_code
        return client.post(
            f"{API}/models", json={"name": f"m{n}", "framework": "onnx"}, headers=editor
        ).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(work, range(24)))
    assert sorted(statuses) == [201] * 12 + [403] * 12
    assert [r["seq"] for r in audit(client, auth())] == list(range(24, 0, -1))
    [report] = container.audit.verify("acme")
    assert (report.records, report.broken) == (24, None)


def test_records_read_back_exactly_as_hashed(client: TestClient, auth: Auth, container: Container) -> None:
    awkward = {"n": 1e20, "f": 0.1, "u": "ünï\u2028", "big": 12345678901234567890, "nested": [[], {}]}
    create_model(client, auth(), "churn", configuration={})
    assert (
        client.patch(f"{API}/models/churn", json={"configuration": awkward}, headers=auth()).status_code
        == 200
    )
    [report] = container.audit.verify("acme")
    assert report.broken is None
    stored = audit(client, auth())[0]["changes"]["configuration"][1]
    assert json.dumps(stored, sort_keys=True) == json.dumps(awkward, sort_keys=True)
