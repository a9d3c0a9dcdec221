"""Loads an uploaded artifact in a separate process with a time and memory limit before it is served."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact, Unavailable
from aiservice.domain.signature import Signature

_WORKER = "aiservice.infrastructure.runtimes.inspect_worker"
_ERRORS: dict[str, type[Exception]] = {"untrusted-artifact": UntrustedArtifact}


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
        process = subprocess.Popen(
            [sys.executable, "-m", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = self._supervise(process, json.dumps(request).encode())
        try:
            result = json.loads(out)
        except ValueError:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [
                f"exit status {process.returncode}"
            ]
            raise InvalidArtifact(f"The loader crashed on this artifact ({tail[0][:300]}).") from None
        if "error" in result:
            error = result["error"]
            if error["code"] == "runtime-unavailable":
                raise Unavailable(error["detail"], code="runtime-unavailable")
            kind = _ERRORS.get(error["code"], InvalidArtifact)
            raise kind(error["detail"], extra=error.get("extra") or {})  # type: ignore[call-arg]
        return Signature.from_json(result["signature"])

    def _supervise(self, process: subprocess.Popen[bytes], request: bytes) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + self._timeout
        watched = psutil.Process(process.pid)
        payload: bytes | None = request
        while True:
            try:
                return process.communicate(input=payload, timeout=0.05)
            except subprocess.TimeoutExpired:
                payload = None
            try:
                rss = watched.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if rss > self._memory:
                process.kill()
                process.communicate()
                raise InvalidArtifact(
                    f"Loading the artifact used more than {self._memory // 1024**2} MB; it was stopped."
                )
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                raise InvalidArtifact(
                    f"Loading the artifact took longer than {self._timeout:g} s; it was stopped."
                )
