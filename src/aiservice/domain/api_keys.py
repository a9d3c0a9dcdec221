"""API keys: long-lived credentials for machines, bound to one tenant, some roles and optionally some models.

A key reads ``aisk_<id>_<secret>``. The id is public (it names the key in lists and audit records); the
secret is 256 random bits, shown once when the key is made and stored only as a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from aiservice.domain.tenancy import Principal, Role

KEY_PREFIX = "aisk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
_KNOWN_ROLES = {r.value for r in Role}


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, hex.

    A fast hash is right here, unlike for passwords: the secret is 256 bits from ``secrets``, so no
    amount of hashing speed makes guessing it from a leaked hash feasible, while a slow KDF (bcrypt,
    argon2) would add milliseconds to every request that presents a key.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyMaterial:
    """A freshly generated key: its id, and the full key string to hand over once."""

    id: str
    secret_hash: str
    key: str


def generate_key() -> KeyMaterial:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 43 characters
    return KeyMaterial(key_id, hash_secret(secret), f"{KEY_PREFIX}_{key_id}_{secret}")


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


class ApiKeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    roles: tuple[str, ...]
    model_ids: tuple[str, ...] | None  # None: every model of the tenant
    secret_hash: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def status(self, now: datetime) -> ApiKeyStatus:
        if self.revoked_at is not None:
            return ApiKeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return ApiKeyStatus.EXPIRED
        return ApiKeyStatus.ACTIVE

    def principal(self) -> Principal:
        """The caller this key stands for: ``apikey:<id>``, in its tenant, limited to its models."""
        return Principal(
            subject=f"apikey:{self.id}",
            tenant_id=self.tenant_id,
            roles=frozenset(Role(r) for r in self.roles if r in _KNOWN_ROLES),
            model_ids=frozenset(self.model_ids) if self.model_ids is not None else None,
        )
