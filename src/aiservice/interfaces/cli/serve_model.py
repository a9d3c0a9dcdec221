"""``aiservice serve-model``: one replica of a deployment revision (ADR 20).

The service's own app, narrowed by ``bootstrap.model_server``: one pinned version, no background
work, and the fronts' replica token trusted. What this module adds is the replica's edge:

- the version is loaded and warmed during the app's startup, and the sockets start listening only
  after that (they are handed over bound but not listening), so a replica takes no connection, on the
  shared port or on its own, before it can answer it at once;
- ``X-Aiservice-Replica-Token`` becomes ``Authorization: Replica <token>`` for the authenticator chain
  (it wins over any other credential the request carries);
- every answer says which replica gave it (``X-Aiservice-Replica``);
- ``GET /health/replica`` on the replica's own port (the one socket that reaches this process alone;
  the shared port reaches any replica of the group) reports the requests in flight (now, and on average
  over the last 10 s) and the p95 latency of the last minute: the deployer's probe and its autoscaling
  figures.
"""

from __future__ import annotations

import hmac
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from aiservice.interfaces.cli.exits import PROBLEM, fail
from aiservice.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from aiservice.bootstrap import Container
    from aiservice.bootstrap.model_server import ReplicaOf

TOKEN_HEADER = b"x-aiservice-replica-token"
REPLICA_HEADER = b"x-aiservice-replica"
STATUS_PATH = "/health/replica"
LATENCY_WINDOW_S = 60.0  # the p95 reported is of this last minute's POSTs
CONCURRENCY_WINDOW_S = 10.0
STARTUP_FAILURE = 3  # uvicorn's status for an app that cannot start


class CannotServe(RuntimeError):
    """The replica's version could not be loaded or warmed."""


