"""The first-run experience: ``aiservice serve`` in an empty folder, the printed curl line, the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveServer, clean_env, cli
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


def test_first_start_prints_a_curl_line_that_works(live_server: LiveServer) -> None:
    curl_line = live_server.line_starting("curl ").replace("localhost:3004", f"localhost:{live_server.port}")
    result = subprocess.run(["bash", "-c", curl_line], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout) == {"items": [], "nextCursor": None}


def test_first_start_keeps_its_state_under_var(live_server: LiveServer) -> None:
    var = live_server.folder / "var"
    secret = var / "jwt_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 32
    assert (var / "aiservice.db").exists()
    assert (var / "artifacts").is_dir()


def test_cli_token_is_printed_alone_and_accepted(live_server: LiveServer) -> None:
    result = cli(
        "token", "create", "--tenant", "default", "--role", "viewer", "--ttl", "5m", cwd=live_server.folder
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "default"}
    assert httpx.get(f"{live_server.base_url}/api/v1/ai/models", headers=headers).status_code == 200
    created = httpx.post(
        f"{live_server.base_url}/api/v1/ai/models", json={"name": "x", "framework": "onnx"}, headers=headers
    )
    assert created.status_code == 403


def test_cli_refuses_a_bad_ttl_and_an_unknown_role(live_server: LiveServer) -> None:
    bad_ttl = cli(
        "token", "create", "--tenant", "default", "--role", "admin", "--ttl", "soon", cwd=live_server.folder
    )
    bad_role = cli("token", "create", "--tenant", "default", "--role", "wizard", cwd=live_server.folder)
    assert bad_ttl.returncode != 0 and bad_ttl.stdout == ""
    assert bad_role.returncode != 0 and bad_role.stdout == ""


def test_logs_are_json_lines_with_request_context(live_server: LiveServer) -> None:
    token = live_server.line_starting("export TOKEN=").removeprefix("export TOKEN=")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "default", "X-Request-ID": "e2e-1"}
    httpx.get(f"{live_server.base_url}/api/v1/ai/models", headers=headers)
    lines = wait_until(
        lambda: [line for line in list(live_server.output) if line.startswith("{") and '"e2e-1"' in line],
        5,
        what="the request's log lines",
    )
    entry = json.loads(lines[-1])
    assert {"timestamp", "level", "service", "message", "requestId", "tenantId", "duration"} <= set(entry)


def test_migrate_prepares_an_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path
    result = cli("migrate", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "var" / "aiservice.db").exists()
    again = cli("migrate", cwd=folder)
    assert again.returncode == 0


def test_production_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = cli("migrate", cwd=tmp_path, env=clean_env(ENVIRONMENT="production"))
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr + result.stdout


def test_purge_command_reports_what_it_erased(tmp_path: Path) -> None:
    assert cli("migrate", cwd=tmp_path).returncode == 0
    result = cli("purge", "--older-than", "1d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged 0 models and 0 artifacts"
