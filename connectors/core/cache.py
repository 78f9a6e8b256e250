"""A small thread-safe TTL cache with hit/miss counts (tokens, reference data)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from connectors.core.metrics import METRICS, CallMetrics

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Entries expire `ttl_s` after they were set (or at an explicit per-entry expiry)."""

    def __init__(self, ttl_s: float = 300.0, *, maxsize: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.maxsize = maxsize
        self._clock = clock
        self._data: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # (integration, operation) to report hits and misses under (monitoring's cache hit rate); None = don't.
        self.metrics_label: tuple[str, str] | None = None
        self.metrics: CallMetrics = METRICS

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] <= self._clock():
                if item is not None:
                    del self._data[key]
                self.misses += 1
                hit = False
            else:
                self.hits += 1
                hit = True
        if self.metrics_label is not None:
            self.metrics.record_cache(*self.metrics_label, hit=hit)
        return item[1] if hit and item is not None else None

    def set(self, key: K, value: V, ttl_s: float | None = None) -> None:
        with self._lock:
            if len(self._data) >= self.maxsize and key not in self._data:
                # Drop the entry closest to expiry: cheap and good enough for tokens/reference data.
                oldest = min(self._data, key=lambda k: self._data[k][0])
                del self._data[oldest]
            self._data[key] = (self._clock() + (self.ttl_s if ttl_s is None else ttl_s), value)

    def invalidate(self, key: K | None = None) -> None:
        with self._lock:
            if key is None:
                self._data.clear()
            else:
                self._data.pop(key, None)

    def get_or_set(self, key: K, factory: Callable[[], tuple[V, float | None]]) -> V:
        """Cached value, or `factory()` -> (value, ttl) stored and returned."""
        value = self.get(key)
        if value is not None:
            return value
        value, ttl = factory()
        self.set(key, value, ttl)
        return value

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
