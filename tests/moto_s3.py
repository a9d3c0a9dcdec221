"""A real S3 API for the tests: moto's server in a child process, on a free local port.

moto is in the test extra, so these tests always run. Credentials are passed explicitly (never through the
environment), as the service passes them from its settings.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aiservice.infrastructure.datasets import S3Options

CREDENTIALS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MotoServer:
    """One moto S3 server process; ``stop`` kills it by its PID."""

    def __init__(self, log: Path) -> None:
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up(log)

    def _wait_until_up(self, log: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"moto server exited early:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"moto server did not answer within 30 s:\n{log.read_text(errors='replace')}")

    @property
    def options(self) -> S3Options:
        return S3Options(endpoint_url=self.endpoint, **CREDENTIALS)

    def client(self) -> Any:
        """A boto3 S3 client for arranging buckets and objects."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["key"],
            aws_secret_access_key=CREDENTIALS["secret"],
            region_name=CREDENTIALS["region"],
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
