"""`drymix errors ...` and `drymix quarantine ...`: the on-call engineer's and the analyst's commands.

Rich tables for people, `--json` for machines (`errors list` and `quarantine list` print one JSON object
per line; the other commands one JSON object). Exit codes: 0 done, 1 the rerun or replay did not fix
everything, 2 bad usage, 3 no such row, 4 the row's status does not allow the change.
Heavy modules (SQLAlchemy models, pandas, Prefect, Great Expectations) load inside the commands.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

errors_app = typer.Typer(
    help="The integration_errors ledger: list, inspect, rerun the failed unit, resolve, escalate (every change audited).",
    no_args_is_help=True,
)
quarantine_app = typer.Typer(
    help="Rows refused by validation: list them with their failed expectations, replay them after a fix, or discard them with a reason.",
    no_args_is_help=True,
)

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4

ByOption = Annotated[str | None, typer.Option("--by", help="who is acting, kept in the audit trail (default: the OS user)")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for machines")]
SinceOption = Annotated[str | None, typer.Option("--since", help="only rows newer than this age, e.g. 30m, 2h, 7d")]


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    from hub.ledger.errors import parse_age

    try:
        return datetime.now(UTC) - parse_age(value)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None


@contextlib.contextmanager
def _exit_codes_for_lookups() -> Iterator[None]:
    """No such error row: exit 3; its status does not allow the change: exit 4; the message either way."""
    from hub.ledger.errors import ErrorNotFound, ErrorStateConflict

    try:
        yield
    except ErrorNotFound as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_NOT_FOUND) from None
    except ErrorStateConflict as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_CONFLICT) from None


@contextlib.contextmanager
def _exit_codes_for_selections() -> Iterator[None]:
    """A bad selection of quarantined rows: exit 2; nothing open matched: exit 3; no replay for that
    dataset: exit 4; the message either way."""
    from hub.ledger.quarantine import NoReplayHandler, NothingSelected

    try:
        yield
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None
    except NothingSelected as exc:
        err_console.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(EXIT_NOT_FOUND) from None
    except NoReplayHandler as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_CONFLICT) from None


def _require_reason(reason: str) -> None:
    if not reason.strip():
        err_console.print("[red]--reason must say why[/red]")
        raise typer.Exit(EXIT_USAGE)


def _actor(by: str | None) -> str:
    from hub.ledger.errors import default_actor

    return by or default_actor()


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    age = datetime.now(UTC) - value
    seconds = int(age.total_seconds())
    if seconds < 0:
        ago = f"in {_span(-seconds)}"
    else:
        ago = f"{_span(seconds)} ago"
    return f"{value:%Y-%m-%d %H:%M:%S} ({ago})"


def _span(seconds: int) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _dump(data: Any) -> None:
    print(json.dumps(data, default=str, sort_keys=True))


def where_the_failure_is(exc: BaseException, recorded: str) -> str:
    """What to tell a person after a failed run: `recorded` (where to find its integration_errors row) when
    the flow could record it, the error spool when the database was down, the plain truth otherwise."""
    from connectors.core.errors import is_database_unavailable
    from hub.ledger.errors import ErrorSpooled

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ErrorSpooled):
            return seen.explain()
        seen = seen.__cause__ or seen.__context__
    seen = exc
    while seen is not None:
        if is_database_unavailable(seen) or getattr(seen, "code", None) == "DATABASE_UNAVAILABLE":
            return (
                "The database is unavailable: nothing could be recorded in integration_errors for this run. "
                "Rerun it when the database answers again (`drymix health`, docs/troubleshooting.md)."
            )
        seen = seen.__cause__ or seen.__context__
    return recorded


def _drain_spool_notice() -> None:
    """Write failures spooled while the database was down (it answers now), and say what still waits."""
    from hub.ledger.spool import drain_spool_quietly

    result = drain_spool_quietly()
    if result.written:
        err_console.print(
            f"[yellow]{len(result.written)} failure(s) recorded while the database was unavailable were written from the "
            f"error spool: integration_errors #{', #'.join(map(str, result.written))}[/yellow]"
        )
    if result.waiting:
        err_console.print(
            f"[yellow]{result.waiting} failure(s) still wait in the error spool {result.path}"
            f" ({result.error or 'another process is writing them'})[/yellow]"
        )


_STATUS_STYLE = {"pending": "yellow", "retrying": "cyan", "resolved": "green", "escalated": "bold red",
                 "quarantined": "yellow", "replayed": "green", "discarded": "dim"}


def _status(value: str) -> str:
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"


# --- errors --------------------------------------------------------------------------------------------


@errors_app.command("list")
def errors_list(
    status: Annotated[str | None, typer.Option(help="pending | retrying | resolved | escalated (comma-separated for several)")] = None,
    integration: Annotated[str | None, typer.Option(help="e.g. sap")] = None,
    dataset: Annotated[str | None, typer.Option(help="e.g. customers")] = None,
    category: Annotated[str | None, typer.Option(help="e.g. SYNC_FAILED, AUTHENTICATION_FAILED")] = None,
    since: SinceOption = None,
    open_only: Annotated[bool, typer.Option("--open", help="only unresolved rows (pending, retrying, escalated)")] = False,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """List integration errors, newest first."""
    from hub.ledger.errors import OPEN_STATUSES, error_as_dict, list_errors

    statuses: list[str] | None = [s.strip() for s in status.split(",") if s.strip()] if status else None
    if open_only:
        statuses = list(OPEN_STATUSES)
    _drain_spool_notice()
    rows = list_errors(status=statuses, integration=integration, dataset=dataset, category=category, since=_since(since), limit=limit)
    if as_json:
        for r in rows:
            _dump(error_as_dict(r))
        return
    table = Table(title=f"integration_errors ({len(rows)} shown)")
    for col in ("id", "created", "integration", "dataset", "category", "severity", "status", "reruns", "next rerun", "message"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.id),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.integration,
            r.dataset or "",
            r.error_type,
            r.severity,
            _status(r.status),
            f"{r.attempts}/{r.max_attempts}" if r.max_attempts else str(r.attempts or ""),
            _when(r.next_retry_at) if r.status in ("pending", "retrying") else "",
            (r.error_message or "")[:160],
        )
    console.print(table)
    if not rows:
        console.print("no errors match")


@errors_app.command("show")
def errors_show(
    error_id: Annotated[int, typer.Argument(help="integration_errors id")],
    as_json: JsonOption = False,
) -> None:
    """One error in full: message, remedy, the failed unit, the audit trail, and what to run next."""
    from hub.ledger.errors import (
        error_as_dict,
        error_events,
        event_as_dict,
        get_error,
        open_quarantine_count,
    )
    from hub.ledger.retry_units import rerun_spec

    with _exit_codes_for_lookups():
        row = get_error(error_id)
    events = error_events(error_id)
    open_quarantine = open_quarantine_count(error_id) if row.error_type == "DATA_VALIDATION_FAILED" else 0
    spec = rerun_spec(row.unit)
    if as_json:
        _dump({
            "error": error_as_dict(row),
            "events": [event_as_dict(e) for e in events],
            "open_quarantined_rows": open_quarantine,
            "rerun": spec.description if spec else None,
        })
        return
    lines = [
        f"[bold]{row.error_type}[/bold] [{row.error_code or '-'}] {('HTTP ' + str(row.http_status)) if row.http_status else ''}",
        f"integration [bold]{row.integration}[/bold]  dataset {row.dataset or '-'}  operation {row.operation or '-'}  severity {row.severity}",
        f"status {_status(row.status)}  created {_when(row.created_at)}  flow run {row.flow_run_id or '-'}",
        f"retries in the run {row.retry_count}" + (f" (up to {row.max_retries} allowed)" if row.max_retries else "")
        + f"  queued reruns {row.attempts}/{row.max_attempts}"
        + (f"  next {_when(row.next_retry_at)}" if row.next_retry_at and row.status in ('pending', 'retrying') else ""),
    ]
    if row.escalated_at:
        lines.append(f"escalated {_when(row.escalated_at)}")
    if row.resolved_at:
        lines.append(f"resolved {_when(row.resolved_at)} by {row.resolved_by or '-'}: {row.resolution_note or ''}")
    lines += ["", row.error_message, "", f"[bold]What to do:[/bold] {row.remedy or '-'}"]
    console.print(Panel("\n".join(lines), title=f"integration_errors #{row.id}", expand=False))
    if row.stack_trace:
        # Already redacted and bounded when recorded; markup off: a traceback is full of [brackets].
        console.print("[bold]Stack trace[/bold] (redacted; innermost frames last):")
        console.print(row.stack_trace.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
    if row.unit:
        conflict = row.unit.get("conflict") if isinstance(row.unit.get("conflict"), dict) else None
        shown = {k: v for k, v in row.unit.items() if k != "conflict"} if conflict else row.unit
        console.print(f"[bold]Failed unit[/bold] ({spec.description if spec else 'no rerun handler registered for this kind'}):")
        console.print_json(json.dumps(shown, default=str))
        if conflict:
            console.print(_versions_side_by_side(conflict))
            if row.status != "resolved":
                console.print(
                    f"A person decides (docs/sap-customer-push.md): the ERP's values: [bold]drymix errors retry {row.id}[/bold]; "
                    f"chosen values: [bold]drymix sap customers requeue {row.unit.get('outbox_id')} --set field=value[/bold]; "
                    f"SAP's: [bold]drymix errors resolve {row.id} --reason 'SAP keeps ...'[/bold]"
                )
    events_table = Table(title="audit trail")
    for col in ("at", "actor", "action", "status", "reason"):
        events_table.add_column(col, overflow="fold")
    for e in events:
        change = f"{e.from_status or ''} -> {e.to_status or ''}" if e.from_status != e.to_status else (e.to_status or "")
        events_table.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.action, change, (e.reason or "")[:300])
    console.print(events_table)
    if row.status != "resolved":
        if row.error_type == "DATA_VALIDATION_FAILED" and not spec:
            console.print(
                f"{open_quarantine} quarantined row(s) open: `drymix quarantine list --error {row.id}`, then "
                f"`drymix quarantine replay --error {row.id}` after a fix, or `drymix quarantine discard --error {row.id} --reason '...'`"
            )
        elif spec:
            console.print(f"Rerun the failed unit: [bold]drymix errors retry {row.id}[/bold]")
        console.print(f"Close it: drymix errors resolve {row.id} --reason '...'   Hand it over: drymix errors escalate {row.id} --reason '...'")


def _versions_side_by_side(conflict: dict[str, Any]) -> Table:
    """A conflict's two versions (the ERP's change, SAP's partner now) field by field, with what the ERP last saw."""
    erp, sap = conflict.get("erp") or {}, conflict.get("sap") or {}
    base = conflict.get("base") if isinstance(conflict.get("base"), dict) else None
    disputed = set(conflict.get("fields") or ())
    table = Table(title="conflict: both versions (* = disputed)")
    table.add_column("field")
    table.add_column("ERP (queued change)", overflow="fold")
    table.add_column("SAP (now)", overflow="fold")
    if base is not None:
        table.add_column("as the ERP last saw it", overflow="fold")
    for name in [n for n in erp if n in sap or n in disputed] + [n for n in sap if n not in erp and n in disputed]:
        cells = [f"{'* ' if name in disputed else ''}{name}", _cell(erp.get(name)), _cell(sap.get(name))]
        if base is not None:
            cells.append(_cell(base.get(name)))
        table.add_row(*cells, style="bold" if name in disputed else None)
    return table


