"""`drymix google ...` and `drymix sandbox google`: the Google Workspace calendar sync from the command line.

Heavy imports (Prefect, Great Expectations, the sandbox) stay inside the commands.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

google_app = typer.Typer(help="Google Workspace: two-way sync of ERP schedules with a Google calendar.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


@google_app.command("sync")
def google_sync(
    full_resync: Annotated[bool, typer.Option("--full-resync", help="forget the sync token and read the whole calendar")] = False,
    calendar_id: Annotated[str | None, typer.Option(help="calendar to sync (default GOOGLE_CALENDAR_ID)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run one two-way sync now: people's moves and cancellations into the ERP, the ERP's schedules out."""
    from flows.sync_google_calendar import sync_google_calendar
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        with console.status("running the Google calendar sync...") if not as_json else nullcontext():
            summary: dict[str, Any] = run_flow_quietly(sync_google_calendar, full_resync=full_resync, calendar_id=calendar_id)
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error row; say so and exit non-zero
        err_console.print(f"[red]Google calendar sync failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --integration google_workspace` for the recorded error and what to do."))
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title=f"Google calendar {summary['calendar_id']} ({summary['mode']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    pull, push = summary["pull"], summary["push"]
    rows = [
        ("pages read", summary["pages"]),
        ("remote changes seen", pull.get("seen", 0)),
        ("moved in the ERP (from people)", pull.get("pulled", 0)),
        ("cancelled in the ERP (by people)", pull.get("cancelled_in_erp", 0)),
        ("conflicts resolved", pull.get("conflicts", 0)),
        ("events created", push.get("created", 0)),
        ("events updated", push.get("updated", 0) + push.get("recreated", 0)),
        ("events cancelled", push.get("cancelled", 0)),
        ("quarantined", pull.get("quarantined", 0) + push.get("quarantined", 0)),
        ("push failures (retried next run)", len(push.get("failed", []))),
        ("HTTP retries", summary["retries"]),
        ("seconds", summary["seconds"]),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    if summary["error_ids"]:
        console.print(f"integration_errors rows: {summary['error_ids']}")


def sandbox_google(
    port: Annotated[int, typer.Option(help="TCP port")] = 8405,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    key_file: Annotated[Path | None, typer.Option(help="write the sandbox service account's JSON key file here")] = None,
    service_account_file: Annotated[
        Path | None, typer.Option(help="use this JSON key file's service account instead of generating one (stable across restarts)")
    ] = None,
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"rate_limit_every_n": 5}\'')] = None,
) -> None:
    """Serve the Google OAuth + Calendar v3 simulator over HTTP until Ctrl-C."""
    from sandbox.core import serve
    from sandbox.google_calendar import GoogleCalendarSandbox, load_service_account

    account = load_service_account(service_account_file.read_text(encoding="utf-8")) if service_account_file else None
    sandbox = GoogleCalendarSandbox(service_account=account, faults=json.loads(faults) if faults else None)
    if key_file is not None:
        key_file.write_text(sandbox.service_account.key_file_json(), encoding="utf-8")
    base = f"http://{host}:{port}"
    console.print(
        f"Google sandbox: GOOGLE_BASE_URL={base}/calendar/v3/ GOOGLE_TOKEN_URL={base}/token "
        f"(service account {sandbox.service_account.email}; key file "
        f"{key_file or f'at {base}/_sandbox/google/service-account'}; users {', '.join(sorted(sandbox.users))})"
    )
    serve(sandbox, host, port)
