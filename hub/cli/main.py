"""`drymix`: the hub's command line. Heavy libraries (Prefect, Great Expectations) load only when a
command needs them, so `drymix --help` answers at once."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import errors_app, quarantine_app, where_the_failure_is
from hub.cli.monitor import health as health_command
from hub.cli.monitor import monitor_app
from hub.cli.whatsapp import whatsapp_app
from hub.runtime.secret_blocks import install as install_secret_blocks

# A secret missing from the environment is read from its Prefect Secret block, but only from a configured
# Prefect API (the running stack): a CLI command never starts a temporary Prefect server to look for one.
install_secret_blocks(server_only=True)

app = typer.Typer(help="DryMix Integration Hub: syncs between the ERP and SAP, Microsoft 365, Google, plant, lab, Razorpay, WhatsApp.", no_args_is_help=True)


@app.callback()
def _options(
    debug: Annotated[list[str] | None, typer.Option(
        "--debug", metavar="INTEGRATION",
        help="debug mode for this integration only, for this command (repeat or comma-separate for several): its redacted "
             "requests/responses, OPC UA reads or lab file pickups go to LOG_DIR/integration_debug.log, e.g. "
             "`drymix --debug sap sync sap.customers`",
    )] = None,
) -> None:
    """Options for every command (given before it)."""
    if not debug:
        return
    from hub.core.settings import all_integrations, get_settings, reset_settings_cache, split_list

    names = [name for value in debug for name in split_list(value)]
    known = all_integrations()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise typer.BadParameter(f"no integration {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})", param_hint="--debug")
    # Through the environment, like DEBUG_INTEGRATIONS itself: every connector this command builds reads it.
    os.environ["DEBUG_INTEGRATIONS"] = ",".join(dict.fromkeys([*split_list(os.environ.get("DEBUG_INTEGRATIONS", "")), *names]))
    reset_settings_cache()
    Console(stderr=True).print(f"debug mode for {', '.join(names)}: redacted entries go to {get_settings().log_dir / 'integration_debug.log'}")

db_app = typer.Typer(help="The ERP database: migrations.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Simulators of the external systems (demo, UAT, on-call drills).", no_args_is_help=True)
sync_app = typer.Typer(help="Run a sync now, in this process.", no_args_is_help=True)
webhooks_app = typer.Typer(help="The webhook ingress (Razorpay, WhatsApp): serve it, issue one-time tokens, count refusals.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(sync_app, name="sync")
app.add_typer(errors_app, name="errors")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(whatsapp_app, name="whatsapp")

from hub.cli.google import google_app, sandbox_google  # noqa: E402 - sub-app registered next to the others

app.add_typer(google_app, name="google")
sandbox_app.command("google")(sandbox_google)

from hub.cli.microsoft365 import m365_app, sandbox_microsoft365  # noqa: E402 - sub-app registered next to the others

app.add_typer(m365_app, name="m365")
sandbox_app.command("microsoft365")(sandbox_microsoft365)
sandbox_app.command("graph", help="Alias of `sandbox microsoft365`.")(sandbox_microsoft365)
app.add_typer(monitor_app, name="monitor")
app.command("health")(health_command)

from hub.cli.lab import lab_app, sandbox_lab  # noqa: E402 - light: typer and rich only

app.add_typer(lab_app, name="lab")
sandbox_app.command("lab")(sandbox_lab)

from hub.cli.plant import plant_app, sandbox_plant, sandbox_plant_vendor  # noqa: E402 - light: typer and rich only

app.add_typer(plant_app, name="plant")
sandbox_app.command("plant")(sandbox_plant)
sandbox_app.command("plant-vendor")(sandbox_plant_vendor)

from hub.cli.sap import sap_app  # noqa: E402 - light: typer and rich only

app.add_typer(sap_app, name="sap")

from hub.cli.razorpay import razorpay_app  # noqa: E402 - light: typer and rich only

app.add_typer(razorpay_app, name="razorpay")

from hub.cli.stack import deploy_app, smoke, stack_app  # noqa: E402 - production stack (docs/deployment.md)

app.add_typer(stack_app, name="stack")
app.add_typer(deploy_app, name="deploy")
app.command("smoke")(smoke)
from hub.cli.datasets import datasets, register_sync_commands  # noqa: E402 - light: the registry imports no flow

app.command("datasets")(datasets)
register_sync_commands(sync_app)  # `drymix sync <dataset>` for every registered dataset

console = Console()
err_console = Console(stderr=True)

# Exit codes that mean something to a scheduler or a shell script.
EXIT_OK, EXIT_FAILED = 0, 1


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Alembic revision (default: every head)")] = "heads") -> None:
    """Apply the database migrations (SQLite file by default; DATABASE_URL selects PostgreSQL)."""
    from hub.core.db import current_revision, upgrade
    from hub.core.settings import get_settings

    url = get_settings().database_url
    upgrade(revision)
    console.print(f"[green]database at revision {current_revision()}[/green] ({_safe_url(url)})")


@sandbox_app.command("sap")
def sandbox_sap(
    port: Annotated[int, typer.Option(help="TCP port")] = 8401,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    partners: Annotated[int, typer.Option(help="business partners to generate")] = 10_000,
    orders: Annotated[int, typer.Option(help="sales orders to generate (API_SALES_ORDER_SRV)")] = 5_000,
    seed: Annotated[int, typer.Option(help="data seed (same seed, same data)")] = 42,
    page_size: Annotated[int, typer.Option(help="server-side page cap (d.__next)")] = 1000,
    changes_on_start: Annotated[int, typer.Option(help="partners changed at start, for incremental syncs")] = 0,
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"latency_ms": 50}\'')] = None,
) -> None:
    """Serve the SAP S/4HANA OData simulator (API_BUSINESS_PARTNER and API_SALES_ORDER_SRV on one port) until Ctrl-C."""
    from sandbox.sap import serve_sap

    serve_sap(
        host=host,
        port=port,
        partners=partners,
        orders=orders,
        seed=seed,
        max_page_size=page_size,
        changes_on_start=changes_on_start,
        faults=json.loads(faults) if faults else None,
    )


@sandbox_app.command("razorpay")
def sandbox_razorpay(
    port: Annotated[int, typer.Option(help="TCP port")] = 8402,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    webhook_url: Annotated[str | None, typer.Option(help="where signed webhooks are delivered, e.g. http://127.0.0.1:8480/webhooks/razorpay")] = None,
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"rate_limit_every_n": 5}\'')] = None,
) -> None:
    """Serve the Razorpay Orders/Payments simulator (with signed webhooks) over HTTP until Ctrl-C."""
    from sandbox.core import serve
    from sandbox.razorpay import RazorpaySandbox

    sandbox = RazorpaySandbox(webhook_url=webhook_url, faults=json.loads(faults) if faults else None)
    console.print(f"Razorpay sandbox on http://{host}:{port}/v1/ (key id {sandbox.key_id}; webhooks to {webhook_url or 'nowhere yet'})")
    try:
        serve(sandbox, host, port)
    finally:
        sandbox.close()



@sandbox_app.command("whatsapp")
def sandbox_whatsapp(
    port: Annotated[int, typer.Option(help="TCP port")] = 8403,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    webhook_url: Annotated[str | None, typer.Option(help="where signed status webhooks are delivered, e.g. http://127.0.0.1:8480/webhooks/whatsapp")] = None,
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"rate_limit_every_n": 5}\'')] = None,
) -> None:
    """Serve the WhatsApp Cloud API simulator (with signed status webhooks) over HTTP until Ctrl-C."""
    from sandbox.core import serve
    from sandbox.whatsapp import WhatsAppSandbox

    sandbox = WhatsAppSandbox(webhook_url=webhook_url, faults=json.loads(faults) if faults else None)
    console.print(
        f"WhatsApp sandbox on http://{host}:{port}/v21.0/{sandbox.phone_number_id}/messages "
        f"(bearer {sandbox.access_token}; webhooks to {webhook_url or 'nowhere yet'})"
    )
    try:
        serve(sandbox, host, port)
    finally:
        sandbox.close()

@sync_app.command("sap-customers")
def sync_sap_customers_cmd(
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore the watermark and read everything")] = False,
    page_size: Annotated[int | None, typer.Option(help="$top per request (default from config)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Sync SAP business partners into the ERP customers table now."""
    summary = _run_sap_sync(full_refresh=full_refresh, page_size=page_size, quiet=as_json)
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        _print_summary(summary)


