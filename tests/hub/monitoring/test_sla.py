"""SLAs: achieved availability and latency against the target and the error budget left, from driven
calls; the ErrorBudgetBurn rule (SRE workbook multiwindow burn rate) fires and resolves; `drymix monitor sla`.

The SLA here is declared on the SAP sandbox's read_partner calls (what the sap_traffic fixture drives):
99 % availability leaves a 1 % budget, so a 14.4x burn is an error rate above 14.4 %.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest

from hub.monitoring.alerting import AlertRun, evaluate_rules, run_alerts
from hub.monitoring.config import AlertRules, MonitoringConfig, RoutingConfig, SlaTarget
from hub.monitoring.health import flush_metrics
from hub.monitoring.notify import notify
from hub.monitoring.sla import sla_report
from tests.hub.cli.test_cli import drymix
from tests.hub.monitoring.conftest import (
    SLACK_PATH,
    FakeClock,
    HttpSink,
    SapTraffic,
    SmtpSink,
    channel_settings,
    channels_config,
)

READS = SlaTarget(key="sap.read_partner", name="SAP: read partner", integration="sap", operations=["read_partner"],
                  availability_pct=99.0, latency_ms=2000)


def config(http: HttpSink, smtp: SmtpSink) -> MonitoringConfig:
    # HighErrorRate off: this file is about the budget rule.
    cfg = channels_config(http, smtp, routing=RoutingConfig(critical=["slack"], high=["slack"], medium=["slack"]),
                          alerts=AlertRules(high_error_rate=1.0, repeat_interval_min=60))
    return cfg.model_copy(update={"sla": [READS]})


def evaluate(cfg: MonitoringConfig, clock: FakeClock, http: HttpSink) -> AlertRun:
    flush_metrics()
    return run_alerts(now=clock.now, config=cfg, notifier=partial(notify, config=cfg, settings=channel_settings(http)))


def test_sla_report_shows_availability_latency_and_the_budget_left(sap_traffic: SapTraffic, clock: FakeClock) -> None:
    cfg = MonitoringConfig(sla=[READS, READS.model_copy(update={"key": "sap.idle_op", "operations": ["never_called"]})])
    assert sap_traffic.calls(199) == 0
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 1})
    assert sap_traffic.calls(1) == 1  # 1 failure in 200 calls: 99.5 %, half the 1 % budget spent
    flush_metrics()
    reads, idle = sla_report(timedelta(days=30), now=clock.now, config=cfg)
    assert (reads.calls, reads.errors) == (200, 1)
    assert reads.availability_pct == pytest.approx(99.5) and reads.availability_met
    assert reads.burn_rate == pytest.approx(0.5) and reads.budget_left == pytest.approx(0.5)
    assert reads.latency_s is not None and reads.latency_s < 2.0 and reads.latency_met

    sap_traffic.calls(2)  # 3 failures in 202: 98.5 %, below the target, the budget overspent
    flush_metrics()
    reads, _ = sla_report(timedelta(days=30), now=clock.now, config=cfg)
    assert reads.availability_met is False and reads.budget_left < 0
    # An SLA without traffic: nothing achieved, nothing spent; never "met" by default.
    assert (idle.calls, idle.availability_pct, idle.availability_met, idle.budget_left) == (0, None, None, 1.0)

    slow = cfg.model_copy(update={"sla": [READS.model_copy(update={"latency_ms": 0.001})]})
    [reads] = sla_report(timedelta(days=30), now=clock.now, config=slow)
    assert reads.latency_met is False


def test_error_budget_burn_fires_on_both_windows_and_resolves_when_the_short_one_cools(
    sap_traffic: SapTraffic, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    cfg = config(http_sink, smtp_sink)
    sap_traffic.calls(9)
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 1})
    sap_traffic.calls(1)
    flush_metrics()
    [burn] = [c for c in evaluate_rules(now=clock.now, config=cfg) if c.rule == "ErrorBudgetBurn"]
    assert burn.integration == "sap.read_partner" and burn.value == pytest.approx(10.0) and not burn.holds  # 10x < 14.4x

    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 4})
    clock.advance(minutes=6)  # the first 10 calls leave the 5-minute window, not the hour
    assert sap_traffic.calls(20) == 5  # now 6 of 30 in the hour (20 %, 20x) and 5 of 20 in 5 min (25 %, 25x)
    run = evaluate(cfg, clock, http_sink)
    assert run.fired == ["ErrorBudgetBurn/sap.read_partner"]
    [text] = [b["text"] for b in http_sink.json_bodies(SLACK_PATH) if "ErrorBudgetBurn" in b["text"]]
    assert "[DryMix CRITICAL]" in text and "20.0x over the last 60 min (6 of 30 calls failed)" in text and "25.0x over the last 5 min" in text

    # The burning stops: the hour still burns fast, but the last 5 minutes do not, so the alert resolves.
    sap_traffic.sandbox.faults.clear()
    clock.advance(minutes=6)
    assert sap_traffic.calls(10) == 0
    run = evaluate(cfg, clock, http_sink)
    assert run.resolved == ["ErrorBudgetBurn/sap.read_partner"]


def test_monitor_sla_command(sap_traffic: SapTraffic, tmp_path: Path) -> None:
    toml = tmp_path / "monitoring.toml"
    toml.write_text(
        'sla_window = "7d"\n[[sla]]\nkey = "sap.read_partner"\nname = "SAP: read partner"\nintegration = "sap"\n'
        'operations = ["read_partner"]\navailability_pct = 99.0\nlatency_ms = 2000\n'
    )
    env = {"MONITORING_FILE": str(toml), "COLUMNS": "200"}
    assert sap_traffic.calls(50) == 0
    flush_metrics()
    result = drymix("monitor", "sla", "--window", "30d", "--json", env=env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["window"] == "30d"
    [row] = payload["sla"]
    assert (row["key"], row["calls"], row["availability_pct"], row["target_pct"], row["budget_left"]) == ("sap.read_partner", 50, 100.0, 99.0, 1.0)

    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 5})
    sap_traffic.calls(50)
    flush_metrics()
    table = drymix("monitor", "sla", env=env)  # the default window: sla_window
    assert table.returncode == 1, "a missed SLA is exit code 1"
    assert "SLAs over the last 7d" in table.stdout and "90.000%" in table.stdout and "99%" in table.stdout
    assert "1 SLA(s) missed" in table.stdout and "sap.read_partner" in table.stdout
    assert drymix("monitor", "sla", "--window", "soon", env=env).returncode == 2
