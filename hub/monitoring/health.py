"""Monitoring: write buffered call measurements in batches, and read them back per integration and window.

Writing: `flush_metrics()` drains the in-memory per-minute aggregates of connectors.core.metrics and
adds them to `call_metrics` (and `call_metric_totals`) with one upsert per table; a background
`MetricsFlusher` thread does it every `flush_interval_s`, and once more at exit. A failed write puts
the aggregates back, so a database hiccup delays measurements but loses none.

Reading: `integration_stats(window)` sums the minute rows of the window into the figures the
dashboard, `drymix monitor status`, `/metrics` and the alert rules share (counts, rates, P50/P95/P99
from the histogram, rate-limit hits, last success/error, uptime, queue lengths, throughput, webhook
processing time, cache hit rate) and `health_of()` turns them into green / yellow / red, or idle (grey)
when nothing was expected and nothing happened. Expected activity comes from the registered datasets'
schedules (hub/monitoring/expected.py): an integration due on its schedule that has not succeeded since
is overdue, which turns its health red, counts against its uptime and fires IntegrationDown.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Connection

from connectors.core.metrics import LATENCY_BUCKETS_S, METRICS, AggregateKey, CallMetrics, MinuteAggregate
from hub.core.db import get_engine
from hub.core.models import (
    COUNTER_COLUMNS,
    HISTOGRAM_COLUMNS,
    CallMetric,
    CallMetricTotal,
    ErrorStatus,
    IntegrationErrorRow,
    WebhookEvent,
    WebhookStatus,
)
from hub.datasets import monitored_integrations
from hub.monitoring.config import HealthThresholds, MonitoringConfig, monitoring_config
from hub.monitoring.expected import (
    DueSchedule,
    DueTimeline,
    due_schedules,
    first_due_after,
    is_overdue,
    latest_due,
)

log = logging.getLogger(__name__)

OPEN_ERROR_STATUSES = (ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value, ErrorStatus.ESCALATED.value)
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_window(text: str) -> timedelta:
    """'5m', '1h', '24h', '7d', '90s' -> timedelta; anything else is a clear error."""
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"window {text!r} not understood: use a number and s, m, h or d (5m, 1h, 24h, 7d)")
    value, unit = float(match.group(1)), match.group(2)
    window = timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
    if window < timedelta(minutes=1):
        raise ValueError("the smallest window is 1m (measurements are kept per minute)")
    return window


# --- Writing -------------------------------------------------------------------------------------


def _epoch(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _row(agg: MinuteAggregate) -> dict[str, Any]:
    row: dict[str, Any] = {
        "calls": agg.calls,
        "successes": agg.successes,
        "errors": agg.errors,
        "rate_limited": agg.rate_limited,
        "cache_hits": agg.cache_hits,
        "cache_misses": agg.cache_misses,
        "latency_sum_s": agg.latency_sum_s,
        "latency_max_s": agg.latency_max_s,
        "last_success_at": _epoch(agg.last_success_ts),
        "last_error_at": _epoch(agg.last_error_ts),
    }
    row.update(zip(HISTOGRAM_COLUMNS, agg.buckets, strict=True))
    return row


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE adding the counters (same statement on PostgreSQL and SQLite)."""
    from sqlalchemy.dialects import postgresql, sqlite

    stmt: Any = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    ex = stmt.excluded
    c = table.c

    def later(col: str) -> Any:
        return case(
            (ex[col].is_(None), c[col]),
            (c[col].is_(None), ex[col]),
            (ex[col] > c[col], ex[col]),
            else_=c[col],
        )

    updates: dict[str, Any] = {name: c[name] + ex[name] for name in (*COUNTER_COLUMNS, *HISTOGRAM_COLUMNS)}
    updates["latency_sum_s"] = c.latency_sum_s + ex.latency_sum_s
    updates["latency_max_s"] = case((ex.latency_max_s > c.latency_max_s, ex.latency_max_s), else_=c.latency_max_s)
    updates["last_success_at"] = later("last_success_at")
    updates["last_error_at"] = later("last_error_at")
    if "first_seen_at" in c:
        updates["first_seen_at"] = func.coalesce(c.first_seen_at, ex.first_seen_at)
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=updates), rows)


