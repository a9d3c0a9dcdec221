"""Logging in, where a command's URL, tenant and token come from, the exit statuses scripts branch on, and
the things every CLI has (--version, shell completion)."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiservice import __version__
from aiservice.bootstrap import Container
from aiservice.interfaces.cli.main import app
from tests.cli.conftest import Run, error_line


@pytest.fixture
def down_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_login_stores_a_private_file_that_later_commands_use(
    run: Run, service: str, token: str, config_file: Path
) -> None:
    result = run("login", "--url", service + "/", "--tenant", "acme", "--token", token)
    assert result.exit_code == 0, result.stderr
    assert f"logged in to {service} as tenant acme" in result.stdout
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert token in config_file.read_text()

    created = run("models", "create", "iris", "--framework", "sklearn")  # no --url, --token, --tenant
    assert created.exit_code == 0, created.stderr
    listed = run("models", "list", "-o", "json")
    assert [m["name"] for m in json.loads(listed.stdout)] == ["iris"]
    assert run("whoami").stdout == f"{service} tenant acme (a token is set)\n"

    out = run("logout")
    assert (out.exit_code, config_file.exists()) == (0, False)
    assert "no API token" in error_line(run("models", "list"))


def test_the_config_file_is_under_xdg_config_home_by_default(
    run: Run, service: str, token: str, tmp_path: Path
) -> None:
    home = tmp_path / "xdg"
    env: dict[str, str | None] = {"AISERVICE_CONFIG": None, "XDG_CONFIG_HOME": str(home)}
    result = run("login", "--url", service, "--tenant", "acme", "--token", token, env=env)
    assert result.exit_code == 0, result.stderr
    assert str(home / "aiservice" / "config.toml") in result.stdout
    assert stat.S_IMODE((home / "aiservice" / "config.toml").stat().st_mode) == 0o600


def test_a_refused_token_is_not_stored(run: Run, service: str, config_file: Path) -> None:
    result = run("login", "--url", service, "--tenant", "acme", "--token", "not-a-jwt")
    line = error_line(result)
    assert result.exit_code == 4 and line.startswith("error: 401 ") and "aiservice token create" in line
    assert not config_file.exists()


def test_variables_win_over_the_login_and_flags_over_the_variables(
    cli: Run, service: str, container: Container, down_url: str
) -> None:
    assert cli("models", "create", "iris", "--framework", "sklearn").exit_code == 0
    container.tenants.ensure("other")
    other = container.tokens.issue("cli-user", "other", ["admin"], 3600)

    env: dict[str, str | None] = {"AISERVICE_TENANT": "other", "AISERVICE_TOKEN": other}
    assert json.loads(cli("models", "list", "-o", "json", env=env).stdout) == []  # the other tenant's
    flags = cli("models", "list", "-o", "json", "--tenant", "acme", "--token", other, env=env)
    assert flags.exit_code == 4  # the other tenant's token is not good for acme

    down = cli("models", "list", env={"AISERVICE_URL": down_url})
    assert down.exit_code == 3 and down_url in error_line(down)
    assert cli("models", "list", "--url", service, env={"AISERVICE_URL": down_url}).exit_code == 0


def test_a_server_that_is_down_is_one_line_with_status_3(run: Run, down_url: str) -> None:
    result = run("models", "list", "--url", down_url, "--token", "t")
    line = error_line(result)
    assert result.exit_code == 3
    assert line.startswith(f"error: cannot reach the aiservice API at {down_url} ")
    assert "aiservice serve" in line and "AISERVICE_URL" in line


def test_a_problem_answer_shows_its_detail_and_fields_with_status_1(cli: Run) -> None:
    invalid = cli("models", "create", "x", "--framework", "no-such-framework")
    line = error_line(invalid)
    assert invalid.exit_code == 1 and line.startswith("error: 422 ") and "[body.framework: " in line

    missing = cli("models", "show", "no-such-model")
    assert missing.exit_code == 1 and error_line(missing).startswith("error: 404 ")


def test_a_role_that_lacks_the_right_is_refused_with_status_4(
    run: Run, service: str, container: Container
) -> None:
    viewer = container.tokens.issue("viewer", "acme", ["viewer"], 3600)
    result = run(
        "models",
        "create",
        "m",
        "--framework",
        "sklearn",
        "--url",
        service,
        "--tenant",
        "acme",
        "--token",
        viewer,
    )
    assert (result.exit_code, error_line(result)[:11]) == (4, "error: 403 ")


def test_version_and_help_document_the_exit_statuses(run: Run) -> None:
    assert run("--version").stdout == f"aiservice {__version__}\n"
    for command in ("--help", "models --help", "predict --help"):
        help_text = " ".join(run(*command.split()).stdout.split())  # as wrapped to the terminal's width
        assert "Exit status" in help_text and "2 usage" in help_text and "an ambiguous id prefix" in help_text
        assert "3 the service cannot be reached; 4 the service refused the token" in help_text


def test_shell_completion_is_offered_and_completes_commands() -> None:
    runner = CliRunner()
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="aiservice")
    assert script.exit_code == 0 and "_AISERVICE_COMPLETE=complete_bash" in script.stdout
    completed = runner.invoke(
        app,
        [],
        prog_name="aiservice",
        env={"_AISERVICE_COMPLETE": "complete_bash", "COMP_WORDS": "aiservice experi", "COMP_CWORD": "1"},
    )
    assert completed.stdout.split() == ["experiments"]
