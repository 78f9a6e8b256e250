"""Each notification channel delivers a correct message to a real local server; routing is configuration."""

from __future__ import annotations

import base64

import pytest

from hub.monitoring.config import RoutingConfig
from hub.monitoring.notify import notify
from tests.hub.monitoring.conftest import (
    PD_KEY,
    SLACK_PATH,
    TWILIO_SID,
    TWILIO_TOKEN,
    HttpSink,
    SmtpSink,
    channel_settings,
    channels_config,
)

SMS_PATH = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"


def test_critical_goes_to_every_channel_with_a_correct_message(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    cfg = channels_config(http_sink, smtp_sink)
    deliveries = notify("critical", "IntegrationDown: sap", "sap: 31 calls in 30 min, none succeeded",
                        dedupe_key="drymix/sap/IntegrationDown", config=cfg, settings=channel_settings(http_sink))

    assert {d.channel: d.ok for d in deliveries} == {"pagerduty": True, "sms": True, "slack": True, "email": True}
    # Email: one message per recipient, subject with severity and title, body with the text.
    assert sorted(r for _, rcpts, _ in smtp_sink.messages for r in rcpts) == ["lead@drymix.example", "oncall@drymix.example"]
    for sender, _, message in smtp_sink.messages:
        assert sender == "hub@drymix.example"
        assert message["Subject"] == "[DryMix CRITICAL] IntegrationDown: sap"
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert "none succeeded" in text and "drymix/sap/IntegrationDown" in text
    # SMS: Twilio's Messages API, form-encoded, Basic auth with the account SID and token.
    [form] = http_sink.forms(SMS_PATH)
    assert form["To"] == "+919800000001" and form["From"] == "+15005550006"
    assert form["Body"].startswith("[DryMix CRITICAL] IntegrationDown: sap")
    [sms_request] = [r for r in http_sink.requests if r["path"] == SMS_PATH]
    assert sms_request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert sms_request["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    # Slack: an incoming-webhook JSON body with text (and blocks).
    [slack] = http_sink.json_bodies(SLACK_PATH)
    assert "IntegrationDown: sap" in slack["text"] and "none succeeded" in slack["text"]
    assert slack["blocks"][0]["text"]["text"] == "[DryMix CRITICAL] IntegrationDown: sap"
    # PagerDuty Events API v2: trigger with the routing key and dedup key.
    [event] = http_sink.json_bodies("/v2/enqueue")
    assert event["routing_key"] == PD_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "drymix/sap/IntegrationDown"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"] == "IntegrationDown: sap"
    assert event["payload"]["source"] == "drymix-integration-hub"


def test_resolve_sends_a_pagerduty_resolve_for_the_same_dedup_key(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    cfg = channels_config(http_sink, smtp_sink, routing=RoutingConfig(critical=["pagerduty", "email"]))
    deliveries = notify("critical", "IntegrationDown: sap", "recovered", dedupe_key="drymix/sap/IntegrationDown",
                        resolve=True, config=cfg, settings=channel_settings(http_sink))

    assert all(d.ok for d in deliveries)
    [event] = http_sink.json_bodies("/v2/enqueue")
    assert event == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": "drymix/sap/IntegrationDown"}
    assert smtp_sink.messages[0][2]["Subject"] == "[DryMix RESOLVED] IntegrationDown: sap"


def test_routing_by_severity_and_pagerduty_only_for_critical(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    routing = RoutingConfig(high=["pagerduty", "slack"], medium=["email"], info=[])
    cfg = channels_config(http_sink, smtp_sink, routing=routing)
    settings = channel_settings(http_sink)

    high = notify("high", "HighErrorRate: sap", "12% errors", config=cfg, settings=settings)
    medium = notify("medium", "WebhookDelay: razorpay", "150 waiting", config=cfg, settings=settings)
    info = notify("info", "note", "nothing", config=cfg, settings=settings)

    assert [(d.channel, d.ok, d.skipped) for d in high] == [("pagerduty", False, True), ("slack", True, False)]
    assert [(d.channel, d.ok) for d in medium] == [("email", True)]
    assert info == []
    assert http_sink.json_bodies("/v2/enqueue") == []  # PagerDuty never saw the high one
    assert len(http_sink.json_bodies(SLACK_PATH)) == 1
    assert {m[2]["Subject"] for m in smtp_sink.messages} == {"[DryMix MEDIUM] WebhookDelay: razorpay"}


def test_a_failing_channel_does_not_stop_the_others_and_leaks_no_secret(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    http_sink.status = 500  # Slack, SMS and PagerDuty all answer 500 (retried once, then reported)
    cfg = channels_config(http_sink, smtp_sink)
    deliveries = notify("critical", "IntegrationDown: sap", "down", dedupe_key="k", config=cfg, settings=channel_settings(http_sink))

    by_channel = {d.channel: d for d in deliveries}
    assert by_channel["email"].ok
    for name in ("pagerduty", "sms", "slack"):
        assert not by_channel[name].ok and "HTTP 500" in by_channel[name].detail
    assert len(http_sink.json_bodies(SLACK_PATH)) == 2  # one retry
    for d in deliveries:
        for secret in (TWILIO_TOKEN, PD_KEY, "slack-hook-secret"):
            assert secret not in d.detail


def test_unconfigured_channels_are_skipped_with_the_reason(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    from hub.core.settings import HubSettings

    cfg = channels_config(http_sink, smtp_sink)
    deliveries = notify("critical", "t", "b", dedupe_key="k", config=cfg, settings=HubSettings())
    skipped = {d.channel: d.detail for d in deliveries if d.skipped}
    assert set(skipped) == {"pagerduty", "sms", "slack"}
    assert "PAGERDUTY_ROUTING_KEY" in skipped["pagerduty"] and "SLACK_WEBHOOK_URL" in skipped["slack"]
    assert [d.channel for d in deliveries if d.ok] == ["email"]


def test_unknown_severity_is_a_clear_error(http_sink: HttpSink, smtp_sink: SmtpSink) -> None:
    with pytest.raises(ValueError, match="unknown severity 'urgent'"):
        notify("urgent", "t", "b", config=channels_config(http_sink, smtp_sink), settings=channel_settings(http_sink))
