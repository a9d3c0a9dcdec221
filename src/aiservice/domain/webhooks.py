"""Webhooks: a tenant's subscriptions of an HTTP endpoint to event types, and the log of deliveries.

Each delivery is the event's CloudEvent JSON, signed with the subscription's secret::

    X-AIService-Timestamp: <unix seconds>
    X-AIService-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>", keyed by the secret>

The secret reads ``whsec_<43 base64url characters>`` (256 random bits); the whole string, as UTF-8, is
the HMAC key. Pure values and functions: no I/O (resolving a host is the application's business).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from aiservice.domain.errors import FieldError, InvalidInput

SECRET_PREFIX = "whsec_"
SIGNATURE_SCHEME = "sha256"
ALL_EVENTS = "*"
PING_EVENT_TYPE = "ai.webhook.ping.v1"
MAX_URL_LENGTH = 2048

_SECRET = re.compile(rf"^{SECRET_PREFIX}([A-Za-z0-9_-]{{43}})$")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")  # controls, spaces and backslashes: parsers disagree

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first or next attempt
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # out of attempts, or refused before sending (not retried)


@dataclass(frozen=True)
class Webhook:
    """A subscription: events of ``event_types`` (or ``*``: every event) of its tenant go to ``url``.

    The signing secret is not part of it: it is read only where a delivery is signed."""

    id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return self.active and (ALL_EVENTS in self.event_types or event_type in self.event_types)


@dataclass(frozen=True)
class WebhookDelivery:
    """One event on its way to one webhook: the exact body sent on every attempt and how it went."""

    id: str
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: str  # the CloudEvent JSON, byte for byte what each attempt sends
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None  # set while pending
    last_status_code: int | None = None
    last_error: str | None = None
    duration_ms: float | None = None  # of the last attempt
    delivered_at: datetime | None = None


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and 256 random bits, base64url."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_bytes(secret: str) -> bytes:
    """The 32 random bytes a secret carries (so storage can encrypt them as a key)."""
    match = _SECRET.fullmatch(secret)
    if match is None:
        raise ValueError("not a webhook secret")
    return base64.urlsafe_b64decode(match.group(1) + "=")


def secret_text(raw: bytes) -> str:
    """The secret that carries ``raw``: the inverse of ``secret_bytes``."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-AIService-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_SCHEME}={digest}"


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: scheme, host (without brackets) and port."""

    scheme: str
    host: str
    port: int


def parse_url(url: str, field: str = "body.url") -> Target:
    """The target of an absolute ``http(s)`` URL; ``InvalidInput`` naming ``field`` for anything else
    (credentials in the URL included: a parser that reads the host elsewhere is how SSRF checks are
    bypassed)."""

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(f"The webhook URL {message}.", errors=[FieldError(field, message)])

    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"is longer than {MAX_URL_LENGTH} characters")
    if _URL_FORBIDDEN.search(url):
        raise refuse("contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("must use http or https")
    if not parts.hostname:
        raise refuse("has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials (user:password@)")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def address_problem(address: IpAddress) -> str | None:
    """Why a webhook must not be sent to ``address`` (``"loopback"``, ``"private"``, ...); None when it
    is a public unicast address. IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo) are judged
    by that address too."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        problem = address_problem(embedded)
        if problem is not None:
            return f"{problem} (embedded in {address})"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((name for name, matched in checks if matched), None)


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    return address.teredo[1] if address.teredo is not None else None