def write_aggregates(pending: Mapping[AggregateKey, MinuteAggregate], conn: Connection) -> int:
    """Add per-minute aggregates to call_metrics and call_metric_totals in the caller's transaction."""
    minute_rows: list[dict[str, Any]] = []
    totals: dict[tuple[str, str, str], MinuteAggregate] = {}
    first_seen: dict[tuple[str, str, str], int] = {}
    for (minute, integration, operation, kind), agg in sorted(pending.items()):
        minute_rows.append(
            {"bucket_start": datetime.fromtimestamp(minute, UTC), "integration": integration,
             "operation": operation, "kind": kind, **_row(agg)}
        )
        key = (integration, operation, kind)
        first_seen.setdefault(key, minute)
        total = totals.setdefault(key, MinuteAggregate())
        total.calls += agg.calls
        total.successes += agg.successes
        total.errors += agg.errors
        total.rate_limited += agg.rate_limited
        total.cache_hits += agg.cache_hits
        total.cache_misses += agg.cache_misses
        total.latency_sum_s += agg.latency_sum_s
        total.latency_max_s = max(total.latency_max_s, agg.latency_max_s)
        total.buckets = [a + b for a, b in zip(total.buckets, agg.buckets, strict=True)]
        total.last_success_ts = max(filter(None, (total.last_success_ts, agg.last_success_ts)), default=None)
        total.last_error_ts = max(filter(None, (total.last_error_ts, agg.last_error_ts)), default=None)
    total_rows = [
        {"integration": i, "operation": o, "kind": k, **_row(agg),
         "first_seen_at": datetime.fromtimestamp(first_seen[(i, o, k)], UTC)}
        for (i, o, k), agg in sorted(totals.items())
    ]
    _upsert(conn, CallMetric.__table__, minute_rows, ("bucket_start", "integration", "operation", "kind"))
    _upsert(conn, CallMetricTotal.__table__, total_rows, ("integration", "operation", "kind"))
    return len(minute_rows)


_flush_lock = threading.Lock()


def flush_metrics(metrics: CallMetrics = METRICS) -> int:
    """Write what the buffer gathered since the last flush (one transaction); returns the minute rows written."""
    with _flush_lock:  # one writer per process: keeps the upsert order of the same keys simple
        pending = metrics.drain()
        if not pending:
            return 0
        try:
            with get_engine().begin() as conn:
                return write_aggregates(pending, conn)
        except Exception:
            metrics.restore(pending)
            raise


def flush_quietly(metrics: CallMetrics = METRICS) -> None:
    """flush_metrics() for readers (/metrics, status): a failed write is logged, kept, and not their problem."""
    try:
        flush_metrics(metrics)
    except Exception as exc:  # noqa: BLE001 - the measurements stay buffered for the next flush
        log.warning("call metrics not written yet (kept for the next flush): %s", exc)


class MetricsFlusher:
    """A daemon thread that flushes every `interval_s`, and once more when stopped (or at exit)."""

    def __init__(self, interval_s: float, metrics: CallMetrics = METRICS) -> None:
        self.interval_s = interval_s
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drymix-metrics-flusher", daemon=True)

    def start(self) -> MetricsFlusher:
        self._thread.start()
        return self

    def _flush_logged(self) -> None:
        flush_quietly(self.metrics)  # a failure is kept in memory and retried at the next tick

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush_logged()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)
        self._flush_logged()


_flusher: MetricsFlusher | None = None
_flusher_lock = threading.Lock()


def ensure_flusher(interval_s: float | None = None) -> MetricsFlusher | None:
    """Start this process's background flusher once (flows, the ingress); it also flushes at exit.

    METRICS_ENABLED=0 turns measurement off in this process instead (nothing to flush then)."""
    global _flusher
    from hub.core.settings import get_settings

    METRICS.enabled = get_settings().metrics_enabled
    if not METRICS.enabled:
        return None
    with _flusher_lock:
        if _flusher is None:
            _flusher = MetricsFlusher(interval_s or monitoring_config().flush_interval_s).start()
            atexit.register(_flusher.stop)
        return _flusher


def stop_flusher() -> None:
    """Stop the background flusher after a last flush (tests, orderly shutdown)."""
    global _flusher
    with _flusher_lock:
        if _flusher is not None:
            _flusher.stop()
            atexit.unregister(_flusher.stop)
            _flusher = None


