"""SLAs from the plan's table: each operation's achieved availability and latency against its target,
the error budget left, and how fast it burns.

Availability is request-based (the SRE workbook's "good events / valid events"): successful calls of the
SLA's operations / all their calls over the window, from call_metrics. The error budget is 1 - target;
its burn rate over a window is that window's error rate / the budget (1.0 spends exactly the budget over
the SLA window). Latency is the SLA's quantile of the same calls (histogram_quantile) against latency_ms.
`[alerts] error_budget_*` turn burn rates into the ErrorBudgetBurn rule (hub/monitoring/alerting.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from hub.core.db import get_engine
from hub.core.models import COUNTER_COLUMNS, HISTOGRAM_COLUMNS, CallMetric
from hub.monitoring.config import MonitoringConfig, SlaTarget, monitoring_config
from hub.monitoring.health import Sums, parse_window


@dataclass
class SlaStatus:
    """One SLA over one window (rates 0..1 except the percentages, times in seconds)."""

    key: str
    name: str
    integration: str
    operations: list[str]
    window_s: float
    target_pct: float
    latency_target_s: float
    latency_quantile: float
    calls: int = 0
    successes: int = 0
    errors: int = 0
    availability_pct: float | None = None  # None: no calls in the window
    availability_met: bool | None = None
    latency_s: float | None = None
    latency_met: bool | None = None
    budget_left: float = 1.0  # fraction of the window's error budget not spent (negative: overspent)
    burn_rate: float | None = None  # over the whole window

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def operation_sums(since: datetime, until: datetime) -> dict[tuple[str, str, str], Sums]:
    """(integration, operation, kind) -> counters and histogram summed over [since, until] (one query)."""
    t = CallMetric.__table__
    cols = [func.sum(t.c[name]).label(name) for name in (*COUNTER_COLUMNS, "latency_sum_s", *HISTOGRAM_COLUMNS)]
    query = (
        select(t.c.integration, t.c.operation, t.c.kind, *cols, func.max(t.c.latency_max_s).label("latency_max_s"))
        .where(and_(t.c.bucket_start >= since, t.c.bucket_start <= until))
        .group_by(t.c.integration, t.c.operation, t.c.kind)
    )
    out: dict[tuple[str, str, str], Sums] = {}
    with get_engine().connect() as conn:
        for row in conn.execute(query):
            m: Any = row._mapping
            out.setdefault((m["integration"], m["operation"], m["kind"]), Sums()).add_row(m)
    return out


def sla_sums(target: SlaTarget, sums: dict[tuple[str, str, str], Sums]) -> Sums:
    """The SLA's traffic: its operations' calls of its kind, added together."""
    total = Sums()
    for operation in target.operations:
        part = sums.get((target.integration, operation, target.kind))
        if part is None:
            continue
        for name in COUNTER_COLUMNS:
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.latency_sum_s += part.latency_sum_s
        total.latency_max_s = max(total.latency_max_s, part.latency_max_s)
        total.buckets = [a + b for a, b in zip(total.buckets, part.buckets, strict=True)]
    return total


def burn_rate(target: SlaTarget, traffic: Sums) -> float | None:
    """Error rate / error budget over the traffic's window; None without calls."""
    if not traffic.calls:
        return None
    return ((traffic.calls - traffic.successes) / traffic.calls) / target.error_budget


def sla_report(
    window: timedelta | None = None, *, now: datetime | None = None, config: MonitoringConfig | None = None
) -> list[SlaStatus]:
    """Every SLA of [[sla]] over `window` (default: `sla_window`) ending at `now`."""
    cfg = config or monitoring_config()
    now = now or datetime.now(UTC)
    window = window or parse_window(cfg.sla_window)
    since = (now - window).replace(second=0, microsecond=0)
    sums = operation_sums(since, now)
    report: list[SlaStatus] = []
    for target in cfg.sla:
        traffic = sla_sums(target, sums)
        st = SlaStatus(
            key=target.key, name=target.name, integration=target.integration, operations=list(target.operations),
            window_s=window.total_seconds(), target_pct=target.availability_pct, latency_target_s=target.latency_ms / 1000,
            latency_quantile=target.latency_quantile, calls=traffic.calls, successes=traffic.successes,
            errors=traffic.calls - traffic.successes,
        )
        if traffic.calls:
            st.availability_pct = 100.0 * traffic.successes / traffic.calls
            st.availability_met = st.availability_pct >= target.availability_pct
            st.latency_s = traffic.quantile(target.latency_quantile)
            st.latency_met = st.latency_s is not None and st.latency_s <= st.latency_target_s
            st.burn_rate = burn_rate(target, traffic)
            st.budget_left = 1.0 - (st.burn_rate or 0.0)
        report.append(st)
    return report