@webhooks_app.command("serve")
def webhooks_serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8480,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    monitor_host: Annotated[str | None, typer.Option(help="bind address of /metrics and /dashboard (default MONITOR_HOST)")] = None,
    monitor_port: Annotated[int | None, typer.Option(help="port of /metrics and /dashboard, never the webhook port; 0 = off (default MONITOR_PORT)")] = None,
) -> None:
    """Serve the webhook ingress over HTTP until Ctrl-C (apply `drymix db upgrade` first), and the private
    monitoring listener (/metrics, /dashboard, /api/monitor/status) on its own address."""
    from hub.core.settings import get_settings
    from hub.ingress.app import serve

    settings = get_settings()
    mhost = settings.monitor_host if monitor_host is None else monitor_host
    mport = settings.monitor_port if monitor_port is None else monitor_port
    console.print(f"webhook ingress on http://{host}:{port}/webhooks/razorpay and /webhooks/whatsapp")
    if mport:
        console.print(f"monitoring on http://{mhost}:{mport}/dashboard and /metrics" + (" (token required)" if settings.monitor_token.get_secret_value() else ""))
    serve(host=host, port=port, log_level=log_level, monitor_host=mhost, monitor_port=mport)


@webhooks_app.command("process")
def webhooks_process(
    batch_size: Annotated[int, typer.Option(help="events per transaction")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Apply received Razorpay and WhatsApp events to the ERP payments and whatsapp_messages tables now (the process-webhooks flow)."""
    from flows.process_webhooks import process_webhooks
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        summary = run_flow_quietly(process_webhooks, batch_size=batch_size)
    except Exception as exc:  # noqa: BLE001 - say what failed and exit non-zero
        err_console.print(f"[red]processing failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --open --integration webhooks` for the recorded error."))
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title="webhook processing (razorpay, whatsapp)")
    for col in ("claimed", "applied", "stale", "unchanged", "duplicate", "ignored", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(str(summary[c]) for c in ("claimed", "applied", "stale", "unchanged", "duplicate", "ignored", "failed")))
    console.print(table)
    if summary["failed"]:
        err_console.print(
            "Failed events are in `drymix errors list --open` (one row each); after a fix rerun one with "
            "`drymix errors retry <id>` (or `drymix webhooks replay <event_id>`)."
        )
        raise typer.Exit(EXIT_FAILED)


@webhooks_app.command("replay")
def webhooks_replay(
    event_id: Annotated[str, typer.Argument(help="the inbox key (<event>:<entity id>:<created_at>, message:<wamid>, status:<wamid>:<status>) or Razorpay's evt_... id")],
    provider: Annotated[str | None, typer.Option(help="razorpay | whatsapp")] = None,
) -> None:
    """Reset a stored event to received so the next processing run applies it again (idempotent)."""
    from hub.ingress.inbox import replay_event

    if replay_event(event_id, provider=provider) == 0:
        err_console.print(f"[red]no stored event {event_id!r}[/red]")
        raise typer.Exit(EXIT_FAILED)
    console.print(f"event {event_id} queued for processing again: run `drymix webhooks process` (or wait for the schedule)")


@webhooks_app.command("token")
def webhooks_token(
    provider: Annotated[str, typer.Argument(help="razorpay | whatsapp")],
    ttl_hours: Annotated[float, typer.Option(help="hours the token stays valid")] = 24.0,
) -> None:
    """Issue a one-time token for a delivery URL (?token=...); it works once, until it expires."""
    from datetime import timedelta

    from hub.ingress.inbox import issue_token

    print(issue_token(provider, timedelta(hours=ttl_hours)))


@webhooks_app.command("rejections")
def webhooks_rejections(
    provider: Annotated[str | None, typer.Option(help="razorpay | whatsapp")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object for machines")] = False,
) -> None:
    """Refused deliveries counted by reason."""
    from hub.ingress.inbox import rejection_counts

    counts = rejection_counts(provider=provider)
    if as_json:
        print(json.dumps(counts, sort_keys=True))
        return
    table = Table(title="webhook rejections" + (f" ({provider})" if provider else ""))
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(reason, str(count))
    console.print(table)


@app.command("demo")
def demo(
    partners: Annotated[int, typer.Option(help="business partners in the SAP sandbox")] = 10_000,
    changes: Annotated[int, typer.Option(help="partners the sandbox changes at start (what the next run finds)")] = 40,
) -> None:
    """Run the main job end to end: migrations, the SAP sandbox over HTTP, the customer sync."""
    from hub.core.db import upgrade
    from hub.core.settings import get_settings, reset_settings_cache
    from sandbox.core import running_server
    from sandbox.sap import SapSandbox

    settings = get_settings()
    with console.status("applying database migrations..."):
        upgrade()
    console.print(f"[green]✓[/green] database ready: {_safe_url(settings.database_url)}")
    with console.status(f"starting the SAP sandbox ({partners} partners)..."):
        sandbox = SapSandbox(partners=partners, changes_on_start=changes)
    with running_server(sandbox) as base_url:
        os.environ["SAP_BASE_URL"] = base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
        os.environ["SAP_USERNAME"] = sandbox.username
        os.environ["SAP_PASSWORD"] = sandbox.password
        reset_settings_cache()
        console.print(f"[green]✓[/green] SAP sandbox serving at {base_url} (OData V2, Basic auth)")
        summary = _run_sap_sync(full_refresh=False, page_size=None, quiet=False, task_logs=False)
    _print_summary(summary)
    if summary.get("mode") == "full":
        console.print("Run [bold]make demo[/bold] again: the next run is incremental and reads only what changed.")


def _run_sap_sync(*, full_refresh: bool, page_size: int | None, quiet: bool, task_logs: bool = True) -> dict[str, Any]:
    import logging

    from flows.sync_sap_customers import sync_sap_customers  # flows/__init__ sets Prefect's defaults first
    from hub.runtime.prefect_runtime import run_flow_quietly

    if not task_logs:
        # The demo reads better with the flow's batch lines only; the Prefect UI keeps the flow's logs.
        logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)

    status = None if quiet else console.status("starting Prefect and running the SAP customer sync...")
    try:
        if status:
            status.start()
        return run_flow_quietly(sync_sap_customers, full_refresh=full_refresh, page_size=page_size)
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error row (or spooled it); say where and exit non-zero
        if status:
            status.stop()
        err_console.print(f"[red]sync failed:[/red] {exc}")
        err_console.print(
            where_the_failure_is(
                exc, "See `drymix errors list --open` for the recorded error; rerun the failed batch with `drymix errors retry <id>`."
            )
        )
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        if status:
            status.stop()


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['integration']} {summary['dataset']} sync ({summary['mode']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    keys = ("since", "watermark", "batches", "pages", "source_count", "extracted", "distinct_read", "duplicates", "mapped", "valid",
            "quarantined", "refused", "upserted", "unchanged", "retries", "seconds")
    for key in keys:
        if key in summary:  # the read-check figures exist only for datasets that count their source
            table.add_row(key, "" if summary.get(key) is None else str(summary.get(key)))
    console.print(table)
    if summary.get("report_path"):
        console.print(f"Validation report (HTML): [bold]{summary['report_path']}[/bold]")
    if summary.get("quarantined"):
        console.print(
            f"[yellow]{summary['quarantined']} rows quarantined[/yellow] (kept in quarantined_records, not loaded): "
            "`drymix quarantine list --integration sap` (why each row was refused)"
        )


def _safe_url(url: str) -> str:
    from connectors.core.redact import redact_url

    return redact_url(url)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
