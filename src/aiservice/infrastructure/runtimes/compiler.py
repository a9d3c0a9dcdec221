"""Parent side of automatic ONNX compilation: runs the conversion in an isolated, bounded child."""

from __future__ import annotations

import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiservice.application.ports import LoadSpec
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.inspect_worker import spec_request
from aiservice.infrastructure.runtimes.inspector import IsolatedFailure, run_isolated
from aiservice.infrastructure.runtimes.onnx_compile import compile_into

COMPILE_TIMEOUT_S = 300.0


class SubprocessOnnxCompiler:
    def __init__(
        self,
        timeout_s: float = COMPILE_TIMEOUT_S,
        memory_bytes: int = 4 * 1024**3,
        archive_limits: ArchiveLimits | None = None,
    ) -> None:
        self._timeout = timeout_s
        self._memory = memory_bytes
        self._archive_limits = archive_limits

    def compile(self, artifact: Path, spec: LoadSpec, out: Path) -> dict[str, Any]:
        request = spec_request(artifact, spec, self._archive_limits, out=str(out))
        try:
            report = run_isolated(
                _compile_beside_out, request, self._timeout, self._memory, what="Compiling to ONNX"
            )
        except IsolatedFailure as exc:
            return {"kept": False, "form": "native", "reason": str(exc)}
        report.pop("peakRssBytes", None)
        return report


def _compile_beside_out(request: dict[str, Any], sender: Connection) -> None:
    """Process target: ``compile_into``, with the child's scratch files (an exporter's temporary
    folder) in the parent's compile folder, where they go with it, or with its sweep after a crash."""
    tempfile.tempdir = str(Path(request["out"]).parent)
    compile_into(request, sender)
