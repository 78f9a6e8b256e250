"""Every minute: write pending measurements, evaluate the alert rules (the plan's five and ErrorBudgetBurn), refresh the health artifact.

Reads top to bottom: flush -> evaluate alerts (fire / repeat / resolve, each notified through
hub.monitoring.notify) -> health per integration as the `integration-health` Prefect artifact -> prune old
per-minute metrics. Thresholds, routing and channels: config/monitoring.toml (docs/monitoring.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hub.monitoring.alerting import active_alerts, run_alerts
from hub.monitoring.config import monitoring_config
from hub.monitoring.health import ensure_flusher, flush_metrics, health_markdown, health_report, prune_metrics


@task(cache_policy=NO_CACHE, persist_result=False)
def evaluate_alerts() -> dict[str, Any]:
    """Fire, repeat and resolve alerts from the flushed metrics; notifications go out from here."""
    return run_alerts().as_json()


@task(cache_policy=NO_CACHE, persist_result=False)
def publish_health() -> list[dict[str, Any]]:
    """Health per integration over the health window, as the `integration-health` markdown artifact."""
    cfg = monitoring_config()
    report = health_report(config=cfg)
    create_markdown_artifact(
        key="integration-health",
        markdown=health_markdown(report, active_alerts(), window=cfg.health.window),
        description=", ".join(f"{st.integration}: {st.health}" for st in report) or "no integrations measured yet",
    )
    return [{"integration": st.integration, "health": st.health, "reasons": st.health_reasons} for st in report]


@flow(name="monitor-integrations", description="Evaluate the alert rules, notify, and refresh the integration-health artifact.")
def monitor_integrations() -> dict[str, Any]:
    """One evaluation; the deployment runs it every minute."""
    logger = get_run_logger()
    ensure_flusher()
    flush_metrics()
    alerts = evaluate_alerts()
    health = publish_health()
    pruned = prune_metrics(timedelta(days=monitoring_config().retention_days))
    for label in alerts["fired"]:
        logger.warning("alert fired: %s", label)
    for label in alerts["resolved"]:
        logger.info("alert resolved: %s", label)
    for line in alerts["failed_deliveries"]:
        logger.error("notification not delivered: %s", line)
    return {"alerts": alerts, "health": health, "pruned_metric_rows": pruned}
