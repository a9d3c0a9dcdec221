"""Token buckets in this process: a dict and a lock, no I/O, for a single replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aiservice.application.ports import RateDecision, TokenBucket
from aiservice.application.rate_limits import decide, refill


class InMemoryRateLimiter:
    """Buckets live as long as the process; full ones are forgotten once there are many."""

    blocking = False

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._prune_at = max_keys
        self._lock = threading.Lock()
        # key -> (tokens after the last call, when that was, when the bucket will be full again)
        self._state: dict[str, tuple[float, float, float]] = {}

    def acquire(self, buckets: list[TokenBucket]) -> RateDecision:
        now = self._clock()
        state = self._state
        with self._lock:
            levels = []
            for bucket in buckets:
                held = state.get(bucket.key)
                levels.append(float(bucket.burst) if held is None else refill(bucket, held[0], now - held[1]))
            allowed = min(levels) >= 1
            if allowed:
                for i, bucket in enumerate(buckets):
                    level = levels[i] = levels[i] - 1
                    state[bucket.key] = (level, now, now + (bucket.burst - level) / bucket.rate)
                if len(state) > self._prune_at:
                    self._forget_full(now)
        return decide(buckets, levels, allowed)

    def close(self) -> None:
        self._state.clear()

    def _forget_full(self, now: float) -> None:
        """A full bucket is the same as no bucket: dropping it changes no verdict."""
        for key in [key for key, (_, _, full_at) in self._state.items() if full_at <= now]:
            del self._state[key]
        # Many live buckets: scan again only once they have doubled, not on every call.
        self._prune_at = max(self._max_keys, 2 * len(self._state))
