"""The fronts' client to replicas (``HttpReplicaClient``), against real sockets: a uvicorn app for the
answers a replica gives, and raw asyncio servers for the ones a crashing or hung replica gives."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from aiservice.application.deploying.ports import Forwarded, ReplicaUnreachable
from aiservice.infrastructure.deploy import forwarding
from aiservice.infrastructure.deploy.forwarding import HttpReplicaClient

JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """A replica-like app: echoes what it got, and counts the connections it was reached on."""

    def __init__(self) -> None:
        self.connections: set[tuple[str, int]] = set()
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.connections.add(scope["client"])
        self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/chunked":  # no Content-Length: a streamed answer
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
            )
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        status = 429 if scope["path"] == "/busy" else 200
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", b"3"),
            (b"x-internal", b"not for callers"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"echo":' + body + b"}"})


@pytest.fixture(scope="module")
def replica() -> Iterator[tuple[str, Replica]]:
    app = Replica()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


def run(make: Callable[[HttpReplicaClient], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = HttpReplicaClient(timeout_s=2.0, connect_timeout_s=1.0)
        try:
            return await make(client)
        finally:
            await client.close()

    return asyncio.run(go())


def test_the_body_goes_out_as_is_and_the_answer_comes_back_with_only_the_headers_callers_need(
    replica: tuple[str, Replica],
) -> None:
    url, app = replica
    body = b'{"input": {"a": 1.5, "b": "x"}}'
    answer: Forwarded = run(lambda c: c.send(url, "/predict", body, {**JSON, "x-request-id": "front-123"}))
    assert answer.status == 200
    assert answer.body == b'{"echo":' + body + b"}"
    assert answer.content_type == "application/json"
    assert answer.headers == (("retry-after", "3"),)  # x-internal stays behind
    sent = app.seen[-1]
    assert sent["x-request-id"] == "front-123" and sent["content-length"] == str(len(body))


def test_a_replica_error_answer_is_passed_back_not_retried(replica: tuple[str, Replica]) -> None:
    url, app = replica
    before = len(app.seen)
    answer: Forwarded = run(lambda c: c.send(url, "/busy", b"{}", JSON))
    assert answer.status == 429 and len(app.seen) == before + 1


def test_a_streamed_answer_is_read_whole(replica: tuple[str, Replica]) -> None:
    url, _ = replica
    answer: Forwarded = run(lambda c: c.send(url, "/chunked", b"{}", JSON))
    assert answer.body == b"one,two,three" and answer.content_type == "text/plain"


def test_connections_are_kept_alive_between_requests_and_renewed_after_idling(
    replica: tuple[str, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = replica

    async def three_then_idle(c: HttpReplicaClient) -> None:
        for _ in range(3):
            await c.send(url, "/predict", b"{}", JSON)
        await asyncio.sleep(0.3)  # longer than the reuse window below
        await c.send(url, "/predict", b"{}", JSON)

    monkeypatch.setattr(forwarding, "IDLE_REUSE_S", 0.2)
    app.connections.clear()
    run(three_then_idle)
    assert len(app.connections) == 2  # the first three on one connection, the fourth on a new one


def test_concurrent_requests_each_get_their_own_answer(replica: tuple[str, Replica]) -> None:
    url, _ = replica

    async def many(c: HttpReplicaClient) -> list[Forwarded]:
        bodies = [f'{{"n": {i}}}'.encode() for i in range(50)]
        return list(await asyncio.gather(*(c.send(url, "/predict", b, JSON) for b in bodies)))

    answers = run(many)
    assert [a.body for a in answers] == [f'{{"echo":{{"n": {i}}}}}'.encode() for i in range(50)]


def test_a_closed_port_is_unreachable() -> None:
    port = free_port()
    with pytest.raises(ReplicaUnreachable, match="cannot connect"):
        run(lambda c: c.send(f"http://127.0.0.1:{port}", "/predict", b"{}", JSON))


def raw_server(answer: bytes | None) -> Callable[[HttpReplicaClient], Awaitable[Forwarded]]:
    """A replica that reads the request, writes ``answer`` (None: nothing) and then hangs up, or,
    for ``b"hang"``, never answers."""

    async def use(c: HttpReplicaClient) -> Forwarded:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                if answer == b"hang":
                    await asyncio.sleep(10)
                if answer:
                    writer.write(answer)
                    await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await c.send(f"http://127.0.0.1:{port}", "/predict", b"{}", JSON)

    return use


def test_a_replica_that_dies_before_answering_is_unreachable() -> None:
    with pytest.raises(ReplicaUnreachable, match="closed before the answer"):
        run(raw_server(None))


def test_a_replica_that_dies_halfway_through_its_answer_is_unreachable() -> None:
    half = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"pred'
    with pytest.raises(ReplicaUnreachable, match="closed before the answer"):
        run(raw_server(half))


def test_an_answer_ended_by_closing_the_connection_is_whole() -> None:
    until_close = b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"prediction": 1}'
    answer: Forwarded = run(raw_server(until_close))
    assert answer.status == 200 and answer.body == b'{"prediction": 1}'


def test_garbage_is_not_an_answer() -> None:
    with pytest.raises(ReplicaUnreachable, match="malformed"):
        run(raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))


def test_a_hung_replica_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(ReplicaUnreachable, match="timed out"):
        run(raw_server(b"hang"))
    assert time.monotonic() - started < 5
