"""The README's webhook walk-through, pasted into bash against a live server, works; its verify snippet
accepts what the service sends and refuses anything altered."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LiveServer
from tests.e2e.conftest import live_server as live_server  # the fixture, with the environment set below
from tests.e2e.test_readme_tour import paste_block
from tests.webhooks.conftest import Received, Receiver

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    text = README.read_text()
    block = re.search(r"<!-- webhook-verify:start -->\s*```python\n(.*?)```", text, re.S)
    assert block is not None, "README has no webhook-verify block"
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify


def _headers(request: Received) -> dict[str, str]:
    return {
        "X-AIService-Timestamp": request.headers["x-aiservice-timestamp"],
        "X-AIService-Signature": request.headers["x-aiservice-signature"],
    }


@pytest.fixture
def private_server(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, request: pytest.FixtureRequest
) -> LiveServer:
    """A live server that may deliver to this machine, and the walk-through pointed at the receiver."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("HOOK_URL", receiver.url)
    server: LiveServer = request.getfixturevalue("live_server")
    return server


def test_readme_webhook_walk_through_works_when_pasted(
    private_server: LiveServer, receiver: Receiver
) -> None:
    stdout = paste_block(private_server, "webhooks", timeout=60)

    created, ping, log, rotated, paused = [
        json.loads(line) for line in stdout.splitlines() if line.startswith("{")
    ]
    assert stdout.rstrip().endswith("204")
    assert created["url"] == receiver.url and created["secret"].startswith("whsec_")
    assert (ping["status"], ping["lastStatusCode"], ping["eventType"]) == (
        "succeeded",
        200,
        "ai.webhook.ping.v1",
    )
    assert [d["id"] for d in log["items"]] == [ping["id"]]
    assert rotated["secret"] != created["secret"] and paused["active"] is False
    (request,) = receiver.received()
    verify = readme_verify()
    assert verify(created["secret"], _headers(request), request.body)
    assert not verify(rotated["secret"], _headers(request), request.body)
    assert not verify(created["secret"], _headers(request), request.body + b" ")
