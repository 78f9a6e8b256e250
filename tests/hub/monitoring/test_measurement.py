"""Every connector call is measured in memory and written in batches; windows, percentiles, uptime,
throughput, cache hit rate and health come back from the flushed rows."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from connectors.core.config import RetryPolicy
from connectors.core.metrics import LATENCY_BUCKETS_S, METRICS, MinuteAggregate
from hub.core.db import get_engine
from hub.core.models import CallMetric, CallMetricTotal
from hub.core.settings import integration_config
from hub.monitoring.config import HealthThresholds, MonitoringConfig, SilenceConfig
from hub.monitoring.health import (
    MetricsFlusher,
    flush_metrics,
    health_of,
    health_report,
    histogram_quantile,
    integration_stats,
    parse_window,
    prune_metrics,
)
from hub.runtime.connections import build_sap_connector
from sandbox.core import running_server
from sandbox.sap import SapSandbox, partner_id
from tests.hub.monitoring.conftest import FakeClock, SapTraffic

# SAP's schedules are left out here (its pulls idle_ok): these tests are about the measured calls alone; silence on a
# schedule is tests/hub/monitoring/test_silence.py's.
CFG = MonitoringConfig(integrations=["sap"], silence=SilenceConfig(idle_ok=["sap.customers", "sap.sales_orders"]))


def metric_rows() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(CallMetric.__table__)).scalar_one())


def stats(window: str, clock: FakeClock):  # type: ignore[no-untyped-def]
    [st] = [s for s in integration_stats(parse_window(window), now=clock.now, config=CFG) if s.integration == "sap"]
    return st


def test_calls_are_buffered_and_written_in_one_batch_not_one_row_per_call(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 5})
    failed = sap_traffic.calls(50)
    assert failed == 10
    assert metric_rows() == 0  # 50 calls, no database write yet
    assert flush_metrics() == 1  # one row: this minute, sap, read_partner
    assert metric_rows() == 1
    assert flush_metrics() == 0

    clock.advance(seconds=30)
    sap_traffic.calls(10)
    flush_metrics()  # same minute, same operation: added to the same row
    with get_engine().connect() as conn:
        row = conn.execute(select(CallMetric.__table__)).one()._mapping
        total = conn.execute(select(CallMetricTotal.__table__)).one()._mapping
    assert (row["calls"], row["successes"], row["errors"]) == (60, 48, 12)
    assert sum(row[f"h{i:02d}"] for i in range(len(LATENCY_BUCKETS_S) + 1)) == 60
    assert (total["calls"], total["errors"]) == (60, 12)
    assert total["first_seen_at"] == clock.now.replace(second=0) - timedelta(minutes=0, seconds=0)


def test_window_figures_from_driven_traffic(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    sap_traffic.calls(10)  # minute 0: all good
    clock.advance(minutes=50)
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 1})
    sap_traffic.calls(4)  # minute 50: all failing
    sap_traffic.sandbox.faults.clear()
    sap_traffic.sandbox.faults.update({"rate_limit_next_n": 3, "retry_after_s": 0})
    clock.advance(minutes=1)
    sap_traffic.calls(6)  # minute 51: 3 rate limited, 3 good
    flush_metrics()

    hour = stats("1h", clock)
    assert (hour.calls, hour.successes, hour.errors, hour.rate_limited) == (20, 13, 7, 3)
    assert hour.success_rate == pytest.approx(13 / 20) and hour.error_rate == pytest.approx(7 / 20)
    assert hour.uptime_pct == pytest.approx(100 * 2 / 3)  # minutes with calls: 3, with a success: 2
    assert hour.throughput_per_s == pytest.approx(20 / 3600)  # ops/s over the whole window
    assert hour.last_success_at is not None and hour.last_error_at is not None
    assert hour.last_success_at >= hour.last_error_at - timedelta(minutes=1)
    assert hour.p50_s is not None and hour.p95_s is not None and hour.p99_s is not None
    assert 0 < hour.p50_s <= hour.p95_s <= hour.p99_s
    assert len(hour.series) == 3

    five = stats("5m", clock)  # only minutes 50 and 51
    assert (five.calls, five.errors, five.rate_limited) == (10, 7, 3)


def test_latency_percentiles_follow_the_sandbox_latency(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    sap_traffic.sandbox.faults.update({"latency_ms": 120})
    sap_traffic.calls(5)
    flush_metrics()
    st = stats("5m", clock)
    assert st.p50_s is not None and 0.11 <= st.p50_s <= 0.25  # bucket (0.1, 0.25]


def test_token_cache_hits_give_the_cache_hit_rate(fresh_metrics: None, clock: FakeClock) -> None:
    sandbox = SapSandbox(partners=10, seed=5)
    with running_server(sandbox) as base_url:
        root = f"{base_url}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
        config = integration_config("sap").model_copy(
            update={"base_url": root, "auth": "oauth2", "token_url": f"{base_url}/sap/bc/sec/oauth2/token"}
        )
        connector = build_sap_connector(config=config, retry=RetryPolicy(max_retries=0))
        for i in range(5):
            connector.get_business_partner(partner_id(i))
        connector.client.close()
    flush_metrics()
    st = stats("5m", clock)
    assert st.cache_hit_rate == pytest.approx(4 / 5)  # one token fetched, reused four times


def test_histogram_quantile_interpolates_inside_buckets() -> None:
    agg = MinuteAggregate()
    for latency in [0.02] * 90 + [1.2] * 10:
        agg.add(True, latency, False, 0.0)
    assert histogram_quantile(0.5, agg.buckets, agg.latency_max_s) == pytest.approx(0.01 + 0.015 * (50 / 90))
    p95 = histogram_quantile(0.95, agg.buckets, agg.latency_max_s)
    assert p95 is not None and 1.0 < p95 <= 1.2  # capped by the largest latency seen
    assert histogram_quantile(0.5, [0] * len(agg.buckets), 0.0) is None


def test_background_flusher_writes_without_being_asked(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    flusher = MetricsFlusher(interval_s=0.05).start()
    try:
        sap_traffic.calls(5)
        deadline = time.monotonic() + 10
        while metric_rows() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        flusher.stop()
    assert metric_rows() == 1


def test_a_failed_write_keeps_the_measurements_for_the_next_flush(sap_traffic: SapTraffic, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.monitoring.health

    sap_traffic.calls(7)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(hub.monitoring.health, "write_aggregates", broken)
    with pytest.raises(RuntimeError):
        flush_metrics()
    monkeypatch.undo()
    sap_traffic.calls(3)
    flush_metrics()
    assert stats("5m", clock).calls == 10


def test_disabled_metrics_record_nothing(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    METRICS.enabled = False
    try:
        sap_traffic.calls(5)
    finally:
        METRICS.enabled = True
    assert flush_metrics() == 0


def test_health_is_green_yellow_red_from_the_thresholds(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    thresholds = HealthThresholds(yellow_error_rate=0.01, red_error_rate=0.2)
    sap_traffic.calls(10)
    flush_metrics()
    assert health_of(stats("15m", clock), thresholds, now=clock.now) == ("green", [])

    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 10})
    sap_traffic.calls(10)
    flush_metrics()
    health, reasons = health_of(stats("15m", clock), thresholds, now=clock.now)
    assert health == "yellow" and reasons == ["error rate 5.0% > 1.0%"]

    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 2})
    sap_traffic.calls(20)
    flush_metrics()
    health, reasons = health_of(stats("15m", clock), thresholds, now=clock.now)
    assert health == "red" and reasons[0].startswith("error rate 27.5% > 20.0%")

    report = {st.integration: st for st in health_report(now=clock.now, config=CFG.model_copy(update={"integrations": ["sap", "whatsapp"]}))}
    # No traffic is not a failure, and not evidence of health either: idle (grey), never green.
    assert (report["whatsapp"].health, report["whatsapp"].health_reasons) == ("idle", ["no traffic in the window"])


def test_old_minutes_are_pruned_but_totals_stay(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    sap_traffic.calls(3)
    clock.advance(days=31)
    sap_traffic.calls(2)
    flush_metrics()
    assert prune_metrics(timedelta(days=30), now=clock.now) == 1
    assert metric_rows() == 1
    with get_engine().connect() as conn:
        assert conn.execute(select(CallMetricTotal.__table__.c.calls)).scalar_one() == 5


def test_window_text_is_validated() -> None:
    assert parse_window("90s") == timedelta(seconds=90)
    assert parse_window("24h") == timedelta(hours=24)
    with pytest.raises(ValueError, match="not understood"):
        parse_window("an hour")
    with pytest.raises(ValueError, match="smallest window"):
        parse_window("10s")
