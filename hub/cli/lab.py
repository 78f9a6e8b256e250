"""`drymix lab ...` (collect exports now, list the ledger, replay an export, check instrument profiles) and `drymix sandbox lab`.

Heavy imports (Prefect, pandas, Great Expectations) happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

lab_app = typer.Typer(help="Lab testing-machine results: collect exports from the drop folder, list them, replay one, check a profile against a file.", no_args_is_help=True)
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
    by_profile = summary.get("files_by_profile") or {}
    if by_profile:
        console.print("files by instrument profile: " + ", ".join(f"{name} {n}" for name, n in sorted(by_profile.items())))
    if summary.get("files_unmatched"):
        console.print(f"[yellow]{summary['files_unmatched']} file(s) matched no instrument profile[/yellow]: quarantined whole, in rejected/ "
                      "(`drymix quarantine list --integration lab`; try a profile with `drymix lab check <file>`)")
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


@lab_app.command("check")
def lab_check(
    files: Annotated[list[Path] | None, typer.Argument(help="export files to try (none: only check the profiles load)")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="try only this profile (repeatable; default [lab] profiles)")] = None,
    profiles_dir: Annotated[Path | None, typer.Option(help="profiles folder (default [lab] profiles_dir, config/lab)")] = None,
    rows: Annotated[int, typer.Option(help="rows to show per file")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Check instrument profiles before go-live: which profile reads each file, and its rows as the ERP gets them, or why none fits.

    Reads nothing from the database and writes nothing. Exit 0: every file fits a profile; 1: a file fits none;
    2: a profile file is invalid (each problem names the file and the line)."""
    from connectors.lab.profiles import NoProfileFits, ProfileError, load_profiles, parse_with_profiles
    from data_mappings.lab import map_lab_results, records_frame
    from hub.core.settings import lab_config
    from hub.systems.lab import export_dialect, mapping_options

    config = lab_config()
    directory = profiles_dir or config.profiles_dir
    try:
        profiles = load_profiles(directory, profile or config.profiles)
    except ProfileError as exc:
        if as_json:
            print(json.dumps({"profiles_valid": False, "problems": exc.problems}))
        else:
            err_console.print(f"[red]{len(exc.problems)} problem(s) in the instrument profiles:[/red]")
            for problem in exc.problems:
                err_console.print(f"  {problem}")
        raise typer.Exit(2) from None
    report: dict[str, Any] = {"profiles_valid": True, "profiles": [p.name for p in profiles], "files": []}
    if not as_json:
        console.print(f"{len(profiles)} profile(s) in {directory}, in the order tried: [bold]{', '.join(p.name for p in profiles)}[/bold]")
    unmatched = 0
    for path in files or []:
        entry: dict[str, Any] = {"file": str(path)}
        report["files"].append(entry)
        try:
            parsed = parse_with_profiles(path.read_bytes(), path.name, profiles)
        except NoProfileFits as exc:
            unmatched += 1
            entry.update(profile=None, tried=[{"profile": p, "why_not": why} for p, why in exc.tried])
            if not as_json:
                table = Table(title=f"{path.name}: no profile fits (it would be quarantined whole, moved to rejected/)")
                table.add_column("profile")
                table.add_column("why it does not fit", overflow="fold")
                for name, why in exc.tried:
                    table.add_row(name, why)
                console.print(table)
            continue
        except OSError as exc:
            unmatched += 1
            entry.update(profile=None, error=str(exc))
            if not as_json:
                err_console.print(f"[red]{path}: {exc}[/red]")
            continue
        frame = map_lab_results(records_frame(parsed.records), mapping_options(config, dialect=export_dialect(parsed)))
        mapped = [_check_row(record, config.planned_ages) for record in frame.to_dict("records")]
        d = parsed.dialect
        entry.update(profile=d.profile, encoding=d.encoding, delimiter=d.delimiter, decimal_comma=d.decimal_comma, header_line=d.header_line,
                     columns=d.columns, metadata=d.metadata, rows=mapped, bad_lines=[{"line": b.line, "reason": b.reason} for b in parsed.bad_lines])
        if not as_json:
            _print_check(path, entry, rows)
    if as_json:
        print(json.dumps(report, default=str))
    if unmatched:
        raise typer.Exit(EXIT_FAILED)


