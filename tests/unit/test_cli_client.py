"""The CLI's HTTP-client commands, before or without a server: one line on stderr and a documented
exit status (2 usage, 3 unreachable), never a traceback."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner, Result

from aiservice.interfaces.cli.main import app as cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"AISERVICE_TOKEN": None, "AISERVICE_URL": None})


def error_line(result: Result) -> str:
    """The one line a failing command printed, checked to be all it printed."""
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def down_url() -> str:
    """The URL of a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_server_that_is_down_names_the_url_and_how_to_set_it(down_url: str) -> None:
    result = run("jobs", "list", "--url", down_url, "--token", "t")
    line = error_line(result)
    assert result.exit_code == 3
    assert down_url in line and "AISERVICE_URL" in line and "aiservice serve" in line


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_token_says_how_to_get_one_before_connecting(down_url: str, token: str) -> None:
    result = run("jobs", "show", "some-job", "--url", down_url, "--token", token)
    line = error_line(result)
    assert result.exit_code == 2  # not 3: nothing was sent
    assert "aiservice token create" in line and "AISERVICE_TOKEN" in line


def test_a_url_that_is_not_http_is_a_usage_error() -> None:
    result = run("jobs", "list", "--url", "localhost:3004", "--token", "t")
    assert (result.exit_code, "AISERVICE_URL" in error_line(result)) == (2, True)


def test_an_unreadable_training_config_is_one_usage_line() -> None:
    result = run("train", "iris", "--config", "/nonexistent/train.yaml", "--token", "t")
    assert (result.exit_code, "--config" in error_line(result)) == (2, True)


def test_the_exit_statuses_are_documented_in_the_help() -> None:
    text = " ".join(run("--help").stdout.split())  # as wrapped to the terminal's width
    assert "Exit status" in text and "3 the service cannot be reached" in text
