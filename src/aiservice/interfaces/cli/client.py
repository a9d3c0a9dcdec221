"""The CLI commands that are clients of the HTTP API share this: their options, the SDK client they talk
through (``aiservice.client``; the CLI has no HTTP code of its own), how ids are resolved from a prefix,
and how each failure becomes one line and an exit status (``exits.py``) instead of a traceback.

A server that is down, a missing token, a refused one and a problem answer are what a user meets
first, so each says what happened and what to do, in the caller's terms.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import httpx
import typer

from aiservice.client import (
    AiServiceError,
    AuthenticationError,
    Client,
    PermissionDeniedError,
    ProblemError,
    RequestTimeoutError,
    ServiceUnreachableError,
)
from aiservice.interfaces.cli import config
from aiservice.interfaces.cli.exits import PROBLEM, REFUSED, UNREACHABLE, USAGE, fail

DEFAULT_URL = config.DEFAULT_URL
T = TypeVar("T")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="AISERVICE_URL",
        help=f"The service's base URL [default: the login's, else {DEFAULT_URL}]",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="AISERVICE_TOKEN",
        help="An API token [default: the login's] (aiservice token create)",
        show_default=False,
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
TenantOption = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="AISERVICE_TENANT",
        help="Tenant id [default: the login's, else default]",
        show_default=False,
    ),
]

_GET_A_TOKEN = (
    "`aiservice token create --tenant default --role editor`, run in the server's folder, prints one"
)
_FIELDS_SHOWN = 5
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
_FULL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def settle(url: str | None, token: str | None, tenant: str | None) -> tuple[str, str, str]:
    """The URL, token and tenant to use: the flag or its variable, else the login, else the default."""
    try:
        stored = config.load()
    except ValueError as exc:
        fail(USAGE, f"{exc}; fix or remove it (aiservice logout).")
    return (
        url or stored.url or DEFAULT_URL,
        (token if token is not None else stored.token or "").strip(),
        tenant or stored.tenant or config.DEFAULT_TENANT,
    )


@contextmanager
def connect(url: str | None, token: str | None, tenant: str | None) -> Iterator[Client]:
    """An SDK client of the API; an error of the SDK inside the block exits with its status."""
    url, token, tenant = settle(url, token, tenant)
    base = base_url(url)
    if not token:
        fail(
            USAGE,
            f"no API token: pass --token, set AISERVICE_TOKEN or run `aiservice login`; {_GET_A_TOKEN}.",
        )
    if not _HEADER_VALUE.fullmatch(token):
        fail(USAGE, "the token holds spaces or characters a token cannot have: check --token.")
    if not _HEADER_VALUE.fullmatch(tenant):
        fail(USAGE, f"--tenant {tenant!r} is not a tenant id: use letters, digits, '_' or '-'.")
    with (
        Client(base, token, tenant, retries=2, backoff=0.25, timeout=60.0) as client,
        reported(base),
        quiet(),
    ):
        yield client


@contextmanager
def quiet() -> Iterator[None]:
    """The SDK logs each retry as a warning; a command says what it has to in one line of its own."""
    sdk_log = logging.getLogger("aiservice.client")
    level = sdk_log.level
    sdk_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        sdk_log.setLevel(level)


@contextmanager
def reported(base: str) -> Iterator[None]:
    """Each error of the SDK as one line and its exit status."""
    try:
        yield
    except AuthenticationError as exc:
        fail(
            REFUSED,
            f"{problem_line(exc)} Pass a valid token with --token or AISERVICE_TOKEN, or run "
            f"`aiservice login`; {_GET_A_TOKEN}.",
        )
    except PermissionDeniedError as exc:
        fail(REFUSED, problem_line(exc))
    except ProblemError as exc:
        fail(PROBLEM, problem_line(exc))
    except ServiceUnreachableError as exc:
        fail(
            UNREACHABLE,
            f"cannot reach the aiservice API at {base} ({exc.reason}): is it running? Start it with "
            "`aiservice serve`, or point --url or AISERVICE_URL at it.",
        )
    except RequestTimeoutError as exc:
        fail(UNREACHABLE, f"{exc}; try again, or check --url or AISERVICE_URL.")
    except AiServiceError as exc:  # a failed training job, a download that does not match its digest
        fail(PROBLEM, str(exc))


def problem_line(exc: ProblemError) -> str:
    """``STATUS title: detail [field: message; ...]``."""
    issues = [f"{e.field}: {e.message}" for e in exc.errors]
    fields = f" [{'; '.join(issues[:_FIELDS_SHOWN])}{'; ...' if len(issues) > _FIELDS_SHOWN else ''}]"
    detail = " ".join(exc.detail.split())[:300]
    return f"{exc.status} {exc.title or exc.code}: {detail}{fields if issues else ''}"


def base_url(url: str) -> str:
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        fail(USAGE, f"--url {url!r} is not an http(s) URL such as {DEFAULT_URL} (or set AISERVICE_URL).")
    return str(parsed).rstrip("/")


def resolve(
    given: str,
    kind: str,
    items: Iterable[T],
    ident: Callable[[T], str],
    key: Callable[[T], str] | None = None,
    names: Callable[[T], str] | None = None,
) -> str:
    """The ``key`` (default: the id) of the one listed item that ``given`` names: by its name exactly
    (``names``), else by the start of its id (``ident``). Several matches exit with status 2 naming them;
    none gives ``given`` back unchanged (the service then answers that it does not exist)."""
    if _FULL_ID.fullmatch(given):
        return given
    key = key or ident
    listed = list(items)
    for item in listed:
        if names is not None and names(item) == given:
            return key(item)
    matches = {ident(item): item for item in listed if ident(item).startswith(given)}
    if len(matches) == 1:
        return key(next(iter(matches.values())))
    if len(matches) > 1:
        ids = sorted(matches)
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        fail(USAGE, f"the {kind} id prefix {given!r} is ambiguous: it starts {shown}; give more of it.")
    return given
