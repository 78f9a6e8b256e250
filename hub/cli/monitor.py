"""`drymix monitor ...` and `drymix health`: integration figures, health and alerts in the terminal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

monitor_app = typer.Typer(help="Monitoring: per-integration figures and health, SLAs, alerts, notification channels.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

_HEALTH_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red", "idle": "dim"}

WindowOpt = Annotated[str, typer.Option("--window", "-w", help="5m, 15m, 1h, 24h, 7d ...")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _when(value: Any) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _flushed_window(label: str) -> Any:
    """The window `label` names (exit 2 when it names none), after this process's pending measurements are written."""
    from hub.monitoring.health import flush_quietly, parse_window

    try:
        span = parse_window(label)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    flush_quietly()
    return span


def _status(window: str | None, as_json: bool) -> None:
    from hub.monitoring.alerting import active_alerts
    from hub.monitoring.config import monitoring_config
    from hub.monitoring.health import health_report

    cfg = monitoring_config()
    label = window or cfg.health.window
    span = _flushed_window(label)
    report = health_report(span, config=cfg)
    alerts = active_alerts()
    if as_json:
        payload = {
            "window": label,
            "integrations": [st.as_json() for st in report],
            "alerts": [
                {"rule": a.rule, "integration": a.integration, "severity": a.severity, "summary": a.summary,
                 "started_at": a.started_at.isoformat(), "error_id": a.error_id}
                for a in alerts
            ],
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    calls = Table(title=f"Connector calls over the last {label} (health over {cfg.health.window})")
    for col in ("integration", "health", "calls", "error rate", "P50", "P95", "P99", "429s", "uptime", "ops/s", "last success"):
        calls.add_column(col, justify="left" if col in ("integration", "health", "last success") else "right")
    queues = Table(title="Webhooks, queues and errors")
    for col in ("integration", "webhooks in", "processing P95", "backlog", "retries queued", "open errors", "cache hits", "last error"):
        queues.add_column(col, justify="left" if col in ("integration", "last error") else "right")
    for st in report:
        style = _HEALTH_STYLE.get(st.health, "")
        calls.add_row(
            st.integration, f"[{style}]{st.health}[/{style}]", str(st.calls), _pct(st.error_rate),
            _ms(st.p50_s), _ms(st.p95_s), _ms(st.p99_s), str(st.rate_limited),
            "–" if st.uptime_pct is None else f"{st.uptime_pct:.1f}%", f"{st.throughput_per_s:.2f}", _when(st.last_success_at),
        )
        queues.add_row(
            st.integration, str(st.webhooks_received), _ms(st.webhook_processing_p95_s), str(st.webhook_backlog),
            str(st.pending_retries), str(st.open_errors), _pct(st.cache_hit_rate), _when(st.last_error_at),
        )
    console.print(calls)
    console.print(queues)
    for st in report:
        if st.health_reasons:
            console.print(f"[{_HEALTH_STYLE[st.health]}]{st.integration}[/]: " + "; ".join(st.health_reasons))
    if alerts:
        console.print(f"[bold red]{len(alerts)} alert(s) firing[/bold red] (`drymix monitor alerts`)")
    else:
        console.print("[green]no alert firing[/green]")


@monitor_app.command("status")
def status(window: WindowOpt = "1h", as_json: JsonOpt = False) -> None:
    """Success/error counts and rates, P50/P95/P99, 429s, uptime, throughput, queues and health per integration."""
    _status(window, as_json)


def health(as_json: JsonOpt = False) -> None:
    """Health per integration (green / yellow / red, with the reasons) over the configured health window."""
    _status(None, as_json)


@monitor_app.command("sla")
def sla(
    window: Annotated[str | None, typer.Option("--window", "-w", help="30d (default: sla_window), 7d, 24h ...")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Each SLA of the plan's table: achieved availability and latency against the target, error budget left.

    Exit code 1 when an SLA with traffic misses its availability or latency target, 2 on a bad window."""
    from rich.markup import escape

    from hub.monitoring.config import monitoring_config
    from hub.monitoring.sla import sla_report

    cfg = monitoring_config()
    label = window or cfg.sla_window
    span = _flushed_window(label)
    report = sla_report(span, config=cfg)
    missed = [st for st in report if st.availability_met is False or st.latency_met is False]
    if as_json:
        typer.echo(json.dumps({"window": label, "sla": [st.as_json() for st in report]}, indent=2))
        raise typer.Exit(1 if missed else 0)
    table = Table(title=f"SLAs over the last {label} (" + escape("config/monitoring.toml [[sla]]") + ")")
    for col in ("operation", "calls", "availability", "target", "latency", "latency target", "budget left", "burn"):
        table.add_column(col, justify="left" if col == "operation" else "right")

    def mark(ok: bool | None, text: str) -> str:
        return text if ok is None else f"[green]{text}[/green]" if ok else f"[bold red]{text}[/bold red]"

    for st in report:
        availability = "–" if st.availability_pct is None else f"{st.availability_pct:.3f}%"
        budget_style = "green" if st.budget_left > 0.25 else "yellow" if st.budget_left > 0 else "bold red"
        table.add_row(
            f"{st.name}\n[dim]{st.key}[/dim]", str(st.calls), mark(st.availability_met, availability), f"{st.target_pct:g}%",
            mark(st.latency_met, f"P{st.latency_quantile * 100:g} {_ms(st.latency_s)}"), f"< {_ms(st.latency_target_s)}",
            f"[{budget_style}]{st.budget_left:.1%}[/{budget_style}]", "–" if st.burn_rate is None else f"{st.burn_rate:.2f}x",
        )
    console.print(table)
    if missed:
        console.print(f"[bold red]{len(missed)} SLA(s) missed[/bold red]: " + ", ".join(st.key for st in missed))
        raise typer.Exit(1)
    console.print("[green]every SLA with traffic is met[/green]" if any(st.calls for st in report) else "no SLA traffic in the window")


@monitor_app.command("alerts")
def alerts(
    show_all: Annotated[bool, typer.Option("--all", help="also resolved alerts (the 50 newest)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Firing alerts (or all recent ones) with when they started and how often they were notified."""
    from hub.monitoring.alerting import active_alerts, recent_alerts

    rows = recent_alerts() if show_all else active_alerts()
    if as_json:
        typer.echo(json.dumps([
            {"id": a.id, "rule": a.rule, "integration": a.integration, "severity": a.severity, "status": a.status,
             "summary": a.summary, "started_at": a.started_at.isoformat(),
             "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
             "notifications_sent": a.notifications_sent, "error_id": a.error_id, "last_delivery": a.last_delivery}
            for a in rows
        ], indent=2))
        return
    if not rows:
        console.print("[green]no alert firing[/green]" if not show_all else "no alerts yet")
        return
    table = Table(title="Alerts")
    for col in ("id", "rule", "integration", "severity", "status", "since", "resolved", "sent", "error", "summary"):
        table.add_column(col)
    for a in rows:
        table.add_row(str(a.id), a.rule, a.integration, a.severity, a.status, _when(a.started_at), _when(a.resolved_at),
                      str(a.notifications_sent), f"#{a.error_id}" if a.error_id else "", a.summary)
    console.print(table)


@monitor_app.command("evaluate")
def evaluate(as_json: JsonOpt = False) -> None:
    """Evaluate the alert rules once now (what the monitor-integrations deployment does every minute)."""
    from hub.monitoring.alerting import run_alerts
    from hub.monitoring.health import flush_metrics

    flush_metrics()
    run = run_alerts()
    if as_json:
        typer.echo(json.dumps(run.as_json(), indent=2))
        return
    for label, items in (("fired", run.fired), ("repeated", run.repeated), ("resolved", run.resolved), ("held by an open error", run.held)):
        if items:
            console.print(f"{label}: {', '.join(items)}")
    console.print(f"firing now: {', '.join(run.firing) or 'none'}")
    for line in run.failed_deliveries:
        err_console.print(f"[red]not delivered:[/red] {line}")
    if run.failed_deliveries:
        raise typer.Exit(1)


@monitor_app.command("notify-test")
def notify_test(
    severity: Annotated[str, typer.Option(help="critical | high | medium | low | info: which route to test")] = "info",
    message: Annotated[str, typer.Option(help="text of the test notification")] = "Test notification from drymix monitor notify-test",
) -> None:
    """Send a test notification through the channels the severity is routed to, and say what each did."""
    from hub.monitoring.notify import notify

    try:
        deliveries = notify(severity, "notification test", message, dedupe_key="drymix/notify-test")
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if not deliveries:
        console.print(f"severity {severity} is routed to no channel ([routing] in the monitoring configuration)")
    for d in deliveries:
        mark = "[green]sent[/green]" if d.ok else "[yellow]skipped[/yellow]" if d.skipped else "[red]failed[/red]"
        console.print(f"{d.channel}: {mark} {d.detail}")
    if any(not d.ok and not d.skipped for d in deliveries):
        raise typer.Exit(1)
