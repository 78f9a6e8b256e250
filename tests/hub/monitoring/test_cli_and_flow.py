"""`drymix monitor ...` / `drymix health` as a user runs them, and the monitor-integrations flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.core.settings import reset_settings_cache
from hub.monitoring.health import flush_metrics
from tests.hub.cli.test_cli import drymix
from tests.hub.monitoring.conftest import SLACK_PATH, HttpSink, SapTraffic, SmtpSink


def monitoring_toml(path: Path, smtp: SmtpSink) -> Path:
    path.write_text(
        f"""
integrations = ["sap", "razorpay", "whatsapp"]
[alerts]
repeat_interval_min = 5
[routing]
critical = ["slack", "email"]
high = ["slack", "email"]
medium = ["slack"]
low = ["email"]
info = []
[channels.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
security = "none"
from_addr = "hub@drymix.example"
to = ["oncall@drymix.example"]
"""
    )
    return path


@pytest.fixture
def monitoring_env(tmp_path: Path, http_sink: HttpSink, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {"MONITORING_FILE": str(monitoring_toml(tmp_path / "monitoring.toml", smtp_sink)), "SLACK_WEBHOOK_URL": f"{http_sink.url}{SLACK_PATH}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    yield env
    monkeypatch.undo()
    reset_settings_cache()


def failing_traffic(sap_traffic: SapTraffic) -> None:
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 2})
    assert sap_traffic.calls(20) == 10
    flush_metrics()


def test_monitor_status_and_health_commands(sap_traffic: SapTraffic, monitoring_env: dict[str, str]) -> None:
    failing_traffic(sap_traffic)
    result = drymix("monitor", "status", "--window", "1h", "--json", env=monitoring_env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    sap = next(i for i in payload["integrations"] if i["integration"] == "sap")
    assert (sap["calls"], sap["errors"], sap["health"]) == (20, 10, "red")
    assert sap["error_rate"] == 0.5

    health = drymix("health", env={**monitoring_env, "COLUMNS": "200"})
    assert health.returncode == 0, health.stderr
    assert "sap" in health.stdout and "red" in health.stdout and "error rate 50.0% > 5.0%" in health.stdout

    bad = drymix("monitor", "status", "--window", "yesterday", env=monitoring_env)
    assert bad.returncode == 2 and "not understood" in bad.stderr


def test_monitor_evaluate_alerts_and_notify_test_commands(
    sap_traffic: SapTraffic, monitoring_env: dict[str, str], http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    failing_traffic(sap_traffic)
    evaluated = drymix("monitor", "evaluate", "--json", env=monitoring_env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["fired"] == ["HighErrorRate/sap"]
    assert any("HighErrorRate: sap" in b["text"] for b in http_sink.json_bodies(SLACK_PATH))
    assert [m[2]["Subject"] for m in smtp_sink.messages] == ["[DryMix HIGH] HighErrorRate: sap"]

    alerts = drymix("monitor", "alerts", "--json", env=monitoring_env)
    [alert] = json.loads(alerts.stdout)
    assert (alert["rule"], alert["integration"], alert["status"], alert["notifications_sent"]) == ("HighErrorRate", "sap", "firing", 1)
    assert {d["channel"] for d in alert["last_delivery"]} == {"slack", "email"}

    tested = drymix("monitor", "notify-test", "--severity", "medium", env=monitoring_env)
    assert tested.returncode == 0, tested.stderr
    assert "slack: sent" in tested.stdout
    assert any("notification test" in b["text"] for b in http_sink.json_bodies(SLACK_PATH))


@pytest.mark.usefixtures("prefect_harness")
def test_monitor_flow_fires_alerts_and_publishes_the_integration_health_artifact(
    sap_traffic: SapTraffic, monitoring_env: dict[str, str], http_sink: HttpSink
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.monitor_integrations import monitor_integrations

    failing_traffic(sap_traffic)
    result = monitor_integrations()
    assert result["alerts"]["fired"] == ["HighErrorRate/sap"]
    assert {h["integration"]: h["health"] for h in result["health"]}["sap"] == "red"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["integration-health"])))
    assert artifacts, "the flow publishes the integration-health artifact"
    markdown = str(artifacts[-1].data)
    assert "| sap | 🔴 red | 20 |" in markdown and "HighErrorRate" in markdown
    assert "drymix health" in markdown
