"""The integration plan's numbers, as shipped: retry policies per integration, the five alert thresholds
and the SLA targets. A change here is a change of the plan: make it there first, then here, on purpose.

Reads the files in the repository (not MONITORING_FILE / the settings' paths), so a test environment
pointing elsewhere cannot hide a change to what ships.
"""

from __future__ import annotations

import tomllib

from hub.core.settings import DEFAULT_INTEGRATIONS_FILE, _load_integrations
from hub.monitoring.config import DEFAULT_MONITORING_FILE, MonitoringConfig


def shipped_monitoring() -> MonitoringConfig:
    with DEFAULT_MONITORING_FILE.open("rb") as fh:
        return MonitoringConfig.model_validate(tomllib.load(fh))


def test_retry_policies_are_the_plans() -> None:
    configs = _load_integrations(DEFAULT_INTEGRATIONS_FILE)
    plan = {"razorpay": (3, 1000), "whatsapp": (3, 2000), "sap": (2, 5000)}  # max retries, base delay ms
    assert {name: (configs[name].retry.max_retries, configs[name].retry.base_delay_ms) for name in plan} == plan
    # Every integration has its own policy, with exponential backoff that is capped and jittered.
    assert set(configs) == {"sap", "razorpay", "whatsapp", "microsoft365", "google_workspace", "plant_opcua", "lab"}
    for name, config in configs.items():
        assert config.retry.max_delay_ms >= config.retry.base_delay_ms > 0, name
        assert config.retry.jitter_ratio > 0, name


def test_the_five_alert_thresholds_are_the_plans() -> None:
    rules = shipped_monitoring().alerts
    assert (rules.integration_down_no_success_min, rules.integration_down_severity) == (30, "critical")
    assert (rules.high_error_rate, rules.high_error_rate_window_min, rules.high_error_rate_severity) == (0.05, 10, "high")
    assert (rules.rate_limit_max, rules.rate_limit_window_min, rules.rate_limit_severity) == (10, 5, "medium")
    assert (rules.slow_p95_s, rules.slow_window_min, rules.slow_severity) == (2.0, 15, "medium")
    assert (rules.webhook_backlog_max, rules.webhook_delay_severity) == (100, "medium")
    # The sixth rule (the SLAs' budget) is the SRE workbook's page: 14.4x over 1 h and 5 min.
    assert (rules.error_budget_burn_rate, rules.error_budget_long_window_min, rules.error_budget_short_window_min) == (14.4, 60, 5)


def test_sla_targets_are_the_plans() -> None:
    cfg = shipped_monitoring()
    assert cfg.sla_window == "30d"
    # key: (availability %, latency ms), the plan's table
    assert {t.key: (t.availability_pct, t.latency_ms) for t in cfg.sla} == {
        "razorpay.create_order": (99.9, 500),
        "razorpay.verify_payment": (99.9, 300),
        "whatsapp.send_message": (99.5, 1000),
        "microsoft365.upload_file": (99.5, 2000),
        "google_workspace.calendar_event": (99.5, 500),
        "sap.sync_customer": (99.0, 2000),
        "plant_opcua.read_status": (99.9, 200),
        "lab.read_test": (99.0, 1000),
    }
    assert {t.latency_quantile for t in cfg.sla} == {0.95}
    # Each SLA names operations its integration's connector really measures under those names.
    assert {t.key: (t.integration, t.kind, tuple(t.operations)) for t in cfg.sla} == {
        "razorpay.create_order": ("razorpay", "call", ("create_order",)),
        "razorpay.verify_payment": ("razorpay", "webhook", ("receive",)),
        "whatsapp.send_message": ("whatsapp", "call", ("send_text", "send_template")),
        "microsoft365.upload_file": ("microsoft365", "call", ("upload_simple", "create_upload_session", "upload_chunk")),
        "google_workspace.calendar_event": ("google_workspace", "call", ("insert_event", "patch_event", "delete_event")),
        "sap.sync_customer": ("sap", "call", ("push_customers_batch", "create_partner", "update_partner")),
        "plant_opcua.read_status": ("plant_opcua", "call", ("read",)),
        "lab.read_test": ("lab", "call", ("read_lab_results",)),
    }