# --- Reading -------------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Sequence[int], max_latency_s: float) -> float | None:
    """The q-quantile (0..1) of a fixed-bucket histogram, interpolated linearly inside its bucket
    (as Prometheus' histogram_quantile does); the last, open bucket ends at the largest latency seen."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(buckets):
        if count and cumulative + count >= rank:
            lower = LATENCY_BUCKETS_S[index - 1] if index > 0 else 0.0
            upper = LATENCY_BUCKETS_S[index] if index < len(LATENCY_BUCKETS_S) else max(max_latency_s, lower)
            upper = min(upper, max(max_latency_s, lower))
            return lower + (upper - lower) * ((rank - cumulative) / count)
        cumulative += count
    return max_latency_s


@dataclass
class Sums:
    """Counters and histogram summed over some minute rows."""

    calls: int = 0
    successes: int = 0
    errors: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_COLUMNS))

    def add_row(self, row: Mapping[str, Any]) -> None:
        for name in COUNTER_COLUMNS:
            setattr(self, name, getattr(self, name) + int(row[name] or 0))
        self.latency_sum_s += float(row["latency_sum_s"] or 0.0)
        self.latency_max_s = max(self.latency_max_s, float(row["latency_max_s"] or 0.0))
        self.buckets = [a + int(row[name] or 0) for a, name in zip(self.buckets, HISTOGRAM_COLUMNS, strict=True)]

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets, self.latency_max_s)


@dataclass
class MinutePoint:
    minute: datetime
    calls: int
    errors: int
    p95_s: float | None


@dataclass
class IntegrationStats:
    """Everything the hub knows about one integration over one window (times in seconds, rates 0..1)."""

    integration: str
    window_s: float
    calls: int = 0
    successes: int = 0
    errors: int = 0
    success_rate: float | None = None
    error_rate: float | None = None
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    rate_limited: int = 0
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    first_seen_at: datetime | None = None
    uptime_pct: float | None = None
    throughput_per_s: float = 0.0
    cache_hit_rate: float | None = None
    webhooks_received: int = 0
    webhook_receive_p95_s: float | None = None
    webhooks_processed: int = 0
    webhook_processing_p50_s: float | None = None
    webhook_processing_p95_s: float | None = None
    webhook_backlog: int = 0
    oldest_webhook_age_s: float | None = None
    pending_retries: int = 0
    open_errors: int = 0
    expected: bool = False  # a registered schedule makes it due (hub/monitoring/expected.py)
    missed_due_at: datetime | None = None  # the first due time since its last success (or first call), if passed
    missed_due_by: str | None = None  # the deployment and cron that made it due then
    health: str = "green"
    health_reasons: list[str] = field(default_factory=list)
    series: list[MinutePoint] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in list(out.items()):
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["series"] = [
            {"minute": p.minute.isoformat(), "calls": p.calls, "errors": p.errors, "p95_s": p.p95_s} for p in self.series
        ]
        return out


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _measurement_rows(conn: Connection, since: datetime, until: datetime) -> list[Any]:
    t = CallMetric.__table__
    cols = [func.sum(t.c[name]).label(name) for name in (*COUNTER_COLUMNS, "latency_sum_s", *HISTOGRAM_COLUMNS)]
    query = (
        select(t.c.integration, t.c.kind, t.c.bucket_start, *cols, func.max(t.c.latency_max_s).label("latency_max_s"))
        .where(and_(t.c.bucket_start >= since, t.c.bucket_start <= until))
        .group_by(t.c.integration, t.c.kind, t.c.bucket_start)
        .order_by(t.c.bucket_start)
    )
    return [row._mapping for row in conn.execute(query)]


def _successes_before(conn: Connection, since: datetime) -> dict[str, datetime]:
    """Each integration's last minute with a successful call before `since` (where the uptime walk starts)."""
    t = CallMetric.__table__
    query = (
        select(t.c.integration, func.max(t.c.bucket_start))
        .where(t.c.kind == "call", t.c.successes > 0, t.c.bucket_start < since)
        .group_by(t.c.integration)
    )
    return {name: at for name, at in conn.execute(query)}


