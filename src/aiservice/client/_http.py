"""What the sync and async clients share about httpx: headers, answers as ``Reply``, transport failures as
the SDK's errors, the log line of a retry, and a download checked against its digest."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import httpx

from aiservice import __version__
from aiservice.client._core import Call, Reply
from aiservice.client.errors import (
    AiServiceError,
    IntegrityError,
    RequestTimeoutError,
    ServiceUnreachableError,
)

log = logging.getLogger("aiservice.client")
DEFAULT_TIMEOUT = 60.0


def base_headers(token: str | None, api_key: str | None, tenant: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"aiservice-client/{__version__}", "Accept": "application/json"}
    if token and api_key:
        raise ValueError("give a token or an api_key, not both")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    if tenant:
        headers["X-Tenant-ID"] = tenant
    return headers


def reply_of(response: httpx.Response) -> Reply:
    return Reply(response.status_code, response.headers, response.content)


def transport_error(url: str, error: httpx.TransportError) -> AiServiceError:
    """A connection that failed as ``ServiceUnreachableError``, a slow answer as ``RequestTimeoutError``."""
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return RequestTimeoutError(f"the service at {url} did not answer in time ({type(error).__name__})")
    return ServiceUnreachableError(url, str(error) or type(error).__name__)


def note_retry(
    call: Call[Any], attempt: int, delay: float, reply: Reply | None, error: Exception | None
) -> None:
    why = f"HTTP {reply.status}" if reply is not None else f"{type(error).__name__}: {error}"
    log.warning(
        "retrying %s %s in %.2f s (attempt %d) after %s",
        call.method,
        call.path,
        delay,
        attempt + 2,
        why,
        extra={"retry_delay": delay, "retry_status": None if reply is None else reply.status},
    )


class Digest:
    """The SHA-256 of a download as it arrives, checked against the ETag the service sends (its digest)."""

    def __init__(self, etag: str | None) -> None:
        self.expected = (etag or "").removeprefix("W/").strip('"') or None
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def verify(self) -> str:
        actual = self._hash.hexdigest()
        if self.expected is not None and actual != self.expected:
            raise IntegrityError(f"the download's SHA-256 is {actual}, the service names {self.expected}")
        return actual
