"""The transport-free half of the SDK: what a call is, how an answer is read, when to retry, how an upload
is framed and how an event stream is parsed. ``Client`` and ``AsyncClient`` only move bytes (httpx,
sync or async) and sleep; every decision is made here, once.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from aiservice.client.errors import ProblemError, TrainingJobError, parse_retry_after, problem_error
from aiservice.client.types import JobEvent, JobState, Page

T = TypeVar("T")
API_PREFIX = "/api/v1/ai"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 503})
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Reply:
    """An answer, whichever transport fetched it."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None


class Progress(Protocol):
    def reset(self) -> None: ...
    def advance(self, amount: int) -> None: ...


@dataclass(frozen=True)
class Upload:
    """A multipart body: text ``fields`` first (the service wants some before the file), then ``file``
    from bytes or a path, read in chunks so a large artifact is never held twice."""

    filename: str
    source: bytes | Path
    fields: Mapping[str, str] = field(default_factory=dict)
    boundary: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self) -> bytes:
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in self.fields.items()
        ]
        quoted = self.filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        return "".join(parts).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def file_size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    @property
    def length(self) -> int:
        return len(self._head()) + self.file_size + len(self._tail())

    def chunks(self, progress: Progress | None = None) -> Iterator[bytes]:
        """The body, in order; ``progress`` is told of each piece of the file sent (and reset first)."""
        if progress is not None:
            progress.reset()
        on_file_bytes = None if progress is None else progress.advance
        yield self._head()
        if isinstance(self.source, bytes):
            view = memoryview(self.source)
            for start in range(0, len(view), CHUNK_BYTES):
                piece = bytes(view[start : start + CHUNK_BYTES])
                yield piece
                if on_file_bytes is not None:
                    on_file_bytes(len(piece))
        else:
            with self.source.open("rb") as handle:
                while piece := handle.read(CHUNK_BYTES):
                    yield piece
                    if on_file_bytes is not None:
                        on_file_bytes(len(piece))
        yield self._tail()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP call and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[Reply], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    upload: Upload | None = None
    headers: Mapping[str, str] | None = None

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    def query(self) -> dict[str, Any] | None:
        """The parameters that are set (None values are left out)."""
        if not self.params:
            return None
        return {k: v for k, v in self.params.items() if v is not None}

    def body_headers(self) -> dict[str, str]:
        headers = dict(self.headers or {})
        if self.upload is not None:
            headers["Content-Type"] = self.upload.content_type
            headers["Content-Length"] = str(self.upload.length)
        return headers


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff: on 429 and 503 for any call (the service refused it before doing
    anything), and on a failed connection only for idempotent calls. ``Retry-After`` wins when sent;
    a wait longer than ``max_delay`` is not waited for: the error is raised instead."""

    retries: int = 3
    backoff: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, reply: Reply | None, idempotent: bool) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop (``attempt`` counts from 0)."""
        if attempt >= self.retries:
            return None
        if reply is None:
            if not idempotent:
                return None
        elif reply.status not in RETRY_STATUSES:
            return None
        backoff = self.backoff * (2**attempt) * (1 + random.random() / 4)  # jitter spreads retrying clients
        told = parse_retry_after(reply.headers.get("retry-after")) if reply is not None else None
        wait = told if told is not None else backoff
        return wait if wait <= self.max_delay else None


def problem_of(reply: Reply) -> ProblemError:
    """The exception an error answer stands for, with its problem document (or a made-up one)."""
    document: Any = None
    try:
        document = reply.json()
    except ValueError:
        document = None
    if not isinstance(document, Mapping):
        text = reply.content.decode("utf-8", "replace")[:500]
        document = {
            "type": "about:blank",
            "title": f"HTTP {reply.status}",
            "status": reply.status,
            "detail": text,
        }
    return problem_error(reply.status, {k.lower(): v for k, v in reply.headers.items()}, document)


def check(reply: Reply) -> Reply:
    if reply.status >= 400:
        raise problem_of(reply)
    return reply


def nothing(_reply: Reply) -> None:
    return None


def page_of(reply: Reply) -> Page:
    body = reply.json()
    return Page(items=list(body["items"]), next_cursor=body.get("nextCursor"))


def paged(method: str, path: str, params: Mapping[str, Any]) -> Callable[[str | None], Call[Page]]:
    """The call for the page after ``cursor`` (None: the first) of a keyset-paginated listing."""

    def page(cursor: str | None) -> Call[Page]:
        return Call(method, path, page_of, params={**params, "cursor": cursor})

    return page


def api(*parts: str | int) -> str:
    """A path under the API prefix, each part escaped (a model name may hold any character)."""
    return API_PREFIX + "".join("/" + quote(str(p), safe="") for p in parts)


class SseParser:
    """Server-Sent Events, fed text as it arrives; comment lines (keep-alives) are skipped."""

    def __init__(self) -> None:
        self._buffer = ""
        self.last_id: int | None = None

    def feed(self, text: str) -> list[JobEvent]:
        self._buffer += text.replace("\r\n", "\n")
        events = []
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            event = self._event(block)
            if event is not None:
                events.append(event)
        return events

    def _event(self, block: str) -> JobEvent | None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
        if "data" not in fields:
            return None
        event_id = int(fields["id"]) if fields.get("id", "").isdigit() else (self.last_id or 0)
        self.last_id = event_id
        return JobEvent(id=event_id, event=fields.get("event", "message"), data=json.loads(fields["data"]))


def raise_unless_succeeded(state: JobState) -> None:
    """A job that ended failed or cancelled as ``TrainingJobError`` (its stage and message)."""
    if state.status != "succeeded":
        error = state.error or {}
        raise TrainingJobError(state.id, state.status, error.get("stage"), error.get("message"))