def _uptime(
    minutes: Mapping[datetime, Sums],
    since: datetime,
    now: datetime,
    *,
    schedules: Sequence[DueSchedule],
    grace: timedelta,
    tz: str,
    last_ok: datetime | None,
    seen_at: datetime | None,
) -> float | None:
    """Minutes with a success / minutes with calls or overdue (due on a schedule, no success since, grace
    run out): a job that stopped counts as down, not as missing data; None when nothing was expected."""
    timeline = DueTimeline(schedules, since - grace, now, tz) if schedules and seen_at is not None else None
    before = latest_due(schedules, since - grace, tz) if timeline is not None else None
    up = down = 0
    minute = since
    while minute <= now:
        point = minutes.get(minute)
        if point is not None and point.successes:
            up += 1
            last_ok = minute if last_ok is None else max(last_ok, minute)
        elif point is not None and point.calls:
            down += 1
        elif timeline is not None:
            moment = min(minute + timedelta(minutes=1), now) - grace
            due = timeline.latest_at_or_before(moment) or (before if before is not None and before.at <= moment else None)
            if is_overdue(due, last_success=last_ok, seen_at=seen_at):
                down += 1
        minute += timedelta(minutes=1)
    return 100.0 * up / (up + down) if up + down else None


def integration_stats(
    window: timedelta,
    *,
    now: datetime | None = None,
    integrations: Iterable[str] | None = None,
    config: MonitoringConfig | None = None,
) -> list[IntegrationStats]:
    """Figures per integration over `window` ending at `now` (whole minutes: the first minute counts whole)."""
    cfg = config or monitoring_config()
    now = now or datetime.now(UTC)
    since = _floor_minute(now - window)
    schedules = due_schedules(cfg)
    grace = timedelta(minutes=cfg.alerts.integration_down_no_success_min)
    # Every registered dataset's integrations are listed even before their first call; the config may add more.
    names: set[str] = set(monitored_integrations(cfg.integrations) if integrations is None else integrations)
    engine = get_engine()
    with engine.connect() as conn:
        rows = _measurement_rows(conn, since, now)
        ok_before = _successes_before(conn, since)
        tt = CallMetricTotal.__table__
        totals = conn.execute(
            select(
                tt.c.integration,
                func.max(tt.c.last_success_at),
                func.max(tt.c.last_error_at),
                func.min(tt.c.first_seen_at),
            )
            .where(tt.c.kind == "call")
            .group_by(tt.c.integration)
        ).all()
        backlog = conn.execute(
            select(WebhookEvent.provider, func.count(), func.min(WebhookEvent.received_at))
            .where(WebhookEvent.status == WebhookStatus.RECEIVED.value)
            .group_by(WebhookEvent.provider)
        ).all()
        retries = conn.execute(
            select(IntegrationErrorRow.integration, func.count())
            .where(
                IntegrationErrorRow.status.in_((ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value)),
                IntegrationErrorRow.next_retry_at.is_not(None),
            )
            .group_by(IntegrationErrorRow.integration)
        ).all()
        open_errors = conn.execute(
            select(IntegrationErrorRow.integration, func.count())
            .where(IntegrationErrorRow.status.in_(OPEN_ERROR_STATUSES))
            .group_by(IntegrationErrorRow.integration)
        ).all()
    if integrations is None:
        names.update(r["integration"] for r in rows)
        names.update(r[0] for r in totals)
        names.update(r[0] for r in backlog)
        names.update(r[0] for r in open_errors)
    stats = {name: IntegrationStats(integration=name, window_s=window.total_seconds()) for name in sorted(names)}

    sums: dict[tuple[str, str], Sums] = defaultdict(Sums)
    per_minute: dict[str, dict[datetime, Sums]] = defaultdict(lambda: defaultdict(Sums))
    for row in rows:
        name = row["integration"]
        if name not in stats:
            continue
        sums[(name, row["kind"])].add_row(row)
        if row["kind"] == "call":
            per_minute[name][row["bucket_start"]].add_row(row)

    seconds_in_window = max(1.0, (now - since).total_seconds())
    for name, st in stats.items():
        calls = sums.get((name, "call"), Sums())
        st.calls, st.successes, st.errors, st.rate_limited = calls.calls, calls.successes, calls.errors, calls.rate_limited
        if calls.calls:
            st.success_rate = calls.successes / calls.calls
            st.error_rate = calls.errors / calls.calls
            st.p50_s, st.p95_s, st.p99_s = calls.quantile(0.50), calls.quantile(0.95), calls.quantile(0.99)
        st.throughput_per_s = calls.calls / seconds_in_window
        lookups = calls.cache_hits + calls.cache_misses
        st.cache_hit_rate = calls.cache_hits / lookups if lookups else None
        hooks = sums.get((name, "webhook"), Sums())
        st.webhooks_received = hooks.calls
        st.webhook_receive_p95_s = hooks.quantile(0.95)
        processing = sums.get((name, "webhook_processing"), Sums())
        st.webhooks_processed = processing.calls
        st.webhook_processing_p50_s = processing.quantile(0.50)
        st.webhook_processing_p95_s = processing.quantile(0.95)
        minutes = per_minute.get(name, {})
        st.series = [MinutePoint(minute, m.calls, m.errors, m.quantile(0.95)) for minute, m in sorted(minutes.items())]
    for name, last_ok, last_err, first_seen in totals:
        if name in stats:
            stats[name].last_success_at, stats[name].last_error_at, stats[name].first_seen_at = last_ok, last_err, first_seen
    for name, st in stats.items():
        due_by = schedules.get(name, [])
        st.expected = bool(due_by)
        st.uptime_pct = _uptime(
            per_minute.get(name, {}), since, now, schedules=due_by, grace=grace, tz=cfg.silence.timezone,
            last_ok=ok_before.get(name), seen_at=st.first_seen_at,
        )
        if due_by and st.first_seen_at is not None:
            missed = first_due_after(due_by, st.last_success_at or st.first_seen_at, cfg.silence.timezone)
            if missed is not None and missed.at <= now:
                st.missed_due_at, st.missed_due_by = missed.at, missed.schedule.label
    for provider, count, oldest in backlog:
        if provider in stats:
            stats[provider].webhook_backlog = int(count)
            stats[provider].oldest_webhook_age_s = max(0.0, (now - oldest).total_seconds()) if oldest else None
    for name, count in retries:
        if name in stats:
            stats[name].pending_retries = int(count)
    for name, count in open_errors:
        if name in stats:
            stats[name].open_errors = int(count)
    return list(stats.values())


