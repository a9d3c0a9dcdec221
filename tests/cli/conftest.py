"""The CLI against a live service: the app over the test's container, served by uvicorn on a real socket in
a thread (as in tests/client), and ``aiservice`` commands run through Typer's ``CliRunner`` with a config
file of their own (``AISERVICE_CONFIG``) and none of the caller's ``AISERVICE_*`` variables."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from aiservice.bootstrap import Container
from aiservice.interfaces.cli.main import app
from aiservice.interfaces.http.app import create_app
from tests.helpers import wait_until


@contextmanager
def serve(container: Container) -> Iterator[str]:
    """The app (managing the container's lifecycle, as ``aiservice serve`` does) at ``http://host:port``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cli-test-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, 0.01, "the server to start")
    assert thread.is_alive(), "the server thread ended before it started serving"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def service(container: Container, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serve(container) as url:
        # The service logs to whatever sys.stdout is, and CliRunner swaps it for the command's output:
        # its lines are kept out of what the commands print (pytest's own log capture still has them).
        for handler in logging.getLogger().handlers:
            if type(handler).__name__ == "_StdoutHandler":
                monkeypatch.setattr(handler, "level", logging.CRITICAL + 1)
        yield url


@pytest.fixture
def token(container: Container) -> str:
    return container.tokens.issue("cli-user", "acme", ["admin"], 3600)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / "aiservice" / "config.toml"


Run = Callable[..., Result]


@pytest.fixture
def run(config_file: Path) -> Run:
    """``run(*args, env={...})``: the command's result (stdout and stderr apart), with only the variables
    given (and the test's own config file)."""

    def invoke(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
        clean: dict[str, str | None] = {
            "AISERVICE_URL": None,
            "AISERVICE_TOKEN": None,
            "AISERVICE_TENANT": None,
            "AISERVICE_CONFIG": str(config_file),
        }
        return CliRunner().invoke(app, list(args), env={**clean, **(env or {})}, input=input)

    return invoke


@pytest.fixture
def cli(run: Run, service: str, token: str) -> Run:
    """``run`` once ``aiservice login`` stored the live service, the acme tenant and an admin token."""
    result = run("login", "--url", service, "--tenant", "acme", "--token", token)
    assert result.exit_code == 0, result.stderr
    return run


def error_line(result: Result) -> str:
    """The one line a failing command printed, checked to be all it printed."""
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr
