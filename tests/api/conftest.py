"""Fixtures for API tests that need a real socket (clients such as tritonclient)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from tests.helpers import serve_in_thread


@pytest.fixture
def server(client: TestClient, container: Container) -> Iterator[str]:
    """A real socket for clients that need one; the ``client`` fixture owns the container's lifecycle."""
    with serve_in_thread(container) as address:
        yield address
