"""The CLI commands that are clients of the HTTP API share this: their options, their client, and how
each failure becomes one line and an exit status (``exits.py``) instead of a traceback.

A server that is down, a missing token, a refused one and a problem answer are what a user meets
first, so each says what happened and what to do, in the caller's terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer

from aiservice.interfaces.cli.exits import PROBLEM, REFUSED, UNREACHABLE, USAGE, fail

DEFAULT_URL = "http://127.0.0.1:3004"
API = "/api/v1/ai"

UrlOption = Annotated[str, typer.Option("--url", envvar="AISERVICE_URL", help="The service's base URL")]
TokenOption = Annotated[
    str, typer.Option("--token", envvar="AISERVICE_TOKEN", help="An API token (aiservice token create)")
]
TenantOption = Annotated[str, typer.Option("--tenant", envvar="AISERVICE_TENANT", help="Tenant id")]

_GET_A_TOKEN = (
    "`aiservice token create --tenant default --role editor`, run in the server's folder, prints one"
)
_FIELDS_SHOWN = 5


@contextmanager
def api_client(url: str, token: str, tenant: str) -> Iterator[httpx.Client]:
    """A client of the API at ``url``; a connection that fails inside the block exits with status 3."""
    base = _base_url(url)
    token = token.strip()
    if not token:
        fail(USAGE, f"no API token: pass --token or set AISERVICE_TOKEN; {_GET_A_TOKEN}.")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    try:
        with httpx.Client(
            base_url=base, headers=headers, timeout=httpx.Timeout(30.0, connect=10.0, read=None)
        ) as client:
            yield client
    except httpx.LocalProtocolError as exc:  # a header value h11 will not send
        fail(USAGE, f"the request cannot be sent ({exc}): check --token and --tenant.")
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        fail(
            UNREACHABLE,
            f"cannot reach the aiservice API at {base} ({_reason(exc)}): is it running? Start it with "
            "`aiservice serve`, or point --url or AISERVICE_URL at it.",
        )
    except httpx.TransportError as exc:
        fail(
            UNREACHABLE,
            f"lost the connection to the aiservice API at {base} ({_reason(exc)}); try again, or check "
            "--url or AISERVICE_URL.",
        )


def checked(response: httpx.Response) -> Any:
    """The JSON of a successful answer; any other answer exits: 4 when the credentials are refused
    (401, 403), else 1, with the problem's detail and the fields it names."""
    if response.is_success:
        try:
            return response.json()
        except ValueError:
            fail(PROBLEM, f"{response.url} answered without JSON: is --url the aiservice API?")
    status = REFUSED if response.status_code in (401, 403) else PROBLEM
    message = describe(response)
    if response.status_code == 401:
        message += f" Pass a valid token with --token or AISERVICE_TOKEN; {_GET_A_TOKEN}."
    fail(status, message)


def describe(response: httpx.Response) -> str:
    """``STATUS title: detail [field: message; ...]`` for a problem answer; the status and the start of
    the body for anything else (a proxy's error page, say)."""
    try:
        problem = response.json()
        detail = str(problem.get("detail") or problem.get("title") or "")
        errors = [f"{e['field']}: {e['message']}" for e in problem.get("errors") or []]
    except (ValueError, AttributeError, TypeError, KeyError):
        text = " ".join(response.text.split())[:200]
        return f"{response.status_code} {response.reason_phrase} from {response.url}: {text or '(no body)'}"
    fields = f" [{'; '.join(errors[:_FIELDS_SHOWN])}{'; ...' if len(errors) > _FIELDS_SHOWN else ''}]"
    title = problem.get("title") or response.reason_phrase
    return f"{response.status_code} {title}: {detail}{fields if errors else ''}"


def _base_url(url: str) -> str:
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        fail(USAGE, f"--url {url!r} is not an http(s) URL such as {DEFAULT_URL} (or set AISERVICE_URL).")
    return str(parsed).rstrip("/")


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__
