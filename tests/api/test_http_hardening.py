"""HTTP hardening: strict JSON bodies, a body limit on every route that takes one, security headers on
every response (errors included), CORS only for configured origins, and HTTPS from the serve options."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from aiservice.bootstrap import ConfigurationError, Container, bootstrap
from aiservice.interfaces.cli.serve import server_options
from aiservice.interfaces.http.app import create_app
from aiservice.interfaces.http.strict_json import violation
from tests.conftest import Auth, make_settings
from tests.helpers import wait_until

API = "/api/v1/ai"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def create(client: TestClient, headers: dict[str, str], body: bytes) -> httpx.Response:
    return client.post(f"{API}/models", content=body, headers={**headers, **JSON})


# -- strict JSON -------------------------------------------------------------------------------


def test_a_repeated_key_is_refused_naming_the_key(client: TestClient, auth: Auth) -> None:
    response = create(client, auth(), b'{"name": "a", "framework": "sklearn", "name": "b"}')
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "https://aiservice.dev/problems/duplicate-json-key"
    assert problem["key"] == "name"
    assert client.get(f"{API}/models", headers=auth()).json()["items"] == []


def test_a_repeated_key_in_a_nested_object_is_refused(client: TestClient, auth: Auth) -> None:
    body = b'{"name": "a", "framework": "sklearn", "configuration": {"x": {"depth": 1, "depth": 2}}}'
    response = create(client, auth(), body)
    assert (response.status_code, response.json()["key"]) == (400, "depth")


def test_a_repeated_key_is_refused_on_the_predict_route(client: TestClient, auth: Auth) -> None:
    body = b'{"input": {"age": 30, "age": 99}}'
    response = client.post(f"{API}/models/any/predict", content=body, headers={**auth(), **JSON})
    assert (response.status_code, response.json()["key"]) == (400, "age")


def test_colons_inside_strings_are_not_mistaken_for_keys(client: TestClient, auth: Auth) -> None:
    body = b'{"name": "a", "framework": "sklearn", "description": "x: y, \\"z\\": w", "tags": ["a:b"]}'
    assert create(client, auth(), body).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2, "b": "\\u003a"}',  # an escaped colon hiding the repeated key from a count
        b'{"a": NaN, "a": 2}',  # JSON orjson refuses but Python's parser reads
        b'{"\\u0061": 1, "a": 2}',  # the same key, spelt two ways
    ],
)
def test_repeated_keys_are_found_however_the_body_is_written(body: bytes) -> None:
    found = violation(body, 64)
    assert found is not None and found.code == "duplicate-json-key"


def test_nesting_up_to_the_bound_is_accepted(client: TestClient, auth: Auth, container: Container) -> None:
    depth = container.settings.max_json_depth
    body = {"name": "deep", "framework": "sklearn", "configuration": {"c": nested(depth - 2)}}
    assert client.post(f"{API}/models", json=body, headers=auth()).status_code == 201


@pytest.mark.parametrize("extra", [1, 5000])  # 5000: deeper than orjson itself parses
def test_nesting_past_the_bound_is_refused(
    client: TestClient, auth: Auth, container: Container, extra: int
) -> None:
    depth = container.settings.max_json_depth
    body = {"name": "deep", "framework": "sklearn", "configuration": {"c": 1}}
    raw = httpx.Request("POST", "/", json=body).content
    raw = raw.replace(
        b'{"c":1}', b'{"c":' + b"[" * (depth - 2 + extra) + b"1" + b"]" * (depth - 2 + extra) + b"}"
    )
    response = create(client, auth(), raw)
    assert response.status_code == 400
    assert response.json()["type"] == "https://aiservice.dev/problems/json-too-deep"
    assert response.json()["maxDepth"] == depth


def test_bodies_that_are_no_json_are_left_to_the_route(client: TestClient, auth: Auth) -> None:
    response = create(client, auth(), b'{"name": "x", "framework": ')
    assert response.status_code == 400
    assert response.json()["type"].endswith("/malformed-json")


# -- media types -------------------------------------------------------------------------------

NOT_JSON = {
    "text/plain": "text/plain;charset=UTF-8",  # what a browser's fetch() sends a string as
    "form": "application/x-www-form-urlencoded",  # what curl -d sends unless told otherwise
    "xml": "application/xml",
    "no content type": None,
}


def json_body_routes(paths: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation whose only body is JSON: uploads and v2 /infer keep their own media types."""
    return [
        (method.upper(), template, operation)
        for template, operations in paths.items()
        for method, operation in operations.items()
        if list(operation.get("requestBody", {}).get("content", {})) == ["application/json"]
    ]


