"""Monitoring of the ingress service: webhook measurement on the public app, and a private monitoring app.

- `WebhookMetricsMiddleware` (plain ASGI, no per-request allocation beyond a closure) measures every
  POST to /webhooks/<provider> into the in-memory buffer; the ingress's flusher writes it in batches.
  It is the only monitoring piece on the public webhook port.
- `create_monitor_app`: the monitoring listener, served by `drymix webhooks serve` on its own bind
  address (MONITOR_HOST:MONITOR_PORT, loopback by default), never on the webhook port. With a token
  (MONITOR_TOKEN, or the Prefect Secret block `monitor-token`) every request needs
  `Authorization: Bearer <token>` or HTTP Basic with the token as password; off loopback a token is
  required. Its routes:
  - `GET /metrics`: Prometheus text exposition built with prometheus_client from the flushed totals
    (so it covers connector calls made by flows in other processes) plus live gauges (inbox backlog,
    open errors, pending retries, health, firing alerts).
  - `GET /dashboard`: one HTML page (no build step) that loads `/api/monitor/status` and redraws itself
    every `dashboard_refresh_s`; `GET /api/monitor/status?window=1h` is the same data as JSON.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from connectors.core.metrics import LATENCY_BUCKETS_S, METRICS, CallMetrics

if TYPE_CHECKING:
    from hub.core.settings import HubSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebhookMetricsMiddleware:
    """Measure POST /webhooks/<provider>: outcome by status (5xx = error; a refusal is a correct answer)."""

    def __init__(self, app: ASGIApp, providers: Iterable[str], metrics: CallMetrics = METRICS) -> None:
        self.app = app
        self.prefixes = {f"/webhooks/{p}": p for p in providers}
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = self.prefixes.get(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if provider is None:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record(
                provider, "receive", ok=status < 500, latency_s=time.perf_counter() - started,
                rate_limited=status == 429, kind="webhook",
            )


# --- Prometheus ----------------------------------------------------------------------------------


def _collect_families() -> list[Any]:
    """Metric families from the database (prometheus_client builds the text format)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from sqlalchemy import select

    from hub.core.db import get_engine
    from hub.core.models import HISTOGRAM_COLUMNS, CallMetricTotal
    from hub.monitoring.alerting import active_alerts
    from hub.monitoring.health import flush_quietly, health_report

    flush_quietly()  # what this process measured since the last tick is part of the answer
    t = CallMetricTotal.__table__
    with get_engine().connect() as conn:
        totals = [row._mapping for row in conn.execute(select(t).order_by(t.c.integration, t.c.operation, t.c.kind))]

    calls = CounterMetricFamily("drymix_connector_calls", "Connector calls by outcome.", labels=["integration", "operation", "outcome"])
    limited = CounterMetricFamily("drymix_connector_rate_limited", "Connector calls answered 429 (rate limited).", labels=["integration", "operation"])
    cache = CounterMetricFamily("drymix_connector_cache_lookups", "Cache lookups that could save a call (tokens).", labels=["integration", "operation", "result"])
    call_seconds = HistogramMetricFamily("drymix_connector_call_duration_seconds", "Connector call latency.", labels=["integration", "operation"])
    hooks = CounterMetricFamily("drymix_webhook_requests", "Webhook deliveries answered by the ingress.", labels=["provider", "outcome"])
    hook_seconds = HistogramMetricFamily("drymix_webhook_request_duration_seconds", "Time to verify and commit a delivery.", labels=["provider"])
    processed = CounterMetricFamily("drymix_webhook_events_processed", "Inbox events applied (success) or refused (error).", labels=["provider", "outcome"])
    delay = HistogramMetricFamily("drymix_webhook_processing_delay_seconds", "Receipt to processing of an inbox event.", labels=["provider"])
    last_ok = GaugeMetricFamily("drymix_connector_last_success_timestamp_seconds", "Unix time of the last successful call.", labels=["integration"])
    last_err = GaugeMetricFamily("drymix_connector_last_error_timestamp_seconds", "Unix time of the last failed call.", labels=["integration"])

    newest_ok: dict[str, float] = {}
    newest_err: dict[str, float] = {}
    for row in totals:
        name, op, kind = row["integration"], row["operation"], row["kind"]
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, col in zip((*LATENCY_BUCKETS_S, float("inf")), HISTOGRAM_COLUMNS, strict=True):
            running += int(row[col])
            cumulative.append(("+Inf" if bound == float("inf") else f"{bound:g}", float(running)))
        if kind == "call":
            calls.add_metric([name, op, "success"], row["successes"])
            calls.add_metric([name, op, "error"], row["errors"])
            limited.add_metric([name, op], row["rate_limited"])
            if row["cache_hits"] or row["cache_misses"]:
                cache.add_metric([name, op, "hit"], row["cache_hits"])
                cache.add_metric([name, op, "miss"], row["cache_misses"])
            if row["calls"]:
                call_seconds.add_metric([name, op], cumulative, row["latency_sum_s"])
            for store, col in ((newest_ok, "last_success_at"), (newest_err, "last_error_at")):
                if row[col] is not None:
                    store[name] = max(store.get(name, 0.0), row[col].timestamp())
        elif kind == "webhook":
            hooks.add_metric([name, "success"], row["successes"])
            hooks.add_metric([name, "error"], row["errors"])
            hook_seconds.add_metric([name], cumulative, row["latency_sum_s"])
        elif kind == "webhook_processing":
            processed.add_metric([name, "success"], row["successes"])
            processed.add_metric([name, "error"], row["errors"])
            delay.add_metric([name], cumulative, row["latency_sum_s"])
    for name, value in sorted(newest_ok.items()):
        last_ok.add_metric([name], value)
    for name, value in sorted(newest_err.items()):
        last_err.add_metric([name], value)

    report = health_report()
    backlog = GaugeMetricFamily("drymix_webhook_inbox_backlog", "Webhook events received and not yet processed.", labels=["provider"])
    oldest = GaugeMetricFamily("drymix_webhook_inbox_oldest_age_seconds", "Age of the oldest unprocessed inbox event.", labels=["provider"])
    open_errors = GaugeMetricFamily("drymix_integration_errors_open", "integration_errors rows pending, retrying or escalated.", labels=["integration"])
    retries = GaugeMetricFamily("drymix_integration_error_retries_pending", "Open errors with a queued retry.", labels=["integration"])
    health = GaugeMetricFamily("drymix_integration_health", "1 for the integration's current health state (green, yellow, red, idle).", labels=["integration", "health"])
    uptime = GaugeMetricFamily("drymix_integration_uptime_ratio", "Minutes with a success / minutes with calls or overdue on a schedule, over the health window.", labels=["integration"])
    for st in report:
        backlog.add_metric([st.integration], st.webhook_backlog)
        if st.oldest_webhook_age_s is not None:
            oldest.add_metric([st.integration], st.oldest_webhook_age_s)
        open_errors.add_metric([st.integration], st.open_errors)
        retries.add_metric([st.integration], st.pending_retries)
        for state in ("green", "yellow", "red", "idle"):
            health.add_metric([st.integration, state], 1.0 if st.health == state else 0.0)
        if st.uptime_pct is not None:
            uptime.add_metric([st.integration], st.uptime_pct / 100)
    firing = GaugeMetricFamily("drymix_alerts_firing", "1 per firing alert.", labels=["rule", "integration", "severity"])
    for alert in active_alerts():
        firing.add_metric([alert.rule, alert.integration, alert.severity], 1.0)
    return [calls, limited, cache, call_seconds, last_ok, last_err, hooks, hook_seconds, processed, delay,
            backlog, oldest, open_errors, retries, health, uptime, firing]


