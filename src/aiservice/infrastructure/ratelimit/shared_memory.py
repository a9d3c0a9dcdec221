"""Token buckets in a file that every worker process of one host maps, so ``WORKERS=N`` processes
share one set of budgets without a server. No library gives that: ``limits`` keeps buckets in one
process's memory, or in Redis, Memcached or MongoDB.

The file is a header (magic, slot count) and a table of slots (key hash, tokens, last call, when
full), found by open addressing with linear probing. A full bucket is the same as no bucket, so its
slot may go to another key; when a probe window holds no such slot, the bucket that will be full
soonest is forgotten early (the one way a verdict can differ from the in-memory limiter, and only
when more than ``PROBE`` live buckets crowd one window). A thread lock and an ``flock`` on the file
make each call's read-modify-write of all its buckets atomic across threads and processes; on Linux
CLOCK_MONOTONIC is system-wide, so every process reads the same clock.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aiservice.application.ports import RateDecision, TokenBucket
from aiservice.application.rate_limits import decide, refill

MAGIC = b"aisvRL01"
HEADER = struct.Struct("<8sQ")  # magic, slot count
SLOT = struct.Struct("<8sddd")  # key hash (zeros: never used), tokens, last call, when full
PROBE = 64
UNUSED = bytes(8)


class SharedMemoryRateLimiter:
    """Buckets shared by every process that maps ``path``. A file already there keeps its own slot
    count (``slots`` sizes a new one), so processes configured apart still agree; a file that is
    not such a table is made one, empty. The file outlives the limiter: its folder's owner removes it."""

    blocking = False

    def __init__(
        self, path: Path, *, slots: int = 65536, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slots < PROBE:
            raise ValueError(f"slots must be at least {PROBE}, not {slots}")
        self._path = path
        self._new_slots = slots
        self._clock = clock
        self._open()

    def acquire(self, buckets: list[TokenBucket]) -> RateDecision:
        if os.getpid() != self._pid:  # a forked child would share its parent's flock: take its own
            self.close()
            self._open()
        keys = [hashlib.blake2b(bucket.key.encode(), digest_size=8).digest() for bucket in buckets]
        table = self._map
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = self._clock()
                places: list[int] = []
                levels = []
                for bucket, key in zip(buckets, keys, strict=True):
                    place, held = self._find(key, now, places)
                    places.append(place)
                    levels.append(float(bucket.burst) if held is None else refill(bucket, *held))
                allowed = min(levels) >= 1
                if allowed:
                    for i, bucket in enumerate(buckets):
                        level = levels[i] = levels[i] - 1
                        full_at = now + (bucket.burst - level) / bucket.rate
                        offset = HEADER.size + places[i] * SLOT.size
                        SLOT.pack_into(table, offset, keys[i], level, now, full_at)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return decide(buckets, levels, allowed)

    def close(self) -> None:
        """Unmaps and closes the file, which stays (with its buckets) for the other processes."""
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)

    def _open(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # processes racing to create it: one initialises it
            self._slots = self._table_slots()
            self._map = mmap.mmap(self._fd, HEADER.size + self._slots * SLOT.size)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._fd)
            raise

    def _table_slots(self) -> int:
        """The slot count of the table in the file, made anew (all zeros) unless the file is one."""
        size = os.fstat(self._fd).st_size
        if size >= HEADER.size:
            magic, slots = HEADER.unpack(os.pread(self._fd, HEADER.size, 0))
            if magic == MAGIC and slots >= PROBE and size == HEADER.size + slots * SLOT.size:
                return int(slots)
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._fd, HEADER.size + self._new_slots * SLOT.size)
        os.pwrite(self._fd, HEADER.pack(MAGIC, self._new_slots), 0)
        return self._new_slots

    def _find(self, key: bytes, now: float, taken: list[int]) -> tuple[int, tuple[float, float] | None]:
        """The slot of ``key``'s bucket and its (tokens, elapsed), or the slot it may take and None;
        ``taken``: slots this call has already chosen for its other buckets."""
        start = int.from_bytes(key, "little") % self._slots
        free = soonest = -1
        soonest_full = math.inf
        for step in range(PROBE):
            place = (start + step) % self._slots
            held, tokens, last, full_at = SLOT.unpack_from(self._map, HEADER.size + place * SLOT.size)
            if held == key:
                return place, (tokens, now - last)
            if place in taken:
                continue
            if held == UNUSED:  # slots are taken in probe order and never emptied: the key is not further on
                return (place if free < 0 else free), None
            if free < 0 and full_at <= now:
                free = place
            elif full_at < soonest_full:
                soonest, soonest_full = place, full_at
        return (free if free >= 0 else soonest), None
