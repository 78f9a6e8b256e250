"""The plan's five alert rules and the SLAs' error-budget rule, their state in the `alerts` table, and the notifications of their lifecycle.

`evaluate_rules()` measures each rule for each integration from the flushed call metrics and the
inbox; `run_alerts()` (called every minute by the monitor-integrations flow) turns that into state:

- a rule that starts to hold creates a firing alert and notifies at once (routed by its severity);
- while it holds, the alert is notified again every `repeat_interval_min`;
- when it stops holding, the alert resolves with a notification (PagerDuty gets a resolve event for
  the same dedup key) -- unless it is tied to an integration_errors row that is still open. A failure
  nobody fixed keeps the alert firing even when the window moves past the failed calls (a sync that
  stopped calling has no errors in the last 10 minutes, but it is not fixed).

Rules (thresholds in config/monitoring.toml [alerts], docs/monitoring.md):
  IntegrationDown    calls in the last 30 min, none succeeded, and the last success (or first call) is
                     30 min or more ago; or silence: due on a registered dataset's schedule 30 min
                     or more ago and no success since (hub/monitoring/expected.py)      critical
  HighErrorRate      error rate over 5 % in the last 10 min (with at least min_calls calls)   high
  RateLimitExceeded  more than 10 rate-limited (429) answers in the last 5 min               medium
  SlowResponseTime   P95 latency over 2 s in the last 15 min                                 medium
  WebhookDelay       more than 100 webhook events waiting in the inbox                       medium
  ErrorBudgetBurn    an SLA's error budget burning over 14.4 times its rate in both the last hour and
                     the last 5 min (SRE workbook multiwindow rule); per SLA key, not integration  critical
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.db import session_scope
from hub.core.models import Alert, AlertStatus, IntegrationErrorRow
from hub.monitoring.config import MonitoringConfig, monitoring_config
from hub.monitoring.health import OPEN_ERROR_STATUSES, IntegrationStats, integration_stats
from hub.monitoring.notify import Delivery, notify

log = logging.getLogger(__name__)

RULES = ("IntegrationDown", "HighErrorRate", "RateLimitExceeded", "SlowResponseTime", "WebhookDelay", "ErrorBudgetBurn")
# Rules about connector calls: an open error row of the integration (not a validation refusal) holds them.
_ERROR_TIED_RULES = frozenset({"IntegrationDown", "HighErrorRate", "RateLimitExceeded", "SlowResponseTime"})

Notifier = Callable[..., list[Delivery]]


@dataclass(frozen=True)
class Condition:
    """One rule measured for one integration."""

    rule: str
    integration: str
    severity: str
    holds: bool
    value: float | None
    threshold: float
    window_min: float | None
    summary: str


def _minutes(td: timedelta) -> float:
    return td.total_seconds() / 60


def evaluate_rules(*, now: datetime | None = None, config: MonitoringConfig | None = None) -> list[Condition]:
    """Measure every rule for every known integration (no state, no notification)."""
    cfg = config or monitoring_config()
    rules = cfg.alerts
    now = now or datetime.now(UTC)

    def by_name(minutes: float) -> dict[str, IntegrationStats]:
        return {s.integration: s for s in integration_stats(timedelta(minutes=minutes), now=now, config=cfg)}

    down = by_name(rules.integration_down_no_success_min)
    errors = by_name(rules.high_error_rate_window_min)
    limited = by_name(rules.rate_limit_window_min)
    slow = by_name(rules.slow_window_min)
    out: list[Condition] = []
    for name in sorted(set(down) | set(errors) | set(limited) | set(slow)):
        st = down.get(name) or IntegrationStats(name, 0)
        since = st.last_success_at or st.first_seen_at
        quiet_min = _minutes(now - since) if since is not None else 0.0
        failing = st.calls > 0 and st.successes == 0 and quiet_min >= rules.integration_down_no_success_min
        # Silence: due on a schedule, the grace ran out, and no success since (a stopped job makes no failed calls).
        overdue_min = _minutes(now - st.missed_due_at) if st.missed_due_at is not None else None
        silent = overdue_min is not None and overdue_min >= rules.integration_down_no_success_min
        what = "never succeeded" if st.last_success_at is None else f"last success {st.last_success_at:%Y-%m-%d %H:%M} UTC"
        if failing:
            summary = f"{name}: {st.calls} calls in the last {rules.integration_down_no_success_min:g} min, none succeeded ({what})"
        elif silent and st.missed_due_at is not None:
            summary = (f"{name}: due at {st.missed_due_at:%Y-%m-%d %H:%M} UTC ({st.missed_due_by}), no successful call in the "
                       f"{overdue_min:.0f} min since ({what}): is its job running?")
        else:
            summary = f"{name}: {st.successes} successful calls in the last {rules.integration_down_no_success_min:g} min"
        value = round(quiet_min, 1) if st.calls else round(overdue_min, 1) if overdue_min is not None else None
        out.append(Condition(
            "IntegrationDown", name, rules.integration_down_severity, failing or silent, value,
            rules.integration_down_no_success_min, rules.integration_down_no_success_min, summary,
        ))

        st = errors.get(name) or IntegrationStats(name, 0)
        rate = st.error_rate
        holds = st.calls >= rules.high_error_rate_min_calls and rate is not None and rate > rules.high_error_rate
        out.append(Condition(
            "HighErrorRate", name, rules.high_error_rate_severity, holds, rate, rules.high_error_rate,
            rules.high_error_rate_window_min,
            f"{name}: error rate {rate or 0:.1%} ({st.errors} of {st.calls} calls) in the last "
            f"{rules.high_error_rate_window_min:g} min (threshold {rules.high_error_rate:.1%})",
        ))

        st = limited.get(name) or IntegrationStats(name, 0)
        holds = st.rate_limited > rules.rate_limit_max
        out.append(Condition(
            "RateLimitExceeded", name, rules.rate_limit_severity, holds, float(st.rate_limited), float(rules.rate_limit_max),
            rules.rate_limit_window_min,
            f"{name}: {st.rate_limited} rate-limited answers (429) in the last {rules.rate_limit_window_min:g} min "
            f"(threshold {rules.rate_limit_max})",
        ))

        st = slow.get(name) or IntegrationStats(name, 0)
        holds = st.p95_s is not None and st.p95_s > rules.slow_p95_s
        out.append(Condition(
            "SlowResponseTime", name, rules.slow_severity, holds, st.p95_s, rules.slow_p95_s, rules.slow_window_min,
            f"{name}: P95 latency {st.p95_s or 0:.2f} s over {st.calls} calls in the last {rules.slow_window_min:g} min "
            f"(threshold {rules.slow_p95_s:g} s)",
        ))

        st = down.get(name) or IntegrationStats(name, 0)
        holds = st.webhook_backlog > rules.webhook_backlog_max
        age = f", oldest waiting {st.oldest_webhook_age_s / 60:.0f} min" if st.oldest_webhook_age_s is not None else ""
        out.append(Condition(
            "WebhookDelay", name, rules.webhook_delay_severity, holds, float(st.webhook_backlog),
            float(rules.webhook_backlog_max), None,
            f"{name}: {st.webhook_backlog} webhook events waiting in the inbox{age} (threshold {rules.webhook_backlog_max})",
        ))
    out.extend(_budget_burn(cfg, now))
    return out


def _budget_burn(cfg: MonitoringConfig, now: datetime) -> list[Condition]:
    """ErrorBudgetBurn per SLA: both windows burn faster than the rate (the long one proves it is significant,
    the short one that it is still happening, so the alert resolves minutes after the burning stops)."""
    from hub.monitoring.sla import burn_rate, operation_sums, sla_sums

    rules = cfg.alerts
    if not cfg.sla:
        return []
    long_sums = operation_sums((now - timedelta(minutes=rules.error_budget_long_window_min)).replace(second=0, microsecond=0), now)
    short_sums = operation_sums((now - timedelta(minutes=rules.error_budget_short_window_min)).replace(second=0, microsecond=0), now)
    out: list[Condition] = []
    for target in cfg.sla:
        long_traffic, short_traffic = sla_sums(target, long_sums), sla_sums(target, short_sums)
        long_rate, short_rate = burn_rate(target, long_traffic), burn_rate(target, short_traffic)
        holds = (
            long_traffic.calls >= rules.error_budget_min_calls
            and long_rate is not None and long_rate > rules.error_budget_burn_rate
            and short_rate is not None and short_rate > rules.error_budget_burn_rate
        )
        def fmt(rate: float | None) -> str:
            return "–" if rate is None else f"{rate:.1f}x"
        out.append(Condition(
            "ErrorBudgetBurn", target.key, rules.error_budget_burn_severity, holds, long_rate,
            rules.error_budget_burn_rate, rules.error_budget_long_window_min,
            f"{target.name} ({target.key}): error budget burning {fmt(long_rate)} over the last "
            f"{rules.error_budget_long_window_min:g} min ({long_traffic.calls - long_traffic.successes} of {long_traffic.calls} "
            f"calls failed) and {fmt(short_rate)} over the last {rules.error_budget_short_window_min:g} min, against a "
            f"{target.availability_pct:g} % target (threshold {rules.error_budget_burn_rate:g}x): drymix monitor sla",
        ))
    return out


@dataclass
class AlertRun:
    """What one evaluation did."""

    fired: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    firing: list[str] = field(default_factory=list)
    failed_deliveries: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _dedupe_key(rule: str, integration: str) -> str:
    return f"drymix/{integration}/{rule}"


def _open_error(session: Session, integration: str, since: datetime) -> IntegrationErrorRow | None:
    """The newest open error of the integration recorded since `since` (validation refusals excluded)."""
    return session.scalars(
        select(IntegrationErrorRow)
        .where(
            IntegrationErrorRow.integration == integration,
            IntegrationErrorRow.status.in_(OPEN_ERROR_STATUSES),
            IntegrationErrorRow.error_type != "DATA_VALIDATION_FAILED",
            IntegrationErrorRow.created_at >= since,
        )
        .order_by(IntegrationErrorRow.created_at.desc(), IntegrationErrorRow.id.desc())
        .limit(1)
    ).first()


def _error_is_open(session: Session, error_id: int) -> bool:
    status = session.scalar(select(IntegrationErrorRow.status).where(IntegrationErrorRow.id == error_id))
    return status in OPEN_ERROR_STATUSES


def _body(alert: Alert, cond: Condition | None, *, note: str = "") -> str:
    lines = [cond.summary if cond else alert.summary, f"rule: {alert.rule}  integration: {alert.integration}"]
    lines.append(f"firing since {alert.started_at:%Y-%m-%d %H:%M} UTC")
    if alert.error_id is not None:
        lines.append(f"tied to error #{alert.error_id}: drymix errors show {alert.error_id}")
    lines.append("status: drymix monitor status --window 1h   dashboard: /dashboard")
    if note:
        lines.append(note)
    return "\n".join(lines)


def _send(alert: Alert, notifier: Notifier, title: str, body: str, run: AlertRun, *, now: datetime, resolve: bool = False) -> None:
    deliveries = notifier(alert.severity, title, body, dedupe_key=_dedupe_key(alert.rule, alert.integration), resolve=resolve)
    alert.last_notified_at = now
    alert.notifications_sent = (alert.notifications_sent or 0) + 1
    alert.last_delivery = [{"channel": d.channel, "ok": d.ok, "skipped": d.skipped, "detail": d.detail} for d in deliveries]
    for d in deliveries:
        if not d.ok and not d.skipped:
            run.failed_deliveries.append(f"{alert.rule}/{alert.integration} via {d.channel}: {d.detail}")


def run_alerts(
    *,
    now: datetime | None = None,
    config: MonitoringConfig | None = None,
    notifier: Notifier = notify,
) -> AlertRun:
    """Evaluate the rules and move alerts through firing -> (repeats) -> resolved, notifying each step."""
    cfg = config or monitoring_config()
    now = now or datetime.now(UTC)
    repeat = timedelta(minutes=cfg.alerts.repeat_interval_min)
    conditions = {(c.rule, c.integration): c for c in evaluate_rules(now=now, config=cfg)}
    run = AlertRun()
    with session_scope() as session:
        firing = {(a.rule, a.integration): a for a in session.scalars(select(Alert).where(Alert.status == AlertStatus.FIRING.value))}
        for key in sorted(set(conditions) | set(firing)):
            cond = conditions.get(key)
            alert = firing.get(key)
            label = f"{key[0]}/{key[1]}"
            if cond is not None and cond.holds:
                if alert is None:
                    alert = Alert(
                        rule=cond.rule, integration=cond.integration, severity=cond.severity,
                        status=AlertStatus.FIRING.value, summary=cond.summary, value=cond.value,
                        threshold=cond.threshold, started_at=now, last_evaluated_at=now, notifications_sent=0,
                    )
                    session.add(alert)
                    if cond.rule in _ERROR_TIED_RULES:
                        error = _open_error(session, cond.integration, now - timedelta(minutes=cond.window_min or 60))
                        alert.error_id = error.id if error is not None else None
                    session.flush()
                    _send(alert, notifier, f"{cond.rule}: {cond.integration}", _body(alert, cond), run, now=now)
                    run.fired.append(label)
                else:
                    alert.summary, alert.value, alert.last_evaluated_at = cond.summary, cond.value, now
                    if alert.error_id is None and cond.rule in _ERROR_TIED_RULES:
                        error = _open_error(session, cond.integration, alert.started_at - timedelta(minutes=cond.window_min or 60))
                        alert.error_id = error.id if error is not None else None
                    if alert.last_notified_at is None or now - alert.last_notified_at >= repeat:
                        _send(alert, notifier, f"{cond.rule}: {cond.integration} (still firing)", _body(alert, cond), run, now=now)
                        run.repeated.append(label)
                run.firing.append(label)
                continue
            if alert is None:
                continue
            alert.last_evaluated_at = now
            if alert.error_id is not None and _error_is_open(session, alert.error_id):
                # The window moved past the failed calls, but nobody fixed the failure: keep alerting.
                note = f"the measured condition cleared, but error #{alert.error_id} is still open"
                if alert.last_notified_at is None or now - alert.last_notified_at >= repeat:
                    _send(alert, notifier, f"{alert.rule}: {alert.integration} (still firing)", _body(alert, None, note=note), run, now=now)
                    run.repeated.append(label)
                run.held.append(label)
                run.firing.append(label)
                continue
            alert.status = AlertStatus.RESOLVED.value
            alert.resolved_at = now
            if cond is not None:
                alert.summary, alert.value = cond.summary, cond.value
            duration = _minutes(now - alert.started_at)
            _send(alert, notifier, f"RESOLVED {alert.rule}: {alert.integration}",
                  _body(alert, cond, note=f"resolved after {duration:.0f} min"), run, now=now, resolve=True)
            run.resolved.append(label)
    for line in run.failed_deliveries:
        log.warning("alert notification failed: %s", line)
    return run


def active_alerts(limit: int = 100) -> list[Alert]:
    with session_scope() as session:
        rows = session.scalars(
            select(Alert).where(Alert.status == AlertStatus.FIRING.value).order_by(Alert.started_at.desc()).limit(limit)
        ).all()
        session.expunge_all()
        return list(rows)


def recent_alerts(limit: int = 50) -> list[Alert]:
    with session_scope() as session:
        rows = session.scalars(select(Alert).order_by(Alert.started_at.desc(), Alert.id.desc()).limit(limit)).all()
        session.expunge_all()
        return list(rows)