def _check_row(row: dict[str, Any], planned_ages: list[int]) -> dict[str, Any]:
    """A mapped row as `lab check` shows it, with what the suite would refuse it for (the cheap checks)."""
    errors = row.get("mapping_errors")
    problems = [errors] if isinstance(errors, str) and errors else []  # NaN where the mapping found nothing
    deviation, allowed = row.get("strength_deviation_mpa"), row.get("strength_allowed_mpa")
    if deviation is not None and allowed is not None and deviation == deviation and deviation > allowed:
        problems.append(f"strength {row['strength_mpa']} MPa differs from load/geometry ({row['computed_strength_mpa']} MPa)")
    age = row.get("age_days")
    if age is not None and age == age and int(age) not in planned_ages:
        problems.append(f"age {int(age)} d is not in [lab] planned_ages {planned_ages}")
    keep = ("source_line", "specimen_id", "batch_id", "test_type", "age_days", "peak_load_kn", "strength_mpa", "computed_strength_mpa",
            "width_mm", "height_mm", "span_mm", "area_mm2", "tested_at", "machine_id", "operator")
    return {**{k: row.get(k) for k in keep}, "problems": "; ".join(problems) or None}


def _print_check(path: Path, entry: dict[str, Any], limit: int) -> None:
    console.print(f"[green]{path.name}[/green]: profile [bold]{entry['profile']}[/bold] ({entry['encoding']}, delimiter {entry['delimiter']!r}, "
                  f"decimal {'comma' if entry['decimal_comma'] else 'point'}, header on line {entry['header_line']})")
    if entry["metadata"]:
        console.print("  metadata: " + "; ".join(f"{k} = {v}" for k, v in entry["metadata"].items()))
    table = Table(title=f"{len(entry['rows'])} row(s) as the ERP gets them (units converted; batch not checked here)")
    columns = ("source_line", "specimen_id", "batch_id", "test_type", "age_days", "peak_load_kn", "strength_mpa", "computed_strength_mpa",
               "tested_at", "machine_id", "problems")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in entry["rows"][:limit]:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
    for bad in entry["bad_lines"]:
        console.print(f"  [yellow]line {bad['line']} would be quarantined:[/yellow] {bad['reason']}")


def sandbox_lab(
    drop_dir: Annotated[Path | None, typer.Option(help="where exports are written (default: the hub's lab drop folder)")] = None,
    sessions: Annotated[int, typer.Option(help="test sessions (one export each)")] = 3,
    interval_s: Annotated[float, typer.Option(help="with --port: seconds between sessions (0 = all at start)")] = 0.0,
    variant: Annotated[list[str] | None, typer.Option(help="dirty variant, repeatable: semicolon, decimal_comma, reordered, preamble (drymix-simulator format only), truncated, bad_number, strength_mismatch, duplicate, missing_column")] = None,
    dirty_every: Annotated[int, typer.Option(help="make every N-th session dirty with the next variant in turn (0 = never)")] = 0,
    batch_id: Annotated[list[str] | None, typer.Option(help="batch ids to test (repeatable; default: generated B-M1-... ids)")] = None,
    rows: Annotated[int | None, typer.Option(help="results per session (default: 2 batches x 9 specimens)")] = None,
    age_days: Annotated[int, typer.Option(help="specimen age at test")] = 28,
    seed: Annotated[int, typer.Option(help="data seed")] = 7,
    slow_write_s: Annotated[float, typer.Option(help="write in place, in chunks this many seconds apart (a tester still writing)")] = 0.0,
    port: Annotated[int | None, typer.Option(help="also serve the results API on this port until Ctrl-C")] = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    faults: Annotated[str | None, typer.Option(help='API fault switches as JSON, e.g. \'{"error_5xx_every_n": 3}\'')] = None,
    fmt: Annotated[str, typer.Option("--format", help="export format: drymix-simulator, compression-semicolon, flexural-per-specimen (one file per specimen)")] = "drymix-simulator",
) -> None:
    """Lab testing machine: write result exports into the drop folder (and serve them over HTTP with --port)."""
    from hub.core.settings import lab_config
    from sandbox.lab import FORMATS, VARIANTS, run_lab_sandbox

    if fmt not in FORMATS:
        err_console.print(f"[red]unknown format {fmt!r}[/red]; known: {', '.join(FORMATS)}")
        raise typer.Exit(2)
    unknown = set(variant or ()) - set(VARIANTS)
    if unknown:
        err_console.print(f"[red]unknown variant(s) {sorted(unknown)}[/red]; known: {', '.join(VARIANTS)}")
        raise typer.Exit(2)
    run_lab_sandbox(
        drop_dir=drop_dir or lab_config().drop_dir, sessions=sessions, interval_s=interval_s, variants=variant or (),
        dirty_every=dirty_every, batch_ids=batch_id or None, age_days=age_days, rows=rows, seed=seed,
        atomic=slow_write_s == 0, slow_write_s=slow_write_s, host=host, port=port,
        faults=json.loads(faults) if faults else None, echo=console.print, fmt=fmt,
    )
