"""Webhook delivery: committed events fan out to the subscriptions that want them, and a worker sends
each one, signed, retrying with backoff until the receiver answers 2xx or the attempts run out.

Fan-out is an ``EventBus`` subscriber, so it runs on the replica holding the relay lease, at least once
per event: a delivery is unique per (webhook, event), so an event handed over twice is queued once.
Every replica runs a worker; a worker claims one delivery at a time with a conditional update, so two
never send the same attempt. The URL is resolved and checked again before every attempt and the
connection goes to the address checked, so a host that changes its DNS answer (rebinding) after the
subscription was made cannot steer a delivery to an internal address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from aiservice.application.events import SOURCE_PREFIX, envelope, to_cloud_event
from aiservice.application.ports import (
    AttemptResult,
    ClaimedDelivery,
    Clock,
    CloudEvent,
    HostResolver,
    OutboxMessage,
    WebhookDeliveryQueue,
    WebhookSender,
    WebhookStore,
)
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.webhooks import (
    PING_EVENT_TYPE,
    DeliveryStatus,
    Webhook,
    WebhookDelivery,
    address_problem,
    parse_url,
    sign,
)

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
PRUNE_EVERY = timedelta(hours=1)


class UnresolvableHost(InvalidInput):
    """The webhook's host has no address now (a DNS failure may pass: an attempt is retried)."""


class ForbiddenAddress(InvalidInput):
    """The webhook's host resolves to an address webhooks may not reach (never retried)."""


class WebhookUrlGuard:
    """Resolves a webhook URL's host and refuses it unless every address is public unicast (unless the
    operator allows private targets: ``WEBHOOK_ALLOW_PRIVATE``)."""

    def __init__(self, resolver: HostResolver, allow_private: bool = False) -> None:
        self._resolver = resolver
        self._allow_private = allow_private

    def addresses(self, url: str, field: str = "body.url") -> list[str]:
        """The checked addresses of ``url``'s host; ``InvalidInput`` naming ``field`` when the URL is
        malformed, ``UnresolvableHost`` or ``ForbiddenAddress`` when its host is."""
        target = parse_url(url, field)
        try:
            resolved = self._resolver.resolve(target.host, target.port)
        except (OSError, UnicodeError, ValueError):
            resolved = []
        if not resolved:
            raise UnresolvableHost(
                f"The webhook URL's host {target.host!r} does not resolve.",
                errors=[FieldError(field, "the host does not resolve")],
            )
        if self._allow_private:
            return resolved
        for text in resolved:
            problem = address_problem(ipaddress.ip_address(text.partition("%")[0]))
            if problem is not None:
                raise ForbiddenAddress(
                    f"The webhook URL's host {target.host!r} resolves to {text}, a {problem} address: "
                    "webhooks go to public addresses only.",
                    errors=[FieldError(field, f"resolves to a {problem} address")],
                    code="unsafe-webhook-url",
                    extra={"address": text},
                )
        return resolved