class ReplicaFront:
    """The ASGI edge of a replica around the service's app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        replica: int,
        warm: Callable[[], Awaitable[object]],
        *,
        status_port: int | None,
        describe: str = "the replica",
        trusted_token: str | None = None,
    ) -> None:
        """``warm`` runs once the app has started and before any socket listens; ``status_port``:
        where ``GET /health/replica`` is answered (None: on every socket); a call carrying
        ``trusted_token`` came from a front, which logs, measures and audits it (``TRUSTED_FRONT``)."""
        self.app = app
        from aiservice.interfaces.http.trusted_front import (
            TRUSTED_FRONT,  # not at import: the CLI starts fast
        )

        self._trusted = trusted_token.encode() if trusted_token else None
        self._mark = TRUSTED_FRONT
        self.replica = str(replica).encode()
        self._warm = warm
        self._status_port = status_port
        self._describe = describe
        self.in_flight = 0
        self._latencies: deque[tuple[float, float]] = deque(maxlen=4096)  # (ended at, duration in ms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == STATUS_PATH and self._status_here(scope):
            await self._status(send)
        else:
            await self._request(scope, receive, send)

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        token = next((value for name, value in headers if name == TOKEN_HEADER), None)
        if token is not None:
            kept = [(name, value) for name, value in headers if name != b"authorization"]
            scope = {**scope, "headers": [*kept, (b"authorization", b"Replica " + token)]}
            if self._trusted is not None and hmac.compare_digest(token, self._trusted):
                scope[self._mark] = True

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REPLICA_HEADER, self.replica)]
            await send(message)

        started = time.monotonic()
        self.in_flight += 1
        try:
            await self.app(scope, receive, send_marked)
        finally:
            self.in_flight -= 1
            if scope["method"] == "POST":
                ended = time.monotonic()
                self._latencies.append((ended, (ended - started) * 1000))

    def p95_ms(self) -> float | None:
        """The 95th percentile of the last minute's POST durations; None when there were none."""
        horizon = time.monotonic() - LATENCY_WINDOW_S
        while self._latencies and self._latencies[0][0] < horizon:
            self._latencies.popleft()
        if not self._latencies:
            return None
        durations = sorted(duration for _, duration in self._latencies)
        return round(durations[math.ceil(0.95 * len(durations)) - 1], 3)

    def mean_in_flight(self, window_s: float = CONCURRENCY_WINDOW_S) -> float:
        """Requests in flight on average over the last ``window_s`` (Little's law: the time the POSTs
        that ended in it took, over its length), steadier than the count at one instant."""
        now = time.monotonic()
        busy_ms = sum(min(ms, window_s * 1000) for ended, ms in self._latencies if ended >= now - window_s)
        return round(busy_ms / 1000 / window_s, 3)

    def _status_here(self, scope: Scope) -> bool:
        server = scope.get("server")
        return self._status_port is None or (server is not None and server[1] == self._status_port)

    async def _status(self, send: Send) -> None:
        body = orjson.dumps(
            {
                "replica": int(self.replica),
                "pid": os.getpid(),
                "inFlight": self.in_flight,
                "meanInFlight": self.mean_in_flight(),
                "p95Ms": self.p95_ms(),
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (REPLICA_HEADER, self.replica)],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_when_warm(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self._warm()
                except Exception as exc:  # a load error of any kind: the replica cannot serve
                    # Raised into the app's own lifespan, which reports the startup failed, closes the
                    # container and ends, as for any failure at startup.
                    raise CannotServe(f"{self._describe} cannot be served: {_reason(exc)}") from exc
            await send(message)

        await self.app(scope, receive, send_when_warm)


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return " ".join(str(detail).split())[:500]


def shared_socket(host: str, port: int) -> socket.socket:
    """The group's port, bound with SO_REUSEPORT beside the other replicas of the revision (and the
    deployer's reservation); not listening yet: uvicorn listens once the app has started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_model(
    deployment: Annotated[str, typer.Option(help="The deployment's name")],
    tenant: Annotated[str, typer.Option(help="The deployment's tenant")],
    revision: Annotated[
        int | None, typer.Option(help="The revision to serve (default: the one asked for last)")
    ] = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port, shared with the revision's other replicas (default: PORT)")
    ] = None,
    replica_id: Annotated[int, typer.Option(help="This replica's number, sent in X-Aiservice-Replica")] = 0,
    status_fd: Annotated[int | None, typer.Option(hidden=True)] = None,  # a socket of its own (deployer)
    spawner_pid: Annotated[int | None, typer.Option(hidden=True)] = None,  # die with this process
) -> None:
    """Serve one replica of a deployment revision: its model version only, warm before it listens.
    Stops on SIGTERM once the requests in flight are answered (GRACEFUL_SHUTDOWN_SECONDS at most)."""
    if spawner_pid is not None:
        from aiservice.infrastructure.lifeline import die_with_spawner

        die_with_spawner(spawner_pid)  # first of all: a replica never outlives the service that wants it
    from aiservice.domain.errors import DomainError
    from aiservice.infrastructure.observability.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        _serve(settings, deployment, tenant, revision, host, port, replica_id, status_fd)
    except (DomainError, ConfigurationError) as exc:
        fail(PROBLEM, f"deployment {deployment!r} of tenant {tenant!r} cannot be served: {_reason(exc)}")


def _serve(
    settings: Settings,
    deployment: str,
    tenant: str,
    revision: int | None,
    host: str,
    port: int | None,
    replica: int,
    status_fd: int | None,
) -> None:
    import uvicorn

    from aiservice.bootstrap.model_server import model_server
    from aiservice.interfaces.http.app import create_app

    container, target = model_server(settings, tenant, deployment, revision)
    sockets = [shared_socket(host, settings.port if port is None else port)]
    status_port = None
    if status_fd is not None:
        own = socket.socket(fileno=status_fd)
        sockets.append(own)
        status_port = own.getsockname()[1]
    describe = f"deployment {target.deployment!r} revision {target.revision} (version {target.version})"
    front = ReplicaFront(
        create_app(container),
        replica,
        lambda: _warm_or_exit(container, target, describe),
        status_port=status_port,
        trusted_token=settings.replica_token.get_secret_value() if settings.replica_token else None,
    )
    expose_load(container, front)
    config = uvicorn.Config(
        front,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.graceful_shutdown_seconds)),
    )
    uvicorn.Server(config).run(sockets=sockets)


def expose_load(container: Container, front: ReplicaFront) -> None:
    """The replica's load on its ``/metrics`` too, for a Kubernetes autoscaler on custom metrics."""
    container.metrics.watch_replica(lambda: float(front.in_flight), front.p95_ms)


async def _warm_or_exit(container: Container, target: ReplicaOf, describe: str) -> None:
    """Warm the version, or say in one line on stderr why it cannot be served (the line the deployer
    reports) and exit at once: nothing was served, and uvicorn's own way out logs a traceback."""
    try:
        await _warm(container, target)
    except Exception as exc:
        print(f"error: {describe} cannot be served: {_reason(exc)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(STARTUP_FAILURE)


async def _warm(container: Container, target: ReplicaOf) -> None:
    from aiservice.application.serving.replica import warm

    started = time.perf_counter()
    loaded = await warm(
        container.inference, target.tenant_id, target.deployment, target.model_id, target.version
    )
    _log_ready(target, loaded, time.perf_counter() - started)


def _log_ready(target: ReplicaOf, loaded_bytes: int, seconds: float) -> None:
    import structlog

    structlog.get_logger("aiservice.replica").info(
        "replica warm",
        deployment=target.deployment,
        revision=target.revision,
        model_id=target.model_id,
        version=target.version,
        memory_bytes=loaded_bytes,
        load_s=round(seconds, 3),
    )
