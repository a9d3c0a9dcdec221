"""The dashboard's session: an API credential kept in an HttpOnly cookie, checked on every page by the
API's own authenticator (``deps.authenticate``), and the CSRF rule for state-changing requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from aiservice.domain.api_keys import KEY_PREFIX
from aiservice.domain.errors import DomainError
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.deps import authenticate

UI_PREFIX = "/ui"
TOKEN_COOKIE = "aiservice_token"
TENANT_COOKIE = "aiservice_tenant"
SESSION_SECONDS = 8 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """No cookie, or one the authenticator refuses: the page sends the browser to the login form."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(Exception):
    """A state-changing request that a page of this dashboard did not send."""


def authorization_of(token: str) -> str:
    """The Authorization header a credential goes in: an API key or a JWT."""
    token = token.strip()
    return f"ApiKey {token}" if token.startswith(f"{KEY_PREFIX}_") else f"Bearer {token}"


async def check_credential(request: Request, token: str, tenant: str | None) -> Principal:
    """Authenticate ``token`` for ``tenant`` exactly as the API would a call carrying them."""
    headers = [
        (name, value)
        for name, value in request.scope["headers"]
        if name not in (b"authorization", b"x-tenant-id", b"cookie")
    ]
    headers.append((b"authorization", authorization_of(token).encode("latin-1", "replace")))
    if tenant:
        headers.append((b"x-tenant-id", tenant.encode("latin-1", "replace")))
    scope = {**request.scope, "headers": headers}  # the same app, state and audit context
    return await authenticate(Request(scope, request.receive))


async def ui_principal(request: Request) -> Principal:
    """The caller of a dashboard page, from its cookie; ``LoginRequired`` without a valid one."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise LoginRequired()
    try:
        return await check_credential(request, token, request.cookies.get(TENANT_COOKIE))
    except DomainError as exc:  # expired, revoked, a suspended tenant: log in again
        raise LoginRequired(exc.detail) from exc


def require_same_origin(request: Request) -> None:
    """State-changing requests must come from this dashboard's own pages: the cookie is SameSite=Strict,
    and htmx's ``HX-Request`` header cannot be sent cross-site without a CORS preflight, which fails.
    An ``Origin`` header, when present, must be this host."""
    if request.method in _SAFE_METHODS:
        return
    if request.headers.get("hx-request") != "true":
        raise CsrfRefused("a state-changing request without HX-Request")
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        raise CsrfRefused(f"a request from another origin: {origin}")


async def ui_caller(request: Request) -> Principal:
    require_same_origin(request)
    return await ui_principal(request)


UiCaller = Annotated[Principal, Depends(ui_caller)]


def keep_session(response: Response, request: Request, token: str, tenant: str | None) -> None:
    secure = request.url.scheme == "https"
    for name, value in ((TOKEN_COOKIE, token.strip()), (TENANT_COOKIE, tenant or "")):
        response.set_cookie(
            name,
            value,
            max_age=SESSION_SECONDS,
            path=UI_PREFIX,
            secure=secure,
            httponly=True,
            samesite="strict",
        )


def end_session(response: Response, request: Request) -> None:
    secure = request.url.scheme == "https"
    for name in (TOKEN_COOKIE, TENANT_COOKIE):
        response.delete_cookie(name, path=UI_PREFIX, secure=secure, httponly=True, samesite="strict")
