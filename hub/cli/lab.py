"""`drymix lab ...` (collect exports now, list the ledger, replay an export) and `drymix sandbox lab`.

Heavy imports (Prefect, pandas, Great Expectations) happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

lab_app = typer.Typer(help="Lab testing-machine results: collect exports from the drop folder, list them, replay one.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_FAILED = 0, 1


@lab_app.command("collect")
def lab_collect(
    drop_dir: Annotated[Path | None, typer.Option(help="drop folder (default: [lab] base_url or LAB_DROP_DIR)")] = None,
    settle_s: Annotated[float | None, typer.Option(help="seconds a file must stand still before it is read")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Process every finished export in the drop folder now (the collect-lab-results flow)."""
    from flows.collect_lab_results import collect_lab_results
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        summary = run_flow_quietly(collect_lab_results, drop_dir=str(drop_dir) if drop_dir else None, settle_s=settle_s)
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error rows; say so and exit non-zero
        err_console.print(f"[red]lab collection failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --open --integration lab` and `drymix quarantine list --integration lab`."))
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(json.dumps(summary, default=str))
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"lab exports from {summary['drop_dir']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("files_ready", "files_settling", "exports_processed", "exports_rejected", "duplicates_skipped", "files_failed",
                "extracted", "valid", "quarantined", "upserted", "unchanged", "batch_unknown", "batch_flags_set", "seconds"):
        table.add_row(key, str(summary.get(key)))
    console.print(table)
    if summary.get("report_path"):
        console.print(f"Validation report (HTML): [bold]{summary['report_path']}[/bold]")
    if summary.get("quarantined"):
        console.print(f"[yellow]{summary['quarantined']} rows quarantined[/yellow] (quarantined_records, not loaded): `drymix quarantine list --integration lab`")


@lab_app.command("exports")
def lab_exports(
    limit: Annotated[int, typer.Option(help="rows to show")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """The ledger of processed exports (newest first): checksum, file, rows, status."""
    from hub.core.db import get_engine
    from hub.systems.lab import list_exports

    rows = list_exports(get_engine(), limit=limit)
    if as_json:
        for r in rows:
            print(json.dumps({c.name: getattr(r, c.name) for c in r.__table__.columns}, default=str))
        return
    table = Table(title=f"lab_exports ({len(rows)} shown)")
    for col in ("sha256", "file", "processed", "status", "rows", "loaded", "quarantined", "dups", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.sha256[:12], r.file_name, r.processed_at.strftime("%Y-%m-%d %H:%M:%S"), r.status, str(r.rows_total),
                      str(r.rows_loaded), str(r.rows_quarantined), str(r.duplicates_seen), (r.note or "")[:80])
    console.print(table)


@lab_app.command("replay")
def lab_replay(
    sha256: Annotated[str, typer.Argument(help="checksum (or its first 6+ characters) from `drymix lab exports`")],
    drop_dir: Annotated[Path | None, typer.Option(help="drop folder (default from config)")] = None,
) -> None:
    """Process an export again: forget its ledger row and move its archived file back into the drop folder."""
    from connectors.lab.exports import find_archived
    from hub.core.db import get_engine
    from hub.core.settings import lab_config
    from hub.systems.lab import forget_export

    folder = drop_dir or lab_config().drop_dir
    try:
        export = forget_export(get_engine(), sha256)
    except (LookupError, ValueError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_FAILED) from None
    archived = find_archived(folder, export.sha256, export.file_name)
    if archived is None:
        console.print(f"export {export.sha256[:12]} forgotten; its file is not in {folder}/processed|duplicates|rejected: drop it again to replay")
        return
    target = folder / export.file_name
    if target.exists():
        target = folder / f"replay-{export.sha256[:12]}-{export.file_name}"
    archived.replace(target)
    console.print(f"{target.name} is back in {folder}: the next run (`drymix lab collect`) processes it again (loads are idempotent)")


def sandbox_lab(
    drop_dir: Annotated[Path | None, typer.Option(help="where exports are written (default: the hub's lab drop folder)")] = None,
    sessions: Annotated[int, typer.Option(help="test sessions (one export each)")] = 3,
    interval_s: Annotated[float, typer.Option(help="with --port: seconds between sessions (0 = all at start)")] = 0.0,
    variant: Annotated[list[str] | None, typer.Option(help="dirty variant, repeatable: semicolon, decimal_comma, reordered, preamble, truncated, bad_number, strength_mismatch, duplicate")] = None,
    dirty_every: Annotated[int, typer.Option(help="make every N-th session dirty with the next variant in turn (0 = never)")] = 0,
    batch_id: Annotated[list[str] | None, typer.Option(help="batch ids to test (repeatable; default: generated B-M1-... ids)")] = None,
    rows: Annotated[int | None, typer.Option(help="results per session (default: 2 batches x 9 specimens)")] = None,
    age_days: Annotated[int, typer.Option(help="specimen age at test")] = 28,
    seed: Annotated[int, typer.Option(help="data seed")] = 7,
    slow_write_s: Annotated[float, typer.Option(help="write in place, in chunks this many seconds apart (a tester still writing)")] = 0.0,
    port: Annotated[int | None, typer.Option(help="also serve the results API on this port until Ctrl-C")] = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    faults: Annotated[str | None, typer.Option(help='API fault switches as JSON, e.g. \'{"error_5xx_every_n": 3}\'')] = None,
) -> None:
    """Lab testing machine: write result exports into the drop folder (and serve them over HTTP with --port)."""
    from hub.core.settings import lab_config
    from sandbox.lab import VARIANTS, run_lab_sandbox

    unknown = set(variant or ()) - set(VARIANTS)
    if unknown:
        err_console.print(f"[red]unknown variant(s) {sorted(unknown)}[/red]; known: {', '.join(VARIANTS)}")
        raise typer.Exit(2)
    run_lab_sandbox(
        drop_dir=drop_dir or lab_config().drop_dir, sessions=sessions, interval_s=interval_s, variants=variant or (),
        dirty_every=dirty_every, batch_ids=batch_id or None, age_days=age_days, rows=rows, seed=seed,
        atomic=slow_write_s == 0, slow_write_s=slow_write_s, host=host, port=port,
        faults=json.loads(faults) if faults else None, echo=console.print,
    )
