"""The model cache: loaded models in LRU order, bounded by count and by measured memory.

A cold model is loaded once however many requests ask for it at the same moment. Memory is the
process's resident-set growth across the load (loads are serialised so the measure is the model's
own), never less than the artifact's size. A model in use by a request is never evicted under it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class CacheEntry(Generic[T]):
    value: T
    bytes: int
    pins: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ModelCache(Generic[T]):
    def __init__(
        self,
        max_models: int,
        max_bytes: int,
        on_evict: Callable[[T], Awaitable[None]] | None = None,
        on_change: Callable[[CacheStats, int, int], None] = lambda stats, models, loaded: None,
        on_hit: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_hit = on_hit  # the hot path: a counter bump, not a full report
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, CacheEntry[T]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[CacheEntry[T]]] = {}
        self._load_lock = asyncio.Lock()
        self._on_evict = on_evict
        self._on_change = on_change
        self.stats = CacheStats()

    @property
    def loaded_bytes(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def entry(self, key: Hashable) -> CacheEntry[T] | None:
        return self._entries.get(key)

    @asynccontextmanager
    async def use(
        self, key: Hashable, load: Callable[[], Awaitable[tuple[T, int]]]
    ) -> AsyncIterator[CacheEntry[T]]:
        """The entry for ``key`` (loaded by ``load`` on a miss), pinned while the block runs."""
        entry = await self._get(key, load)
        entry.pins += 1
        try:
            yield entry
        finally:
            entry.pins -= 1
            await self._evict()

    async def _get(self, key: Hashable, load: Callable[[], Awaitable[tuple[T, int]]]) -> CacheEntry[T]:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            self._on_hit()
            return entry
        waiting = self._loading.get(key)
        if waiting is not None:
            self.stats.hits += 1
            self._on_hit()
            return await asyncio.shield(waiting)
        self.stats.misses += 1
        future: asyncio.Future[CacheEntry[T]] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            async with self._load_lock:
                value, size = await load()
            entry = CacheEntry(value, size)
            self._entries[key] = entry
            entry.pins += 1  # not evictable before its first caller has it
            await self._evict()
            entry.pins -= 1
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._loading[key]
            self._changed()

    def count(self, where: Callable[[Hashable], bool]) -> int:
        """How many loaded entries have a key ``where`` accepts."""
        return sum(1 for key in self._entries if where(key))

    async def evict_oldest(self, where: Callable[[Hashable], bool]) -> bool:
        """Evict the least recently used idle entry whose key ``where`` accepts; False if none is idle."""
        victim = next((k for k, e in self._entries.items() if e.pins == 0 and where(k)), None)
        if victim is None:
            return False
        self.stats.evictions += 1
        await self.unload(victim)
        return True

    async def unload(self, key: Hashable) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        if self._on_evict is not None:
            await self._on_evict(entry.value)
        self._changed()
        return True

    async def _evict(self) -> None:
        evicted = False
        while len(self._entries) > self.max_models or self.loaded_bytes > self.max_bytes:
            victim = next((k for k, e in self._entries.items() if e.pins == 0), None)
            if victim is None:
                break  # everything is in use: run over budget rather than drop a model mid-request
            entry = self._entries.pop(victim)
            self.stats.evictions += 1
            evicted = True
            if self._on_evict is not None:
                await self._on_evict(entry.value)
        if evicted:  # not on every use: the gauges are per request otherwise (a hot path)
            self._changed()

    def _changed(self) -> None:
        self._on_change(self.stats, len(self._entries), self.loaded_bytes)
