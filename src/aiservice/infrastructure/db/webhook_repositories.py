"""Webhooks in SQL: a tenant's subscriptions and delivery log, the workers' queue of due deliveries, and
the signing secrets, wrapped under the artifact master key when encryption at rest is on."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from aiservice.application.audit import CallContext, current_call
from aiservice.application.ports import AttemptResult, ClaimedDelivery, Clock
from aiservice.domain.audit import Outcome, Resource
from aiservice.domain.errors import ArtifactCorrupt, NotFound
from aiservice.domain.pagination import Page
from aiservice.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery, secret_bytes, secret_text
from aiservice.infrastructure.db.audit_repository import append_record
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import webhook_deliveries, webhooks
from aiservice.infrastructure.storage.encrypted import RotationReport
from aiservice.infrastructure.storage.keys import Keyring

_W, _D = webhooks.c, webhook_deliveries.c


class SecretCipher:
    """Seals signing secrets for storage: their 32 random bytes wrapped (AES key wrap, RFC 3394) under
    the current master key, like an artifact's data key; stored as they are when no key is configured.

    A secret sealed under a master key that is no longer configured cannot be opened (None): its
    deliveries fail with that reason until the secret is rotated."""

    def __init__(self, keys: Keyring | None) -> None:
        self._keys = keys

    def seal(self, secret: str) -> tuple[str, str | None]:
        """(what to store, the master key's id or None for plaintext)."""
        if self._keys is None:
            return secret, None
        key_id, wrapped = self._keys.wrap(secret_bytes(secret))
        return base64.b64encode(wrapped).decode(), key_id

    def open(self, stored: str, key_id: str | None) -> str | None:
        if key_id is None:
            return stored
        if self._keys is None:
            return None
        try:
            return secret_text(self._keys.unwrap(key_id, base64.b64decode(stored)))
        except (ArtifactCorrupt, binascii.Error, ValueError):
            return None


def rewrap_webhook_secrets(engine: Engine, keys: Keyring) -> RotationReport:
    """Seal every webhook secret under the current master key (``aiservice keys rotate``), plaintext
    ones from before encryption at rest included, so the old keys can go; one that no configured key
    opens is reported by webhook id and left as it is."""
    cipher, report = SecretCipher(keys), RotationReport()
    with writer_engine(engine).begin() as conn:
        rows = conn.execute(sa.select(_W.tenant_id, _W.id, _W.secret, _W.secret_key_id)).all()
        for tenant_id, webhook_id, stored, key_id in rows:
            if key_id == keys.current.id:
                report.current += 1
                continue
            secret = cipher.open(stored, key_id)
            if secret is None:
                report.failed.append(f"webhook {webhook_id}")
                continue
            sealed, current = cipher.seal(secret)
            conn.execute(
                webhooks.update()
                .where(_W.tenant_id == tenant_id, _W.id == webhook_id)
                .values(secret=sealed, secret_key_id=current)
            )
            report.rewrapped += 1
    return report


class SqlAlchemyWebhookRepository:
    """One tenant's webhooks. A change commits its call's audit record in its own transaction, as a
    unit of work does, naming the webhook by id."""

    def __init__(self, engine: Engine, tenant_id: str, cipher: SecretCipher, clock: Clock) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self._tenant = tenant_id
        self._cipher = cipher
        self._clock = clock

    def add(self, webhook: Webhook, secret: str) -> None:
        if webhook.tenant_id != self._tenant:
            raise ValueError("a webhook belongs to the repository's tenant")
        stored, key_id = self._cipher.seal(secret)
        with self._writer.begin() as conn:
            conn.execute(
                webhooks.insert().values(**_webhook_row(webhook), secret=stored, secret_key_id=key_id)
            )
            call = self._audit(conn, webhook.id)
        _recorded(call)

    def get(self, webhook_id: str) -> Webhook | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(webhooks).where(self._mine(webhook_id))).mappings().first()
        return _webhook(row) if row else None

    def page(self, limit: int, cursor: str | None) -> Page[Webhook]:
        stmt = sa.select(webhooks).where(_W.tenant_id == self._tenant)
        with self._engine.connect() as conn:
            return newest_first(conn, stmt, _W.created_at, _W.id, limit, cursor, _webhook)

    def save(self, webhook: Webhook, secret: str | None = None) -> None:
        values = _webhook_row(webhook)
        for key in ("tenant_id", "id", "created_by", "created_at"):
            del values[key]
        if secret is not None:
            values["secret"], values["secret_key_id"] = self._cipher.seal(secret)
        with self._writer.begin() as conn:
            if not conn.execute(webhooks.update().where(self._mine(webhook.id)).values(**values)).rowcount:
                raise NotFound(f"No webhook {webhook.id!r} exists.", extra={"webhook": webhook.id})
            call = self._audit(conn, webhook.id)
        _recorded(call)

    def delete(self, webhook_id: str) -> bool:
        with self._writer.begin() as conn:
            conn.execute(
                webhook_deliveries.delete().where(_D.tenant_id == self._tenant, _D.webhook_id == webhook_id)
            )
            gone = conn.execute(webhooks.delete().where(self._mine(webhook_id))).rowcount > 0
            call = self._audit(conn, webhook_id) if gone else None
        _recorded(call)
        return gone

    def subscribed(self, event_type: str) -> list[Webhook]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(webhooks).where(_W.tenant_id == self._tenant, _W.active.is_(True))
            ).mappings()
            found = [_webhook(r) for r in rows]
        return [w for w in found if w.wants(event_type)]

    def add_delivery(self, delivery: WebhookDelivery) -> bool:
        if delivery.tenant_id != self._tenant:
            raise ValueError("a delivery belongs to the repository's tenant")
        with self._writer.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = (
                insert(webhook_deliveries)
                .values(**_delivery_row(delivery))
                .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id", "event_id"])
            )
            return bool(conn.execute(statement).rowcount)

    def delivery(self, delivery_id: str) -> WebhookDelivery | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(webhook_deliveries).where(_D.tenant_id == self._tenant, _D.id == delivery_id)
                )
                .mappings()
                .first()
            )
        return _delivery(row) if row else None

    def deliveries(self, webhook_id: str, limit: int, cursor: str | None) -> Page[WebhookDelivery]:
        stmt = sa.select(webhook_deliveries).where(_D.tenant_id == self._tenant, _D.webhook_id == webhook_id)
        with self._engine.connect() as conn:
            return newest_first(conn, stmt, _D.created_at, _D.id, limit, cursor, _delivery)

    def _mine(self, webhook_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(_W.tenant_id == self._tenant, _W.id == webhook_id)

    def _audit(self, conn: Connection, webhook_id: str) -> CallContext | None:
        """Append the current call's success record to this transaction, if it is a change not yet
        recorded; returns the call, to be marked recorded once the transaction commits."""
        call = current_call()
        at = self._clock()
        if call is None or call.commit_entry(self._tenant, at, ()) is None:
            return None
        resource = Resource(type="webhook", id=webhook_id, name=call.describe().resource.name)
        append_record(conn, call.entry(self._tenant, Outcome.SUCCESS, at, resource))
        return call


class SqlAlchemyWebhookStore:
    """``store(tenant_id)``: that tenant's webhook repository."""

    def __init__(self, engine: Engine, cipher: SecretCipher, clock: Clock) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock

    def __call__(self, tenant_id: str) -> SqlAlchemyWebhookRepository:
        return SqlAlchemyWebhookRepository(self._engine, tenant_id, self._cipher, self._clock)


class SqlAlchemyWebhookDeliveryQueue:
    """Every tenant's pending deliveries; claims are conditional updates, so they hold across replicas."""

    def __init__(self, engine: Engine, cipher: SecretCipher, candidates: int = 10) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self._cipher = cipher
        self._candidates = candidates

    def claim_next(self, now: datetime, until: datetime) -> ClaimedDelivery | None:
        with self._engine.connect() as conn:
            due = conn.execute(
                sa.select(_D.tenant_id, _D.id)
                .where(_D.status == DeliveryStatus.PENDING.value, _D.next_attempt_at <= now, _unclaimed(now))
                .order_by(_D.next_attempt_at)
                .limit(self._candidates)
            ).all()
        for tenant_id, delivery_id in due:  # another worker may win a row: try the next one
            claimed = self.claim(tenant_id, delivery_id, now, until)
            if claimed is not None:
                return claimed
        return None

    def claim(
        self, tenant_id: str, delivery_id: str, now: datetime, until: datetime
    ) -> ClaimedDelivery | None:
        token = uuid.uuid4().hex
        with self._writer.begin() as conn:
            taken = conn.execute(
                webhook_deliveries.update()
                .where(
                    _D.tenant_id == tenant_id,
                    _D.id == delivery_id,
                    _D.status == DeliveryStatus.PENDING.value,
                    _unclaimed(now),
                )
                .values(claimed_until=until, claim_token=token)
            ).rowcount
            if not taken:
                return None
            row = (
                conn.execute(
                    sa.select(webhook_deliveries, _W.url, _W.active, _W.secret, _W.secret_key_id)
                    .join(webhooks, sa.and_(_W.tenant_id == _D.tenant_id, _W.id == _D.webhook_id))
                    .where(_D.tenant_id == tenant_id, _D.id == delivery_id)
                )
                .mappings()
                .one()
            )
        return ClaimedDelivery(
            delivery=_delivery(row),
            url=row["url"],
            secret=self._cipher.open(row["secret"], row["secret_key_id"]),
            active=bool(row["active"]),
            token=token,
        )

    def finish(self, claimed: ClaimedDelivery, result: AttemptResult) -> None:
        delivery = claimed.delivery
        with self._writer.begin() as conn:
            conn.execute(
                webhook_deliveries.update()
                .where(
                    _D.tenant_id == delivery.tenant_id,
                    _D.id == delivery.id,
                    _D.claim_token == claimed.token,
                )
                .values(
                    status=result.status.value,
                    attempts=result.attempts,
                    last_status_code=result.status_code,
                    last_error=result.error,
                    duration_ms=result.duration_ms,
                    next_attempt_at=result.next_attempt_at,
                    delivered_at=result.delivered_at,
                    claimed_until=None,
                    claim_token=None,
                )
            )

    def prune(self, before: datetime) -> int:
        finished = (DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value)
        with self._writer.begin() as conn:
            return conn.execute(
                webhook_deliveries.delete().where(_D.status.in_(finished), _D.created_at < before)
            ).rowcount


def _unclaimed(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_D.claimed_until.is_(None), _D.claimed_until < now)


def _recorded(call: CallContext | None) -> None:
    if call is not None:
        call.recorded = True


def _webhook_row(webhook: Webhook) -> dict[str, Any]:
    return {
        "tenant_id": webhook.tenant_id,
        "id": webhook.id,
        "url": webhook.url,
        "event_types": list(webhook.event_types),
        "description": webhook.description,
        "active": webhook.active,
        "created_by": webhook.created_by,
        "created_at": webhook.created_at,
        "updated_at": webhook.updated_at,
    }


def _webhook(row: sa.RowMapping) -> Webhook:
    return Webhook(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        active=bool(row["active"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery_row(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "tenant_id": delivery.tenant_id,
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "body": delivery.body,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "duration_ms": delivery.duration_ms,
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at,
        "delivered_at": delivery.delivered_at,
    }


def _delivery(row: sa.RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        tenant_id=row["tenant_id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        body=row["body"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        duration_ms=row["duration_ms"],
        delivered_at=row["delivered_at"],
    )
