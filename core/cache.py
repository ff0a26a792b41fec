"""A small thread-safe LRU cache with optional TTL and hit/miss counts.

The engine keeps one of each per loaded engine: query vectors, cross-encoder
scores keyed by (query, product) for one model version, and search results.
A model swap builds a new engine, so its caches start empty (their hit and miss
counts carry on from the old engine's); a catalog change clears them. Hit rates are
exported on ``/metrics``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class LRUCache:
    def __init__(self, size: int, ttl: float | None = None) -> None:
        self.size = size
        self.ttl = ttl
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None or (self.ttl is not None and time.monotonic() - entry[0] > self.ttl):
                self.misses += 1
                if entry is not None:
                    del self._items[key]
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: Any, age: float = 0.0) -> None:
        """Keep ``value`` under ``key``; ``age``: seconds it is old already (it expires that much sooner)."""
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() - age, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups; None before the first lookup (no rate yet, rather than a rate of 0)."""
        total = self.hits + self.misses
        return self.hits / total if total else None


def read_through(cache: LRUCache, keys: Sequence[Hashable], compute: Callable[[list[int]], Sequence[Any]],
                 fetch: Callable[[list[int]], Sequence[Any | None]] | None = None,
                 keep: Callable[[list[int], Sequence[Any]], None] | None = None) -> list[Any]:
    """Each key's value from ``cache``; the ones it lacks from ``fetch`` (a shared tier: None where it has
    none; what it has is kept in ``cache``), the rest ``compute``d, kept in ``cache`` and handed to ``keep``
    (the shared tier's write). ``fetch``, ``compute`` and ``keep`` get the positions (in ``keys``) they are
    for, in order; ``compute``'s values are handed to ``keep`` as it returned them."""
    found: list[Any] = [cache.get(key) for key in keys]
    missing = [i for i, v in enumerate(found) if v is None]
    if missing and fetch is not None:
        for i, value in zip(missing, fetch(missing)):
            if value is not None:
                cache.put(keys[i], value)
                found[i] = value
        missing = [i for i in missing if found[i] is None]
    if missing:
        fresh = compute(missing)
        for i, value in zip(missing, fresh):
            cache.put(keys[i], value)
            found[i] = value
        if keep is not None:
            keep(missing, fresh)
    return found
