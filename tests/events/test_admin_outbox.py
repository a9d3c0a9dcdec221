"""GET /api/v1/ai/admin/outbox: what the platform's operators see of the outbox, and the lag metric."""

from __future__ import annotations

from fastapi.testclient import TestClient

from aiservice.application.ports import CloudEvent
from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.helpers import create_model, wait_until

OUTBOX = "/api/v1/ai/admin/outbox"


def test_operators_see_pending_events_their_lag_failures_and_the_lease(
    client: TestClient, auth: Auth, container: Container
) -> None:
    container.events.subscribe("ai.model.created.v1", _down)
    create_model(client, auth(), "stuck")
    create_model(client, auth(), "behind")
    operator = auth("superadmin", tenant="platform")
    wait_until(lambda: client.get(OUTBOX, headers=operator).json()["failures"] != [], what="a failure")

    body = client.get(OUTBOX, headers=operator).json()
    assert body["bus"] == "inprocess"
    assert body["pending"] == 2
    assert body["lagSeconds"] > 0
    (failure,) = body["failures"]
    assert failure["eventType"] == "ModelCreated" and failure["tenantId"] == "acme"
    assert "handler down" in failure["error"] and failure["attempts"] >= 1
    assert body["lease"]["active"] and body["lease"]["heldHere"]
    assert body["lease"]["holder"] == container.relay.holder


def test_the_lag_metric_follows_the_oldest_unpublished_event(
    client: TestClient, auth: Auth, container: Container
) -> None:
    container.events.subscribe("ai.model.created.v1", _down)
    create_model(client, auth(), "lagging")
    wait_until(lambda: _lag(client) > 0.2, what="the lag to show")


def test_tenant_admins_cannot_see_the_platforms_outbox(client: TestClient, auth: Auth) -> None:
    response = client.get(OUTBOX, headers=auth("admin"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


def _down(event: CloudEvent) -> None:
    raise ConnectionError("handler down")


def _lag(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("ai_service_outbox_lag "):
            return float(line.split()[1])
    raise AssertionError("no ai_service_outbox_lag in /metrics")