def _cell(value: Any) -> str:
    return "-" if value is None else json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


@errors_app.command("retry")
def errors_retry(
    error_id: Annotated[int, typer.Argument(help="integration_errors id")],
    by: ByOption = None,
    as_json: JsonOption = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue the rerun on the Prefect server's workers and return (docs/background-jobs.md)")] = False,
) -> None:
    """Rerun only the failed unit of an error now (after fixing its cause); resolves it when the rerun succeeds."""
    import hub.runtime.prefect_runtime as runtime
    from hub.ledger.retry_units import rerun

    runtime.install_log_filters()
    if queue:
        from hub.ledger.errors import get_error
        from hub.runtime.jobs import retry_job_key

        with _exit_codes_for_lookups():
            row = get_error(error_id)
        queue_from_cli("hub.errors.retry", {"error_ids": [error_id]}, retry_job_key(row.id, row.created_at, row.attempts), as_json)
        return
    with _exit_codes_for_lookups():
        outcome = rerun(error_id, by=_actor(by), manual=True)
    if as_json:
        _dump(outcome.as_dict())
    elif outcome.status == "resolved":
        console.print(f"[green]integration_errors #{error_id} resolved[/green]: rerun {outcome.attempt} of the failed unit succeeded")
        if outcome.summary:
            console.print_json(json.dumps(dict(outcome.summary), default=str))
    else:
        err_console.print(f"[red]rerun {outcome.attempt} failed[/red]: {outcome.error}")
        err_console.print(f"integration_errors #{error_id} is now {outcome.status}: `drymix errors show {error_id}`")
    if outcome.status != "resolved":
        raise typer.Exit(EXIT_FAILED)


