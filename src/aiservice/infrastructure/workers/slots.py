"""A worker's place among WORKERS, held by a lock on a file in the shared workers folder.

uvicorn's supervisor starts identical processes and replaces the ones that die, without telling them
apart; each takes the lowest slot whose lock nobody holds. The kernel drops a dead process's locks, so
the replacement of a crashed worker takes its slot, and slot 0 (the host's duties: relay, webhooks,
job supervisor, sweepers) is never held twice nor left empty for long.
"""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class NoFreeSlot(RuntimeError):
    """Every slot is held: more workers started than WORKERS allows."""


@dataclass
class WorkerSlot:
    index: int
    count: int
    folder: Path
    _lock: IO[str]

    @property
    def host(self) -> bool:
        return self.index == 0

    @classmethod
    def claim(cls, folder: Path, count: int, wait_s: float = 30.0) -> WorkerSlot:
        """The lowest free slot; waits ``wait_s`` for one (a dying worker may still hold its lock)."""
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            for index in range(count):
                handle = (folder / f"slot-{index}.lock").open("a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                return cls(index, count, folder, handle)
            if time.monotonic() >= deadline:
                raise NoFreeSlot(f"all {count} worker slots in {folder} are held")
            time.sleep(0.05)

    def release(self) -> None:
        self._lock.close()


def hold_supervisor_lock(folder: Path) -> IO[str]:
    """One ``aiservice serve`` per workers folder: a second one would reset the first one's files."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / "supervisor.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    return handle
