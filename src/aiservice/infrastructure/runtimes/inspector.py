"""Loads an uploaded artifact in a separate process with a time and memory limit before it is served.

Each inspection runs in its own process, forked from a fork server that has already imported numpy
and the light frameworks, so isolation costs milliseconds rather than a fresh interpreter's seconds.
A crash, hang or memory blow-up of an untrusted artifact kills that child, never the service.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from importlib.util import find_spec
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, Unavailable, UntrustedArtifact
from aiservice.domain.signature import Signature
from aiservice.infrastructure.runtimes.inspect_worker import inspect_into

_PRELOAD = (
    "numpy",
    "sklearn",
    "skops.io",
    "xgboost",
    "onnxruntime",
    "aiservice.infrastructure.runtimes.registry",
)
_ERRORS: dict[str, type[InvalidArtifact]] = {"untrusted-artifact": UntrustedArtifact}
_context_lock = threading.Lock()
_context: Any = None


def _forkserver() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload([m for m in _PRELOAD if find_spec(m.split(".")[0]) is not None])
        return _context


class SubprocessArtifactInspector:
    def __init__(self, timeout_s: float = 120.0, memory_bytes: int = 4 * 1024**3) -> None:
        self._timeout = timeout_s
        self._memory = memory_bytes

    def inspect(self, artifact: Path, spec: LoadSpec) -> Signature:
        request = {
            "framework": spec.framework.value,
            "filename": spec.filename,
            "path": str(artifact),
            "allowPickle": spec.allow_pickle,
            "configuration": spec.configuration,
        }
        context = _forkserver()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=inspect_into, args=(request, sender), daemon=True)
        process.start()
        sender.close()
        try:
            result = self._supervise(process, receiver)
        finally:
            receiver.close()
            process.join(timeout=5)
        if result.get("peakRssBytes", 0) > self._memory:  # a load too quick for the watcher to catch
            raise self._too_big()
        if "error" in result:
            error = result["error"]
            if error["code"] == "runtime-unavailable":
                raise Unavailable(error["detail"], code="runtime-unavailable")
            kind = _ERRORS.get(error["code"], InvalidArtifact)
            raise kind(error["detail"], extra=error.get("extra") or {})
        return Signature.from_json(result["signature"])

    def _too_big(self) -> InvalidArtifact:
        return InvalidArtifact(
            f"Loading the artifact used more than {self._memory // 1024**2} MB; it was stopped."
        )

    def _supervise(self, process: Any, receiver: Connection) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout
        watched = psutil.Process(process.pid)
        while True:
            if receiver.poll(0.02):
                try:
                    result: dict[str, Any] = receiver.recv()
                    return result
                except EOFError:  # the child died without answering
                    pass
            if not process.is_alive() and not receiver.poll(0):
                process.join()
                raise InvalidArtifact(
                    f"The loader crashed on this artifact (exit status {process.exitcode})."
                )
            try:
                rss = watched.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if rss > self._memory:
                process.kill()
                raise self._too_big()
            if time.monotonic() > deadline:
                process.kill()
                raise InvalidArtifact(
                    f"Loading the artifact took longer than {self._timeout:g} s; it was stopped."
                )
