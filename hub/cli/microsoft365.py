"""`drymix m365 ...` and `drymix sandbox microsoft365`: SharePoint documents and Outlook calendars.

Every heavy import (Prefect, pandas, the connector) happens inside the command that needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

m365_app = typer.Typer(help="Microsoft 365: upload ERP documents to SharePoint, sync schedules with Outlook.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
EXIT_FAILED = 1


def sandbox_microsoft365(
    port: Annotated[int, typer.Option(help="TCP port")] = 8404,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="calendar data seed")] = 7,
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"rate_limit_every_n": 5}\'')] = None,
) -> None:
    """Serve the Microsoft 365 simulator (Entra ID token endpoint + Graph) over HTTP until Ctrl-C."""
    from sandbox.core import serve
    from sandbox.microsoft365 import Microsoft365Sandbox

    sandbox = Microsoft365Sandbox(seed=seed, faults=json.loads(faults) if faults else None)
    base = f"http://{host}:{port}"
    console.print(
        f"Microsoft 365 sandbox on {base}\n"
        f"  MICROSOFT365_BASE_URL={base}/v1.0/\n"
        f"  MICROSOFT365_TOKEN_URL={base}/{{tenant}}/oauth2/v2.0/token\n"
        f"  MICROSOFT365_TENANT_ID={sandbox.tenant_id}\n  MICROSOFT365_CLIENT_ID={sandbox.client_id}\n"
        f"  MICROSOFT365_CLIENT_SECRET={sandbox.client_secret}\n  MICROSOFT365_DRIVE_ID={sandbox.drive_id}\n"
        f"  MICROSOFT365_CALENDAR_USER={next(iter(sandbox.users))}\n"
        f"  control routes: {base}/_sandbox"
    )
    serve(sandbox, host, port)


@m365_app.command("check")
def check() -> None:
    """Prove the credentials, the permissions and the document library (token + GET drive)."""
    from hub.runtime.connections import build_microsoft365_connector

    try:
        with build_microsoft365_connector() as connector:
            result = connector.test_connection()
    except Exception as exc:  # noqa: BLE001 - configuration errors are said plainly
        err_console.print(f"[red]not configured:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if result.ok:
        console.print(f"[green]connected[/green] in {result.latency_ms:.0f} ms")
        return
    err_console.print(f"[red]failed:[/red] {result.detail}")
    if result.error is not None:
        err_console.print(result.error.remedy)
    raise typer.Exit(EXIT_FAILED)


@m365_app.command("enqueue")
def enqueue(
    document_key: Annotated[str, typer.Argument(help="ERP key of the document, e.g. INV-2026-000123")],
    file: Annotated[Path, typer.Argument(help="file to upload (streamed from disk when the flow runs)")],
    folder: Annotated[str, typer.Option(help="folder in the library (one of [microsoft365.documents] known_folders)")] = "ERP/Invoices",
    name: Annotated[str | None, typer.Option(help="name in SharePoint (default: the file's name)")] = None,
    conflict: Annotated[str | None, typer.Option(help="replace | rename | fail (default from config)")] = None,
) -> None:
    """Put a document in the outbox (idempotent on the key)."""
    from hub.core.settings import microsoft365_options
    from hub.systems.documents import enqueue_document

    policy = conflict or microsoft365_options()[0].default_conflict_policy
    document_id = enqueue_document(document_key, folder, name or file.name, source_path=file.resolve(), conflict_policy=policy)
    console.print(f"document_outbox #{document_id}: {document_key} -> {folder}/{name or file.name} ({policy})")


@m365_app.command("upload")
def upload(
    max_pages: Annotated[int | None, typer.Option(help="stop after this many pages of outbox rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue a run on the Prefect server's workers and return (docs/background-jobs.md)")] = False,
) -> None:
    """Run the upload-documents flow now, in this process (--queue: on a worker, in the background)."""
    if queue:
        from hub.cli.errors import queue_from_cli
        from hub.core.models import DocumentOutbox, DocumentStatus
        from hub.runtime.jobs import outbox_key

        queue_from_cli("microsoft365.documents.upload", {"max_pages": max_pages}, outbox_key(DocumentOutbox, DocumentStatus.UPLOADED.value), as_json)
        return
    from flows.upload_documents import upload_documents

    summary = _run(upload_documents, max_pages=max_pages)
    _show(summary, as_json)
    if summary.get("failed"):
        raise typer.Exit(EXIT_FAILED)


@m365_app.command("documents")
def documents(
    status: Annotated[str | None, typer.Option(help="pending | uploading | uploaded | failed | quarantined")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """List the document outbox, newest first."""
    from hub.systems.documents import list_documents

    rows = list_documents(status, limit)
    fields = ("id", "document_key", "folder_path", "file_name", "status", "attempts", "bytes_confirmed", "error_code", "web_url")
    if as_json:
        for r in rows:
            print(json.dumps({f: getattr(r, f) for f in fields}, default=str))
        return
    table = Table(title=f"document_outbox ({len(rows)} shown)")
    for f in fields:
        table.add_column(f, overflow="fold")
    for r in rows:
        table.add_row(*("" if getattr(r, f) is None else str(getattr(r, f)) for f in fields))
    console.print(table)


@m365_app.command("requeue")
def requeue_cmd(
    document_key: Annotated[str, typer.Argument(help="ERP key of a failed or quarantined document")],
    name: Annotated[str | None, typer.Option(help="a corrected file name")] = None,
    folder: Annotated[str | None, typer.Option(help="a corrected folder")] = None,
    conflict: Annotated[str | None, typer.Option(help="replace | rename | fail")] = None,
) -> None:
    """Put a failed or quarantined document back in the queue, optionally fixed."""
    from hub.systems.documents import requeue

    if not requeue(document_key, file_name=name, folder_path=folder, conflict_policy=conflict):
        err_console.print(f"[red]{document_key} is unknown or already uploaded[/red]")
        raise typer.Exit(EXIT_FAILED)
    console.print(f"{document_key} re-queued: the next upload run takes it")


@m365_app.command("sync-calendar")
def sync_calendar(
    full_resync: Annotated[bool, typer.Option("--full-resync", help="ignore the delta link and read the whole window")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run the two-way Outlook calendar sync now, in this process."""
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    _show(_run(sync_microsoft_calendar, full_resync=full_resync), as_json)


def _run(flow: Any, **parameters: Any) -> dict[str, Any]:
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        return dict(run_flow_quietly(flow, **parameters))
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error row; say so and exit non-zero
        err_console.print(f"[red]run failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --integration microsoft365` for the recorded error and what to do."))
        raise typer.Exit(EXIT_FAILED) from None


def _show(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title=f"{summary.get('integration')} {summary.get('dataset')}")
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, dict | list) else str(value))
    console.print(table)
