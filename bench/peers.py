"""The comparison peer of bench/serving.py: Seldon MLServer with its scikit-learn runtime, at its default
settings, in a virtual environment of its own (its dependencies must not meet ours).

The venv is made once under ``.bench/venvs`` of the checkout (ignored by git) and reused; the first run
installs the pinned versions from PyPI (about 20 s here). MLServer 1.7.1 needs uvloop 0.21.0: newer
uvloop breaks it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

MLSERVER_PINS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
VENVS = Path(__file__).resolve().parent.parent / ".bench" / "venvs"
STARTUP_TIMEOUT_S = 120.0


def mlserver_venv() -> Path:
    """The peer's venv, installed on first use; its folder is named after the pins, so a new pin gets a
    new venv."""
    folder = VENVS / ("mlserver-" + MLSERVER_PINS[0].split("==")[1])
    binary = folder / "bin" / "mlserver"
    marker = folder / ".installed"
    if marker.exists() and marker.read_text() == "\n".join(MLSERVER_PINS) and binary.exists():
        return folder
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *MLSERVER_PINS], check=True)
    marker.write_text("\n".join(MLSERVER_PINS))
    return folder


class MLServerPeer:
    """``mlserver start`` over a folder of scikit-learn models saved with joblib, as its docs show."""

    def __init__(self, workdir: Path, models: dict[str, Any], port: int, metrics_port: int) -> None:
        self.folder = workdir / "mlserver"
        self.port = port
        self.metrics_port = metrics_port
        self.url = f"http://127.0.0.1:{port}"
        self.models = models
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mlserver.log"
        self.version = MLSERVER_PINS[0].split("==")[1]

    def start(self) -> float:
        import joblib

        venv = mlserver_venv()
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "http_port": self.port,
            "grpc_port": 0,
            "metrics_port": self.metrics_port,
            "host": "127.0.0.1",
        }
        (self.folder / "settings.json").write_text(json.dumps(settings))
        for name, estimator in self.models.items():
            model_dir = self.folder / name
            model_dir.mkdir(exist_ok=True)
            joblib.dump(estimator, model_dir / "model.joblib")
            model_settings = {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
            (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "mlserver"), "start", str(self.folder)],
                cwd=self.folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started = time.perf_counter()
        while time.perf_counter() - started < STARTUP_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlserver exited with {self.proc.returncode}: {self._tail()}")
            if all(self._ready(name) for name in self.models):
                return time.perf_counter() - started
            time.sleep(0.2)
        raise RuntimeError(f"mlserver did not get ready in {STARTUP_TIMEOUT_S:.0f}s: {self._tail()}")

    def _ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/models/{name}/ready", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def infer_url(self, name: str) -> str:
        return f"{self.url}/v2/models/{name}/infer"

    @property
    def pids(self) -> list[int]:
        """The server and its inference worker processes (MLServer's parallel workers)."""
        import psutil

        if self.proc is None:
            return []
        root = psutil.Process(self.proc.pid)
        return [root.pid, *(c.pid for c in root.children(recursive=True))]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
