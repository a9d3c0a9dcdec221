"""Small helpers the tests share: counting rows, listing stored files, uploading versions, waiting for
something to happen."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.interfaces.http.app import create_app

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and return that.
    After ``timeout`` seconds without, an AssertionError names ``what`` (a callable is asked then, so it
    can tell what it last saw). For waiting on something that will happen, never on something that
    must not (that wants a pause and a look)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            waited_for = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {waited_for}")
        time.sleep(interval)
    return value


def row_count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def stored_files(root: Path) -> list[Path]:
    """Artifact files on disk, including any left in staging."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".probe"))


@cache
def iris_model_bytes(kind: str = "logistic") -> bytes:
    """A real, small scikit-learn classifier on iris (4 features, classes 0-2), saved with skops."""
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    estimator = (
        LogisticRegression(max_iter=500) if kind == "logistic" else RandomForestClassifier(5, random_state=0)
    )
    return bytes(sio.dumps(estimator.fit(x, y)))


def create_model(
    client: TestClient, headers: dict[str, str], name: str = "churn", **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/ai/models", json={"name": name, "framework": "sklearn", **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def upload(
    client: TestClient,
    headers: dict[str, str],
    model: str,
    content: bytes | None = None,
    metadata: dict[str, Any] | None = None,
    filename: str = "model.skops",
) -> httpx2.Response:
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    return client.post(
        f"/api/v1/ai/models/{model}/versions",
        files={
            "file": (filename, iris_model_bytes() if content is None else content, "application/octet-stream")
        },
        data=data,
        headers=headers,
    )


class SleepOnLoad:
    """Unpickles to None after sleeping: an attribute of a pickled model that makes loading it slow."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        import time

        return time.sleep, (self.seconds,)


def slow_pickled_model(seconds: float) -> bytes:
    """A real iris classifier, pickled (a tenant must allow pickle), that takes ``seconds`` to load:
    an upload whose inspection is slow."""
    import pickle

    import skops.io as sio

    estimator = sio.loads(iris_model_bytes())
    estimator.slow_load = SleepOnLoad(seconds)
    return pickle.dumps(estimator)


@contextmanager
def serve_in_thread(container: Container) -> Iterator[str]:
    """The app on a real socket (for clients that need one: tritonclient, say), served by uvicorn in
    a thread; the container's lifecycle stays with whoever made it. Yields ``host:port``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(container, manage_lifecycle=False), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 10, 0.01, "the server to start")
    assert thread.is_alive(), "the server thread ended before it started serving"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
