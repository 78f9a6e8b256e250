"""Writes to the ERP `payments` table: record a created order, apply a payment update forward-only.

Every function works in the caller's transaction, so a webhook's effect commits together with its
inbox row being marked processed, and a reconciliation page commits together with its watermark.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from connectors.razorpay import PAYMENTS as PAYMENTS_STREAM
from data_mappings.payments import (
    CAPTURED,
    Current,
    EventNotApplicable,
    PaymentUpdate,
    advances,
    latest,
    order_status_after,
    update_from_event,
)
from hub.core.models import Payment
from hub.core.settings import get_settings
from hub.ingress.inbox import InboxEvent
from hub.ledger.retry_units import RAZORPAY_PAYMENTS_PAGE
from tasks.streams import ApplyContext, PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from connectors.core.base import Connector, Stream

PAYMENTS = cast(Table, Payment.__table__)


def _insert(conn: Connection) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(PAYMENTS)


def record_order(conn: Connection, order: Mapping[str, Any]) -> None:
    """Store an order the hub created (before any payment exists); a known order is left as it is."""
    now = datetime.now(UTC)
    conn.execute(
        _insert(conn)
        .values(
            order_id=str(order["id"]),
            receipt=order.get("receipt"),
            amount_paise=order.get("amount"),
            currency=order.get("currency"),
            order_status=str(order.get("status") or "created"),
            payment_status="created",
            source="api",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )


def apply_update(conn: Connection, change: PaymentUpdate) -> str:
    """Apply one update under the row lock.

    Returns "applied" (the row changed), "unchanged" (it already said so), "stale" (an older or lower
    state, refused by the forward-only rule) or "duplicate" (this event id was the last one applied)."""
    now = datetime.now(UTC)
    if (change.event_at - now).total_seconds() > get_settings().webhook_max_future_skew_s:
        # No stored event time lies in the future: it would outrank every genuine later event.
        raise EventNotApplicable(f"{change.source} time {change.event_at.isoformat()} of order {change.order_id} is in the future")
    # The row exists before it is locked, so two workers applying events of one order serialise on it.
    conn.execute(
        _insert(conn)
        .values(order_id=change.order_id, order_status="created", payment_status="created", source=change.source, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    query = select(PAYMENTS).where(PAYMENTS.c.order_id == change.order_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one()
    if change.event_id is not None and row.last_event_id == change.event_id:
        return "duplicate"
    values: dict[str, Any] = {}
    for name in ("receipt", "amount_paise", "currency", "method"):
        if getattr(row, name) is None and getattr(change, name) is not None:
            values[name] = getattr(change, name)
    order_status = order_status_after(row.order_status, change.order_status)
    if order_status != row.order_status:
        values["order_status"] = order_status
    current = Current(row.payment_status, row.payment_id, row.last_event_at, row.order_status)
    moved = advances(current, change)
    if moved:
        values.update(
            payment_status=change.payment_status,
            payment_id=change.payment_id or row.payment_id,
            error_code=change.error_code,
            error_description=change.error_description,
            last_event_at=latest(row.last_event_at, change.event_at),
            source=change.source,
        )
        if change.method is not None:
            values["method"] = change.method
        if change.event_id is not None:
            values["last_event_id"] = change.event_id
        if change.payment_status == CAPTURED and row.captured_at is None:
            values["captured_at"] = change.event_at
    # The refunded amount only grows (a cumulative figure, so a repeated or late event cannot count twice).
    refunded = change.amount_refunded is not None and change.amount_refunded > (row.amount_refunded or 0)
    if refunded:
        values["amount_refunded"] = change.amount_refunded
        if change.event_id is not None:
            values["last_event_id"] = change.event_id
    values = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not values:
        # The same status again, not newer: it already says so. A lower status: refused as stale.
        return "unchanged" if moved or change.payment_status == row.payment_status else "stale"
    values["updated_at"] = now
    conn.execute(update(PAYMENTS).where(PAYMENTS.c.order_id == change.order_id).values(**values))
    return "applied" if moved or refunded else "stale"


def apply_razorpay_event(conn: Connection, event: InboxEvent) -> str:
    """One stored Razorpay webhook -> `payments`; "ignored" for events that move no payment state."""
    try:
        body = orjson.loads(event.body)
    except orjson.JSONDecodeError as exc:
        raise EventNotApplicable(f"event body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EventNotApplicable("event body is not a JSON object")
    change = update_from_event(body, event.event_id)
    if change is None:
        return "ignored"
    return apply_update(conn, change)


def get_payment(conn: Connection, order_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(PAYMENTS).where(PAYMENTS.c.order_id == order_id)).first()
    return dict(row._mapping) if row is not None else None


# --- reconciliation, as the sync engine runs it (flows/reconcile_razorpay.py) ------------------------
#
# Razorpay advises polling for business-critical flows and disables a webhook after 24 h of failures.
# Each run reads payments created in [watermark - overlap, now]: a fixed window, so payments created while
# paging cannot shift the count/skip offsets, and a failed page's unit (the window and the page's
# position) reruns exactly the rest of it. Each page applies with the webhooks' forward-only rule and
# commits with its rows; the watermark (`{"since": unix}`) is written with the last page and never moves back.

DEFAULT_OVERLAP_S = 3600
# First run without a watermark: look back this far (Razorpay replays webhooks for 15 days at most).
DEFAULT_LOOKBACK_S = 15 * 24 * 3600


def apply_payments(conn: Connection, records: list[dict[str, Any]], cursor: Mapping[str, Any] | None,
                   context: ApplyContext) -> dict[str, int]:
    """One page of payments (and, on the last page, the watermark unless it already stands later), in the caller's transaction."""
    from data_mappings.payments import update_from_payment
    from hub.ledger.loading import read_cursor, write_cursor

    counts = {"records": len(records), "applied": 0, "stale": 0, "skipped": 0}
    for payment in records:
        try:
            result = apply_update(conn, update_from_payment(payment, source="reconciliation"))
        except EventNotApplicable:
            # A payment without an order (payment links, ...) is not tracked in `payments`; one dated in the
            # future is not believed.
            counts["skipped"] += 1
            continue
        counts["applied" if result == "applied" else "stale"] += 1
    if cursor is not None:
        current = read_cursor(conn, "razorpay", "payments") or {}
        # A rerun of an older window finishes after a later run moved the watermark: leave it there.
        if current.get("since") is None or int(current["since"]) < int(cursor["since"]):
            write_cursor(conn, "razorpay", "payments", dict(cursor), flow_run_id=context.flow_run_id, rows_added=counts["applied"])
    return counts


