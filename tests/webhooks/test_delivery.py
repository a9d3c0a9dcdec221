"""Committed events reach the webhooks that want them: signed CloudEvents, retried with backoff until the
receiver answers 2xx or the attempts run out, each logged, none queued twice."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from aiservice.domain.events import ModelCreated
from tests.conftest import Auth
from tests.events.conftest import outbox_message
from tests.helpers import create_model, wait_until
from tests.webhooks.conftest import (
    MAX_ATTEMPTS,
    WEBHOOKS,
    Received,
    Receiver,
    deliveries,
    expected_signature,
    settled,
    subscribe,
)

SCHEMAS = Path(__file__).parents[2] / "docs" / "events"


def test_a_created_model_reaches_the_receiver_as_a_signed_cloud_event(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.created.v1"])
    model = create_model(client, auth(), "churn")

    (request,) = wait_until(receiver.received, what="the receiver to get the event")
    event = json.loads(request.body)
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["x-aiservice-signature"] == expected_signature(webhook["secret"], request)
    assert (event["type"], event["tenantid"], event["subject"]) == (
        "ai.model.created.v1",
        "acme",
        model["id"],
    )
    assert event["data"] == {"name": "churn", "framework": "sklearn"}
    assert request.headers["x-aiservice-event-id"] == event["id"]
    jsonschema.validate(event, json.loads((SCHEMAS / "ai.model.created.v1.json").read_text()))
    logged = wait_until(settled(client, auth(), webhook["id"], "succeeded"), what="the delivery to be logged")
    assert request.headers["x-aiservice-delivery-id"] == logged["id"]
    assert (logged["eventId"], logged["eventType"], logged["attempts"]) == (event["id"], event["type"], 1)
    assert (logged["lastStatusCode"], logged["lastError"], logged["nextAttemptAt"]) == (200, None, None)
    assert logged["deliveredAt"] is not None and logged["durationMs"] >= 0


def test_the_signature_fails_for_another_secret_or_an_altered_body(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    secret = subscribe(client, auth(), receiver.url)["secret"]
    create_model(client, auth(), "churn")
    request = wait_until(receiver.received, what="the receiver to get the event")[0]
    altered = Received(request.path, request.headers, request.body.replace(b"churn", b"chUrn"))
    other_secret = subscribe(client, auth(), receiver.url)["secret"]

    signature = request.headers["x-aiservice-signature"]
    assert signature == expected_signature(secret, request)
    assert signature != expected_signature(secret, altered)
    assert signature != expected_signature(other_secret, request)


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500]
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.created.v1"])
    create_model(client, auth(), "churn")

    logged = wait_until(
        settled(client, auth(), webhook["id"], "succeeded"), what="the third attempt to succeed"
    )
    assert (logged["attempts"], logged["lastStatusCode"], logged["lastError"]) == (3, 200, None)
    first, second, third = receiver.received()
    assert first.body == second.body == third.body  # the same event, byte for byte, on every attempt
    assert {r.headers["x-aiservice-delivery-id"] for r in (first, second, third)} == {logged["id"]}
    assert all(
        r.headers["x-aiservice-signature"] == expected_signature(webhook["secret"], r) for r in (first, third)
    )


def test_a_receiver_that_always_fails_ends_failed_after_the_last_attempt(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.default = 503
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.created.v1"])
    create_model(client, auth(), "churn")

    logged = wait_until(settled(client, auth(), webhook["id"], "failed"), what="the delivery to be given up")
    assert (logged["attempts"], logged["lastStatusCode"]) == (MAX_ATTEMPTS, 503)
    assert "503" in logged["lastError"] and logged["nextAttemptAt"] is None and logged["deliveredAt"] is None
    assert len(receiver.received()) == MAX_ATTEMPTS  # failed is final: no attempt follows


def test_an_unreachable_receiver_is_retried_and_its_error_logged(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    url = receiver.url
    receiver.close()  # nothing listens on its port now
    webhook = subscribe(client, auth(), url, ["ai.model.created.v1"])
    create_model(client, auth(), "churn")

    logged = wait_until(settled(client, auth(), webhook["id"], "failed"), what="the delivery to be given up")
    assert (logged["attempts"], logged["lastStatusCode"]) == (MAX_ATTEMPTS, None)
    assert "ConnectError" in logged["lastError"]


def test_each_webhook_gets_only_the_event_types_it_subscribed_to(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    deleted = subscribe(client, auth(), receiver.url + "?deleted", ["ai.model.deleted.v1"])
    created = subscribe(client, auth(), receiver.url + "?created", ["ai.model.created.v1"])
    everything_off = subscribe(client, auth(), receiver.url + "?off", ["*"], active=False)
    create_model(client, auth(), "churn")
    assert client.delete("/api/v1/ai/models/churn", headers=auth()).status_code == 204

    wait_until(settled(client, auth(), deleted["id"], "succeeded"), what="the deletion to be delivered")
    # The relay hands events over in commit order: the creation was fanned out before the deletion.
    assert [d["eventType"] for d in deliveries(client, auth(), deleted["id"])] == ["ai.model.deleted.v1"]
    assert [d["eventType"] for d in deliveries(client, auth(), created["id"])] == ["ai.model.created.v1"]
    assert deliveries(client, auth(), everything_off["id"]) == []
    paths = sorted(r.path for r in wait_until(lambda: receiver.at_least(2), what="both"))
    assert paths == ["/hook?created", "/hook?deleted"]


def test_an_event_handed_over_twice_is_delivered_once(
    client: TestClient, auth: Auth, receiver: Receiver, container: Container
) -> None:
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.created.v1"])
    message = outbox_message(
        ModelCreated(tenant_id="acme", aggregate_id="m", name="replayed", framework="onnx")
    )
    container.bus.deliver(message)  # at least once: the relay may hand an event over again
    container.bus.deliver(message)

    logged = wait_until(settled(client, auth(), webhook["id"], "succeeded"), what="the delivery")
    assert logged["eventId"] == message.event_id
    assert [r.headers["x-aiservice-event-id"] for r in receiver.received()] == [message.event_id]


def test_other_tenants_events_do_not_reach_a_tenants_webhook(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    acme = subscribe(client, auth(), receiver.url + "?acme")
    subscribe(client, auth(tenant="globex"), receiver.url + "?globex")
    create_model(client, auth(tenant="globex"), "theirs")
    create_model(client, auth(), "ours")

    wait_until(settled(client, auth(), acme["id"], "succeeded"), what="acme's delivery")
    received = wait_until(lambda: receiver.at_least(2), what="both deliveries")
    tenants = {r.path: json.loads(r.body)["tenantid"] for r in received}
    assert tenants == {"/hook?acme": "acme", "/hook?globex": "globex"}


def test_ping_sends_a_signed_ping_now_and_returns_the_receivers_answer(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    webhook = subscribe(client, auth(), receiver.url, ["ai.model.deleted.v1"], active=False)
    response = client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth())

    assert response.status_code == 200, response.text
    delivery = response.json()
    assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"]) == ("succeeded", 1, 200)
    assert delivery["eventType"] == "ai.webhook.ping.v1"
    (request,) = receiver.received()
    event = json.loads(request.body)
    assert (event["type"], event["subject"], event["data"]["webhookId"]) == (
        "ai.webhook.ping.v1",
        webhook["id"],
        webhook["id"],
    )
    assert request.headers["x-aiservice-signature"] == expected_signature(webhook["secret"], request)
    assert deliveries(client, auth(), webhook["id"]) == [delivery]


def test_a_failed_ping_is_reported_at_once_and_not_retried(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.default = 500
    webhook = subscribe(client, auth(), receiver.url)
    delivery = client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth()).json()

    assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"]) == ("failed", 1, 500)
    assert "500" in delivery["lastError"]


def test_redirects_are_not_followed(client: TestClient, auth: Auth, receiver: Receiver) -> None:
    receiver.default = 302
    webhook = subscribe(client, auth(), receiver.url)
    delivery = client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth()).json()

    assert (delivery["status"], delivery["lastStatusCode"]) == ("failed", 302)
    assert "redirects are not followed" in delivery["lastError"]
    assert [r.path for r in receiver.received()] == ["/hook"]  # nothing went to /elsewhere


def test_delivery_outcomes_are_counted_in_the_metrics(
    client: TestClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.statuses = [200, 500]
    webhook = subscribe(client, auth(), receiver.url)
    for _ in range(2):
        client.post(f"{WEBHOOKS}/{webhook['id']}/ping", headers=auth())

    metrics = client.get("/metrics").text
    assert 'ai_service_webhook_deliveries_total{outcome="succeeded"} 1.0' in metrics
    assert 'ai_service_webhook_deliveries_total{outcome="failed"} 1.0' in metrics
