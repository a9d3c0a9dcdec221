"""SSRF: without WEBHOOK_ALLOW_PRIVATE a webhook may only point at public addresses, checked when it is
made or changed and again before every attempt (a host may answer differently later: DNS rebinding),
and a delivery goes to the very address that was checked. No test here needs the internet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.ports import WebhookResponse, WebhookSender
from aiservice.application.webhook_delivery import WebhookDispatcher, WebhookUrlGuard
from aiservice.application.webhooks import NewWebhook, Webhooks
from aiservice.bootstrap import Container
from aiservice.domain.clock import utcnow
from aiservice.domain.events import ModelCreated
from aiservice.domain.tenancy import Principal, Role
from aiservice.infrastructure.db.webhook_repositories import (
    SecretCipher,
    SqlAlchemyWebhookDeliveryQueue,
    SqlAlchemyWebhookStore,
)
from aiservice.infrastructure.webhooks.http import HttpxWebhookSender
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.events.conftest import outbox_message
from tests.webhooks.conftest import FAST_DELIVERY, WEBHOOKS, Receiver, expected_signature, subscribe

PUBLIC = "93.184.215.14"
ADMIN = Principal("tester", "acme", frozenset({Role.ADMIN}))


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """The default: private targets refused."""
    return make_settings(database_url, tmp_path / "data", **{**FAST_DELIVERY, "webhook_allow_private": False})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://0x7f.1/hook",
    ],
)
def test_a_private_or_internal_target_is_refused_naming_url(client: TestClient, auth: Auth, url: str) -> None:
    response = client.post(WEBHOOKS, json={"url": url, "eventTypes": ["*"]}, headers=auth())

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] in (
        "https://aiservice.dev/problems/unsafe-webhook-url",
        "https://aiservice.dev/problems/validation-error",  # a host the resolver refuses to read
    )
    assert [e["field"] for e in problem["errors"]] == ["body.url"]
    assert client.get(WEBHOOKS, headers=auth()).json()["items"] == []


def test_the_metadata_address_is_refused_as_link_local(client: TestClient, auth: Auth) -> None:
    response = client.post(
        WEBHOOKS,
        json={"url": "http://169.254.169.254/latest/meta-data/", "eventTypes": ["*"]},
        headers=auth(),
    )
    problem = response.json()
    assert problem["type"] == "https://aiservice.dev/problems/unsafe-webhook-url"
    assert problem["address"] == "169.254.169.254"
    assert problem["errors"][0]["message"] == "resolves to a link-local address"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://{PUBLIC}/hook",
        "file:///etc/passwd",
        f"gopher://{PUBLIC}:70/_",
        f"http://user:password@{PUBLIC}/hook",
        f"http://{PUBLIC}\\@127.0.0.1/hook",
        f"http://{PUBLIC} /hook",
        "http:///hook",
        "not a url",
        "http://host.invalid/hook",  # does not resolve
    ],
)
def test_a_url_that_is_not_plain_http_is_refused_naming_url(client: TestClient, auth: Auth, url: str) -> None:
    response = client.post(WEBHOOKS, json={"url": url, "eventTypes": ["*"]}, headers=auth())

    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.url"]


def test_a_public_address_is_accepted(client: TestClient, auth: Auth) -> None:
    assert subscribe(client, auth(), f"https://{PUBLIC}:8443/hook")["url"] == f"https://{PUBLIC}:8443/hook"


def test_changing_the_url_to_a_private_target_is_refused_and_changes_nothing(
    client: TestClient, auth: Auth
) -> None:
    webhook = subscribe(client, auth(), f"https://{PUBLIC}/hook")
    response = client.patch(
        f"{WEBHOOKS}/{webhook['id']}",
        json={"url": "http://169.254.169.254/", "active": False},
        headers=auth(),
    )

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.url"]
    after = client.get(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).json()
    assert (after["url"], after["active"]) == (f"https://{PUBLIC}/hook", True)


# -- at send time ----------------------------------------------------------------------------------


class ScriptedResolver:
    """Answers each lookup with the next of ``answers`` (the last one from then on), like a hostile DNS."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def post(self, url: str, address: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        self.sent.append((url, address))
        return WebhookResponse(200, None, 1.0)

    def close(self) -> None:
        pass