def _reconcile_plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    import time

    overlap_s = int(options.parameters.get("overlap_s", DEFAULT_OVERLAP_S))
    until = int(time.time())
    known = cursor is not None and cursor.get("since") is not None
    since = max(0, int(cursor["since"]) - overlap_s) if cursor is not None and known else until - DEFAULT_LOOKBACK_S
    return ReadPlan(
        position=connector.start(stream, {"from": since, "to": until}),
        mode="incremental" if known else "full",
        since=since,
        state={"until": until},
    )


def _connect_razorpay(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_razorpay_connector

    return build_razorpay_connector(page_size=options.page_size)


RECONCILIATION = PullStream(
    integration="razorpay",
    dataset="payments",
    flow_name="reconcile-razorpay",
    unit_kind=RAZORPAY_PAYMENTS_PAGE,
    operation="reconcile_payments",
    stream=PAYMENTS_STREAM,
    connect=_connect_razorpay,
    plan=_reconcile_plan,
    next_cursor=lambda plan, high_water, started: {"since": plan.state["until"]},
    apply=apply_payments,
    batch_pages=1,  # each page commits with its rows
    keep_cursor_on_resume=False,  # apply_payments never moves the watermark back instead
    resolve=("SERVER_ERROR", "TIMEOUT", "RATE_LIMIT_EXCEEDED"),
)
