"""The CLI against a live ``aiservice serve``: refusals and problems are one line with the server's
detail and a documented exit status, and ``token create`` signs with the server's secret or not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from aiservice.interfaces.cli.main import app
from tests.e2e.conftest import LiveServer, clean_env, cli, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-cli-errors"),  # one worker starts the module's live server
]


def run(server: LiveServer, token: str, *args: str) -> Result:
    options = ["--url", server.base_url, "--token", token, "--tenant", "default"]
    return CliRunner().invoke(app, [*args, *options], env={"AISERVICE_TOKEN": None, "AISERVICE_URL": None})


def error_line(result: Result) -> str:
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def admin_token(server: LiveServer) -> str:
    return server.line_starting("export TOKEN=").removeprefix("export TOKEN=")


def test_a_bad_token_is_refused_with_the_servers_detail(module_live_server: LiveServer) -> None:
    result = run(module_live_server, "not-a-jwt", "jobs", "list")
    line = error_line(result)
    assert result.exit_code == 4
    assert line.startswith("error: 401 ") and "aiservice token create" in line


def test_an_action_the_role_lacks_is_refused(module_live_server: LiveServer) -> None:
    viewer = cli(
        "token", "create", "--tenant", "default", "--role", "viewer", cwd=module_live_server.folder
    ).stdout.strip()
    result = run(module_live_server, viewer, "jobs", "cancel", "some-job")
    assert (result.exit_code, error_line(result)[:11]) == (4, "error: 403 ")


def test_a_problem_answer_shows_its_detail_and_fields(module_live_server: LiveServer) -> None:
    result = run(module_live_server, admin_token(module_live_server), "jobs", "list", "--status", "lost")
    line = error_line(result)
    assert result.exit_code == 1
    assert line.startswith("error: 422 Invalid input: ") and "[query.status: " in line


def test_the_installed_command_reports_a_server_that_is_down_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "aiservice", "jobs", "list", "--url", url, "--token", "t"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.startswith(f"error: cannot reach the aiservice API at {url} ")
    assert result.stderr.count("\n") == 1


def test_token_create_in_another_folder_refuses_and_names_the_file(
    module_live_server: LiveServer, tmp_path: Path
) -> None:
    result = cli("token", "create", "--tenant", "default", "--role", "viewer", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert str(tmp_path / "var" / "jwt_secret") in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "var").exists()


def test_token_create_pointed_at_the_servers_data_signs_a_token_it_accepts(
    module_live_server: LiveServer, tmp_path: Path
) -> None:
    server_data = module_live_server.folder / "var"
    result = cli(
        "token",
        "create",
        "--tenant",
        "default",
        "--role",
        "viewer",
        cwd=tmp_path,
        env=clean_env(DATA_DIR=str(server_data)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"signed with the secret in {server_data / 'jwt_secret'}\n"
    headers = {"Authorization": f"Bearer {result.stdout.strip()}", "X-Tenant-ID": "default"}
    assert httpx.get(f"{module_live_server.base_url}/api/v1/ai/models", headers=headers).status_code == 200