@pytest.mark.parametrize("content_type", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_every_route_that_takes_json_refuses_another_media_type_with_415(
    client: TestClient, auth: Auth, content_type: str | None
) -> None:
    routes = json_body_routes(client.get("/openapi.json").json()["paths"])
    assert {"/api/v1/ai/models/{model}/predict", "/api/v1/ai/models/{model}/batch-predict"} <= {
        template for _, template, _ in routes
    }
    assert len(routes) >= 12
    headers = auth() if content_type is None else {**auth(), "Content-Type": content_type}
    for method, template, operation in routes:
        path = template.replace("{version}", "1").replace("{", "").replace("}", "")
        response = client.request(method, path, content=b'{"input": {"a": 1}}', headers=headers)
        assert response.status_code == 415, (method, template, response.status_code)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["type"] == "https://aiservice.dev/problems/unsupported-media-type"
        assert [e["field"] for e in problem["errors"]] == ["header.Content-Type"]
        assert "application/json" in problem["detail"]
        assert "415" in operation["responses"], (method, template)


def test_a_form_body_is_told_how_to_send_json_with_curl(client: TestClient, auth: Auth) -> None:
    response = client.post(f"{API}/models/iris/predict", data={"input": "x"}, headers=auth())
    assert response.status_code == 415
    assert "curl --json" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/merge-patch+json",
    ],
)
def test_json_is_accepted_with_any_case_charset_or_json_suffix(
    client: TestClient, auth: Auth, content_type: str
) -> None:
    body = b'{"name": "typed", "framework": "sklearn"}'
    response = client.post(f"{API}/models", content=body, headers={**auth(), "Content-Type": content_type})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])  # curl -X POST [-d '']
def test_a_post_without_a_body_needs_no_json_content_type(
    client: TestClient, auth: Auth, content_type: str | None
) -> None:
    headers = auth() if content_type is None else {**auth(), "Content-Type": content_type}
    response = client.post(f"{API}/training-jobs/none/cancel", headers=headers)
    assert (response.status_code, response.json()["type"]) == (
        404,
        "https://aiservice.dev/problems/not-found",
    )


