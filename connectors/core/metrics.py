"""In-process call metrics per integration and operation: cheap enough to leave on (no I/O per call)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import quantiles


@dataclass
class OperationStats:
    calls: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def percentiles(self) -> dict[str, float]:
        if not self.latencies_s:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
        if len(self.latencies_s) == 1:
            v = self.latencies_s[0] * 1000
            return {"p50_ms": v, "p95_ms": v, "p99_ms": v}
        q = quantiles(self.latencies_s, n=100, method="inclusive")
        return {"p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000, "p99_ms": q[98] * 1000}


class CallMetrics:
    """Thread-safe counters; keeps at most `max_samples` latencies per operation (a sliding window)."""

    def __init__(self, max_samples: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._ops: dict[tuple[str, str], OperationStats] = defaultdict(OperationStats)
        self.max_samples = max_samples

    def record(self, integration: str, operation: str, *, ok: bool, latency_s: float, rate_limited: bool = False) -> None:
        with self._lock:
            stats = self._ops[(integration, operation)]
            stats.calls += 1
            stats.errors += 0 if ok else 1
            stats.rate_limited += 1 if rate_limited else 0
            stats.latencies_s.append(latency_s)
            if len(stats.latencies_s) > self.max_samples:
                del stats.latencies_s[: len(stats.latencies_s) - self.max_samples]

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