def _webhooks(
    engine: Engine, resolver: ScriptedResolver, sender: WebhookSender, allow_private: bool
) -> tuple[Webhooks, WebhookDispatcher]:
    cipher = SecretCipher(None)
    store = SqlAlchemyWebhookStore(engine, cipher, utcnow)
    guard = WebhookUrlGuard(resolver, allow_private=allow_private)
    dispatcher = WebhookDispatcher(
        store,
        SqlAlchemyWebhookDeliveryQueue(engine, cipher),
        sender,
        guard,
        timeout_s=2,
        max_attempts=5,
        max_backoff_s=0.05,
    )
    return Webhooks(store, guard, dispatcher, utcnow), dispatcher


@pytest.fixture
def tenants(container: Container) -> Iterator[None]:
    """The container (not started: no worker of its own competes) made the tenants."""
    yield


def test_a_host_that_turns_private_after_the_check_is_refused_at_send_and_not_retried(
    engine: Engine, tenants: None
) -> None:
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])  # public when checked, loopback when sent
    sender = RecordingSender()
    webhooks, dispatcher = _webhooks(engine, resolver, sender, allow_private=False)
    webhook = webhooks.create(ADMIN, NewWebhook("https://rebind.example.test/hook", ["*"])).webhook

    dispatcher.on_event(
        outbox_message(ModelCreated(tenant_id="acme", aggregate_id="m", name="m", framework="onnx"))
    )
    assert dispatcher.run_once()

    (delivery,) = webhooks.deliveries(ADMIN, webhook.id).items
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, None)
    assert delivery.last_error is not None and "127.0.0.1, a loopback address" in delivery.last_error
    assert sender.sent == []
    assert resolver.asked == ["rebind.example.test", "rebind.example.test"]
    assert not dispatcher.run_once()  # refused is final: nothing is due any more


def test_a_delivery_connects_to_the_address_checked_not_a_fresh_lookup(
    engine: Engine, tenants: None, receiver: Receiver
) -> None:
    """The name cannot resolve on this machine: only the checked address can have been used, and the
    receiver still sees the name in Host."""
    name = f"hooks.example.test:{receiver.port}"
    sender = HttpxWebhookSender(timeout_s=2)
    webhooks, _ = _webhooks(engine, ScriptedResolver(["127.0.0.1"]), sender, allow_private=True)
    issued = webhooks.create(ADMIN, NewWebhook(f"http://{name}/hook", ["*"]))

    try:
        delivery = webhooks.ping(ADMIN, issued.webhook.id)
    finally:
        sender.close()

    assert (delivery.status, delivery.last_status_code) == ("succeeded", 200)
    (request,) = receiver.received()
    assert request.headers["host"] == name
    assert request.headers["x-aiservice-signature"] == expected_signature(issued.secret, request)
    assert json.loads(request.body)["type"] == "ai.webhook.ping.v1"


def test_when_one_address_does_not_answer_the_next_checked_one_is_tried(
    engine: Engine, tenants: None, receiver: Receiver
) -> None:
    """A host with two addresses, the first dead (nothing listens on 127.0.0.2): the delivery still
    arrives, in one attempt, through the second."""
    name = f"two.example.test:{receiver.port}"
    sender = HttpxWebhookSender(timeout_s=2)
    resolver = ScriptedResolver(["127.0.0.2", "127.0.0.1"])
    webhooks, _ = _webhooks(engine, resolver, sender, allow_private=True)
    issued = webhooks.create(ADMIN, NewWebhook(f"http://{name}/hook", ["*"]))

    try:
        delivery = webhooks.ping(ADMIN, issued.webhook.id)
    finally:
        sender.close()

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert len(receiver.received()) == 1