class WebhookDispatcher:
    """Queues deliveries for committed events and sends them from worker threads."""

    def __init__(
        self,
        store: WebhookStore,
        queue: WebhookDeliveryQueue,
        sender: WebhookSender,
        guard: WebhookUrlGuard,
        *,
        timeout_s: float,
        max_attempts: int,
        max_backoff_s: float,
        poll_s: float = 1.0,
        workers: int = 1,
        retention: timedelta | None = None,
        clock: Clock = utcnow,
        on_attempt: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sender = sender
        self._guard = guard
        self._timeout_s = timeout_s
        self._claim_s = timeout_s * 2 + 30  # past any attempt's end: an expired claim means a dead worker
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff_s
        self._poll = poll_s
        self._workers = workers
        self._clock = clock
        self._on_attempt = on_attempt
        self._retention = retention  # finished deliveries older than this leave the log (None: kept)
        self._next_prune = clock()
        self._prune_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- fan-out ----------------------------------------------------------------------------------

    def on_event(self, message: OutboxMessage) -> None:
        """The ``EventBus`` subscriber: queue the event for each active webhook of its tenant that wants
        it. Raising leaves the event unpublished, so the relay hands it over again."""
        event = to_cloud_event(message)
        repository = self._store(message.tenant_id)
        queued = False
        for webhook in repository.subscribed(event.type):
            queued |= repository.add_delivery(self._delivery(webhook, event))
        if queued:
            self._wake.set()

    def ping(self, webhook: Webhook) -> WebhookDelivery:
        """Send an ``ai.webhook.ping.v1`` event to the webhook now (one attempt, no retries); the
        delivery as it ended."""
        now = self._clock()
        event = CloudEvent(
            id=str(uuid.uuid4()),
            type=PING_EVENT_TYPE,
            source=SOURCE_PREFIX + webhook.tenant_id,
            subject=webhook.id,
            time=now,
            tenant_id=webhook.tenant_id,
            data={"webhookId": webhook.id, "message": "A test delivery from aiservice."},
            family="webhook",
            name="webhook.ping",
        )
        # Not due before the claim would expire, so no worker takes it first; a replica that dies
        # before sending leaves it to the workers.
        until = now + timedelta(seconds=self._claim_s)
        delivery = replace(self._delivery(webhook, event), next_attempt_at=until)
        repository = self._store(webhook.tenant_id)
        repository.add_delivery(delivery)
        claimed = self._queue.claim(webhook.tenant_id, delivery.id, now, until)
        if claimed is not None:
            self.attempt(claimed, retry=False)
        return repository.delivery(delivery.id) or delivery

    def _delivery(self, webhook: Webhook, event: CloudEvent) -> WebhookDelivery:
        now = self._clock()
        body = json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False, default=str)
        return WebhookDelivery(
            id=uuid.uuid4().hex,
            tenant_id=webhook.tenant_id,
            webhook_id=webhook.id,
            event_id=event.id,
            event_type=event.type,
            body=body,
            status=DeliveryStatus.PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )

    # -- sending ----------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim one due delivery and attempt it; False when none is due."""
        now = self._clock()
        claimed = self._queue.claim_next(now, now + timedelta(seconds=self._claim_s))
        if claimed is None:
            return False
        self.attempt(claimed)
        return True

    def attempt(self, claimed: ClaimedDelivery, *, retry: bool = True) -> AttemptResult:
        """Send a claimed delivery once and record how it went: succeeded on 2xx; else pending again
        after a backoff, or failed once out of attempts (or at once when ``retry`` is off, or when
        the URL is refused, the webhook deactivated or its secret unreadable)."""
        delivery = claimed.delivery
        attempts = delivery.attempts + 1
        refusal = self._refusal(claimed)
        if refusal is not None:
            result = self._result(DeliveryStatus.FAILED, attempts, None, refusal, None)
        else:
            result = self._send(claimed, attempts, retry)
        self._queue.finish(claimed, result)
        outcome = "retried" if result.status is DeliveryStatus.PENDING else result.status.value
        self._on_attempt(outcome)
        log.info(
            "webhook delivery %s",
            outcome,
            extra={
                "tenantId": delivery.tenant_id,
                "webhookId": delivery.webhook_id,
                "deliveryId": delivery.id,
                "eventId": delivery.event_id,
                "attempt": attempts,
                "statusCode": result.status_code,
            },
        )
        return result

    def _refusal(self, claimed: ClaimedDelivery) -> str | None:
        if not claimed.active and claimed.delivery.event_type != PING_EVENT_TYPE:
            return "The webhook is inactive: the delivery is not sent."
        if claimed.secret is None:
            return "The webhook's secret cannot be decrypted with the configured keys."
        return None

    def _send(self, claimed: ClaimedDelivery, attempts: int, retry: bool) -> AttemptResult:
        delivery = claimed.delivery
        retry = retry and attempts < self._max_attempts
        try:
            addresses = self._guard.addresses(claimed.url, "url")
        except ForbiddenAddress as exc:
            return self._result(DeliveryStatus.FAILED, attempts, None, f"Refused: {exc.detail}", None)
        except InvalidInput as exc:  # unresolvable now: DNS may recover
            status = DeliveryStatus.PENDING if retry else DeliveryStatus.FAILED
            return self._result(status, attempts, None, exc.detail, None)
        assert claimed.secret is not None
        body = delivery.body.encode()
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/cloudevents+json",
            "User-Agent": "aiservice-webhooks/1",
            "X-AIService-Signature": sign(claimed.secret, timestamp, body),
            "X-AIService-Timestamp": str(timestamp),
            "X-AIService-Event-Id": delivery.event_id,
            "X-AIService-Delivery-Id": delivery.id,
        }
        for address in addresses:  # every one checked; the next only while none answered
            response = self._sender.post(claimed.url, address, body, headers)
            if response.status_code is not None:
                break
        code = response.status_code
        if code is not None and 200 <= code < 300:
            return self._result(DeliveryStatus.SUCCEEDED, attempts, code, None, response.duration_ms)
        error = response.error or f"The receiver answered {code}" + (
            " (redirects are not followed)." if code is not None and 300 <= code < 400 else "."
        )
        status = DeliveryStatus.PENDING if retry else DeliveryStatus.FAILED
        return self._result(status, attempts, code, error, response.duration_ms)

    def _result(
        self,
        status: DeliveryStatus,
        attempts: int,
        code: int | None,
        error: str | None,
        duration_ms: float | None,
    ) -> AttemptResult:
        now = self._clock()
        return AttemptResult(
            status=status,
            attempts=attempts,
            status_code=code,
            error=error[:2000] if error else None,
            duration_ms=duration_ms,
            next_attempt_at=now + timedelta(seconds=self.backoff_seconds(attempts))
            if status is DeliveryStatus.PENDING
            else None,
            delivered_at=now if status is DeliveryStatus.SUCCEEDED else None,
        )

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts: 1 s doubling, capped, jittered (50-100 %)."""
        delay = min(self._max_backoff, FIRST_BACKOFF_S * 2.0 ** min(attempts - 1, 30))
        return delay * random.uniform(0.5, 1.0)

    def prune_if_due(self) -> int:
        """Drop finished deliveries past the retention, at most once an hour across this replica's
        workers; how many went."""
        if self._retention is None:
            return 0
        with self._prune_lock:
            now = self._clock()
            if now < self._next_prune:
                return 0
            self._next_prune = now + PRUNE_EVERY
        return self._queue.prune(now - self._retention)

    # -- the worker thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads: each claims and sends one delivery at a time, so a slow receiver
        holds up one thread, not every delivery."""
        if not self._threads:
            self._stop.clear()
            self._threads = [
                threading.Thread(target=self._loop, name=f"webhook-delivery-{n}", daemon=True)
                for n in range(self._workers)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout_s + 5)
        self._threads = []
        self._sender.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set() and self.run_once():
                    pass
                self.prune_if_due()
            except Exception:
                log.exception("webhook delivery pass failed")
            self._wake.wait(self._poll)
            self._wake.clear()
