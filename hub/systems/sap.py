"""SAP S/4HANA datasets as the sync engine runs them (tasks/engine.py).

`CUSTOMERS`: business partners (API_BUSINESS_PARTNER, addresses and customer data expanded) into the ERP
`customers` table. The read is keyset-paged on the partner key (a partner changed mid-read stays where it
was, so nothing is skipped) and counted first (`$count`): fewer distinct partners read than counted is a
shortfall, the rows read still load but the watermark does not move and the whole read is the unit to
rerun. The watermark is the latest LastChangeDate among rows that loaded (a quarantined partner dated
2100 cannot freeze later runs), never after the day the read started; the next read re-reads
`overlap_days` before it (connectors/sap `SapConnector.first_url`).

`SALES_ORDERS`: sales orders (API_SALES_ORDER_SRV, items, partners and item pricing expanded) into the ERP
`sales_orders` and `sales_order_items`. Keyset-paged on the order key and counted like the partners; the
watermark is the latest LastChangeDateTime among orders that loaded (never after the read's start), and the
next read re-reads `overlap_s` seconds before it. The mapping gives one row per item (`record_column`): an
order is validated, quarantined and written whole, header and items in the batch's transaction
(`load_sales_orders`: items SAP no longer has are deleted). A run is a full read when the last full read is
older than `reconcile_after_h` (or with `full_refresh`); a complete, counted full read marks the ERP orders
SAP no longer returned as `deleted_in_sap_at` (`mark_deleted_orders`), in the last batch's transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors.sap import BUSINESS_PARTNERS
from connectors.sap import SALES_ORDERS as ORDERS_STREAM
from connectors.sap.sales_orders import CURSOR_KEY as ORDERS_CURSOR
from connectors.sap.sales_orders import read_since
from data_mappings.customers import (
    SOURCE_FIELDS,
    change_dates,
    flatten_business_partners,
    map_customers,
    source_expand,
)
from data_mappings.sales_orders import SOURCE_FIELDS as ORDER_FIELDS
from data_mappings.sales_orders import items_frame, map_sales_order_records, orders_frame
from hub.ledger.retry_units import SAP_CUSTOMERS_BATCH, SAP_SALES_ORDERS_BATCH
from tasks.streams import PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from connectors.core.base import Connector, Stream


def to_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    """SAP's nested partner records -> rows of the ERP customers table (flattened once, then mapped)."""
    return map_customers(flatten_business_partners(records))


def next_cursor(high_water: date | None, since: str | None, read_started: datetime) -> dict[str, Any]:
    """The watermark after a complete read: the latest change date that loaded, never after the read's start.

    SAP's clock, a future-dated record that passed validation or a partner changed while it was read can
    put a date beyond the read's start; a watermark there would make later incremental reads skip what
    changes until then. The next read starts `overlap_days` before the watermark.
    """
    started = read_started.astimezone(UTC).date()
    mark = min(high_water, started) if high_water else None
    if mark is None and since:
        mark = min(date.fromisoformat(since), started)
    return {"last_change_date": mark.isoformat()} if mark else {}


def _plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    return ReadPlan(
        position=connector.start(stream, cursor),
        mode="incremental" if cursor else "full",
        since=(cursor or {}).get("last_change_date"),
    )


