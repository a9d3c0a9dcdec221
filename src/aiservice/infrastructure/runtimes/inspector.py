"""Loads an uploaded artifact in a separate process with a time and memory limit before it is served.

Each inspection runs in its own process, forked from a fork server that has already imported numpy
and the light frameworks, so isolation costs milliseconds rather than a fresh interpreter's seconds.
A crash, hang or memory blow-up of an untrusted artifact kills that child, never the service, and
every child dies with the service (see ``lifeline``).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from importlib.util import find_spec
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, Unavailable, UnsafeArchive, UntrustedArtifact
from aiservice.domain.signature import Signature
from aiservice.infrastructure.lifeline import run_tied
from aiservice.infrastructure.runtimes.archives import ArchiveLimits, check_if_zip
from aiservice.infrastructure.runtimes.inspect_worker import inspect_into, spec_request
from aiservice.infrastructure.runtimes.registry import installed

_ERRORS: dict[str, type[InvalidArtifact]] = {
    "untrusted-artifact": UntrustedArtifact,
    "unsafe-archive": UnsafeArchive,
}
_context_lock = threading.Lock()
_context: Any = None


def forkserver_context() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(_preload())
        return _context


def _preload() -> list[str]:
    """numpy, what the installed plugins ask for (their light frameworks), and the registry itself."""
    wanted = ["numpy", *installed().preload(), "aiservice.infrastructure.runtimes.registry"]
    return [m for m in wanted if find_spec(m.split(".")[0]) is not None]


def tied_process(target: Callable[..., None], *args: Any) -> Any:
    """A daemon process (not started) from the fork server, running ``target(*args)``, that dies when
    the service dies, even by ``kill -9``."""
    return forkserver_context().Process(target=run_tied, args=(target, *args), daemon=True)


def _nothing() -> None:
    """A child that only proves the fork server is up."""


def warm_fork_server() -> None:
    """Start the fork server now (its preload imports take seconds) rather than in the first upload
    inspection or training job; meant for a background thread at service start."""
    process = tied_process(_nothing)
    process.start()
    process.join(timeout=120)


class IsolatedFailure(Exception):
    """The child crashed, ran out of time or used too much memory; the message says which."""


def run_isolated(
    target: Callable[[dict[str, Any], Connection], None],
    request: dict[str, Any],
    timeout_s: float,
    memory_bytes: int,
    what: str = "Loading the artifact",
) -> dict[str, Any]:
    """Run ``target(request, pipe)`` in a child forked from the fork server, bounded in time and
    resident memory; returns what the child sent."""
    context = forkserver_context()
    receiver, sender = context.Pipe(duplex=False)
    process = tied_process(target, request, sender)
    process.start()
    sender.close()
    too_big = f"{what} used more than {memory_bytes // 1024**2} MB; it was stopped."
    try:
        result = _supervise(process, receiver, timeout_s, memory_bytes, what, too_big)
    finally:
        receiver.close()
        process.join(timeout=5)
    if result.get("peakRssBytes", 0) > memory_bytes:  # a child too quick for the watcher to catch
        raise IsolatedFailure(too_big)
    return result


def _supervise(
    process: Any, receiver: Connection, timeout_s: float, memory_bytes: int, what: str, too_big: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    try:
        watched: psutil.Process | None = psutil.Process(process.pid)
    except psutil.NoSuchProcess:  # already ended and reaped (a crash on start): its exit status tells
        watched = None
    while True:
        if receiver.poll(0.02):
            try:
                result: dict[str, Any] = receiver.recv()
                return result
            except EOFError:  # the child died without answering (the pipe stays at EOF: stop polling it)
                raise _crashed(process, what) from None
        if not process.is_alive() and not receiver.poll(0):
            raise _crashed(process, what)
        try:
            rss = watched.memory_info().rss if watched is not None else 0
        except psutil.NoSuchProcess:  # ended just now: the next turn reads its answer or its exit
            rss = 0
        if rss > memory_bytes:
            process.kill()
            raise IsolatedFailure(too_big)
        if time.monotonic() > deadline:
            process.kill()
            raise IsolatedFailure(f"{what} took longer than {timeout_s:g} s; it was stopped.")


def _crashed(process: Any, what: str) -> IsolatedFailure:
    process.join(timeout=5)
    return IsolatedFailure(f"{what} crashed the worker process (exit status {process.exitcode}).")


class SubprocessArtifactInspector:
    def __init__(
        self,
        timeout_s: float = 120.0,
        memory_bytes: int = 4 * 1024**3,
        archive_limits: ArchiveLimits | None = None,
    ) -> None:
        self._timeout = timeout_s
        self._memory = memory_bytes
        self._archive_limits = archive_limits or ArchiveLimits()

    def inspect(self, artifact: Path, spec: LoadSpec) -> Signature:
        # Before any child reads a member: a zip bomb or a member escaping its folder stops here.
        check_if_zip(artifact, self._archive_limits)
        try:
            request = spec_request(artifact, spec, self._archive_limits)
            result = run_isolated(inspect_into, request, self._timeout, self._memory)
        except IsolatedFailure as exc:
            raise InvalidArtifact(str(exc)) from None
        if "error" in result:
            error = result["error"]
            if error["code"] == "runtime-unavailable":
                raise Unavailable(error["detail"], code="runtime-unavailable")
            kind = _ERRORS.get(error["code"], InvalidArtifact)
            raise kind(error["detail"], extra=error.get("extra") or {})
        return Signature.from_json(result["signature"])
