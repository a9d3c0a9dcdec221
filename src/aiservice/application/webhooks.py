"""Webhook use cases: a tenant's admin subscribes URLs to event types, changes, pings and removes them,
and reads each one's delivery log. The signing secret is shown when it is made, never again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from aiservice.application.audit import note_changes
from aiservice.application.events import EVENT_TYPES
from aiservice.application.ports import Clock, WebhookRepository, WebhookStore
from aiservice.application.webhook_delivery import WebhookDispatcher, WebhookUrlGuard
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import Permission, Principal
from aiservice.domain.webhooks import ALL_EVENTS, Webhook, WebhookDelivery, generate_secret

# What a webhook may subscribe to: every event type the service emits (docs/events/), or "*".
SUBSCRIBABLE = frozenset(EVENT_TYPES.values())


@dataclass(frozen=True)
class NewWebhook:
    url: str
    event_types: list[str]
    description: str = ""
    active: bool = True


@dataclass(frozen=True)
class WebhookChange:
    """What to change; None leaves a field as it is."""

    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    active: bool | None = None


@dataclass(frozen=True)
class IssuedWebhook:
    """A webhook and, this once, its signing secret."""

    webhook: Webhook
    secret: str


class Webhooks:
    def __init__(
        self, store: WebhookStore, guard: WebhookUrlGuard, dispatcher: WebhookDispatcher, clock: Clock
    ) -> None:
        self._store = store
        self._guard = guard
        self._dispatcher = dispatcher
        self._clock = clock

    def create(self, principal: Principal, spec: NewWebhook) -> IssuedWebhook:
        principal.require(Permission.WEBHOOK_MANAGE)
        event_types = event_types_of(spec.event_types)
        self._guard.addresses(spec.url)
        now = self._clock()
        webhook = Webhook(
            id=uuid.uuid4().hex,
            tenant_id=principal.tenant_id,
            url=spec.url,
            event_types=event_types,
            description=spec.description,
            active=spec.active,
            created_by=principal.subject,
            created_at=now,
            updated_at=now,
        )
        secret = generate_secret()
        self._store(principal.tenant_id).add(webhook, secret)
        return IssuedWebhook(webhook, secret)

    def list(self, principal: Principal, limit: int = 50, cursor: str | None = None) -> Page[Webhook]:
        principal.require(Permission.WEBHOOK_MANAGE)
        return self._store(principal.tenant_id).page(limit, cursor)

    def get(self, principal: Principal, webhook_id: str) -> Webhook:
        principal.require(Permission.WEBHOOK_MANAGE)
        return _find(self._store(principal.tenant_id), webhook_id)

    def update(self, principal: Principal, webhook_id: str, change: WebhookChange) -> Webhook:
        principal.require(Permission.WEBHOOK_MANAGE)
        repository = self._store(principal.tenant_id)
        before = _find(repository, webhook_id)
        after = replace(
            before,
            url=before.url if change.url is None else change.url,
            event_types=before.event_types
            if change.event_types is None
            else event_types_of(change.event_types),
            description=before.description if change.description is None else change.description,
            active=before.active if change.active is None else change.active,
        )
        if change.url is not None:
            self._guard.addresses(change.url)
        if after == before:
            return before
        after = replace(after, updated_at=self._clock())
        note_changes(_fields(before), _fields(after))
        repository.save(after)
        return after

    def delete(self, principal: Principal, webhook_id: str) -> None:
        """Remove the webhook and its delivery log; pending deliveries are not sent."""
        principal.require(Permission.WEBHOOK_MANAGE)
        if not self._store(principal.tenant_id).delete(webhook_id):
            raise _not_found(webhook_id)

    def rotate_secret(self, principal: Principal, webhook_id: str) -> IssuedWebhook:
        """A new signing secret replaces the old one at once, for every delivery from now on."""
        principal.require(Permission.WEBHOOK_MANAGE)
        repository = self._store(principal.tenant_id)
        webhook = replace(_find(repository, webhook_id), updated_at=self._clock())
        secret = generate_secret()
        repository.save(webhook, secret)
        return IssuedWebhook(webhook, secret)

    def ping(self, principal: Principal, webhook_id: str) -> WebhookDelivery:
        """Send a signed ``ai.webhook.ping.v1`` event now (once, inactive webhooks too); the delivery."""
        principal.require(Permission.WEBHOOK_MANAGE)
        return self._dispatcher.ping(_find(self._store(principal.tenant_id), webhook_id))

    def deliveries(
        self, principal: Principal, webhook_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[WebhookDelivery]:
        principal.require(Permission.WEBHOOK_MANAGE)
        repository = self._store(principal.tenant_id)
        _find(repository, webhook_id)
        return repository.deliveries(webhook_id, limit, cursor)


def event_types_of(requested: list[str], field: str = "body.eventTypes") -> tuple[str, ...]:
    """The event types a webhook subscribes to, checked and without repeats; ``*`` stands for all."""
    if not requested:
        raise InvalidInput(
            f"Name at least one event type, or {ALL_EVENTS!r} for every event.",
            errors=[FieldError(field, "empty")],
        )
    errors = [
        FieldError(f"{field}.{index}", f"unknown event type {name!r}")
        for index, name in enumerate(requested)
        if name != ALL_EVENTS and name not in SUBSCRIBABLE
    ]
    if errors:
        raise InvalidInput(
            f"Unknown event types: {', '.join(e.field for e in errors)}. Known: {ALL_EVENTS!r} or "
            + ", ".join(sorted(SUBSCRIBABLE))
            + ".",
            errors=errors,
        )
    return tuple(dict.fromkeys(requested))


def _find(repository: WebhookRepository, webhook_id: str) -> Webhook:
    webhook = repository.get(webhook_id)
    if webhook is None:
        raise _not_found(webhook_id)
    return webhook


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"No webhook {webhook_id!r} exists.", extra={"webhook": webhook_id})


def _fields(webhook: Webhook) -> dict[str, object]:
    return {
        "url": webhook.url,
        "event_types": list(webhook.event_types),
        "description": webhook.description,
        "active": webhook.active,
    }
