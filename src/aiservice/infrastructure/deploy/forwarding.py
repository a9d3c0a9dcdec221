"""The fronts' client to replicas: HTTP/1.1 over kept-alive loopback connections, parsed by httptools.

The body goes out as the bytes it came in as, and the answer comes back the same way: no parse, no
re-encode. Only a failure before any response (refused, reset, a timeout to connect) counts as
unreachable, so the caller may send it once more; a replica's own error answer is passed back as is.
A kept-alive connection is reused only within ``IDLE_REUSE_S`` of its last answer, well inside the
replica's keep-alive timeout (uvicorn's 5 s), so a request never goes out on a connection the replica
is closing; one it closed earlier is noticed and dropped.

Why not a general client: the forward is the deployment path's whole overhead, and it is paid on
every prediction. At 32 concurrent requests through two workers (``bench/deployments.py``), httpx's
``AsyncClient`` forwarded about 330 requests/s where the replicas alone answered 2,900; aiohttp's
client brought the stable endpoint to 0.29x the direct path (ADR 20). This client does one thing
(POST bytes to a replica we run, read status, a few headers and a ``Content-Length`` or chunked
body) with the parser uvicorn itself uses, and nothing per request that the forward does not need.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

from aiservice.application.deploying.ports import Forwarded, ReplicaUnreachable

PASSED_BACK = (b"retry-after", b"www-authenticate", b"inference-header-content-length")
IDLE_KEPT = 64  # idle connections kept per replica address
IDLE_REUSE_S = 2.0
_FRAMING = (b"content-length", b"transfer-encoding")  # without either, the body ends with the connection


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Forwarded] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self.reusable = True
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not asyncio's class

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ReplicaUnreachable(f"a malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._headers_done and not any(n in _FRAMING for n, _ in self._headers):
                self.on_message_complete()  # a body whose end is the connection's end (HTTP/1.0)
            else:
                self._fail(ReplicaUnreachable("the connection closed before the answer ended"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = not self.closed and self._parser.should_keep_alive()
        content_type = b"application/json"
        kept: list[tuple[str, str]] = []
        for name, value in self._headers:
            if name == b"content-type":
                content_type = value
            elif name in PASSED_BACK:
                kept.append((name.decode("latin-1"), value.decode("latin-1")))
        answer = Forwarded(
            status=self._parser.get_status_code(),
            content_type=content_type.decode("latin-1"),
            body=b"".join(self._body),
            headers=tuple(kept),
        )
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    def _fail(self, error: ReplicaUnreachable) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def request(self, head: bytes, body: bytes) -> asyncio.Future[Forwarded]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._headers_done = [], [], False
        self._parser = httptools.HttpResponseParser(self)
        self.transport.writelines((head, body))
        return self._answer


class HttpReplicaClient:
    """A pool of kept-alive connections per replica address (the group's shared port)."""

    def __init__(self, timeout_s: float = 60.0, connect_timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: dict[str, deque[_Connection]] = {}
        self._addresses: dict[str, tuple[str, int, bytes]] = {}

    async def send(self, endpoint: str, path: str, body: bytes, headers: dict[str, str]) -> Forwarded:
        host, port, host_header = self._address(endpoint)
        head = _head(path, host_header, body, headers)
        idle = self._idle.setdefault(endpoint, deque())
        fresh_after = time.monotonic() - IDLE_REUSE_S
        while idle:  # the newest first
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= fresh_after:
                return await self._exchange(endpoint, connection, head, body)
            _close(connection)
        return await self._exchange(endpoint, await self._connect(host, port), head, body)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                _close(connection)
        self._idle.clear()

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(_Connection, host, port)
        except (OSError, TimeoutError) as error:
            raise ReplicaUnreachable(f"cannot connect: {error or type(error).__name__}") from None
        return connection

    async def _exchange(self, endpoint: str, connection: _Connection, head: bytes, body: bytes) -> Forwarded:
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await connection.request(head, body)
        except TimeoutError:
            _close(connection)
            raise ReplicaUnreachable("timed out") from None
        idle = self._idle.setdefault(endpoint, deque())
        if connection.reusable and not connection.closed and len(idle) < IDLE_KEPT:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            _close(connection)
        return answer

    def _address(self, endpoint: str) -> tuple[str, int, bytes]:
        known = self._addresses.get(endpoint)
        if known is None:
            parts = urlsplit(endpoint)
            if parts.scheme != "http" or parts.hostname is None:
                raise ReplicaUnreachable(f"not a plain http address: {endpoint!r}")
            port = parts.port or 80
            known = (parts.hostname, port, parts.netloc.encode("latin-1"))
            self._addresses[endpoint] = known
        return known


def _close(connection: _Connection) -> None:
    if connection.transport is not None and not connection.closed:
        connection.transport.close()


def _head(path: str, host: bytes, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [b"POST ", path.encode("latin-1"), b" HTTP/1.1\r\nhost: ", host]
    lines += [b"\r\ncontent-length: ", str(len(body)).encode()]
    for name, value in headers.items():
        lines += [b"\r\n", name.encode("latin-1"), b": ", value.encode("latin-1")]
    lines.append(b"\r\n\r\n")
    return b"".join(lines)
