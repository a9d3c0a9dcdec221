"""The web dashboard at ``/ui``: server-rendered pages (Jinja2 + htmx + Chart.js, vendored under
``static/``) over the same use cases as the API. Mounted on the API app by ``mount_ui``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiservice.bootstrap import Container
from aiservice.domain.errors import DomainError, FieldError
from aiservice.interfaces.http.audit_context import note_problem
from aiservice.interfaces.http.problems import status_of
from aiservice.interfaces.http.ui import automl_pages, pages
from aiservice.interfaces.http.ui.session import UI_PREFIX, CsrfRefused, LoginRequired

__all__ = ["UI_PREFIX", "create_ui", "mount_ui"]


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _login_required(request: Request, exc: Exception) -> Response:
    location = f"{UI_PREFIX}/login"
    if _is_htmx(request):  # htmx follows this header with a full page load
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def _csrf_refused(request: Request, exc: Exception) -> Response:
    note_problem(request, "csrf-refused")
    return pages.render(
        request,
        "error.html",
        status_code=403,
        title="Refused",
        detail="This request did not come from a page of this dashboard.",
        errors=[],
    )


def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    note_problem(request, exc.code)
    template = "_error.html" if _is_htmx(request) else "error.html"
    return pages.render(
        request,
        template,
        status_code=status_of(exc),
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
    )


def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg", ""))) for e in exc.errors()
    ]
    note_problem(request, "validation-error")
    template = "_error.html" if _is_htmx(request) else "error.html"
    return pages.render(
        request, template, status_code=422, title="Invalid input", detail="Check the fields.", errors=errors
    )


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    template = "_error.html" if _is_htmx(request) else "error.html"
    return pages.render(
        request,
        template,
        status_code=exc.status_code,
        title="Not available",
        detail=str(exc.detail),
        errors=[],
    )


def create_ui(container: Container) -> FastAPI:
    """The dashboard as an app of its own (its errors are pages, not problem documents)."""
    ui = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    ui.state.container = container  # the routers' dependencies find the container here
    ui.include_router(pages.router)
    ui.include_router(automl_pages.router)
    ui.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    ui.add_exception_handler(LoginRequired, _login_required)
    ui.add_exception_handler(CsrfRefused, _csrf_refused)
    ui.add_exception_handler(DomainError, _domain_error)
    ui.add_exception_handler(RequestValidationError, _invalid_request)
    ui.add_exception_handler(StarletteHTTPException, _http_error)
    return ui


def mount_ui(app: FastAPI, container: Container) -> None:
    app.mount(UI_PREFIX, create_ui(container))