def health_of(st: IntegrationStats, thresholds: HealthThresholds, *, now: datetime | None = None) -> tuple[str, list[str]]:
    """green / yellow / red with the reasons, from the thresholds in [health] (docs/monitoring.md); idle (grey)
    when the window saw no traffic and nothing was overdue: no traffic is not evidence of health."""
    now = now or datetime.now(UTC)
    red: list[str] = []
    yellow: list[str] = []

    def check(value: float | None, yellow_at: float, red_at: float, label: str, fmt: str) -> None:
        if value is None:
            return
        if value > red_at:
            red.append(f"{label} {fmt.format(value)} > {fmt.format(red_at)}")
        elif value > yellow_at:
            yellow.append(f"{label} {fmt.format(value)} > {fmt.format(yellow_at)}")

    check(st.error_rate, thresholds.yellow_error_rate, thresholds.red_error_rate, "error rate", "{:.1%}")
    check(st.p95_s, thresholds.yellow_p95_s, thresholds.red_p95_s, "P95", "{:.2f}s")
    if st.rate_limited >= thresholds.red_rate_limited:
        red.append(f"{st.rate_limited} rate-limited calls")
    elif st.rate_limited >= thresholds.yellow_rate_limited:
        yellow.append(f"{st.rate_limited} rate-limited calls")
    if st.webhook_backlog > thresholds.red_backlog:
        red.append(f"webhook backlog {st.webhook_backlog} > {thresholds.red_backlog}")
    elif st.webhook_backlog > thresholds.yellow_backlog:
        yellow.append(f"webhook backlog {st.webhook_backlog} > {thresholds.yellow_backlog}")
    if st.calls and not st.successes:
        since = st.last_success_at or st.first_seen_at
        if since is not None:
            minutes = (now - since).total_seconds() / 60
            if minutes >= thresholds.red_no_success_min:
                red.append(f"no success for {minutes:.0f} min")
            elif minutes >= thresholds.yellow_no_success_min:
                yellow.append(f"no success for {minutes:.0f} min")
    if st.missed_due_at is not None:
        minutes = (now - st.missed_due_at).total_seconds() / 60
        last = f"last success {st.last_success_at:%Y-%m-%d %H:%M} UTC" if st.last_success_at else "never succeeded"
        why = f"due at {st.missed_due_at:%Y-%m-%d %H:%M} UTC ({st.missed_due_by}), no success since: {last}"
        if minutes >= thresholds.red_no_success_min:
            red.append(why)
        elif minutes >= thresholds.yellow_no_success_min:
            yellow.append(why)
    if red:
        return "red", red
    if yellow:
        return "yellow", yellow
    if not (st.calls or st.webhooks_received or st.webhooks_processed):
        return "idle", ["no traffic in the window" + ("; nothing overdue on its schedule" if st.expected else "")]
    return "green", []


