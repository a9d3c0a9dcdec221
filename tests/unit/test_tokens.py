"""Bearer tokens: verified once, remembered until they expire, never past it."""

from __future__ import annotations

import time

import pytest

from aiservice.domain.errors import Unauthenticated
from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService

SECRET = "unit-test-secret-0123456789-0123456789"


def test_a_remembered_token_still_expires() -> None:
    tokens = JwtTokenService(SECRET, leeway_seconds=0)
    token = tokens.issue("u", "acme", ["viewer"], ttl_seconds=1)
    assert tokens.verify(token).subject == "u"
    assert tokens.verify(token).subject == "u"  # from the cache
    time.sleep(1.1)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)


def test_a_tampered_token_is_not_mistaken_for_a_remembered_one() -> None:
    tokens = JwtTokenService(SECRET)
    token = tokens.issue("u", "acme", ["viewer"], ttl_seconds=60)
    tokens.verify(token)
    header, payload, signature = token.split(".")
    with pytest.raises(Unauthenticated):
        tokens.verify(f"{header}.{payload}.{signature[:-2]}AA")


def test_the_cache_stays_bounded() -> None:
    tokens = JwtTokenService(SECRET, cache_size=3)
    for i in range(10):
        tokens.verify(tokens.issue(f"u{i}", "acme", ["viewer"], ttl_seconds=60))
    assert len(tokens._verified) == 3
