"""Artifact store keys: how the service names what it stores, and which keys are still being written.

Keys have one shape, ``<tenant>/<model id>/<32 hex>`` (``.onnx`` for a compiled form), so the sweeper
of leftovers can tell the service's own artifacts from anything else that lives under the store's
folder, and never removes the latter.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}/[0-9a-f-]{36}/[0-9a-f]{32}(\.onnx)?")


def new_artifact_key(tenant_id: str, model_id: str, suffix: str = "") -> str:
    """A fresh key for bytes of this model (``suffix`` ``.onnx`` for a compiled form)."""
    return f"{tenant_id}/{model_id}/{uuid4().hex}{suffix}"


def is_artifact_key(key: str) -> bool:
    """Whether ``key`` has the shape of a key ``new_artifact_key`` makes."""
    return _KEY.fullmatch(key) is not None


class InFlightKeys:
    """Keys this replica is writing and has not yet recorded on a version (an upload being inspected,
    a compiled form being stored): the sweeper leaves them alone whatever their age."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hold(self, key: str) -> None:
        with self._lock:
            self._held[key] += 1

    def release(self, key: str) -> None:
        with self._lock:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        self.hold(key)
        try:
            yield
        finally:
            self.release(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._held

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._held)
