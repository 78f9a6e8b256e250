"""`drymix sap customers ...`: queue ERP customer changes for SAP, push them, see and re-queue the outbox.

The ERP itself queues changes with `hub.systems.sap_push.enqueue_customer_change(conn, ...)` inside its own
transaction; these commands are for on-call and the demo. Heavy imports (Prefect, the flow) stay inside commands.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

sap_app = typer.Typer(help="SAP S/4HANA: customers pushed to business partners.", no_args_is_help=True)
customers_app = typer.Typer(help="ERP customers pushed to SAP through the customer_outbox (docs/sap-customer-push.md).", no_args_is_help=True)
sap_app.add_typer(customers_app, name="customers")
console = Console()
err_console = Console(stderr=True)
EXIT_FAILED, EXIT_USAGE = 1, 2

SetOption = Annotated[list[str] | None, typer.Option("--set", help="a customer field as name=value (repeatable), e.g. --set email=a@b.in")]
SalesAreaOption = Annotated[
    list[str] | None,
    typer.Option("--sales-area", help="ORG/CHANNEL/DIVISION[/CURRENCY[/PAYMENT_TERMS]] (repeatable; creates only: SAP owns them after)"),
]


def _fields(sets: list[str] | None, sales_areas: list[str] | None, **named: Any) -> dict[str, Any]:
    """The named options and `--set name=value` pairs as the ERP's customer fields."""
    fields: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
    for item in sets or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            err_console.print(f"[red]--set takes name=value[/red], got {item!r}")
            raise typer.Exit(EXIT_USAGE)
        fields[name.strip()] = value.strip() or None
    areas = []
    for spec in sales_areas or ():
        parts = spec.split("/")
        if len(parts) < 3:
            err_console.print(f"[red]--sales-area takes ORG/CHANNEL/DIVISION[/CURRENCY[/PAYMENT_TERMS]][/red], got {spec!r}")
            raise typer.Exit(EXIT_USAGE)
        keys = ("sales_org", "distribution_channel", "division", "currency", "payment_terms")
        areas.append({k: v for k, v in zip(keys, parts, strict=False) if v})
    if areas:
        fields["sales_areas"] = areas
    return fields


@customers_app.command("queue")
def queue(
    erp_ref: Annotated[str, typer.Argument(help="the ERP's customer key, e.g. ERP-000123 (SAP BusinessPartnerIDByExtSystem)")],
    name: Annotated[str | None, typer.Option(help="organisation name")] = None,
    first_name: Annotated[str | None, typer.Option(help="person's first name")] = None,
    last_name: Annotated[str | None, typer.Option(help="person's last name")] = None,
    category: Annotated[str | None, typer.Option(help="person | organization (creates)")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option(help="E.164, e.g. +912240001234")] = None,
    mobile: Annotated[str | None, typer.Option(help="E.164, e.g. +919820012345")] = None,
    city: Annotated[str | None, typer.Option()] = None,
    country: Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-2, e.g. IN")] = None,
    gstin: Annotated[str | None, typer.Option(help="GSTIN (creates: SAP's tax team owns it after)")] = None,
    sets: SetOption = None,
    sales_areas: SalesAreaOption = None,
    operation: Annotated[str | None, typer.Option(help="create | update (default: update when a customers row has this ERP reference)")] = None,
    partner: Annotated[str | None, typer.Option(help="the SAP partner, when the change is an update of a known one")] = None,
) -> None:
    """Queue a customer creation or change for SAP, as the ERP does in its own transaction."""
    from hub.core.db import get_engine
    from hub.systems.sap_push import enqueue_customer_change

    fields = _fields(sets, sales_areas, name=name, first_name=first_name, last_name=last_name, category=category, email=email,
                     phone=phone, mobile=mobile, city=city, country=country, gstin=gstin)
    try:
        with get_engine().begin() as conn:
            outbox_id = enqueue_customer_change(conn, erp_ref, fields, operation=operation, partner=partner)
    except ValueError as exc:
        err_console.print(f"[red]not queued:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    console.print(f"customer_outbox #{outbox_id}: {erp_ref} queued ({', '.join(sorted(fields))}); `drymix sap customers push` sends it now")


@customers_app.command("requeue")
def requeue_cmd(
    outbox_id: Annotated[int, typer.Argument(help="customer_outbox id (a conflict or failed row)")],
    sets: SetOption = None,
) -> None:
    """Put a conflict or failed row back in the queue, with the values a person chose (`--set`) over the ERP's."""
    from hub.systems.sap_push import read_row, requeue

    rows = read_row(outbox_id)
    if not rows:
        err_console.print(f"[red]customer_outbox #{outbox_id} is pushed already or does not exist[/red]")
        raise typer.Exit(EXIT_FAILED)
    fields = {**rows[0]["fields"], **_fields(sets, None)} if sets else None
    try:
        requeue(outbox_id, fields)
    except ValueError as exc:
        err_console.print(f"[red]not re-queued:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    console.print(f"customer_outbox #{outbox_id} ({rows[0]['erp_ref']}) is pending again; its open errors resolve when it is pushed")


@customers_app.command("push")
def push(
    max_pages: Annotated[int | None, typer.Option(help="stop after this many pages of outbox rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue a run on the Prefect server's workers and return (docs/background-jobs.md)")] = False,
) -> None:
    """Run the push-sap-customers flow now, in this process (--queue: on a worker, in the background)."""
    if queue:
        from hub.cli.errors import queue_from_cli
        from hub.core.models import CustomerOutbox, CustomerPushStatus
        from hub.runtime.jobs import outbox_key

        queue_from_cli("sap.customers.push", {"max_pages": max_pages}, outbox_key(CustomerOutbox, CustomerPushStatus.PUSHED.value), as_json)
        return
    from flows.push_sap_customers import push_sap_customers
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        summary = dict(run_flow_quietly(push_sap_customers, max_pages=max_pages))
    except Exception as exc:  # noqa: BLE001 - the flow recorded the error row; say so and exit non-zero
        err_console.print(f"[red]run failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --integration sap` for the recorded error and what to do."))
        raise typer.Exit(EXIT_FAILED) from None
    summary.pop("latencies_ms", None)
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        table = Table(title="sap customer_push")
        table.add_column("figure")
        table.add_column("value", overflow="fold")
        for key, value in summary.items():
            table.add_row(key, json.dumps(value, default=str) if isinstance(value, dict | list) else str(value))
        console.print(table)
    if summary.get("failed") or summary.get("refused") or summary.get("conflicts"):
        raise typer.Exit(EXIT_FAILED)


@customers_app.command("list")
def list_outbox(
    status: Annotated[str | None, typer.Option(help="pending | pushed | conflict | failed")] = None,
    erp_ref: Annotated[str | None, typer.Option(help="one ERP customer")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """The customer outbox, newest first."""
    from hub.systems.sap_push import outbox_rows

    rows = outbox_rows(status=status, erp_ref=erp_ref, limit=limit)
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return
    table = Table(title="customer_outbox")
    for col in ("id", "erp ref", "op", "partner", "status", "attempts", "next attempt", "error", "pushed"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]), r["erp_ref"], r["operation"], r["partner"] or "", r["status"], str(r["attempts"]),
            r["next_attempt_at"].strftime("%H:%M:%S") if r["next_attempt_at"] else "",
            (f"#{r['last_error_id']} " if r["last_error_id"] else "") + (r["last_error"] or "")[:120],
            r["pushed_at"].strftime("%Y-%m-%d %H:%M:%S") if r["pushed_at"] else "",
        )
    console.print(table)
    if not rows:
        console.print("no outbox rows match")