def queue_from_cli(job: str, parameters: dict[str, Any], key: str, as_json: bool) -> None:
    """Queue a background job (hub/runtime/jobs.py) and say where its run is; exit 1 when it cannot be queued."""
    import os

    from hub.operations.stack import stack_status
    from hub.runtime.jobs import JobNotQueued, queue_job

    status = stack_status()
    # PREFECT_API_URL, else the running local stack's server (`drymix stack up`), as `drymix smoke` finds it.
    api_url = os.environ.get("PREFECT_API_URL") or (status.get("api_url") if status.get("running") else None)
    try:
        queued = queue_job(job, parameters, key=key, api_url=api_url)
    except JobNotQueued as exc:
        err_console.print(f"[red]not queued:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        _dump(queued.as_dict())
        return
    verb = "queued" if queued.created else f"already queued ({queued.state.lower()})"
    console.print(f"[green]{verb}[/green]: {job} as flow run {queued.run_name} ({queued.url})")


@errors_app.command("resolve")
def errors_resolve(
    error_id: Annotated[int, typer.Argument(help="integration_errors id")],
    reason: Annotated[str, typer.Option("--reason", help="why it is resolved (kept in the audit trail)")],
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark an error resolved by hand (e.g. fixed at the source, or a duplicate of another)."""
    from hub.ledger.errors import error_as_dict, resolve_error

    _require_reason(reason)
    with _exit_codes_for_lookups():
        row = resolve_error(error_id, by=_actor(by), reason=reason)
    if as_json:
        _dump(error_as_dict(row))
    else:
        console.print(f"[green]integration_errors #{error_id} resolved[/green] by {row.resolved_by}: {reason}")


@errors_app.command("escalate")
def errors_escalate(
    error_id: Annotated[int, typer.Argument(help="integration_errors id")],
    reason: Annotated[str, typer.Option("--reason", help="why it is escalated (kept in the audit trail and sent)")],
    by: ByOption = None,
    notify: Annotated[bool, typer.Option("--notify/--no-notify", help="notify on-call through the configured channels")] = True,
    as_json: JsonOption = False,
) -> None:
    """Escalate an error now: queued reruns stop and on-call is notified."""
    from hub.ledger.errors import error_as_dict, error_events, escalate_error

    _require_reason(reason)
    with _exit_codes_for_lookups():
        row = escalate_error(error_id, by=_actor(by), reason=reason, notify=notify)
    notified = [e for e in error_events(error_id) if e.action == "notified"]
    if as_json:
        _dump({"error": error_as_dict(row), "notification": notified[-1].reason if notified else None})
        return
    console.print(f"[bold red]integration_errors #{error_id} escalated[/bold red] by {_actor(by)}: {reason}")
    if notified:
        console.print(notified[-1].reason or "")


# --- quarantine ----------------------------------------------------------------------------------------


@quarantine_app.command("list")
def quarantine_list(
    integration: Annotated[str | None, typer.Option(help="e.g. sap")] = None,
    dataset: Annotated[str | None, typer.Option(help="e.g. customers")] = None,
    status: Annotated[str, typer.Option(help="quarantined | replayed | discarded | all")] = "quarantined",
    error: Annotated[int | None, typer.Option("--error", help="rows of this DATA_VALIDATION_FAILED error")] = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines (raw and mapped records included)")] = False,
) -> None:
    """Quarantined rows with the expectations they failed, newest first."""
    from hub.ledger.quarantine import failure_summary, list_quarantine, record_as_dict

    rows = list_quarantine(
        integration=integration, dataset=dataset, status=None if status == "all" else status, error_id=error, since=_since(since), limit=limit
    )
    if as_json:
        for r in rows:
            _dump(record_as_dict(r))
        return
    table = Table(title=f"quarantined_records ({len(rows)} shown, status {status})")
    for col in ("id", "integration", "dataset", "record", "error", "status", "seen", "updated", "failed expectations"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.id),
            r.integration,
            r.dataset,
            r.record_key,
            f"#{r.error_id}" if r.error_id else "",
            _status(r.status),
            str(r.seen_count),
            r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            failure_summary(r.failed_expectations or [])[:300],
        )
    console.print(table)
    if rows and status == "quarantined":
        console.print("Inspect one: `drymix quarantine show <id>`; after a fix: `drymix quarantine replay <ids> | --error <id>`")


@quarantine_app.command("show")
def quarantine_show(
    record_id: Annotated[int, typer.Argument(help="quarantined_records id")],
    as_json: JsonOption = False,
) -> None:
    """One quarantined row: its failed expectations, the raw source record and what the mapping made of it."""
    from hub.ledger.quarantine import get_record, record_as_dict

    row = get_record(record_id)
    if row is None:
        err_console.print(f"[red]no quarantined_records row #{record_id}[/red]")
        raise typer.Exit(EXIT_NOT_FOUND)
    data = record_as_dict(row)
    if as_json:
        _dump(data)
        return
    console.print(Panel(
        f"{row.integration}/{row.dataset} record [bold]{row.record_key}[/bold]  status {_status(row.status)}  "
        f"error {('#' + str(row.error_id)) if row.error_id else '-'}  seen {row.seen_count}x  updated {_when(row.updated_at)}"
        + (f"\n{row.resolution_note}" if row.resolution_note else ""),
        title=f"quarantined_records #{row.id}",
        expand=False,
    ))
    failures = Table(title="failed expectations")
    for col in ("rule id", "expectation", "column", "value", "kwargs"):
        failures.add_column(col, overflow="fold")
    for f in row.failed_expectations or []:
        rule = {k: v for k, v in (f.get("kwargs") or {}).items() if k not in ("result_format",)}
        failures.add_row(str(f.get("rule_id") or ""), str(f.get("expectation")), str(f.get("column") or ""),
                         json.dumps(f.get("value"), default=str), json.dumps(rule, default=str)[:200])
    console.print(failures)
    console.print("[bold]mapped record[/bold]")
    console.print_json(json.dumps(data.get("mapped_record"), default=str))
    console.print("[bold]raw source record[/bold]")
    console.print_json(json.dumps(data.get("raw_record"), default=str))


@quarantine_app.command("replay")
def quarantine_replay(
    record_ids: Annotated[list[int] | None, typer.Argument(help="quarantined_records ids (or select with the options)")] = None,
    error: Annotated[int | None, typer.Option("--error", help="every open row of this DATA_VALIDATION_FAILED error")] = None,
    integration: Annotated[str | None, typer.Option(help="every open row of this integration")] = None,
    dataset: Annotated[str | None, typer.Option(help="every open row of this dataset")] = None,
    everything: Annotated[bool, typer.Option("--all", help="every open row")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="e.g. the fix that was made (kept in the audit trail)")] = None,
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay open quarantined rows through the CURRENT mapping and suite; rows that pass are loaded.

    Exit code 1 when some rows still fail (they stay quarantined with today's reasons).
    """
    from hub.ledger.quarantine import replay

    with _exit_codes_for_selections():
        result = replay(
            by=_actor(by), reason=reason, ids=record_ids or None, error_id=error, integration=integration, dataset=dataset, everything=everything
        )
    if as_json:
        _dump(result.as_dict())
    else:
        table = Table(title="quarantine replay")
        for col in ("selected", "loaded", "unchanged", "superseded", "still failing", "errors resolved"):
            table.add_column(col, justify="right")
        table.add_row(
            str(result.selected), str(result.loaded), str(result.unchanged), str(result.superseded), str(result.still_failing),
            ", ".join(f"#{i}" for i in result.errors_resolved) or "-",
        )
        console.print(table)
        if result.still_failing:
            err_console.print(f"{result.still_failing} row(s) still fail today's suite: `drymix quarantine list` shows why")
    if result.still_failing:
        raise typer.Exit(EXIT_FAILED)


@quarantine_app.command("discard")
def quarantine_discard(
    record_ids: Annotated[list[int] | None, typer.Argument(help="quarantined_records ids")] = None,
    error: Annotated[int | None, typer.Option("--error", help="every open row of this DATA_VALIDATION_FAILED error")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why these rows will not be loaded (required, kept)")] = "",
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Discard open quarantined rows with a reason: they are kept, marked discarded, and audited."""
    from hub.ledger.quarantine import discard

    with _exit_codes_for_selections():
        result = discard(by=_actor(by), reason=reason, ids=record_ids or None, error_id=error)
    if as_json:
        _dump(result.as_dict())
        return
    console.print(f"{len(result.discarded_ids)} row(s) discarded by {_actor(by)}: {reason}")
    if result.errors_resolved:
        console.print("resolved: " + ", ".join(f"integration_errors #{i}" for i in result.errors_resolved))
