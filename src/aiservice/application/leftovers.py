"""Sweeping what a crash leaves behind, platform-wide: run at start-up and every few minutes.

Policy:

- Work in progress (upload staging files, dataset staging folders, training job folders) last touched
  longer ago than the longest that work may take is abandoned: its process died. That bound is
  enforced (an upload past ``UPLOAD_TIMEOUT_SECONDS`` is refused, a job past its timeout is stopped),
  so nothing alive is that old.
- A stored artifact that no version refers to (as its artifact or its compiled ONNX form, in any
  tenant, soft-deleted models included) is an orphan: a crash between writing the bytes and
  committing the row, or between deleting a row and its bytes. It is removed once older than the
  grace period, never while an upload or compilation of this replica still holds its key; the grace
  protects other replicas' uploads, whose bytes wait for their row while they are inspected.
- Only keys of the service's own shape are ever removed (see ``artifact_keys``).

Keys are listed before references are read, so a row committed in between is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from aiservice.application.artifact_keys import InFlightKeys, is_artifact_key
from aiservice.application.ports import Clock

log = logging.getLogger(__name__)
ORPHANS = "orphan-artifacts"


@dataclass(frozen=True)
class StoredKey:
    key: str
    modified_at: datetime
    size_bytes: int


@dataclass(frozen=True)
class Swept:
    files: int = 0
    bytes: int = 0

    def __add__(self, other: Swept) -> Swept:
        return Swept(self.files + other.files, self.bytes + other.bytes)


class WorkArea(Protocol):
    """Where some work keeps its files while in progress (a store's staging folder, say)."""

    def sweep_stale(self, cutoff: datetime) -> Swept:
        """Remove the work last modified before ``cutoff``; what went (files, bytes)."""
        ...


class ArtifactInventory(Protocol):
    """The artifact store as its sweeper sees it."""

    def stored_keys(self) -> Iterator[StoredKey]:
        """Every committed artifact (staging and the store's own bookkeeping left out)."""
        ...

    def delete(self, key: str) -> None: ...


class ArtifactReferences(Protocol):
    def referenced_keys(self) -> set[str]:
        """Every store key a row refers to, in every tenant."""
        ...


@dataclass(frozen=True)
class StaleWork:
    name: str  # in logs and the metric: "artifact-staging", "dataset-staging", ...
    area: WorkArea
    max_age: timedelta  # the longest the work may take


class LeftoverSweeper:
    def __init__(
        self,
        inventory: ArtifactInventory,
        references: ArtifactReferences,
        in_flight: InFlightKeys,
        clock: Clock,
        *,
        work: Sequence[StaleWork],
        grace: timedelta,
        on_swept: Callable[[str, int, int], None] = lambda name, files, size_bytes: None,
        siblings_in_flight: Callable[[], set[str]] = set,
    ) -> None:
        """``siblings_in_flight``: the keys the other worker processes of this host are writing (it
        raises when one of them cannot say, and the orphans then wait for the next pass)."""
        self._inventory = inventory
        self._references = references
        self._in_flight = in_flight
        self._clock = clock
        self._work = work
        self._grace = grace
        self._on_swept = on_swept
        self._siblings_in_flight = siblings_in_flight

    def sweep(self) -> dict[str, Swept]:
        """One pass over every work area and the stored artifacts; what went, by kind. A kind that
        fails is logged and left to the next pass, the others still run."""
        now = self._clock()
        steps = [(w.name, partial(w.area.sweep_stale, now - w.max_age)) for w in self._work]
        steps.append((ORPHANS, partial(self._orphans, now - self._grace)))
        report: dict[str, Swept] = {}
        for name, step in steps:
            try:
                report[name] = swept = step()
            except Exception:
                log.warning("sweeping %s failed", name, exc_info=True)
                continue
            if swept.files:
                log.info("swept %d %s (%d bytes)", swept.files, name, swept.bytes)
                self._on_swept(name, swept.files, swept.bytes)
        return report

    def _orphans(self, cutoff: datetime) -> Swept:
        old = [s for s in self._inventory.stored_keys() if s.modified_at < cutoff and is_artifact_key(s.key)]
        if not old:
            return Swept()
        referenced = self._references.referenced_keys()
        siblings = self._siblings_in_flight()
        swept = Swept()
        for stored in old:
            if stored.key in referenced or stored.key in self._in_flight or stored.key in siblings:
                continue
            self._inventory.delete(stored.key)
            swept += Swept(1, stored.size_bytes)
        return swept
