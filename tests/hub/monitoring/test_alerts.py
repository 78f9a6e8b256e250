"""The five alert rules fire, repeat and resolve on traffic driven against the sandboxes.

The traffic is real (HTTP calls to the SAP sandbox with its fault switches, signed webhooks posted
to the real ingress); only the measurement clock is moved, so that "30 minutes without a success"
does not take 30 minutes. Notifications go through hub.monitoring.notify to local sinks and are checked there.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
from sqlalchemy import select, update

from hub.core.db import get_engine, session_scope
from hub.core.models import Alert, IntegrationErrorRow
from hub.ledger.errors import record_error
from hub.monitoring.alerting import AlertRun, run_alerts
from hub.monitoring.config import AlertRules, MonitoringConfig, RoutingConfig
from hub.monitoring.health import flush_metrics
from hub.monitoring.notify import notify
from tests.hub.ingress.conftest import hub_settings, razorpay_body, razorpay_headers, serving
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

ROUTING = RoutingConfig(critical=["pagerduty", "slack"], high=["slack"], medium=["slack"], low=["slack"])


def config(http: HttpSink, smtp: SmtpSink, **rules: Any) -> MonitoringConfig:
    return channels_config(http, smtp, routing=ROUTING, alerts=AlertRules(repeat_interval_min=5, **rules))


def evaluate(cfg: MonitoringConfig, clock: FakeClock, http: HttpSink) -> AlertRun:
    flush_metrics()
    return run_alerts(now=clock.now, config=cfg, notifier=partial(notify, config=cfg, settings=channel_settings(http)))


def slack_texts(http: HttpSink, needle: str) -> list[str]:
    return [b["text"] for b in http.json_bodies(SLACK_PATH) if needle in b["text"]]


def alert_row(rule: str, integration: str) -> Alert:
    with session_scope() as session:
        row = session.scalars(select(Alert).where(Alert.rule == rule, Alert.integration == integration).order_by(Alert.id.desc())).first()
        assert row is not None
        session.expunge(row)
        return row


def test_integration_down_fires_after_30_minutes_without_success_repeats_and_resolves(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink)
    assert sap_traffic.calls(3) == 0  # healthy at the start
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 1, "error_5xx_status": 503})
    for minute in range(1, 32):
        clock.advance(minutes=1)
        assert sap_traffic.calls(1) == 1
        if minute == 20:
            early = evaluate(cfg, clock, http_sink)
            assert "IntegrationDown/sap" not in early.firing  # 20 minutes is not 30
            assert "HighErrorRate/sap" in early.fired

    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["IntegrationDown/sap"]
    [trigger] = [e for e in http_sink.json_bodies("/v2/enqueue") if e["event_action"] == "trigger"]
    assert trigger["routing_key"] == PD_KEY and trigger["dedup_key"] == "drymix/sap/IntegrationDown"
    assert "none succeeded" in trigger["payload"]["summary"] or "IntegrationDown: sap" == trigger["payload"]["summary"]
    assert len(slack_texts(http_sink, "[DryMix CRITICAL] IntegrationDown: sap")) == 1

    clock.advance(minutes=1)
    sap_traffic.calls(1)
    assert "IntegrationDown/sap" not in evaluate(cfg, clock, http_sink).repeated  # fired once, not every minute
    clock.advance(minutes=5)
    sap_traffic.calls(1)
    assert "IntegrationDown/sap" in evaluate(cfg, clock, http_sink).repeated
    assert len(slack_texts(http_sink, "IntegrationDown: sap (still firing)")) == 1

    sap_traffic.sandbox.faults.clear()
    clock.advance(minutes=1)
    assert sap_traffic.calls(2) == 0
    run = evaluate(cfg, clock, http_sink)
    assert "IntegrationDown/sap" in run.resolved
    resolves = [e for e in http_sink.json_bodies("/v2/enqueue") if e["event_action"] == "resolve"]
    assert resolves == [{"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": "drymix/sap/IntegrationDown"}]
    assert len(slack_texts(http_sink, "RESOLVED IntegrationDown: sap")) == 1
    row = alert_row("IntegrationDown", "sap")
    assert row.status == "resolved" and row.notifications_sent == 3 and row.resolved_at == clock.now


def test_an_alert_tied_to_an_open_error_keeps_firing_after_the_window_moves_on(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink)
    sap_traffic.calls(1)
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 1})
    for _ in range(31):
        clock.advance(minutes=1)
        sap_traffic.calls(1)
    # The failed unit is recorded as the sync would record it: the last classified error.
    error_id = record_error(sap_traffic.errors[-1], integration="sap", dataset="customers", unit={"batch": 1})
    run = evaluate(cfg, clock, http_sink)
    assert "IntegrationDown/sap" in run.fired
    assert alert_row("IntegrationDown", "sap").error_id == error_id

    # Nobody fixed it and the sync stopped calling: no calls in the last 30 minutes at all. HighErrorRate's
    # window moved past the failed calls: its open error holds it.
    clock.advance(minutes=45)
    run = evaluate(cfg, clock, http_sink)
    assert "HighErrorRate/sap" in run.held and "HighErrorRate/sap" in run.firing
    assert "HighErrorRate/sap" not in run.resolved
    held = slack_texts(http_sink, f"error #{error_id} is still open")
    assert held, "the held alert is notified again at the repeat interval"
    # IntegrationDown holds on its own: SAP was due on its schedule and nothing has succeeded since (silence).
    assert "IntegrationDown/sap" in run.firing and "IntegrationDown/sap" not in run.held

    with get_engine().begin() as conn:
        conn.execute(update(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id).values(status="resolved"))
    clock.advance(minutes=1)
    run = evaluate(cfg, clock, http_sink)
    assert "HighErrorRate/sap" in run.resolved
    assert "IntegrationDown/sap" in run.firing, "a resolved error row does not make a silent integration healthy"
    sap_traffic.sandbox.faults.clear()
    assert sap_traffic.calls(1) == 0
    run = evaluate(cfg, clock, http_sink)
    assert "IntegrationDown/sap" in run.resolved


def test_high_error_rate_fires_repeats_and_resolves(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink)
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 4, "error_5xx_status": 500})
    assert sap_traffic.calls(20) == 5  # 25 % errors

    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["HighErrorRate/sap"]
    [text] = slack_texts(http_sink, "[DryMix HIGH] HighErrorRate: sap")
    assert "error rate 25.0% (5 of 20 calls)" in text

    clock.advance(minutes=5)
    sap_traffic.calls(8)
    assert evaluate(cfg, clock, http_sink).repeated == ["HighErrorRate/sap"]

    sap_traffic.sandbox.faults.clear()
    clock.advance(minutes=11)
    assert sap_traffic.calls(20) == 0
    run = evaluate(cfg, clock, http_sink)
    assert run.resolved == ["HighErrorRate/sap"] and run.firing == []
    assert len(slack_texts(http_sink, "RESOLVED HighErrorRate: sap")) == 1


def test_rate_limit_exceeded_fires_on_more_than_ten_429s_in_five_minutes_and_resolves(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink, high_error_rate=1.0)  # this test is about 429s only
    sap_traffic.sandbox.faults.update({"rate_limit_next_n": 10, "retry_after_s": 0})
    sap_traffic.calls(14)
    assert "RateLimitExceeded/sap" not in evaluate(cfg, clock, http_sink).fired  # 10 is not more than 10

    sap_traffic.sandbox.faults.update({"rate_limit_next_n": 2})
    clock.advance(minutes=1)
    sap_traffic.calls(3)
    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["RateLimitExceeded/sap"]
    [text] = slack_texts(http_sink, "[DryMix MEDIUM] RateLimitExceeded: sap")
    assert "12 rate-limited answers (429)" in text

    clock.advance(minutes=5)  # the first 10 left the window; 11 more arrive
    sap_traffic.sandbox.faults.update({"rate_limit_next_n": 11})
    sap_traffic.calls(11)
    assert evaluate(cfg, clock, http_sink).repeated == ["RateLimitExceeded/sap"]

    clock.advance(minutes=6)
    assert sap_traffic.calls(3) == 0
    assert evaluate(cfg, clock, http_sink).resolved == ["RateLimitExceeded/sap"]


def test_slow_response_time_fires_on_p95_over_the_threshold_and_resolves(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    # The plan's threshold is 2 s; a configurable 0.25 s keeps the driven latency short.
    cfg = config(http_sink, smtp_sink, slow_p95_s=0.25)
    sap_traffic.sandbox.faults.update({"latency_ms": 400})
    sap_traffic.calls(4)
    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["SlowResponseTime/sap"]
    row = alert_row("SlowResponseTime", "sap")
    assert row.value is not None and row.value > 0.25 and row.threshold == 0.25

    sap_traffic.sandbox.faults.clear()
    clock.advance(minutes=6)
    sap_traffic.calls(2)  # fast now, but the slow calls are still in the 15-minute window
    assert evaluate(cfg, clock, http_sink).repeated == ["SlowResponseTime/sap"]

    clock.advance(minutes=16)
    sap_traffic.calls(5)
    assert evaluate(cfg, clock, http_sink).resolved == ["SlowResponseTime/sap"]
    assert len(slack_texts(http_sink, "RESOLVED SlowResponseTime: sap")) == 1


def test_webhook_delay_fires_on_an_inbox_backlog_and_resolves_when_it_is_processed(
    clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    from flows.process_webhooks import apply_batch
    from hub.ingress.app import create_app

    cfg = config(http_sink, smtp_sink, webhook_backlog_max=5)
    with serving(create_app(hub_settings())) as ingress, httpx.Client(base_url=ingress) as client:
        for i in range(7):
            body = razorpay_body(payment_id=f"pay_backlog{i:06d}")
            assert client.post("/webhooks/razorpay", content=body, headers=razorpay_headers(body)).status_code == 200
    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["WebhookDelay/razorpay"]
    [text] = slack_texts(http_sink, "WebhookDelay: razorpay")
    assert "7 webhook events waiting in the inbox" in text

    clock.advance(minutes=5)
    assert evaluate(cfg, clock, http_sink).repeated == ["WebhookDelay/razorpay"]

    outcome = apply_batch(100)  # the process-webhooks flow's batch: the backlog is drained
    assert outcome.claimed == 7
    clock.advance(minutes=1)
    assert evaluate(cfg, clock, http_sink).resolved == ["WebhookDelay/razorpay"]
