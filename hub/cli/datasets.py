"""`drymix datasets` and `drymix sync <dataset>`: every registered dataset (hub/datasets.py), one way.

`drymix datasets` lists each with its schedule (config/integrations.toml, as prefect.yaml is generated from it),
its watermark and last run (`sync_state`) and its open errors (`integration_errors` pending, retrying or
escalated). `drymix sync <dataset>` runs any registered dataset's flow now, in this process; the older verbs
(`sync sap-customers`, `google sync`, `m365 sync-calendar`, `lab collect`, ...) stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.datasets import Dataset, all_datasets, runnable

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED = 0, 1
_SHOWN_CHARS = 40  # a cursor value longer than this is shortened in the table (delta links, sync tokens)


@dataclass
class DatasetStatus:
    """One line of `drymix datasets`."""

    name: str
    integration: str
    deployment: str | None
    schedule: str | None
    watermark: dict[str, Any] | None
    last_success_at: datetime | None
    last_run_id: str | None
    open_errors: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "integration": self.integration,
            "deployment": self.deployment,
            "schedule": self.schedule,
            "watermark": self.watermark,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_run_id": self.last_run_id,
            "open_errors": self.open_errors,
        }


def _matches(column: Any, values: tuple[str, ...]) -> Any:
    """`column` equal to one of `values`, or starting with one that ends in ':' (one cursor per calendar)."""
    from sqlalchemy import false, or_

    clauses = [column.startswith(v) if v.endswith(":") else column == v for v in values]
    return or_(*clauses) if clauses else false()


def dataset_statuses() -> list[DatasetStatus]:
    """Schedule, watermark, last run and open errors of every registered dataset."""
    from sqlalchemy import func, select

    from hub.core.db import get_engine
    from hub.core.models import IntegrationErrorRow, SyncState
    from hub.monitoring.health import OPEN_ERROR_STATUSES
    from hub.operations.deploy import configured_schedules

    schedules = configured_schedules()
    result = []
    with get_engine().connect() as conn:
        for d in all_datasets():
            states = conn.execute(
                select(SyncState.dataset, SyncState.cursor, SyncState.last_success_at, SyncState.last_run_id)
                .where(SyncState.integration == d.integration, _matches(SyncState.dataset, d.cursor_datasets))
                .order_by(SyncState.dataset)
            ).all()
            watermark = {row.dataset: row.cursor for row in states if row.cursor} or None
            latest = max((row for row in states if row.last_success_at), key=lambda r: r.last_success_at, default=None)
            open_errors = conn.execute(
                select(func.count())
                .select_from(IntegrationErrorRow)
                .where(
                    IntegrationErrorRow.integration == d.integration,
                    IntegrationErrorRow.dataset.in_(d.error_datasets),
                    IntegrationErrorRow.status.in_(OPEN_ERROR_STATUSES),
                )
            ).scalar_one()
            result.append(
                DatasetStatus(
                    name=d.name,
                    integration=d.integration,
                    deployment=d.deployment,
                    schedule=schedules.get(d.schedule) if d.schedule else None,
                    watermark=watermark,
                    last_success_at=latest.last_success_at if latest else None,
                    last_run_id=latest.last_run_id if latest else None,
                    open_errors=int(open_errors),
                )
            )
    return result


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _watermark_text(watermark: dict[str, Any] | None) -> str:
    if not watermark:
        return "–"
    lines = []
    for dataset, cursor in watermark.items():
        figures = ", ".join(f"{k}={_short(v)}" for k, v in cursor.items()) if isinstance(cursor, dict) else _short(cursor)
        lines.append(f"{dataset}: {figures}" if len(watermark) > 1 else figures)
    return "\n".join(lines)


def datasets(as_json: Annotated[bool, typer.Option("--json", help="one JSON object per dataset")] = False) -> None:
    """Every dataset the hub runs: its schedule, watermark, last run and open errors."""
    from sqlalchemy.exc import SQLAlchemyError

    from connectors.core.redact import redact_mapping

    try:
        statuses = dataset_statuses()
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        err_console.print(f"[red]cannot read sync_state and integration_errors:[/red] {type(cause).__name__}: {cause}")
        err_console.print("Is the database up and migrated? `drymix db upgrade` applies the migrations.")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        for status in statuses:
            typer.echo(json.dumps(redact_mapping(status.as_json()), default=str))
        return
    table = Table(title="Datasets (hub/datasets.py)")
    for column in ("dataset", "deployment", "schedule", "watermark", "last run", "open errors"):
        table.add_column(column, justify="right" if column == "open errors" else "left", no_wrap=column != "watermark")
    for status in statuses:
        last = "–" if status.last_success_at is None else f"{status.last_success_at:%Y-%m-%d %H:%M:%S}\n{status.last_run_id or ''}".rstrip()
        table.add_row(
            status.name,
            status.deployment or "– (on demand)",
            status.schedule or "–",
            _watermark_text(redact_mapping(status.watermark)),
            last,
            f"[red]{status.open_errors}[/red]" if status.open_errors else "0",
        )
    console.print(table)


def run_dataset(
    dataset: Dataset, *, full_refresh: bool, partitions: int = 1, cluster: str | None = None, batch_pages: int | None = None
) -> dict[str, Any]:
    """Run the dataset's flow now in this process, then write this run's call measurements."""
    from hub.monitoring.health import stop_flusher
    from hub.runtime.prefect_runtime import run_flow_quietly  # sets Prefect's defaults before Prefect loads

    flow = dataset.load_flow()
    parameters: dict[str, Any] = {}
    if full_refresh:
        if dataset.full_refresh_parameter is None:
            raise ValueError(f"{dataset.name} keeps no watermark to ignore: it has no full refresh")
        parameters[dataset.full_refresh_parameter] = True
    if partitions > 1 or cluster:
        if not dataset.partitioned:
            raise ValueError(f"{dataset.name} cannot split its read into partitions")
        parameters.update(partitions=max(partitions, 1), cluster=cluster)
    if batch_pages is not None:
        if not dataset.partitioned:
            raise ValueError(f"{dataset.name} reads batches of its configured size")
        parameters["batch_pages"] = batch_pages

    try:
        summary: dict[str, Any] = run_flow_quietly(flow, **parameters)
    finally:
        stop_flusher()  # a last flush before the command exits (the flow started the flusher)
    return summary


def _print_figures(dataset: Dataset, summary: dict[str, Any]) -> None:
    table = Table(title=f"{dataset.name} ({summary.get('mode', 'run')})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key in ("integration", "dataset", "mode") or isinstance(value, dict | list):
            continue
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    if summary.get("error_ids"):
        console.print(f"integration_errors rows: {summary['error_ids']} (`drymix errors list --integration {dataset.integration}`)")


def _run_and_print(
    dataset: Dataset, *, full_refresh: bool, as_json: bool, partitions: int = 1, cluster: str | None = None,
    batch_pages: int | None = None,
) -> None:
    from hub.cli.errors import where_the_failure_is

    try:
        with console.status(f"running {dataset.name}...") if not as_json else nullcontext():
            summary = run_dataset(dataset, full_refresh=full_refresh, partitions=partitions, cluster=cluster, batch_pages=batch_pages)
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error row (or spooled it); say where and exit non-zero
        err_console.print(f"[red]{dataset.name} failed:[/red] {exc}")
        err_console.print(
            where_the_failure_is(exc, f"See `drymix errors list --integration {dataset.integration}` for the recorded error and what to do.")
        )
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    _print_figures(dataset, summary)


JsonOpt = Annotated[bool, typer.Option("--json", help="print the run's summary as JSON")]


def _sync_command(dataset: Dataset) -> Callable[..., None]:
    """The command of one dataset: with `--full-refresh` only when its flow can ignore its watermark."""

    def refreshable(
        full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore the watermark and read everything")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        _run_and_print(dataset, full_refresh=full_refresh, as_json=as_json)

    def plain(as_json: JsonOpt = False) -> None:
        _run_and_print(dataset, full_refresh=False, as_json=as_json)

    def partitioned(
        full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore the watermark and read everything")] = False,
        partitions: Annotated[int, typer.Option("--partitions", min=1, help="split a full read into N key ranges read in parallel processes")] = 1,
        cluster: Annotated[str | None, typer.Option("--cluster", help="run the partitions on this Dask scheduler (tcp://host:8786)")] = None,
        batch_pages: Annotated[int | None, typer.Option("--batch-pages", min=1, help="pages per batch (default: the integration's batch_pages; docs/scaling.md for large loads)")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        _run_and_print(dataset, full_refresh=full_refresh, as_json=as_json, partitions=partitions, cluster=cluster,
                       batch_pages=batch_pages)

    command = partitioned if dataset.partitioned else refreshable if dataset.full_refresh_parameter is not None else plain
    command.__doc__ = f"{dataset.description} (also `drymix {dataset.command}`)" if dataset.command else dataset.description
    return command


def register_sync_commands(sync_app: typer.Typer) -> None:
    """`drymix sync <dataset>` for every registered dataset with a flow."""
    for dataset in runnable():
        sync_app.command(dataset.name)(_sync_command(dataset))
