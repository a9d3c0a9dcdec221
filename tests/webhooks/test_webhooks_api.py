"""Managing webhooks over HTTP: the secret shown once, event types checked, pages, changes audited, and
every tenant alone with its own webhooks."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.conftest import Auth
from tests.webhooks.conftest import API, WEBHOOKS, Receiver, expected_signature, subscribe

PUBLIC_URL = "https://93.184.215.14/hook"  # a public address: accepted without resolving or sending


def test_create_answers_the_subscription_with_its_secret_once(client: TestClient, auth: Auth) -> None:
    response = client.post(
        WEBHOOKS,
        json={"url": PUBLIC_URL, "eventTypes": ["ai.model.version.created.v1"], "description": "CI"},
        headers=auth(),
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) == 49
    assert response.headers["location"] == f"{WEBHOOKS}/{created['id']}"
    assert (created["url"], created["eventTypes"], created["active"]) == (
        PUBLIC_URL,
        ["ai.model.version.created.v1"],
        True,
    )
    assert (created["description"], created["createdBy"]) == ("CI", "tester")
    shown_later = [
        client.get(f"{WEBHOOKS}/{created['id']}", headers=auth()),
        client.get(WEBHOOKS, headers=auth()),
        client.patch(f"{WEBHOOKS}/{created['id']}", json={"description": "nightly"}, headers=auth()),
        client.get(f"{API}/audit", headers=auth()),
    ]
    for later in shown_later:
        assert later.status_code == 200, later.text
        assert created["secret"] not in later.text
        assert "secret" not in later.json() and all("secret" not in i for i in later.json().get("items", []))


@pytest.mark.parametrize(
    ("event_types", "fields"),
    [
        (
            ["ai.model.created.v1", "ai.model.exploded.v1", "model.created"],
            ["body.eventTypes.1", "body.eventTypes.2"],
        ),
        (["ai.webhook.ping.v1"], ["body.eventTypes.0"]),
        ([], ["body.eventTypes"]),
    ],
    ids=["unknown", "ping-is-not-subscribable", "empty"],
)
def test_unknown_event_types_are_a_422_naming_each(
    client: TestClient, auth: Auth, event_types: list[str], fields: list[str]
) -> None:
    response = client.post(WEBHOOKS, json={"url": PUBLIC_URL, "eventTypes": event_types}, headers=auth())

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://aiservice.dev/problems/validation-error"
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert client.get(WEBHOOKS, headers=auth()).json()["items"] == []


def test_every_published_event_type_and_the_wildcard_can_be_subscribed(
    client: TestClient, auth: Auth
) -> None:
    from aiservice.application.events import EVENT_TYPES

    every = sorted(EVENT_TYPES.values())
    assert subscribe(client, auth(), PUBLIC_URL, every)["eventTypes"] == every
    assert subscribe(client, auth(), PUBLIC_URL, ["*", "*"])["eventTypes"] == ["*"]


def test_patch_changes_url_event_types_and_active(client: TestClient, auth: Auth) -> None:
    webhook = subscribe(client, auth(), PUBLIC_URL, ["ai.model.created.v1"])
    body = {"url": "https://93.184.215.15/other", "eventTypes": ["*"], "active": False}

    changed = client.patch(f"{WEBHOOKS}/{webhook['id']}", json=body, headers=auth())

    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in body} == body
    assert client.get(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).json() == changed.json()
    refused = client.patch(f"{WEBHOOKS}/{webhook['id']}", json={"eventTypes": ["nope"]}, headers=auth())
    assert [e["field"] for e in refused.json()["errors"]] == ["body.eventTypes.0"]
    assert client.get(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).json()["eventTypes"] == ["*"]


def test_the_list_is_paginated_newest_first(client: TestClient, auth: Auth) -> None:
    made = [subscribe(client, auth(), f"{PUBLIC_URL}?n={n}")["id"] for n in range(3)]

    first = client.get(WEBHOOKS, params={"limit": 2}, headers=auth()).json()
    rest = client.get(WEBHOOKS, params={"limit": 2, "cursor": first["nextCursor"]}, headers=auth()).json()

    assert [w["id"] for w in first["items"] + rest["items"]] == made[::-1]
    assert rest["nextCursor"] is None
    bad = client.get(WEBHOOKS, params={"cursor": "not-a-cursor"}, headers=auth())
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "query.cursor")


def test_delete_removes_the_webhook_and_its_delivery_log(
    client: TestClient, auth: Auth, engine: Engine, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url)
    client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth())

    assert client.delete(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).status_code == 204

    for path in ("", "/deliveries"):
        assert client.get(f"{WEBHOOKS}/{webhook['id']}{path}", headers=auth()).status_code == 404
    assert client.delete(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).status_code == 404
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 0


def test_a_rotated_secret_signs_from_then_on_and_is_shown_once(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url)

    rotated = client.post(f"{WEBHOOKS}/{webhook['id']}/rotate-secret", headers=auth())

    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    secret = rotated.json()["secret"]
    assert secret != webhook["secret"] and secret.startswith("whsec_")
    client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth())
    (request,) = receiver.received()
    assert request.headers["x-aiservice-signature"] == expected_signature(secret, request)
    assert request.headers["x-aiservice-signature"] != expected_signature(webhook["secret"], request)


def _audited(client: TestClient, auth: Auth) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"{API}/audit", headers=auth()).json()["items"]
    return items[::-1]


def test_changes_are_audited_with_the_webhook_and_without_the_secret(client: TestClient, auth: Auth) -> None:
    webhook = subscribe(client, auth(), PUBLIC_URL)
    client.patch(f"{WEBHOOKS}/{webhook['id']}", json={"active": False}, headers=auth())
    client.post(f"{WEBHOOKS}/{webhook['id']}/rotate-secret", headers=auth())
    client.delete(f"{WEBHOOKS}/{webhook['id']}", headers=auth())

    records = _audited(client, auth)

    assert [(r["action"], r["outcome"]) for r in records] == [
        ("webhook.create", "success"),
        ("webhook.update", "success"),
        ("webhook-secret.rotate", "success"),
        ("webhook.delete", "success"),
    ]
    assert {r["resource"]["id"] for r in records} == {webhook["id"]}
    assert {r["resource"]["type"] for r in records} == {"webhook"}
    assert records[1]["changes"] == {"active": [True, False]}
    assert webhook["secret"] not in str(records)


def test_a_refused_change_is_audited_as_failed(client: TestClient, auth: Auth) -> None:
    client.post(WEBHOOKS, json={"url": PUBLIC_URL, "eventTypes": ["nope"]}, headers=auth())
    assert [(r["action"], r["outcome"]) for r in _audited(client, auth)] == [("webhook.create", "failed")]


def test_only_admins_manage_webhooks(client: TestClient, auth: Auth) -> None:
    for role in ("viewer", "editor", "deployer"):
        response = client.get(WEBHOOKS, headers=auth(role))
        assert response.status_code == 403
        assert response.json()["permission"] == "webhook:manage"


def test_another_tenants_webhook_is_a_404_everywhere_and_stays_unchanged(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.created.v1"])
    before = client.get(f"{WEBHOOKS}/{webhook['id']}", headers=auth()).json()
    intruder = auth(tenant="globex")
    path = f"{WEBHOOKS}/{webhook['id']}"

    answers = [
        client.get(path, headers=intruder),
        client.patch(path, json={"url": "http://127.0.0.1:9/stolen", "active": False}, headers=intruder),
        client.post(f"{path}/rotate-secret", headers=intruder),
        client.post(f"{path}/ping", headers=intruder),
        client.get(f"{path}/deliveries", headers=intruder),
        client.delete(path, headers=intruder),
    ]

    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert answer.json()["type"] == "https://aiservice.dev/problems/not-found"
    assert client.get(WEBHOOKS, headers=intruder).json()["items"] == []
    assert client.get(path, headers=auth()).json() == before
    assert receiver.received() == []  # the ping was not sent
