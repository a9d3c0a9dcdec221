"""HS256 bearer tokens with the claims ``sub``, ``tenant``, ``roles`` and ``exp``."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import jwt

from aiservice.application.ports import TokenClaims
from aiservice.domain.errors import Unauthenticated

REQUIRED_CLAIMS = ["sub", "tenant", "roles", "exp"]


class JwtTokenService:
    def __init__(self, secret: str, leeway_seconds: int = 30, cache_size: int = 10_000) -> None:
        self._secret = secret
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        # Verified tokens until they expire: PyJWT's HMAC key preparation alone costs ~80 us a call,
        # and a client sends the same token with every request.
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, subject: str, tenant_id: str, roles: list[str], ttl_seconds: int) -> str:
        now = datetime.now(UTC)
        claims = {
            "sub": subject,
            "tenant": tenant_id,
            "roles": roles,
            "iat": now,
            "exp": now + timedelta(seconds=ttl_seconds),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> TokenClaims:
        with self._lock:
            known = self._verified.get(token)
        if known is not None:
            if known.expires_at + timedelta(seconds=self._leeway) > datetime.now(UTC):
                return known
            with self._lock:
                self._verified.pop(token, None)
        claims = self._decode(token)
        with self._lock:
            self._verified[token] = claims
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is not valid.") from exc
        roles = claims["roles"]
        if not isinstance(claims["sub"], str) or not isinstance(claims["tenant"], str):
            raise Unauthenticated("The token's 'sub' and 'tenant' claims must be strings.")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("The token's 'roles' claim must be a list of strings.")
        return TokenClaims(
            subject=claims["sub"],
            tenant_id=claims["tenant"],
            roles=tuple(roles),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )
