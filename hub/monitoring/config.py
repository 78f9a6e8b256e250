"""Typed monitoring configuration: health thresholds, alert rules, notification channels and routing.

Non-secret knobs live in config/monitoring.toml (MONITORING_FILE overrides the path); channel secrets
(SMTP password, Twilio token, Slack webhook URL, PagerDuty routing key) come from the environment
through HubSettings, never from the file.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from hub.core.settings import ROOT, get_settings

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")
Severity = Literal["critical", "high", "medium", "low", "info"]
ChannelName = Literal["email", "sms", "slack", "pagerduty"]
DEFAULT_MONITORING_FILE = ROOT / "config" / "monitoring.toml"


class EmailChannel(BaseModel):
    """SMTP delivery (through apprise). Username/password: ALERT_SMTP_USERNAME / ALERT_SMTP_PASSWORD."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "starttls"
    from_addr: str = "drymix-hub@localhost"
    to: list[str] = Field(default_factory=list)
    timeout_s: float = Field(15.0, gt=0)


class SmsChannel(BaseModel):
    """Twilio-compatible Messages API. Account SID / auth token: TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN."""

    base_url: str = "https://api.twilio.com"
    from_number: str = ""
    to: list[str] = Field(default_factory=list)
    max_chars: int = Field(320, ge=20, description="longer texts are cut (an SMS segment is 160 characters)")
    timeout_s: float = Field(10.0, gt=0)


class SlackChannel(BaseModel):
    """Slack incoming webhook; its URL is a secret (SLACK_WEBHOOK_URL)."""

    timeout_s: float = Field(10.0, gt=0)


class PagerDutyChannel(BaseModel):
    """PagerDuty Events API v2; the integration's routing key is a secret (PAGERDUTY_ROUTING_KEY)."""

    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = "drymix-integration-hub"
    timeout_s: float = Field(10.0, gt=0)


class ChannelsConfig(BaseModel):
    email: EmailChannel = EmailChannel()
    sms: SmsChannel = SmsChannel()
    slack: SlackChannel = SlackChannel()
    pagerduty: PagerDutyChannel = PagerDutyChannel()


class RoutingConfig(BaseModel):
    """Which channels each severity goes to. PagerDuty only ever receives critical (enforced in notify)."""

    critical: list[ChannelName] = ["pagerduty", "sms", "slack", "email"]
    high: list[ChannelName] = ["slack", "email"]
    medium: list[ChannelName] = ["slack", "email"]
    low: list[ChannelName] = ["email"]
    info: list[ChannelName] = []

    def channels_for(self, severity: str) -> list[str]:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r} (use one of {', '.join(SEVERITIES)})")
        return list(getattr(self, severity))


class HealthThresholds(BaseModel):
    """green unless a yellow threshold is crossed; red beats yellow. Rates are fractions (0.05 = 5%)."""

    window: str = "15m"
    yellow_error_rate: float = Field(0.01, ge=0, le=1)
    red_error_rate: float = Field(0.05, ge=0, le=1)
    yellow_p95_s: float = Field(1.0, gt=0)
    red_p95_s: float = Field(2.0, gt=0)
    yellow_rate_limited: int = Field(1, ge=1)
    red_rate_limited: int = Field(10, ge=1)
    yellow_no_success_min: float = Field(15.0, gt=0, description="calls but no success for this long -> yellow")
    red_no_success_min: float = Field(30.0, gt=0, description="calls but no success for this long -> red")
    yellow_backlog: int = Field(50, ge=1)
    red_backlog: int = Field(100, ge=1)


class AlertRules(BaseModel):
    """The plan's five rules. Durations in minutes; a rule holds only while its condition is true."""

    integration_down_no_success_min: float = Field(30.0, gt=0)
    integration_down_severity: Severity = "critical"
    high_error_rate: float = Field(0.05, ge=0, le=1)
    high_error_rate_window_min: float = Field(10.0, gt=0)
    high_error_rate_min_calls: int = Field(5, ge=1, description="fewer calls in the window cannot fire it")
    high_error_rate_severity: Severity = "high"
    rate_limit_max: int = Field(10, ge=0, description="fires when MORE than this many 429s in the window")
    rate_limit_window_min: float = Field(5.0, gt=0)
    rate_limit_severity: Severity = "medium"
    slow_p95_s: float = Field(2.0, gt=0)
    slow_window_min: float = Field(15.0, gt=0)
    slow_severity: Severity = "medium"
    webhook_backlog_max: int = Field(100, ge=0, description="fires when the inbox backlog is MORE than this")
    webhook_delay_severity: Severity = "medium"
    repeat_interval_min: float = Field(60.0, gt=0, description="a firing alert is notified again this often")
    # ErrorBudgetBurn, the sixth rule: the multiwindow, multi-burn-rate alert of Google's SRE workbook
    # ("Alerting on SLOs"): burn rate = error rate / (1 - SLA target); fires when both windows burn faster
    # than the rate (14.4 spends 2 % of a 30-day budget in one hour).
    error_budget_burn_rate: float = Field(14.4, gt=0)
    error_budget_long_window_min: float = Field(60.0, gt=0)
    error_budget_short_window_min: float = Field(5.0, gt=0)
    error_budget_min_calls: int = Field(10, ge=1, description="fewer calls in the long window cannot fire it")
    error_budget_burn_severity: Severity = "critical"


class SilenceConfig(BaseModel):
    """Expected activity (hub/monitoring/expected.py): which registered datasets make an integration due."""

    timezone: str = Field("Asia/Kolkata", description="the deployments' schedule zone (prefect.yaml schedule_defaults)")
    idle_ok: list[str] = Field(
        default_factory=lambda: ["lab.lab_results"], description="datasets whose runs may make no call (never due)"
    )


class SlaTarget(BaseModel):
    """One row of the plan's SLA table: an operation's availability and latency targets."""

    key: str = Field(pattern=r"^[a-z0-9_]+\.[a-z0-9_]+$", description="<integration>.<operation>, names its alerts")
    name: str
    integration: str
    operations: list[str] = Field(min_length=1, description="call_metrics operations that make up the SLA's traffic")
    kind: Literal["call", "webhook", "webhook_processing"] = "call"
    availability_pct: float = Field(gt=0, lt=100)
    latency_ms: float = Field(gt=0)
    latency_quantile: float = Field(0.95, gt=0, lt=1)

    @property
    def error_budget(self) -> float:
        """The fraction of calls allowed to fail (1 - target)."""
        return 1 - self.availability_pct / 100


class MonitoringConfig(BaseModel):
    flush_interval_s: float = Field(10.0, gt=0, description="how often buffered call measurements are written")
    retention_days: int = Field(30, ge=1, description="per-minute call_metrics rows older than this are deleted")
    dashboard_refresh_s: int = Field(15, ge=1)
    integrations: list[str] = Field(default_factory=list, description="always shown, even with no traffic yet")
    health: HealthThresholds = HealthThresholds()
    alerts: AlertRules = AlertRules()
    routing: RoutingConfig = RoutingConfig()
    channels: ChannelsConfig = ChannelsConfig()
    silence: SilenceConfig = SilenceConfig()
    sla_window: str = Field("30d", description="default window of `drymix monitor sla` and the dashboard's SLA panel")
    sla: list[SlaTarget] = Field(default_factory=list)

    @field_validator("sla")
    @classmethod
    def _unique_keys(cls, value: list[SlaTarget]) -> list[SlaTarget]:
        keys = [t.key for t in value]
        if len(keys) != len(set(keys)):
            raise ValueError(f"SLA keys must be unique: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
        return value

    @field_validator("integrations")
    @classmethod
    def _strip(cls, value: list[str]) -> list[str]:
        return [v.strip() for v in value if v.strip()]


@lru_cache(maxsize=4)
def _load(path: Path) -> MonitoringConfig:
    if not path.exists():
        raise FileNotFoundError(f"monitoring configuration {path} does not exist (MONITORING_FILE)")
    with path.open("rb") as fh:
        return MonitoringConfig.model_validate(tomllib.load(fh))


def monitoring_config() -> MonitoringConfig:
    """The configuration named by MONITORING_FILE (default config/monitoring.toml)."""
    return _load(Path(get_settings().monitoring_file))


def reset_monitoring_config_cache() -> None:
    _load.cache_clear()
