"""Waiting for a resource that ends (a training job, an AutoML study) by polling it, and following its
Server-Sent Events (a training job's progress, an AutoML study's trials): the
events as they come, resumed after the last one seen (``Last-Event-ID``) when the connection drops, a
bounded number of times in a row with a growing pause. The stream ends with the resource's final event;
a stream the service closes before it (shutting down) is resumed too, unless the resource has ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import httpx

from aiservice.client._core import Reply, SseParser, problem_of
from aiservice.client._http import transport_error
from aiservice.client.types import JobEvent

if TYPE_CHECKING:
    from aiservice.client.aio import AsyncClient
    from aiservice.client.sync import Client

RECONNECTS = 5  # a dropped event stream is resumed this many times in a row before the error is raised


def reconnect_delay(failures: int) -> float:
    """Seconds before the ``failures``-th reconnection in a row: 0.25, 0.5, 1, 2, 4 (a server that is gone
    is not hammered)."""
    return float(min(0.25 * 2 ** (failures - 1), 4.0))


def _headers(parser: SseParser) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if parser.last_id is not None:
        headers["Last-Event-ID"] = str(parser.last_id)
    return headers


def follow(client: Client, path: str, refresh: Callable[[], bool]) -> Iterator[JobEvent]:
    """``path``'s events; ``refresh`` reloads the resource and says whether it has ended."""
    parser = SseParser()
    failures = 0
    connected = False
    while True:
        try:
            with client._http.stream("GET", path, headers=_headers(parser), timeout=None) as r:
                if r.status_code >= 400:
                    raise problem_of(Reply(r.status_code, r.headers, r.read()))
                connected = True
                for text in r.iter_text():
                    for event in parser.feed(text):
                        failures = 0
                        yield event
                        if event.final:
                            refresh()
                            return
            if refresh():  # the service closed the stream without the final event
                return
            raise httpx.RemoteProtocolError("the event stream ended before the resource did")
        except httpx.TransportError as exc:
            failures += 1
            if not connected or failures > RECONNECTS:
                raise transport_error(client.url, exc) from exc
            time.sleep(reconnect_delay(failures))


async def afollow(
    client: AsyncClient, path: str, refresh: Callable[[], Awaitable[bool]]
) -> AsyncIterator[JobEvent]:
    """As ``follow``, for the async client."""
    parser = SseParser()
    failures = 0
    connected = False
    while True:
        try:
            async with client._http.stream("GET", path, headers=_headers(parser), timeout=None) as r:
                if r.status_code >= 400:
                    raise problem_of(Reply(r.status_code, r.headers, await r.aread()))
                connected = True
                async for text in r.aiter_text():
                    for event in parser.feed(text):
                        failures = 0
                        yield event
                        if event.final:
                            await refresh()
                            return
            if await refresh():
                return
            raise httpx.RemoteProtocolError("the event stream ended before the resource did")
        except httpx.TransportError as exc:
            failures += 1
            if not connected or failures > RECONNECTS:
                raise transport_error(client.url, exc) from exc
            await asyncio.sleep(reconnect_delay(failures))


def wait_for_end(
    finished: Callable[[], bool], what: Callable[[], str], timeout: float | None, poll: float
) -> None:
    """Poll ``finished`` (which refreshes the resource) every ``poll`` s until it is True;
    ``TimeoutError`` naming ``what()`` (the resource and its status) after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not finished():
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what()} after {timeout:g} s")
        time.sleep(poll)


async def await_end(
    finished: Callable[[], Awaitable[bool]], what: Callable[[], str], timeout: float | None, poll: float
) -> None:
    """As ``wait_for_end``, for the async client."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not await finished():
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what()} after {timeout:g} s")
        await asyncio.sleep(poll)
