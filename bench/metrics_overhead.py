"""Benchmark: the cost of measuring every connector call (metrics on vs off, same run).

Run: .venv/bin/python bench/metrics_overhead.py [--rounds 5] [--round-seconds S]

The SAP connector reads one business partner per call from the in-process SAP sandbox (httpx
transport, no network: the cheapest call there is, so the measurement's share is as large as it
gets). Rounds alternate metrics on / off (on first in odd rounds, off first in even ones) so drift
and noise hit both sides alike; each side's figure is the median of its rounds. "On" includes the
batched writes: a round lasts the flusher's flush_interval_s (config/monitoring.toml) and its
aggregates are flushed to the database (SQLite under a temporary directory unless DATABASE_URL is
set) once, inside the timed section, as the background flusher does in production. The last line printed is
one JSON object: calls_per_s_on, calls_per_s_off, slowdown (on vs off, 0.03 = 3 % slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_TMP = Path(tempfile.mkdtemp(prefix="drymix-bench-metrics-"))
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_TMP / 'bench.db'}")
os.environ.setdefault("SAP_USERNAME", "DRYMIX_INT")
os.environ.setdefault("SAP_PASSWORD", "sandbox-secret")
os.environ.setdefault("LOG_DIR", str(_TMP / "logs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (on and off)")
    parser.add_argument(
        "--round-seconds", type=float, default=None,
        help="length of a round; default: the flusher's flush_interval_s, so an 'on' round pays one flush, as in production",
    )
    args = parser.parse_args()

    from connectors.core.config import RetryPolicy
    from connectors.core.metrics import METRICS
    from hub.core.db import upgrade
    from hub.core.settings import integration_config
    from hub.monitoring.config import monitoring_config
    from hub.monitoring.health import flush_metrics, stop_flusher
    from hub.runtime.connections import build_sap_connector
    from sandbox.core import as_transport
    from sandbox.sap import SapSandbox, partner_id

    upgrade()
    stop_flusher()  # the bench flushes itself, inside the timed section
    sandbox = SapSandbox(partners=200, seed=1)
    config = integration_config("sap").model_copy(
        update={"base_url": "http://sap.sandbox/sap/opu/odata/sap/API_BUSINESS_PARTNER/", "rate_budget_per_s": 1e9}
    )
    connector = build_sap_connector(transport=as_transport(sandbox), config=config, retry=RetryPolicy(max_retries=0))
    ids = [partner_id(i) for i in range(200)]

    round_s = args.round_seconds or monitoring_config().flush_interval_s
    calls_made: list[int] = []

    def round_(enabled: bool, seconds: float) -> float:
        # Calls for `seconds`, then (metrics on) the one flush the background flusher would do in that time,
        # inside the timed section: an 'on' round pays recording and writing, like production.
        METRICS.enabled = enabled
        started = time.perf_counter()
        calls = 0
        while time.perf_counter() - started < seconds:
            for _ in range(100):
                connector.get_business_partner(ids[calls % 200])
                calls += 1
        if enabled:
            flush_metrics()
        elapsed = time.perf_counter() - started
        calls_made.append(calls)
        return calls / elapsed

    for enabled in (True, False):  # warm-up: connection pool, code paths, first database write
        round_(enabled, 0.2)
    calls_made.clear()

    on: list[float] = []
    off: list[float] = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for enabled in order:
            (on if enabled else off).append(round_(enabled, round_s))
    METRICS.enabled = True
    connector.client.close()

    # The measurement alone, without the call around it: what one record() costs.
    from connectors.core.metrics import CallMetrics

    probe = CallMetrics()
    n = 200_000
    started = time.perf_counter()
    for i in range(n):
        probe.record("sap", "read_partner", ok=True, latency_s=0.001 * (i % 50), rate_limited=False)
    record_us = (time.perf_counter() - started) / n * 1e6

    calls_on, calls_off = statistics.median(on), statistics.median(off)
    slowdown = calls_off / calls_on - 1
    print(f"rounds: {args.rounds} x {round_s:.0f} s per side (interleaved), one flush per 'on' round")
    print(f"metrics on : median {calls_on:,.0f} calls/s  (rounds: {', '.join(f'{v:,.0f}' for v in on)})")
    print(f"metrics off: median {calls_off:,.0f} calls/s  (rounds: {', '.join(f'{v:,.0f}' for v in off)})")
    print(f"slowdown with metrics on: {slowdown:+.2%} (target at most +5%)")
    print(f"one record() alone: {record_us:.2f} µs ({record_us / (1e6 / calls_off):.2%} of an in-process call)")
    print(json.dumps({
        "calls_per_s_on": round(calls_on, 1),
        "calls_per_s_off": round(calls_off, 1),
        "slowdown": round(slowdown, 4),
        "record_cost_us": round(record_us, 3),
        "round_seconds": round_s,
        "calls_per_round": round(statistics.median(calls_made)),
        "rounds": args.rounds,
        "database": os.environ["DATABASE_URL"].split(":", 1)[0],
    }))


if __name__ == "__main__":
    main()
