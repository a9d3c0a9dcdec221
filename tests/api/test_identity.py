"""Tokens from an identity provider: RS256/ES256 verified against the JWKS it serves on 127.0.0.1, with
issuer and audience checks, clock skew, and key rotation without a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container, bootstrap
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings

API = "/api/v1/ai"
ISSUER = "https://idp.test"
AUDIENCE = "aiservice"
CACHE_SECONDS = 0.5
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROTATED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class JwksServer:
    """A JWKS on 127.0.0.1 whose keys a test changes while the service runs."""

    def __init__(self) -> None:
        self.keys = [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]
        self.reads = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.reads += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path, jwks: JwksServer) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        jwt_jwks_url=jwks.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks_cache_seconds=CACHE_SECONDS,
        jwt_jwks_min_refetch_seconds=0,
    )


def idp_token(private: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **overrides: object) -> str:
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ci-pipeline",
        "tenant": "acme",
        "roles": ["viewer"],
        "exp": int(time.time()) + 600,
        **overrides,
    }
    payload = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


def list_models(client: TestClient, token: str, tenant: str = "acme") -> Any:
    return client.get(f"{API}/models", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant})


@pytest.mark.parametrize(("private", "kid", "alg"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")])
def test_identity_provider_tokens_are_accepted(client: TestClient, private: Any, kid: str, alg: str) -> None:
    response = list_models(client, idp_token(private, kid, alg))
    assert response.status_code == 200, response.text


def test_the_services_own_tokens_still_work_beside_the_provider(client: TestClient, auth: Auth) -> None:
    assert client.get(f"{API}/models", headers=auth("viewer")).status_code == 200


def test_a_token_within_the_clock_skew_is_accepted(client: TestClient) -> None:
    assert list_models(client, idp_token(exp=int(time.time()) - 10)).status_code == 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(alg: str, key: bytes | None) -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "tenant": "acme", "roles": ["admin"]}
    signing_input = f"{header}.{_b64(json.dumps({**claims, 'exp': int(time.time()) + 600}).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


# Made when a test runs, not at collection: a token must fail for its own flaw, not for having aged.
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "alg-none": lambda: _forged("none", None),
    "hs256-with-public-key": lambda: _forged("HS256", PUBLIC_PEM),
    "no-exp": lambda: idp_token(exp=None),
    "expired-past-leeway": lambda: idp_token(exp=int(time.time()) - 120),
    "wrong-issuer": lambda: idp_token(iss="https://other-idp.test"),
    "wrong-audience": lambda: idp_token(aud="another-service"),
    "unknown-kid": lambda: idp_token(kid="no-such-key"),
    "another-key": lambda: idp_token(private=OTHER_KEY),
    "alg-key-mismatch": lambda: idp_token(private=EC_KEY, kid="rsa-1", alg="ES256"),
}


@pytest.mark.parametrize("flaw", list(BAD_TOKENS))
def test_bad_provider_tokens_are_401(client: TestClient, flaw: str) -> None:
    token = BAD_TOKENS[flaw]()
    response = list_models(client, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "https://aiservice.dev/problems/unauthenticated"
    assert token not in response.text


def test_a_key_added_to_the_jwks_is_accepted_without_a_restart(client: TestClient, jwks: JwksServer) -> None:
    assert list_models(client, idp_token()).status_code == 200
    rotated = idp_token(ROTATED_KEY, kid="rsa-2")
    jwks.keys = [*jwks.keys, public_jwk(ROTATED_KEY, "rsa-2")]
    assert list_models(client, rotated).status_code == 200


def test_a_key_removed_from_the_jwks_stops_working(client: TestClient, jwks: JwksServer) -> None:
    token = idp_token()
    assert list_models(client, token).status_code == 200
    jwks.keys = [public_jwk(EC_KEY, "ec-1")]
    time.sleep(CACHE_SECONDS + 0.1)
    assert list_models(client, token).status_code == 401


def test_known_keys_are_not_fetched_per_request(client: TestClient, jwks: JwksServer) -> None:
    started = time.monotonic()
    for i in range(20):
        assert list_models(client, idp_token(sub=f"caller-{i}")).status_code == 200
    allowed = 1 + int((time.monotonic() - started) / CACHE_SECONDS)  # one read per cache period
    assert jwks.reads <= min(allowed, 19)


def test_a_provider_token_still_needs_its_tenant_header_to_match(client: TestClient) -> None:
    response = list_models(client, idp_token(), tenant="globex")
    assert response.status_code == 403
    assert response.json()["type"].endswith("/tenant-mismatch")


def test_an_unreachable_jwks_is_503_not_a_login_failure(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/jwks.json"
    container: Container = bootstrap(make_settings(database_url, tmp_path / "down", jwt_jwks_url=url))
    container.tenants.ensure("acme")
    try:
        with TestClient(create_app(container)) as client:
            response = list_models(client, idp_token(iss=None, aud=None))
    finally:
        container.close()
    assert response.status_code == 503
    assert response.json()["type"].endswith("/unavailable")


def test_a_local_jwks_file_works_like_a_url(engine: Engine, database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(EC_KEY, "file-key")]}))
    container = bootstrap(make_settings(database_url, tmp_path / "file", jwt_jwks_file=str(path)))
    container.tenants.ensure("acme")
    try:
        with TestClient(create_app(container)) as client:
            token = idp_token(EC_KEY, "file-key", "ES256", iss=None, aud=None)
            assert list_models(client, token).status_code == 200
    finally:
        container.close()
