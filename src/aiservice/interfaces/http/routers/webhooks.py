"""``/webhooks``: a tenant's admin subscribes URLs to its events; the signing secret is shown once."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import Field

from aiservice.application.webhooks import IssuedWebhook, NewWebhook, WebhookChange
from aiservice.domain.webhooks import MAX_URL_LENGTH, DeliveryStatus, Webhook, WebhookDelivery
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["webhooks"])
WEBHOOKS = f"{API_PREFIX}/webhooks"
_EVENT_TYPES = Field(
    min_length=1,
    max_length=50,
    description='CloudEvent types to deliver (docs/events/), or ["*"] for every event',
    examples=[["ai.model.version.created.v1", "ai.training.job.succeeded.v1"]],
)


class WebhookCreate(ApiModel):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL; its host must resolve to public addresses only",
        examples=["https://hooks.example.com/aiservice"],
    )
    event_types: list[str] = _EVENT_TYPES
    description: str = Field(default="", max_length=500)
    active: bool = True


class WebhookPatch(ApiModel):
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    active: bool | None = None


class WebhookOut(ApiModel):
    id: str
    url: str
    event_types: list[str]
    description: str
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            id=webhook.id,
            url=webhook.url,
            event_types=list(webhook.event_types),
            description=webhook.description,
            active=webhook.active,
            created_by=webhook.created_by,
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
            links={
                "self": f"{WEBHOOKS}/{webhook.id}",
                "deliveries": f"{WEBHOOKS}/{webhook.id}/deliveries",
            },
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Verifies X-AIService-Signature (HMAC-SHA256 of '<timestamp>.<body>' keyed by this "
        "secret). Shown only in this response: rotate it to get a new one."
    )

    @classmethod
    def issued(cls, issued: IssuedWebhook) -> WebhookCreated:
        return cls(**WebhookOut.of(issued.webhook).model_dump(), secret=issued.secret)


class DeliveryOut(ApiModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last HTTP status; null: no answer")
    last_error: str | None
    duration_ms: float | None = Field(description="How long the last attempt took")
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next attempt is due (pending only)")
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            duration_ms=delivery.duration_ms,
            created_at=delivery.created_at,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
        )


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    summary="Subscribe a URL to event types (admin); the signing secret is in this response only",
)
def create_webhook(
    body: WebhookCreate, caller: CallerDep, c: ContainerDep, response: Response
) -> WebhookCreated:
    issued = c.webhooks.create(
        caller,
        NewWebhook(
            url=body.url, event_types=body.event_types, description=body.description, active=body.active
        ),
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Location"] = f"{WEBHOOKS}/{issued.webhook.id}"
    return WebhookCreated.issued(issued)


@router.get("/webhooks", response_model=PageOut[WebhookOut], summary="The tenant's webhooks, newest first")
def list_webhooks(
    caller: CallerDep, c: ContainerDep, limit: PageLimit = 50, cursor: PageCursor = None
) -> PageOut[WebhookOut]:
    page = c.webhooks.list(caller, limit, cursor)
    return PageOut[WebhookOut](items=[WebhookOut.of(w) for w in page.items], next_cursor=page.next_cursor)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, summary="A webhook (without its secret)")
def get_webhook(webhook_id: str, caller: CallerDep, c: ContainerDep) -> WebhookOut:
    return WebhookOut.of(c.webhooks.get(caller, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="Change a webhook's URL, event types, description or whether it is active",
)
def update_webhook(webhook_id: str, body: WebhookPatch, caller: CallerDep, c: ContainerDep) -> WebhookOut:
    change = WebhookChange(
        url=body.url, event_types=body.event_types, description=body.description, active=body.active
    )
    return WebhookOut.of(c.webhooks.update(caller, webhook_id, change))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a webhook with its delivery log; pending deliveries are dropped",
)
def delete_webhook(webhook_id: str, caller: CallerDep, c: ContainerDep) -> Response:
    c.webhooks.delete(caller, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookCreated,
    summary="Replace a webhook's signing secret; the new one is in this response only",
)
def rotate_webhook_secret(
    webhook_id: str, caller: CallerDep, c: ContainerDep, response: Response
) -> WebhookCreated:
    issued = c.webhooks.rotate_secret(caller, webhook_id)
    response.headers["Cache-Control"] = "no-store"
    return WebhookCreated.issued(issued)


@router.post(
    "/webhooks/{webhook_id}/ping",
    response_model=DeliveryOut,
    summary="Send a signed ai.webhook.ping.v1 event now; the delivery with the receiver's answer",
)
def ping_webhook(webhook_id: str, caller: CallerDep, c: ContainerDep) -> DeliveryOut:
    return DeliveryOut.of(c.webhooks.ping(caller, webhook_id))


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=PageOut[DeliveryOut],
    summary="A webhook's delivery log, newest first",
)
def list_webhook_deliveries(
    webhook_id: str, caller: CallerDep, c: ContainerDep, limit: PageLimit = 50, cursor: PageCursor = None
) -> PageOut[DeliveryOut]:
    page = c.webhooks.deliveries(caller, webhook_id, limit, cursor)
    return PageOut[DeliveryOut](items=[DeliveryOut.of(d) for d in page.items], next_cursor=page.next_cursor)