def render_metrics() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    class _DatabaseCollector:
        def collect(self) -> Iterable[Any]:
            return _collect_families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector())  # type: ignore[arg-type]
    return generate_latest(registry)


# --- Dashboard data -------------------------------------------------------------------------------


def status_payload(window: str) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON (also `drymix monitor status --json`)."""
    from sqlalchemy import select

    from hub.core.db import session_scope
    from hub.core.models import IntegrationErrorRow
    from hub.monitoring.alerting import active_alerts
    from hub.monitoring.config import monitoring_config
    from hub.monitoring.health import OPEN_ERROR_STATUSES, flush_quietly, health_report, parse_window
    from hub.monitoring.sla import sla_report

    flush_quietly()
    cfg = monitoring_config()
    now = datetime.now(UTC)
    report = health_report(parse_window(window), now=now, config=cfg)
    with session_scope() as session:
        errors = session.scalars(
            select(IntegrationErrorRow)
            .where(IntegrationErrorRow.status.in_(OPEN_ERROR_STATUSES))
            .order_by(IntegrationErrorRow.created_at.desc())
            .limit(50)
        ).all()
        open_errors = [
            {
                "id": e.id, "integration": e.integration, "dataset": e.dataset, "error_type": e.error_type,
                "severity": e.severity, "status": e.status, "message": e.error_message[:300],
                "created_at": e.created_at.isoformat(), "next_retry_at": e.next_retry_at.isoformat() if e.next_retry_at else None,
            }
            for e in errors
        ]
    alerts = [
        {
            "id": a.id, "rule": a.rule, "integration": a.integration, "severity": a.severity, "summary": a.summary,
            "started_at": a.started_at.isoformat(), "last_notified_at": a.last_notified_at.isoformat() if a.last_notified_at else None,
            "notifications_sent": a.notifications_sent, "error_id": a.error_id,
        }
        for a in active_alerts()
    ]
    return {
        "generated_at": now.isoformat(),
        "window": window,
        "refresh_s": cfg.dashboard_refresh_s,
        "integrations": [st.as_json() for st in report],
        "open_errors": open_errors,
        "alerts": alerts,
        "sla_window": cfg.sla_window,
        "sla": [st.as_json() for st in sla_report(now=now, config=cfg)],
    }


def install(app: FastAPI, providers: Iterable[str]) -> None:
    """Add webhook measurement to the public ingress app (and nothing else: monitoring has its own listener)."""
    app.add_middleware(WebhookMetricsMiddleware, providers=list(providers))  # type: ignore[arg-type]


MONITOR_TOKEN_BLOCK = "monitor-token"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="drymix monitoring", charset="UTF-8"'}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def monitor_token(settings: HubSettings) -> str:
    """MONITOR_TOKEN, else the Prefect Secret block `monitor-token` when a Prefect API is configured, else
    empty (registered for redaction). Without PREFECT_API_URL no block is looked up: the lookup would start
    an ephemeral Prefect server inside the ingress process."""
    from hub.core.secrets import resolve_secret
    from hub.runtime.secret_blocks import read_secret_block_from_server

    return resolve_secret(settings.monitor_token, MONITOR_TOKEN_BLOCK, fallback=read_secret_block_from_server).get_secret_value()


def authorized(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, or Basic with the token as the password (what a browser prompts for)."""
    if not token:
        return True
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    return hmac.compare_digest(given.encode(), token.encode())