def health_report(
    window: timedelta | None = None, *, now: datetime | None = None, config: MonitoringConfig | None = None
) -> list[IntegrationStats]:
    """integration_stats over `window` (default: the health window) with health set from the health window."""
    cfg = config or monitoring_config()
    now = now or datetime.now(UTC)
    health_window = parse_window(cfg.health.window)
    shown = integration_stats(window or health_window, now=now, config=cfg)
    judged = {s.integration: s for s in integration_stats(health_window, now=now, config=cfg)} if window else None
    for st in shown:
        basis = judged.get(st.integration, st) if judged is not None else st
        st.health, st.health_reasons = health_of(basis, cfg.health, now=now)
    return shown


def prune_metrics(older_than: timedelta, *, now: datetime | None = None) -> int:
    """Delete per-minute rows older than the retention (the totals stay)."""
    cutoff = (now or datetime.now(UTC)) - older_than
    t = CallMetric.__table__
    with get_engine().begin() as conn:
        return int(conn.execute(t.delete().where(t.c.bucket_start < cutoff)).rowcount or 0)


def record_webhook_processing(events: Iterable[tuple[str, bool, datetime]], metrics: CallMetrics = METRICS) -> None:
    """Measure processed inbox events: latency = receipt to processing (what WebhookDelay is about)."""
    now = datetime.now(UTC)
    for provider, applied, received_at in events:
        metrics.record(provider, "apply_event", ok=applied, latency_s=max(0.0, (now - received_at).total_seconds()),
                       kind="webhook_processing")


def _fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _fmt_s(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def health_markdown(report: Sequence[IntegrationStats], alerts: Sequence[Any], *, window: str) -> str:
    """The `integration-health` artifact: one table row per integration, then the firing alerts."""
    icon = {"green": "🟢", "yellow": "🟡", "red": "🔴", "idle": "⚪"}
    lines = [
        f"## Integration health (window {window}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| integration | health | calls | success | error rate | P50 | P95 | P99 | 429s | uptime | ops/s | "
        "backlog | retries queued | open errors | last success | why |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in report:
        last_ok = f"{st.last_success_at:%Y-%m-%d %H:%M}" if st.last_success_at else "–"
        uptime = "–" if st.uptime_pct is None else f"{st.uptime_pct:.1f}%"
        lines.append(
            f"| {st.integration} | {icon.get(st.health, '')} {st.health} | {st.calls} | {_fmt_pct(st.success_rate)} | "
            f"{_fmt_pct(st.error_rate)} | {_fmt_s(st.p50_s)} | {_fmt_s(st.p95_s)} | {_fmt_s(st.p99_s)} | {st.rate_limited} | "
            f"{uptime} | {st.throughput_per_s:.3f} | {st.webhook_backlog} | {st.pending_retries} | {st.open_errors} | "
            f"{last_ok} | {'; '.join(st.health_reasons) or 'all thresholds met'} |"
        )
    lines += ["", f"### Firing alerts ({len(alerts)})", ""]
    if alerts:
        lines += ["| rule | integration | severity | since | summary |", "|---|---|---|---|---|"]
        for alert in alerts:
            summary = str(alert.summary).replace("|", "/")
            lines.append(f"| {alert.rule} | {alert.integration} | {alert.severity} | {alert.started_at:%Y-%m-%d %H:%M} | {summary} |")
    else:
        lines.append("none")
    lines += ["", "Terminal: `drymix health` / `drymix monitor status --window 1h`; web: `/dashboard` on the ingress's monitoring listener (MONITOR_PORT)."]
    return "\n".join(lines)
