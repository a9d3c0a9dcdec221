"""Fixtures for API tests that need a real socket (clients such as tritonclient)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from aiservice.interfaces.http.app import create_app


@pytest.fixture
def server(client: TestClient, container: Container) -> Iterator[str]:
    """A real socket for clients that need one; the ``client`` fixture owns the container's lifecycle."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(container, manage_lifecycle=False), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