def create_monitor_app(settings: HubSettings, *, host: str = "127.0.0.1", token: str | None = None) -> FastAPI:
    """/metrics, /dashboard and /api/monitor/status, for the monitoring listener's own bind address.

    `token` None: resolved from settings (MONITOR_TOKEN, then the Secret block). A listener off loopback
    without a token is refused: monitoring data (error messages, alerts, backlog) is not public."""
    from hub.monitoring.dashboard import DASHBOARD_HTML

    token = monitor_token(settings) if token is None else token
    if not token and not _is_loopback(host):
        raise ValueError(f"the monitoring listener on {host} needs MONITOR_TOKEN (or the Prefect Secret block {MONITOR_TOKEN_BLOCK!r})")
    app = FastAPI(title="DryMix monitoring", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not authorized(request.headers.get("authorization"), token):
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers=_CHALLENGE)
        return await call_next(request)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition (format 0.0.4)."""
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        # 0.0.4: the text format every Prometheus version scrapes (our names are plain ASCII).
        return Response(await run_in_threadpool(render_metrics), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    @app.get("/api/monitor/status")
    async def monitor_status(window: str = Query("1h", max_length=16)) -> Response:
        try:
            payload = await run_in_threadpool(status_payload, window)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(payload)

    @app.get("/dashboard")
    async def dashboard() -> Response:
        return HTMLResponse(DASHBOARD_HTML)

    return app
