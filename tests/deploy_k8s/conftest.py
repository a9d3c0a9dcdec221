"""kmock's Kubernetes API emulator on a loopback port, in a thread with its own event loop.

kmock is an asyncio server and its pytest plugin needs pytest-asyncio (switched off in pyproject's
addopts), while the deployer uses the official, synchronous client: so the emulator runs on a loop of
its own thread and the tests talk to it over HTTP, as the deployer would to a cluster.

The emulator stores objects as given and merges patches into them; it neither defaults nor validates
them. One thing server-side apply needs it lacks: a PATCH to an object that does not exist is a 404
there, where an API server creates the object. ``ApplyingEmulator`` adds that, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kmock
import pytest
from kubernetes import client

RESOURCES = (
    "apps/v1/deployments",
    "v1/services",
    "autoscaling/v2/horizontalpodautoscalers",
    "policy/v1/poddisruptionbudgets",
)


class ApplyingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, where a server-side apply PATCH creates a missing object as Kubernetes does."""

    async def _handle(self, request: kmock.Request) -> Any:
        content_type = request.headers.get("Content-Type", "")
        is_apply = request.method == "PATCH" and content_type.startswith("application/apply-patch")
        if is_apply and request.resource is not None and request.name and not request.subresource:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self.objects:
                    self.objects[key] = request.data
                elif self.objects[key].deleted:
                    self.objects[key].create(request.data)
        return await super()._handle(request)


@dataclass
class Emulator:
    """The running emulator: its URL, its request log, and a client configured for it."""

    handler: Any
    url: str
    api: client.ApiClient

    def requests(self, method: str | None = None) -> list[Any]:
        return [r for r in list(self.handler) if method is None or r.method == method]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        async with ApplyingEmulator() as handler, kmock.Server(handler) as server:
            for resource in RESOURCES:
                handler.resources[resource] = {}  # listable before the first object exists
            box.update(
                handler=handler, url=str(server.url).rstrip("/"), loop=asyncio.get_running_loop(), stop=stop
            )
            started.set()
            await stop.wait()

    access_log = logging.getLogger("aiohttp.access")  # one line per request: noise in a test's output
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="kmock", daemon=True)
    thread.start()
    assert started.wait(10), "kmock did not start"
    api = client.ApiClient(client.Configuration(host=box["url"]))
    try:
        yield Emulator(handler=box["handler"], url=box["url"], api=api)
    finally:
        api.close()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        access_log.setLevel(level)
