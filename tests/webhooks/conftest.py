"""A real HTTP receiver started by the tests on 127.0.0.1 (so webhooks are allowed private targets
here), and a service whose deliveries retry within milliseconds."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.settings import Settings
from tests.conftest import make_settings

API = "/api/v1/ai"
WEBHOOKS = f"{API}/webhooks"
MAX_ATTEMPTS = 3
FAST_DELIVERY: dict[str, object] = {
    "webhook_allow_private": True,
    "webhook_max_attempts": MAX_ATTEMPTS,
    "webhook_max_backoff_seconds": 0.05,  # caps every pause (the first would be 1 s)
    "webhook_poll_seconds": 0.05,
    "webhook_timeout_seconds": 2,
}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class Receiver:
    """Answers each POST with the next of ``statuses`` (then ``default``) and records it."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int] = []
        self.default = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._answer(Received(self.path, headers, body))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _answer(self, request: Received) -> int:
        with self._lock:
            self.requests.append(request)
            return self.statuses.pop(0) if self.statuses else self.default

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def at_least(self, count: int) -> list[Received]:
        """What was received, once it is ``count`` requests or more (else nothing)."""
        received = self.received()
        return received if len(received) >= count else []

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", **FAST_DELIVERY)


def expected_signature(secret: str, request: Received) -> str:
    """The signature a receiver computes, written from the README's recipe rather than the service's."""
    signed = request.headers["x-aiservice-timestamp"].encode() + b"." + request.body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def subscribe(
    client: TestClient, headers: dict[str, str], url: str, event_types: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        WEBHOOKS, json={"url": url, "eventTypes": event_types or ["*"], **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(client: TestClient, headers: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def settled(client: TestClient, headers: dict[str, str], webhook_id: str, status: str) -> Callable[[], Any]:
    """A condition: the webhook's one delivery, once it has ``status``."""

    def check() -> dict[str, Any] | None:
        found = deliveries(client, headers, webhook_id)
        return found[0] if len(found) == 1 and found[0]["status"] == status else None

    return check
