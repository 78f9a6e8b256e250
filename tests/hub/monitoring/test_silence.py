"""Silence is an outage: an integration due on a registered dataset's schedule that has not succeeded
since fires IntegrationDown, turns red and loses uptime; no traffic where none was due is idle, not green.

Real calls to the SAP sandbox, stamped by the test's measurement clock. The clock starts on a whole UTC
hour: 10:30 in Asia/Kolkata, where SAP's schedules (sync-sap-customers */15, sync-sap-sales-orders */10)
are both due, so every due time below follows from config/integrations.toml by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from hub.datasets import Dataset, registered
from hub.monitoring.alerting import AlertRun, run_alerts
from hub.monitoring.config import AlertRules, MonitoringConfig, RoutingConfig, SilenceConfig
from hub.monitoring.expected import due_schedules, first_due_after, latest_due, makes_due
from hub.monitoring.health import flush_metrics, health_report, integration_stats
from hub.monitoring.notify import notify
from tests.hub.monitoring.conftest import (
    PD_KEY,
    SLACK_PATH,
    FakeClock,
    HttpSink,
    SapTraffic,
    SmtpSink,
    channel_settings,
    channels_config,
)

# A whole UTC hour, 6 h back: before any error row stamped with the real time, and on SAP's due times.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


@pytest.fixture
def at_t0(clock: FakeClock) -> FakeClock:
    clock.now = T0
    return clock


def config(http: HttpSink, smtp: SmtpSink) -> MonitoringConfig:
    routing = RoutingConfig(critical=["pagerduty", "slack"], high=["slack"], medium=["slack"], low=["slack"])
    return channels_config(http, smtp, routing=routing, alerts=AlertRules(repeat_interval_min=60))


def evaluate(cfg: MonitoringConfig, clock: FakeClock, http: HttpSink) -> AlertRun:
    flush_metrics()
    return run_alerts(now=clock.now, config=cfg, notifier=partial(notify, config=cfg, settings=channel_settings(http)))


def test_due_times_come_from_the_registry_schedules() -> None:
    schedules = due_schedules(MonitoringConfig())
    # Scheduled pulls keeping a watermark make their integration due; pushes, outboxes and on-demand sends do not.
    assert {s.dataset: s.cron for s in schedules["sap"]} == {"sap.customers": "*/15 * * * *", "sap.sales_orders": "*/10 * * * *"}
    assert "whatsapp" not in schedules and "webhooks" not in schedules
    assert "lab" not in schedules  # [silence] idle_ok: drop-folder exports arrive when the testers test
    assert "lab" in due_schedules(MonitoringConfig(silence=SilenceConfig(idle_ok=[])))
    assert first_due_after(schedules["sap"], T0, "Asia/Kolkata").at == T0 + timedelta(minutes=10)  # type: ignore[union-attr]
    assert latest_due(schedules["sap"], T0 + timedelta(minutes=14), "Asia/Kolkata").at == T0 + timedelta(minutes=10)  # type: ignore[union-attr]
    # A dataset registered later is expected on its own schedule, with nothing else to change.
    extra = Dataset(
        name="sap.plants_test", integration="sap_plants_test", dataset="plants", description="test", flow="flows/x.py:x",
        deployment="sync-sap-plants-test", schedule="sap", table="plants", key=("plant",), cursor="none",
        cursor_datasets=("plants",),
    )
    assert makes_due(extra)
    with registered(extra):
        assert [s.dataset for s in due_schedules(MonitoringConfig())["sap_plants_test"]] == ["sap.plants_test"]


def test_a_stopped_sap_sync_fires_integration_down_saying_when_it_was_due_and_last_succeeded(
    sap_traffic: SapTraffic, at_t0: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink)
    assert sap_traffic.calls(3) == 0  # the last successful run, at T0; then the job stops: no calls at all
    at_t0.advance(minutes=39)
    run = evaluate(cfg, at_t0, http_sink)
    assert run.firing == [], "due at T0+10, the 30 min grace has not run out"

    at_t0.advance(minutes=1)
    run = evaluate(cfg, at_t0, http_sink)
    assert run.fired == ["IntegrationDown/sap"]  # only SAP: the other integrations were never seen
    [trigger] = [e for e in http_sink.json_bodies("/v2/enqueue") if e["event_action"] == "trigger"]
    assert trigger["routing_key"] == PD_KEY and trigger["payload"]["severity"] == "critical"
    [text] = [b["text"] for b in http_sink.json_bodies(SLACK_PATH) if "IntegrationDown: sap" in b["text"]]
    due = T0 + timedelta(minutes=10)
    assert f"due at {due:%Y-%m-%d %H:%M} UTC (sync-sap-sales-orders, cron '*/10 * * * *')" in text
    assert f"last success {T0:%Y-%m-%d %H:%M} UTC" in text

    # The case: two hours after SAP's last call, it is still firing (and was notified again).
    at_t0.advance(minutes=80)
    run = evaluate(cfg, at_t0, http_sink)
    assert "IntegrationDown/sap" in run.firing and "IntegrationDown/sap" in run.repeated

    assert sap_traffic.calls(1) == 0  # the job runs again
    run = evaluate(cfg, at_t0, http_sink)
    assert run.resolved == ["IntegrationDown/sap"]
    assert [e["event_action"] for e in http_sink.json_bodies("/v2/enqueue")] == ["trigger", "trigger", "resolve"]


def test_uptime_counts_overdue_minutes_health_turns_red_and_no_traffic_is_idle_not_green(
    sap_traffic: SapTraffic, at_t0: FakeClock
) -> None:
    cfg = MonitoringConfig(integrations=["sap", "whatsapp"])
    assert sap_traffic.calls(2) == 0
    flush_metrics()

    at_t0.advance(minutes=20)  # due at T0+10, grace not out; no traffic in the 15 min health window
    report = {st.integration: st for st in health_report(now=at_t0.now, config=cfg)}
    assert report["sap"].health == "idle" and report["sap"].expected
    assert report["sap"].health_reasons == ["no traffic in the window; nothing overdue on its schedule"]
    assert report["whatsapp"].health == "idle" and not report["whatsapp"].expected

    at_t0.advance(minutes=40)  # T0+60: overdue since the end of minute T0+39
    [sap] = [st for st in integration_stats(timedelta(hours=1), now=at_t0.now, config=cfg) if st.integration == "sap"]
    assert sap.missed_due_at == T0 + timedelta(minutes=10)
    # Minutes T0 (a success) to T0+60: up 1, overdue 22 (T0+39 .. T0+60). Before, silence counted as nothing.
    assert sap.uptime_pct == pytest.approx(100 / 23)
    report = {st.integration: st for st in health_report(now=at_t0.now, config=cfg)}
    assert report["sap"].health == "red"
    assert report["sap"].health_reasons == [
        f"due at {T0 + timedelta(minutes=10):%Y-%m-%d %H:%M} UTC (sync-sap-sales-orders, cron '*/10 * * * *'), "
        f"no success since: last success {T0:%Y-%m-%d %H:%M} UTC"
    ]
    assert report["whatsapp"].health == "idle"  # nothing due, nothing happened: grey, never green

    assert sap_traffic.calls(1) == 0
    flush_metrics()
    report = {st.integration: st for st in health_report(now=at_t0.now, config=cfg)}
    assert report["sap"].health == "green" and report["sap"].missed_due_at is None
