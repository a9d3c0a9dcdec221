"""Bearer tokens: verified once, remembered until they expire, never past it; HS256 with the secret,
RS256/ES256 with a JWKS key by kid, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aiservice.domain.errors import Unauthenticated, Unavailable
from aiservice.infrastructure.auth.jwks import JwksKeySet
from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService

SECRET = "unit-test-secret-0123456789-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    )
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", **extra}


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "svc",
        "tenant": "acme",
        "roles": ["viewer"],
        "exp": int(time.time()) + 600,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


class Jwks:
    """A JWKS document the test edits, counting how often it is read."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.reads = 0
        self.failing = False

    def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.failing:
            raise OSError("provider down")
        return {"keys": list(self.keys)}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(jwks: Jwks, clock: Callable[[], float] = time.monotonic, **options: Any) -> JwtTokenService:
    keys = JwksKeySet(jwks, "test", ttl_s=60, min_refetch_s=10, clock=clock)
    return JwtTokenService(SECRET, keys=keys, **options)


def signed(kid: str = "k1", private: Any = RSA_KEY, alg: str = "RS256", **overrides: object) -> str:
    return jwt.encode(claims(**overrides), private, algorithm=alg, headers={"kid": kid})


def clocked(*keys: dict[str, Any]) -> tuple[Jwks, FakeClock, JwtTokenService]:
    """A service over a JWKS the test edits, on a clock the test moves."""
    jwks, clock = Jwks(*keys), FakeClock()
    return jwks, clock, service(jwks, clock)


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


@pytest.mark.parametrize(("private", "alg"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256")])
def test_asymmetric_tokens_are_verified_with_the_jwks_key_they_name(private: Any, alg: str) -> None:
    tokens = service(Jwks(public_jwk(private, "k1")))
    token = signed("k1", private, alg)
    assert tokens.verify(token).tenant_id == "acme"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed_hs256(key: bytes, kid: str | None = None) -> str:
    """What an attacker builds: PyJWT itself refuses to use a PEM public key as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_an_hs256_token_signed_with_the_public_key_is_refused() -> None:
    tokens = service(Jwks(public_jwk(RSA_KEY, "k1")))
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(Unauthenticated):
        tokens.verify(_hand_signed_hs256(pem, kid="k1"))


def test_an_unsigned_token_is_refused() -> None:
    tokens = service(Jwks(public_jwk(RSA_KEY, "k1")))
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    with pytest.raises(Unauthenticated, match="algorithm"):
        tokens.verify(f"{header}.{_b64(json.dumps(claims()).encode())}.")


def test_a_key_is_only_used_with_its_own_algorithm() -> None:
    tokens = service(Jwks(public_jwk(EC_KEY, "ec")))
    forged = signed("ec")
    with pytest.raises(Unauthenticated, match="does not match"):
        tokens.verify(forged)


def test_symmetric_keys_in_the_jwks_are_never_used() -> None:
    oct_key = {"kty": "oct", "kid": "shared", "k": _b64(b"guessable")}
    tokens = service(Jwks(oct_key, public_jwk(RSA_KEY, "k1")))
    forged = _hand_signed_hs256(b"guessable", kid="shared")
    with pytest.raises(Unauthenticated):
        tokens.verify(forged)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": None}, "not valid"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": None}, "not valid"),
    ],
    ids=["no-exp", "wrong-issuer", "wrong-audience", "no-issuer"],
)
def test_claims_the_settings_demand_are_enforced(overrides: dict[str, object], message: str) -> None:
    tokens = service(Jwks(public_jwk(RSA_KEY, "k1")), issuer="https://idp.example", audience="aiservice")
    good = {"iss": "https://idp.example", "aud": "aiservice"}
    token = signed(**{**good, **overrides})
    with pytest.raises(Unauthenticated, match=message):
        tokens.verify(token)


def test_issued_tokens_carry_the_configured_issuer_and_audience() -> None:
    tokens = JwtTokenService(SECRET, issuer="https://idp.example", audience="aiservice")
    assert tokens.verify(tokens.issue("u", "acme", ["viewer"], 60)).subject == "u"


@pytest.mark.parametrize(("leeway", "accepted"), [(30, True), (5, False)])
def test_clock_skew_is_allowed_up_to_the_leeway(leeway: int, accepted: bool) -> None:
    tokens = service(Jwks(public_jwk(RSA_KEY, "k1")), leeway_seconds=leeway)
    token = signed(exp=int(time.time()) - 10)
    if accepted:
        assert tokens.verify(token).subject == "svc"
    else:
        with pytest.raises(Unauthenticated, match="expired"):
            tokens.verify(token)


def test_an_unknown_kid_rereads_the_jwks_at_most_once_per_interval() -> None:
    jwks, clock, tokens = clocked(public_jwk(RSA_KEY, "k1"))
    unknown = signed("nope")
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="kid"):
            tokens.verify(unknown)
    assert jwks.reads == 1
    clock.now += 10
    with pytest.raises(Unauthenticated, match="kid"):
        tokens.verify(unknown)
    assert jwks.reads == 2


def test_a_rotated_in_key_is_accepted_and_a_removed_one_refused() -> None:
    jwks, clock, tokens = clocked(public_jwk(RSA_KEY, "old"))
    old = signed("old")
    assert tokens.verify(old).subject == "svc"
    jwks.keys = [public_jwk(EC_KEY, "new")]
    clock.now += 10
    new = signed("new", EC_KEY, "ES256")
    assert tokens.verify(new).subject == "svc"
    with pytest.raises(Unauthenticated, match="kid"):  # remembered, but its key is gone
        tokens.verify(old)


def test_a_removed_key_is_refused_once_the_cached_set_expires() -> None:
    jwks, clock, tokens = clocked(public_jwk(RSA_KEY, "k1"))
    token = signed()
    tokens.verify(token)
    jwks.keys = []
    clock.now += 59
    assert tokens.verify(token).subject == "svc"
    clock.now += 1
    with pytest.raises(Unauthenticated, match="kid"):
        tokens.verify(token)


def test_a_provider_outage_keeps_the_keys_already_read() -> None:
    jwks, clock, tokens = clocked(public_jwk(RSA_KEY, "k1"))
    token = signed()
    tokens.verify(token)
    jwks.failing = True
    clock.now += 120
    assert tokens.verify(token).subject == "svc"


def test_no_keys_at_all_is_unavailable_not_unauthenticated() -> None:
    jwks = Jwks()
    jwks.failing = True
    token = signed()
    with pytest.raises(Unavailable):
        service(jwks).verify(token)


def test_only_an_unknown_or_stale_key_needs_io() -> None:
    _, clock, tokens = clocked(public_jwk(RSA_KEY, "k1"))
    token = signed()
    assert tokens.needs_io(token)
    tokens.verify(token)
    assert not tokens.needs_io(token)
    assert not tokens.needs_io(tokens.issue("u", "acme", ["viewer"], 60))
    clock.now += 60
    assert tokens.needs_io(token)