def test_only_operations_with_a_body_declare_415(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    declared = {
        (method, template)
        for template, operations in paths.items()
        for method, operation in operations.items()
        if "415" in operation["responses"]
    }
    with_body = {
        (method, template)
        for template, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert declared == with_body


# -- body limits -------------------------------------------------------------------------------


def test_every_route_that_takes_a_body_refuses_one_over_its_limit(
    engine: object, database_url: str, tmp_path: Path
) -> None:
    container = bootstrap(make_settings(database_url, tmp_path / "data", max_json_body_bytes=4096))
    app = create_app(container)
    with TestClient(app) as client:
        assert_every_route_is_bounded(client, app.openapi()["paths"])


def assert_every_route_is_bounded(client: TestClient, paths: dict[str, Any]) -> None:
    routes = [
        (method.upper(), template)
        for template, operations in paths.items()
        for method in operations
        if method in ("post", "put", "patch")
    ]
    assert len(routes) >= 10
    body = b'{"x": "' + b"a" * 5000 + b'"}'
    for method, template in routes:
        path = template.replace("{version}", "1").replace("{", "").replace("}", "")
        streaming = method == "POST" and (
            path.endswith(("/versions", "/infer", "/import")) or path == f"{API}/datasets"
        )
        if streaming:  # their own, larger limits (they count bytes themselves): a declared length past it
            response = client.request(method, path, content=body, headers={"Content-Length": str(2**62)})
        else:  # chunked, without a Content-Length: the bytes are counted, not just the declaration
            response = client.request(method, path, content=iter([body]), headers=JSON)
        assert response.status_code == 413, (method, template, response.status_code)
        assert response.json()["type"].endswith("/payload-too-large")


# -- security headers --------------------------------------------------------------------------

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def assert_secured(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "strict-transport-security" not in response.headers  # plain HTTP: no HSTS


def test_security_headers_are_on_successes(client: TestClient, auth: Auth) -> None:
    for response in (
        client.get("/health"),
        client.get(f"{API}/models", headers=auth()),
        client.get("/metrics"),
    ):
        assert response.status_code == 200
        assert_secured(response)
    assert (
        client.get("/health").headers["content-security-policy"]
        == "default-src 'none'; frame-ancestors 'none'"
    )


def test_the_docs_page_may_load_its_scripts(client: TestClient) -> None:
    response = client.get("/docs")
    assert_secured(response)
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_security_headers_are_on_errors(client: TestClient, auth: Auth) -> None:
    responses = [
        client.get(f"{API}/models"),  # 401
        client.get(f"{API}/models/missing", headers=auth()),  # 404
        client.post(f"{API}/models", json={"name": ""}, headers=auth()),  # 422
        create(client, auth(), b'{"a": 1, "a": 2}'),  # 400 strict JSON
        client.post(f"{API}/models", content=b"x" * (2 * 1024**2), headers={**auth(), **JSON}),  # 413
    ]
    assert [r.status_code for r in responses] == [401, 404, 422, 400, 413]
    for response in responses:
        assert_secured(response)


def test_security_headers_are_on_unhandled_server_errors(container: Container, auth: Auth) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("boom")

    container.registry.list_models = explode  # type: ignore[method-assign]
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        response = client.get(f"{API}/models", headers=auth())
    assert response.status_code == 500
    assert_secured(response)


# -- CORS --------------------------------------------------------------------------------------

ORIGIN = "https://dashboard.example.com"


def preflight(client: TestClient, origin: str = ORIGIN) -> httpx.Response:
    return client.options(
        f"{API}/models",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-tenant-id",
        },
    )


def test_cross_origin_calls_are_refused_by_default(client: TestClient, auth: Auth) -> None:
    response = preflight(client)
    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers
    simple = client.get(f"{API}/models", headers={**auth(), "Origin": ORIGIN})
    assert "access-control-allow-origin" not in simple.headers


@pytest.fixture
def cors_client(engine: object, database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Container]]:
    settings = make_settings(database_url, tmp_path / "data", cors_origins=f"{ORIGIN}, http://localhost:5173")
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    with TestClient(create_app(container)) as client:
        yield client, container


def test_a_configured_origin_may_call_across_origins(cors_client: tuple[TestClient, Container]) -> None:
    client, container = cors_client
    response = preflight(client)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-tenant-id" in response.headers["access-control-allow-headers"].lower()
    token = container.tokens.issue("tester", "acme", ["viewer"], 60)
    call = client.get(
        f"{API}/models", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme", "Origin": ORIGIN}
    )
    assert call.headers["access-control-allow-origin"] == ORIGIN
    assert "ratelimit-remaining" in call.headers["access-control-expose-headers"].lower()


def test_an_origin_not_configured_is_still_refused(cors_client: tuple[TestClient, Container]) -> None:
    client, _ = cors_client
    response = preflight(client, "https://evil.example.net")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


# -- TLS ---------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_with_a_certificate_the_server_answers_over_https(container: Container, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = container.settings.model_copy(
        update={"host": "127.0.0.1", "port": free_port(), "tls_cert_file": cert, "tls_key_file": key}
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(container, manage_lifecycle=False), **server_options(settings))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, 0.01, "the server to start")
        assert thread.is_alive(), "the server thread ended before it started serving"
        trusted = ssl.create_default_context(cafile=str(cert))
        response = httpx.get(f"https://127.0.0.1:{settings.port}/health", verify=trusted)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
            httpx.get(f"https://127.0.0.1:{settings.port}/health")
    finally:
        server.should_exit = True
        thread.join(10)


def test_tls_needs_both_the_certificate_and_the_key(container: Container, tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigurationError, match="TLS_KEY_FILE"):
        server_options(container.settings.model_copy(update={"tls_cert_file": cert}))
    with pytest.raises(ConfigurationError, match="not a readable file"):
        server_options(
            container.settings.model_copy(
                update={"tls_cert_file": cert, "tls_key_file": tmp_path / "missing.pem"}
            )
        )


def test_without_a_certificate_the_server_speaks_plain_http(container: Container) -> None:
    assert "ssl_certfile" not in server_options(container.settings)
