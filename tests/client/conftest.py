"""The SDK against a real service: the app over the test's container, served by uvicorn on a real socket in
a thread (its lifespan starts the container: outbox, training runner...). ``sdk`` is a ``Client`` or an
``AsyncClient`` (each test runs with both); the async one is driven from a loop of its own through
``Synced``, so one test body checks both surfaces."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import uvicorn

from aiservice.bootstrap import Container
from aiservice.client import AsyncClient, Client
from aiservice.interfaces.http.app import create_app
from tests.helpers import wait_until

T = TypeVar("T")


@contextmanager
def serve(container: Container) -> Iterator[str]:
    """The app (managing the container's lifecycle, as ``aiservice serve`` does) at ``http://host:port``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sdk-test-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, 0.01, "the server to start")
    assert thread.is_alive(), "the server thread ended before it started serving"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def service(container: Container) -> Iterator[str]:
    with serve(container) as url:
        yield url


class Portal:
    """An event loop in a thread of its own, to run the async client's coroutines from a sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sdk-test-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=300)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Synced:
    """The async client seen synchronously: awaited results, async iterators as iterators, and the
    SDK's own objects (resources, jobs) wrapped the same way. Data objects pass through unchanged."""

    def __init__(self, target: Any, portal: Portal) -> None:
        self._target = target
        self._portal = portal

    def __repr__(self) -> str:
        return repr(self._target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value):
            return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))
        return self._wrap(value)

    def _wrap(self, value: Any) -> Any:
        if inspect.iscoroutine(value):
            return self._wrap(self._portal.run(value))
        if isinstance(value, AsyncIterator):
            return self._iterate(value)
        kind = type(value)
        if kind.__name__.startswith("Async") and kind.__module__.startswith("aiservice.client."):
            return Synced(value, self._portal)
        return value

    def _iterate(self, iterator: AsyncIterator[Any]) -> Iterator[Any]:
        async def step() -> tuple[bool, Any]:
            try:
                return True, await iterator.__anext__()
            except StopAsyncIteration:
                return False, None

        while True:
            more, item = self._portal.run(step())
            if not more:
                return
            yield self._wrap(item)


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    running = Portal()
    yield running
    running.close()


Connect = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, portal: Portal) -> Iterator[Connect]:
    """``connect(url, token, tenant, **options)``: a sync ``Client``, or an ``AsyncClient`` through
    ``Synced``; every one made is closed after the test."""
    made: list[Any] = []

    def make(url: str, token: str | None = None, tenant: str | None = None, **options: Any) -> Any:
        if request.param == "sync":
            client = Client(url, token, tenant, **options)
            made.append(client.close)
            return client

        async def build() -> AsyncClient:
            return AsyncClient(url, token, tenant, **options)

        aclient = portal.run(build())  # made on the loop it is used from
        made.append(lambda: portal.run(aclient.close()))
        return Synced(aclient, portal)

    yield make
    for close in made:
        close()


@pytest.fixture
def token(container: Container) -> str:
    return container.tokens.issue("sdk-user", "acme", ["admin"], 3600)


@pytest.fixture
def sdk(connect: Connect, service: str, token: str) -> Any:
    """A client of the acme tenant with the admin role, against the live service."""
    return connect(service, token, "acme", retries=0)
