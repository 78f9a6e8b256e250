"""In-process call metrics per integration and operation: cheap enough to leave on (no I/O per call).

Besides the running totals (`snapshot`), every measurement is added to a per-minute aggregate
(counts plus a fixed-bucket latency histogram) that `drain()` hands over in one piece; the hub's
flusher (hub/monitoring/health.py) writes those aggregates to the `call_metrics` table in batches, so a
call never costs a database round trip. Connectors know nothing of the database.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import defaultdict, deque
from dataclasses import dataclass, field
from statistics import quantiles
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# Upper bounds (seconds) of the latency histogram buckets; one more bucket counts everything above.
# Prometheus-style "le" bounds, with 2 s present because SlowResponseTime compares P95 with it.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)
KINDS = ("call", "webhook", "webhook_processing")


@dataclass
class MinuteAggregate:
    """Measurements of one (minute, integration, operation, kind): what one `call_metrics` row holds."""

    calls: int = 0
    successes: int = 0
    errors: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    last_success_ts: float | None = None
    last_error_ts: float | None = None

    def add(self, ok: bool, latency_s: float, rate_limited: bool, now: float) -> None:
        self.calls += 1
        if ok:
            self.successes += 1
            self.last_success_ts = now
        else:
            self.errors += 1
            self.last_error_ts = now
        if rate_limited:
            self.rate_limited += 1
        self.latency_sum_s += latency_s
        if latency_s > self.latency_max_s:
            self.latency_max_s = latency_s
        self.buckets[bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1


AggregateKey = tuple[int, str, str, str]
"""(minute start as epoch seconds, integration, operation, kind)"""


@dataclass
class OperationStats:
    calls: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def percentiles(self) -> dict[str, float]:
        if not self.latencies_s:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
        if len(self.latencies_s) == 1:
            v = self.latencies_s[0] * 1000
            return {"p50_ms": v, "p95_ms": v, "p99_ms": v}
        q = quantiles(self.latencies_s, n=100, method="inclusive")
        return {"p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000, "p99_ms": q[98] * 1000}


@dataclass
class MetricsShare:
    """What one process counted, handed to another (`CallMetrics.hand_over` / `absorb`)."""

    pending: dict[AggregateKey, MinuteAggregate]
    ops: dict[tuple[str, str], OperationStats]


class CallMetrics:
    """Thread-safe counters; keeps at most `max_samples` latencies per operation (a sliding window)."""

    def __init__(self, max_samples: int = 10_000, *, clock: Callable[[], float] = time.time) -> None:
        self.max_samples = max_samples
        self.enabled = True
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget everything, with a new lock: what a forked process does first (the lock may have been held by
        another thread of its parent at the fork, and what the parent counted is the parent's to flush)."""
        self._lock = threading.Lock()
        # A bounded deque per operation: the sliding window costs O(1) per call once full.
        max_samples = self.max_samples
        self._ops: dict[tuple[str, str], OperationStats] = defaultdict(
            lambda: OperationStats(latencies_s=deque(maxlen=max_samples))
        )
        self._pending: dict[AggregateKey, MinuteAggregate] = {}

    def hand_over(self) -> MetricsShare:
        """Everything counted since the last hand-over, forgotten here: a worker process's calls, for `absorb`."""
        with self._lock:
            share = MetricsShare(self._pending, dict(self._ops))
            self._pending = {}
            self._ops.clear()
        return share

    def absorb(self, share: MetricsShare) -> None:
        """Add another process's calls (`hand_over`): flushed with this process's, counted in its totals."""
        self.restore(share.pending)
        with self._lock:
            for key, other in share.ops.items():
                stats = self._ops[key]
                stats.calls += other.calls
                stats.errors += other.errors
                stats.retries += other.retries
                stats.rate_limited += other.rate_limited
                stats.latencies_s.extend(other.latencies_s)

    def record(
        self,
        integration: str,
        operation: str,
        *,
        ok: bool,
        latency_s: float,
        rate_limited: bool = False,
        kind: str = "call",
    ) -> None:
        if not self.enabled:
            return
        now = self.clock()
        key = (int(now // 60) * 60, integration, operation, kind)
        with self._lock:
            stats = self._ops[(integration, operation)]
            stats.calls += 1
            stats.errors += 0 if ok else 1
            stats.rate_limited += 1 if rate_limited else 0
            stats.latencies_s.append(latency_s)
            agg = self._pending.get(key)
            if agg is None:
                agg = self._pending[key] = MinuteAggregate()
            agg.add(ok, latency_s, rate_limited, now)

    def record_cache(self, integration: str, operation: str, *, hit: bool) -> None:
        """A lookup in a cache that saves calls (tokens, reference data): feeds the cache hit rate."""
        if not self.enabled:
            return
        key = (int(self.clock() // 60) * 60, integration, operation, "call")
        with self._lock:
            agg = self._pending.get(key)
            if agg is None:
                agg = self._pending[key] = MinuteAggregate()
            if hit:
                agg.cache_hits += 1
            else:
                agg.cache_misses += 1

    def drain(self) -> dict[AggregateKey, MinuteAggregate]:
        """Hand over (and forget) the per-minute aggregates gathered since the last drain."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore(self, pending: dict[AggregateKey, MinuteAggregate]) -> None:
        """Put back aggregates whose write failed, merged with what arrived meanwhile (nothing is lost)."""
        with self._lock:
            for key, agg in pending.items():
                current = self._pending.get(key)
                if current is None:
                    self._pending[key] = agg
                    continue
                current.calls += agg.calls
                current.successes += agg.successes
                current.errors += agg.errors
                current.rate_limited += agg.rate_limited
                current.cache_hits += agg.cache_hits
                current.cache_misses += agg.cache_misses
                current.latency_sum_s += agg.latency_sum_s
                current.latency_max_s = max(current.latency_max_s, agg.latency_max_s)
                current.buckets = [a + b for a, b in zip(current.buckets, agg.buckets, strict=True)]
                current.last_success_ts = max(filter(None, (current.last_success_ts, agg.last_success_ts)), default=None)
                current.last_error_ts = max(filter(None, (current.last_error_ts, agg.last_error_ts)), default=None)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def record_retry(self, integration: str, operation: str) -> None:
        with self._lock:
            self._ops[(integration, operation)].retries += 1

    def snapshot(self, integration: str | None = None) -> dict[str, dict[str, float]]:
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for (name, op), s in self._ops.items():
                if integration is not None and name != integration:
                    continue
                out[f"{name}.{op}"] = {
                    "calls": s.calls,
                    "errors": s.errors,
                    "retries": s.retries,
                    "rate_limited": s.rate_limited,
                    **s.percentiles(),
                }
            return out

    def total(self, integration: str, key: str) -> int:
        with self._lock:
            return sum(getattr(s, key) for (name, _), s in self._ops.items() if name == integration)


METRICS = CallMetrics()
