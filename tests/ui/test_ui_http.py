"""The dashboard over plain HTTP: where an unauthenticated browser is sent, what the session cookie looks
like, which requests count as forged, and that a role's missing permissions hide and refuse the same
things the API refuses."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from aiservice.application.deploying.ports import RevisionState
from aiservice.bootstrap import Container
from aiservice.domain.deployments import DeploymentTarget
from tests.conftest import Auth
from tests.deployments.fakes import FakeDeployer
from tests.helpers import create_model, upload
from tests.monitoring.test_drift_api import iris_rows
from tests.ui.conftest import HX, Login

API = "/api/v1/ai"
IRIS_SCHEMA = {
    "type": "tabular",
    "features": [
        {"name": n, "type": "number"} for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")
    ],
}


def set_cookies(response_headers: list[str]) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response_headers}


def test_a_page_without_a_session_sends_the_browser_to_the_login_form(client: TestClient) -> None:
    for path in ("/ui/", "/ui/models", "/ui/models/anything", "/ui/jobs", "/ui/audit"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/ui/login"
    partial = client.post("/ui/models", data={"name": "m", "framework": "sklearn"}, headers=HX)
    assert partial.status_code == 401 and partial.headers["hx-redirect"] == "/ui/login"
    form = client.get("/ui/login")
    assert form.status_code == 200
    assert '<label for="token">' in form.text and 'id="token"' in form.text


def test_login_keeps_the_token_in_a_strict_http_only_cookie_for_ui_paths_only(
    client: TestClient, token_for: Callable[..., str]
) -> None:
    response = client.post("/ui/login", data={"token": token_for("viewer"), "tenant": "acme"}, headers=HX)
    assert response.status_code == 204
    assert response.headers["hx-redirect"] == "/ui/models"
    cookies = set_cookies(response.headers.get_list("set-cookie"))
    token_cookie = cookies["aiservice_token"]
    for flag in ("HttpOnly", "Path=/ui", "SameSite=strict"):
        assert flag in token_cookie
    assert "Secure" not in token_cookie  # plain http: a Secure cookie would never come back
    assert client.get("/ui/models").status_code == 200
    # The API itself does not take the cookie: it wants its Authorization header.
    assert client.get("/api/v1/ai/models").status_code == 401


def test_over_https_the_cookie_is_secure(container: Container, token_for: Callable[..., str]) -> None:
    from aiservice.interfaces.http.app import create_app

    with TestClient(create_app(container), base_url="https://testserver") as secure:
        response = secure.post("/ui/login", data={"token": token_for(), "tenant": "acme"}, headers=HX)
        assert response.status_code == 204
        assert "Secure" in set_cookies(response.headers.get_list("set-cookie"))["aiservice_token"]


def test_a_refused_token_keeps_no_cookie_and_says_why(
    client: TestClient, token_for: Callable[..., str]
) -> None:
    bad = client.post("/ui/login", data={"token": "not-a-token", "tenant": "acme"}, headers=HX)
    assert bad.status_code == 401
    assert "Refused" in bad.text and "set-cookie" not in bad.headers
    wrong_tenant = client.post("/ui/login", data={"token": token_for(), "tenant": "globex"}, headers=HX)
    assert wrong_tenant.status_code == 401 and "set-cookie" not in wrong_tenant.headers
    assert client.get("/ui/models", follow_redirects=False).status_code == 303


def test_an_api_key_logs_in_without_a_tenant(client: TestClient, auth: Auth) -> None:
    created = client.post("/api/v1/ai/api-keys", json={"name": "dash", "roles": ["viewer"]}, headers=auth())
    assert created.status_code == 201, created.text
    response = client.post("/ui/login", data={"token": created.json()["key"]}, headers=HX)
    assert response.status_code == 204, response.text
    page = client.get("/ui/models")
    assert page.status_code == 200 and "acme" in page.text


def test_logout_clears_the_session(login: Login) -> None:
    client = login("viewer")
    response = client.post("/ui/logout", headers=HX)
    assert response.headers["hx-redirect"] == "/ui/login"
    assert all("Max-Age=0" in c or "expires=" in c.lower() for c in response.headers.get_list("set-cookie"))
    assert client.get("/ui/models", follow_redirects=False).status_code == 303


def test_state_changing_requests_not_sent_by_the_dashboard_are_refused(login: Login, auth: Auth) -> None:
    client = login("editor")
    plain_form = client.post("/ui/models", data={"name": "forged", "framework": "sklearn"})
    assert plain_form.status_code == 403
    other_origin = client.post(
        "/ui/models",
        data={"name": "forged", "framework": "sklearn"},
        headers={**HX, "Origin": "https://evil.example"},
    )
    assert other_origin.status_code == 403
    assert client.get("/api/v1/ai/models/forged", headers=auth()).status_code == 404
    sent = client.post("/ui/models", data={"name": "made", "framework": "sklearn"}, headers=HX)
    assert sent.status_code == 204 and sent.headers["hx-redirect"] == "/ui/models/made"
    assert client.get("/api/v1/ai/models/made", headers=auth()).status_code == 200


def test_a_viewer_sees_no_forms_it_may_not_use_and_cannot_use_them_anyway(login: Login, auth: Auth) -> None:
    client = login("editor")
    create_model(client, auth(), "iris", inputSchema=IRIS_SCHEMA)
    assert upload(client, auth(), "iris").status_code == 201
    editor_page = client.get("/ui/models/iris").text
    assert "Upload a version" in editor_page and "Try it" in editor_page
    assert "Create a model" in client.get("/ui/models").text

    login("viewer")
    assert "Create a model" not in client.get("/ui/models").text
    viewer_page = client.get("/ui/models/iris").text
    assert "Upload a version" not in viewer_page and "Try it" not in viewer_page
    refused = client.post("/ui/models", data={"name": "nope", "framework": "sklearn"}, headers=HX)
    assert refused.status_code == 403 and "model:write" in refused.text
    assert client.post("/ui/models/iris/predict", data={}, headers=HX).status_code == 403


def test_the_audit_log_is_for_admins_only(login: Login) -> None:
    client = login("editor")
    assert "Audit log" not in client.get("/ui/models").text
    assert client.get("/ui/audit").status_code == 403
    login("admin")
    assert 'href="/ui/audit"' in client.get("/ui/models").text
    page = client.get("/ui/audit")
    assert page.status_code == 200 and "Audit log" in page.text


def test_the_try_it_form_sends_typed_inputs_and_names_a_bad_field(login: Login, auth: Auth) -> None:
    client = login("editor")
    create_model(client, auth(), "iris", inputSchema=IRIS_SCHEMA)
    assert upload(client, auth(), "iris").status_code == 201
    page = client.get("/ui/models/iris").text
    assert 'name="f.sepal_length" type="number"' in page
    row = {"f.sepal_length": "5.1", "f.sepal_width": "3.5", "f.petal_length": "1.4", "f.petal_width": "0.2"}
    answer = client.post("/ui/models/iris/predict", data=row, headers=HX)
    assert answer.status_code == 200, answer.text
    assert 'id="prediction-value">0<' in answer.text  # setosa
    bad = client.post("/ui/models/iris/predict", data={**row, "f.sepal_width": "wide"}, headers=HX)
    assert bad.status_code == 422 and "input.sepal_width" in bad.text


def test_a_domain_error_is_shown_with_its_fields_not_as_a_server_error(login: Login) -> None:
    client = login("editor")
    bad = client.post("/ui/models", data={"name": "has space", "framework": "sklearn"}, headers=HX)
    assert bad.status_code == 422
    assert 'role="alert"' in bad.text and "name" in bad.text
    missing = client.get("/ui/models/ghost")
    assert missing.status_code == 404 and "<h1>" in missing.text


def test_pages_forbid_inline_script(login: Login) -> None:
    response = login("viewer").get("/ui/models")
    policies = response.headers.get_list("content-security-policy")
    assert any("script-src 'self'" in p and "unsafe-inline" not in p for p in policies)
    assert "<script>" not in response.text
    assert login("viewer").get("/ui/static/vendor/htmx.min.js").status_code == 200


def test_the_drift_page_charts_each_features_score_from_the_latest_report(
    login: Login, auth: Auth, container: Container
) -> None:
    client = login("viewer")
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    logging = {"enabled": True, "sampleRate": 1.0}
    assert client.put(f"{API}/models/iris/payload-logging", json=logging, headers=auth()).status_code == 200
    profile = {"rows": iris_rows(1000, seed=0)}
    response = client.put(f"{API}/models/iris/versions/1/reference-profile", json=profile, headers=auth())
    assert response.status_code == 200, response.text
    assert "No drift reports yet." in client.get("/ui/models/iris/drift").text

    shifted = {"inputs": iris_rows(600, seed=1, shift={2: 1.5})}
    assert client.post(f"{API}/models/iris/batch-predict", json=shifted, headers=auth()).status_code == 200
    container.payload_logging.recorder.flush()
    report = client.post(f"{API}/models/iris/drift", headers=auth()).json()

    page = client.get("/ui/models/iris/drift")
    assert page.status_code == 200
    assert "Latest report: <strong>drift</strong>" in page.text
    chart = json.loads(page.text.split('id="drift-data">', 1)[1].split("</script>", 1)[0])
    assert chart["labels"] == [f["feature"] for f in report["features"]]
    assert chart["series"]["PSI"] == [f["score"] for f in report["features"]]
    assert "f2" in chart["labels"]


def test_without_chromium_the_browser_tests_skip_locally_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.ui import conftest as ui

    monkeypatch.setattr(ui, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(ui, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        ui.require_browser()
    monkeypatch.setattr(ui, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        ui.require_browser()


def test_the_deployments_page_shows_replicas_and_the_latency_they_report(
    client: TestClient, auth: Auth, container: Container, login: Login
) -> None:
    fake = FakeDeployer()
    container.deployers[DeploymentTarget.LOCAL] = fake  # type: ignore[index]
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    body = {"deploymentName": "iris-dev", "environment": "dev", "minReplicas": 2, "version": 1}
    deployed = client.post(f"{API}/models/iris/deploy", json=body, headers=auth("deployer"))
    assert deployed.status_code == 202, deployed.text
    fake.load[deployed.json()["id"]] = RevisionState(1, 2, 2, in_flight=4.0, p95_ms=17.5)
    for _ in range(2):  # rolled out, then observed serving
        container.deployment_reconcile._task()
    page = login("viewer").get("/ui/deployments")
    assert page.status_code == 200
    row = page.text[page.text.index("iris-dev") :]
    assert "2 / 2" in row and "17.5 ms" in row and ">4<" in row
