"""The dashboard's fixtures: a logged-in TestClient for the plain HTTP tests, and for the browser tests the
service on a real socket (uvicorn in a thread over the ``container`` fixture) and Debian's Chromium
driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from tests.conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
HX = {"HX-Request": "true"}

Login = Callable[..., TestClient]


@pytest.fixture
def token_for(container: Container) -> Callable[..., str]:
    def issue(*roles: str, tenant: str = "acme", subject: str = "alice") -> str:
        return container.tokens.issue(subject, tenant, list(roles) or ["admin"], 3600)

    return issue


@pytest.fixture
def login(client: TestClient, token_for: Callable[..., str]) -> Login:
    """Log ``client`` in to the dashboard with a token of these roles; returns the client."""

    def log_in(*roles: str, tenant: str = "acme") -> TestClient:
        response = client.post(
            "/ui/login", data={"token": token_for(*roles, tenant=tenant), "tenant": tenant}, headers=HX
        )
        assert response.status_code == 204, response.text
        return client

    return log_in


def browser_unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install -y chromium; `make test` installs it)"
    return None


def require_browser() -> None:
    reason = browser_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run, not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per module (each test opens a context of its own). Not per session:
    Playwright's sync API keeps an event loop running in the thread while it is open, and a later test
    of the same worker that calls ``asyncio.run`` would find it."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    # A bound on waiting, not a speed check: under CI the other xdist worker may be running the load tests
    # (a rollout under continuous load saturates both cores), and a first page then took 15.7 s to come.
    context.set_default_timeout(60_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield tab
    context.close()
    assert not errors, f"the page reported errors: {errors}"


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML)"""


def assert_accessible(tab: Any) -> None:
    """Every control has a label, the page has one main landmark and one top heading."""
    assert tab.evaluate(UNLABELLED) == []
    assert tab.locator("main").count() == 1 and tab.locator("h1").count() == 1


def screenshot(tab: Any, name: str, *, docs: bool = False) -> Path:
    """A screenshot of the page as a test artifact (after checking the page's labels and landmarks); with
    ``docs`` (and UI_DOCS_SCREENSHOTS=1) also the README's copy under docs/screenshots/, which is only
    rewritten when asked."""
    assert_accessible(tab)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("UI_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        docs_path = DOCS_SCREENSHOTS / f"{name}.png"
        tab.screenshot(path=str(docs_path), full_page=False)
        from PIL import Image  # a 256-colour palette: a third of the size, no visible change

        with Image.open(docs_path) as image:
            small = image.convert("RGB").quantize(256)
        small.save(docs_path, optimize=True)
    return path
