"""What a forked reader needs from the connector core (tasks/extract_process.py): connections of its own, and
call metrics handed back to the process that flushes them."""

from __future__ import annotations

import httpx

from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, RetryPolicy
from connectors.core.metrics import CallMetrics


def test_metrics_handed_over_by_one_process_are_counted_and_flushed_by_the_other() -> None:
    clock = [600.0]
    child, parent = CallMetrics(clock=lambda: clock[0]), CallMetrics(clock=lambda: clock[0])
    parent.record("sap", "read", ok=True, latency_s=0.5)
    child.record("sap", "read", ok=True, latency_s=0.1)
    child.record("sap", "read", ok=False, latency_s=0.3, rate_limited=True)
    child.record_retry("sap", "read")

    share = child.hand_over()
    assert child.total("sap", "calls") == 0 and child.pending_count == 0, "handed over, forgotten there"
    parent.absorb(share)
    assert (parent.total("sap", "calls"), parent.total("sap", "errors"), parent.total("sap", "retries"),
            parent.total("sap", "rate_limited")) == (3, 1, 1, 1)
    [minute] = parent.drain().values()  # one minute's aggregate, both processes' calls in it
    assert (minute.calls, minute.errors, minute.rate_limited) == (3, 1, 1)
    assert abs(minute.latency_sum_s - 0.9) < 1e-9 and minute.latency_max_s == 0.5
    assert parent.snapshot("sap")["sap.read"]["p99_ms"] > 0


def test_reset_forgets_everything_under_a_new_lock() -> None:
    metrics = CallMetrics()
    metrics.record("sap", "read", ok=True, latency_s=0.1)
    lock = metrics._lock
    lock.acquire()  # held by another thread of the parent at the fork, say
    metrics.reset()
    assert metrics._lock is not lock and metrics.total("sap", "calls") == 0 and metrics.pending_count == 0
    metrics.record("sap", "read", ok=True, latency_s=0.1)  # does not wait for the old lock
    assert metrics.total("sap", "calls") == 1


def test_after_fork_a_client_reads_through_a_pool_of_its_own_and_leaves_the_inherited_one_open() -> None:
    config = IntegrationConfig(name="probe", base_url="http://probe.test/", retry=RetryPolicy(max_retries=0, base_delay_ms=0))
    client = IntegrationClient(config, transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": 1})))
    inherited = client.http
    client.after_fork()
    try:
        assert client.http is not inherited and not inherited.is_closed
        assert client.get_json("x", operation="probe") == {"ok": 1}
        assert str(client.http.base_url) == "http://probe.test/" and client.over_network is False
    finally:
        client.close()
    assert client.http.is_closed and not inherited.is_closed, "the parent's connections are never closed from here"