def _connect(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_sap_connector

    return build_sap_connector(page_size=options.page_size)


def _customers_table() -> Table:
    from hub.core.models import Customer

    table: Table = Customer.__table__  # type: ignore[assignment]
    return table


def _latest_change(valid: pd.DataFrame) -> date | None:
    dates = change_dates(valid).dropna()
    return None if dates.empty else dates.max()


CUSTOMERS = PullStream(
    integration="sap",
    dataset="customers",
    flow_name="sync-sap-customers",
    unit_kind=SAP_CUSTOMERS_BATCH,
    operation="sync_customers",
    # The partners with what the mapping reads: addresses (e-mail, phones), customer data, tax numbers.
    stream=dataclasses.replace(BUSINESS_PARTNERS, select=SOURCE_FIELDS, expand=source_expand()),
    connect=_connect,
    plan=_plan,
    next_cursor=lambda plan, high_water, started: next_cursor(high_water, plan.since, started),
    map=to_records,
    suite="customers",
    table=_customers_table,
    key=("customer_id",),
    high_water=_latest_change,
    newer_wins="sap_changed_at",
    count=True,
    # A unit recorded before keyset paging holds an offset position that cannot be trusted: read again.
    resumable=lambda position: "filter" in (position.state or {}),
    full_read_must_find=(
        "SAP returned no business partners for a full sync: check the communication user's authorisations "
        "and that API_BUSINESS_PARTNER serves data"
    ),
)


# --- sales orders -------------------------------------------------------------------------------------


def _plan_orders(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    """Incremental from the watermark, unless the last full (reconciling) read is older than `reconcile_after_h`."""
    from hub.core.settings import sap_sales_order_options

    reconciled = (cursor or {}).get("reconciled_at")
    due = not reconciled or datetime.fromisoformat(str(reconciled)) < datetime.now(UTC) - timedelta(
        hours=sap_sales_order_options().reconcile_after_h
    )
    read_with = None if due or not (cursor or {}).get(ORDERS_CURSOR) else cursor
    return ReadPlan(
        position=connector.start(stream, read_with),
        mode="incremental" if read_with else "full",
        since=(read_with or {}).get(ORDERS_CURSOR),
        state={"reconciled_at": reconciled} if read_with and reconciled else {},
    )


def next_order_cursor(plan: ReadPlan, high_water: Any, read_started: datetime) -> dict[str, Any]:
    """The watermark after a complete read: the latest LastChangeDateTime that loaded, never after the read's start;
    with when the last complete full read (the one that marks deleted orders) started."""
    mark = min(pd.Timestamp(high_water).to_pydatetime(), read_started) if high_water is not None else None
    if mark is None and plan.since:
        mark = min(read_since({ORDERS_CURSOR: plan.since}) or read_started, read_started)
    cursor: dict[str, Any] = {ORDERS_CURSOR: mark.astimezone(UTC).isoformat()} if mark else {}
    reconciled = read_started.astimezone(UTC).isoformat() if plan.mode.startswith("full") else plan.state.get("reconciled_at")
    if reconciled:
        cursor["reconciled_at"] = reconciled
    return cursor


def _connect_orders(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_sap_sales_order_connector

    return build_sap_sales_order_connector(page_size=options.page_size)


def _orders_table() -> Table:
    from hub.core.models import SalesOrder

    table: Table = SalesOrder.__table__  # type: ignore[assignment]
    return table


def _latest_order_change(valid: pd.DataFrame) -> Any:
    changed = valid["sap_changed_at"].dropna()
    return None if changed.empty else changed.max()


def load_sales_orders(conn: Connection, rows: pd.DataFrame, run_id: str | None) -> dict[str, int]:
    """Orders' headers and items in the caller's transaction: items SAP no longer lists for an order are deleted
    (the ERP holds what SAP holds; a rejected item stays, with its reason), an order seen again is live again.

    Counts in orders: `upserted` an order whose header or any item changed, `unchanged` the rest; plus
    `items_written` and `items_deleted`.
    """
    from sqlalchemy import delete, select, tuple_, update

    from hub.core.models import SalesOrder, SalesOrderItem
    from hub.ledger.loading import upsert_rows

    orders = orders_frame(rows).assign(source_run_id=run_id)
    items = items_frame(rows).assign(source_run_id=run_id)
    keys = orders["sales_order"].tolist()
    headers: dict[str, tuple[str, Any]] = {}
    stored: dict[tuple[str, str], str] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        found = select(SalesOrder.sales_order, SalesOrder.row_hash, SalesOrder.deleted_in_sap_at).where(SalesOrder.sales_order.in_(chunk))
        headers.update({k: (h, d) for k, h, d in conn.execute(found)})
        lines = select(SalesOrderItem.sales_order, SalesOrderItem.item, SalesOrderItem.row_hash).where(SalesOrderItem.sales_order.in_(chunk))
        stored.update({(o, i): h for o, i, h in conn.execute(lines)})
    sent = dict(zip(zip(items["sales_order"], items["item"], strict=True), items["row_hash"], strict=True))
    stale = [pair for pair in stored if pair not in sent]
    changed = {k for k, h in zip(orders["sales_order"], orders["row_hash"], strict=True) if headers.get(k, (None, None))[0] != h}
    changed |= {k for k, (_, deleted) in headers.items() if deleted is not None}
    changed |= {o for (o, i), h in sent.items() if stored.get((o, i)) != h} | {o for o, _ in stale}

    upsert_rows(conn, _orders_table(), orders, ["sales_order"])
    items_written = upsert_rows(conn, SalesOrderItem.__table__, items, ["sales_order", "item"])  # type: ignore[arg-type]
    for start in range(0, len(stale), 1000):
        conn.execute(delete(SalesOrderItem).where(tuple_(SalesOrderItem.sales_order, SalesOrderItem.item).in_(stale[start : start + 1000])))
    revived = [k for k, (_, deleted) in headers.items() if deleted is not None]
    for start in range(0, len(revived), 1000):
        conn.execute(update(SalesOrder).where(SalesOrder.sales_order.in_(revived[start : start + 1000])).values(deleted_in_sap_at=None))
    return {"upserted": len(changed), "unchanged": len(keys) - len(changed), "items_written": items_written, "items_deleted": len(stale)}


def mark_deleted_orders(conn: Connection, seen: frozenset[str], run_id: str | None) -> dict[str, int]:
    """After a complete, counted full read: ERP orders SAP no longer returned are marked `deleted_in_sap_at` (kept,
    with their items). A full read that found no order at all marks nothing: an empty answer is likelier a lost
    authorisation (recorded as EMPTY_DATASET) than every order deleted."""
    from sqlalchemy import select, update

    from hub.core.models import SalesOrder

    if not seen:
        return {"orders_marked_deleted": 0}
    live = conn.execute(select(SalesOrder.sales_order).where(SalesOrder.deleted_in_sap_at.is_(None))).scalars().all()
    gone = [k for k in live if k not in seen]
    now = datetime.now(UTC)
    for start in range(0, len(gone), 1000):
        conn.execute(
            update(SalesOrder).where(SalesOrder.sales_order.in_(gone[start : start + 1000])).values(deleted_in_sap_at=now, source_run_id=run_id)
        )
    return {"orders_marked_deleted": len(gone)}


def _order_batch_pages() -> int | None:
    from hub.core.settings import sap_sales_order_options

    return sap_sales_order_options().batch_pages


SALES_ORDERS = PullStream(
    integration="sap", dataset="sales_orders", flow_name="sync-sap-sales-orders", unit_kind=SAP_SALES_ORDERS_BATCH,
    operation="sync_sales_orders",
    # Orders with what the mapping reads: partners, items and the header's pricing elements.
    stream=dataclasses.replace(ORDERS_STREAM, select=ORDER_FIELDS, expand=source_expand(ORDER_FIELDS)),
    connect=_connect_orders, plan=_plan_orders, next_cursor=next_order_cursor,
    map=map_sales_order_records, suite="sales_orders", table=_orders_table, key=("sales_order",),
    record_column="record", row_label="item", load=load_sales_orders, reconcile=mark_deleted_orders,
    high_water=_latest_order_change, count=True, configured_batch_pages=_order_batch_pages,
    full_read_must_find="SAP returned no sales orders for a full sync: check the communication user's authorisations "
    "for API_SALES_ORDER_SRV and that the service serves data",
)
