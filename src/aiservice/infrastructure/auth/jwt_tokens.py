"""Bearer tokens with the claims ``sub``, ``tenant``, ``roles`` and ``exp``.

HS256 tokens are signed with ``JWT_SECRET`` (the service issues these itself); RS256 and ES256 tokens
from an identity provider are verified with the public key their ``kid`` names in a JWKS. The
algorithm in a token's header only picks which of those two paths it takes: an HS256 token is always
checked against the secret, never against a public key, so algorithm confusion and ``alg: none`` fail.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from aiservice.application.ports import TokenClaims
from aiservice.domain.errors import Unauthenticated
from aiservice.infrastructure.auth.jwks import KEY_TYPES, JwksKeySet

REQUIRED_CLAIMS = ["sub", "tenant", "roles", "exp"]


@dataclass(frozen=True)
class _Verified:
    claims: TokenClaims
    kid: str | None  # of the JWKS key that signed it; None for HS256
    alg: str


class JwtTokenService:
    def __init__(
        self,
        secret: str,
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
        *,
        keys: JwksKeySet | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self._secret = secret
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._keys = keys
        self._issuer = issuer or None
        self._audience = audience or None
        self._required = [
            *REQUIRED_CLAIMS,
            *(["iss"] if self._issuer else []),
            *(["aud"] if self._audience else []),
        ]
        # Verified tokens until they expire: PyJWT's HMAC key preparation alone costs ~80 us a call,
        # and a client sends the same token with every request.
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, subject: str, tenant_id: str, roles: list[str], ttl_seconds: int) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "sub": subject,
            "tenant": tenant_id,
            "roles": roles,
            "iat": now,
            "exp": now + timedelta(seconds=ttl_seconds),
        }
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def needs_io(self, token: str) -> bool:
        with self._lock:
            known = self._verified.get(token)
        kid = known.kid if known is not None else _header_kid(token)
        return kid is not None and self._keys is not None and not self._keys.ready(kid)

    def verify(self, token: str) -> TokenClaims:
        with self._lock:
            known = self._verified.get(token)
        if known is not None:
            if known.claims.expires_at + timedelta(seconds=self._leeway) > datetime.now(UTC):
                if known.kid is not None:  # still published? A key removed from the JWKS is revoked.
                    self._public_key(known.kid, known.alg)
                return known.claims
            with self._lock:
                self._verified.pop(token, None)
        verified = self._decode(token)
        with self._lock:
            self._verified[token] = verified
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return verified.claims

    def _public_key(self, kid: str, alg: str) -> Any:
        if self._keys is None:
            raise Unauthenticated("The token's algorithm is not accepted.")
        return self._keys.key(kid, alg)

    def _decode(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is not valid.") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg == "HS256":
            key, kid = self._secret, None
        elif alg in KEY_TYPES:
            if not isinstance(kid, str):
                raise Unauthenticated("The token names no signing key (kid).")
            key = self._public_key(kid, alg)
        else:
            raise Unauthenticated("The token's algorithm is not accepted.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                leeway=self._leeway,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("The token's issuer (iss) is not accepted.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("The token's audience (aud) is not accepted.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is not valid.") from exc
        return _Verified(_claims(claims), kid, alg)


def _header_kid(token: str) -> str | None:
    """The kid of an asymmetric token's header (unverified: only to decide where to verify it)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    kid = header.get("kid")
    return kid if header.get("alg") in KEY_TYPES and isinstance(kid, str) else None


def _claims(claims: dict[str, Any]) -> TokenClaims:
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
