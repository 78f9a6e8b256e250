"""The SAP sales-order sync end to end, over real HTTP against the sales-order simulator, on PostgreSQL.

Orders are validated, quarantined and written whole (header and items in one transaction); items changed,
added or removed in SAP are right after the next incremental run; an order deleted in SAP is marked after
the reconciling full read; the watermark never runs ahead of what loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, QuarantinedRecord, SalesOrder, SalesOrderItem, SyncState
from hub.core.settings import reset_settings_cache
from hub.ledger.loading import read_cursor
from sandbox.core import running_server
from sandbox.sales_orders import SalesOrderSandbox

ORDERS = 240

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def so(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SalesOrderSandbox]:
    """The simulator on a real port; SAP_BASE_URL names the partner service beside it, as in production."""
    sandbox = SalesOrderSandbox(orders=ORDERS, seed=5, max_page_size=50, partners=500)
    with running_server(sandbox) as base_url:
        monkeypatch.setenv("SAP_BASE_URL", base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        reset_settings_cache()
        try:
            yield sandbox
        finally:
            monkeypatch.undo()
            reset_settings_cache()


def run(**params: Any) -> dict[str, Any]:
    from flows.sync_sap_sales_orders import sync_sap_sales_orders

    return sync_sap_sales_orders(**params)


def cursor() -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        return read_cursor(conn, "sap", "sales_orders")


def orders() -> dict[str, SalesOrder]:
    with Session(get_engine()) as session:
        return {o.sales_order: o for o in session.scalars(select(SalesOrder))}


def items(order: str) -> dict[str, SalesOrderItem]:
    with Session(get_engine()) as session:
        return {i.item: i for i in session.scalars(select(SalesOrderItem).where(SalesOrderItem.sales_order == order))}


def quarantined() -> dict[str, QuarantinedRecord]:
    with Session(get_engine()) as session:
        return {q.record_key: q for q in session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.dataset == "sales_orders"))}


def errors(category: str | None = None) -> list[IntegrationErrorRow]:
    query = select(IntegrationErrorRow).order_by(IntegrationErrorRow.id)
    if category:
        query = query.where(IntegrationErrorRow.error_type == category)
    with Session(get_engine()) as session:
        return list(session.scalars(query))


def clean(sandbox: SalesOrderSandbox) -> list[str]:
    return [k for k in sandbox.order_ids() if k not in sandbox.dirty_ids]


def test_full_sync_loads_headers_and_items_and_quarantines_dirty_orders_whole(so: SalesOrderSandbox) -> None:
    summary = run()
    assert summary["mode"] == "full"
    assert summary["source_count"] == summary["extracted"] == ORDERS
    assert summary["quarantined"] == len(so.dirty_ids) > 0
    assert summary["valid"] == summary["upserted"] == ORDERS - len(so.dirty_ids)
    loaded = orders()
    assert set(loaded) == set(clean(so))
    # Every item SAP holds for a clean order is in the ERP, with its values.
    sample = clean(so)[3]
    wire = so.get_order(sample)
    stored = items(sample)
    assert set(stored) == {i["SalesOrderItem"] for i in wire["to_Item"]}
    for line in wire["to_Item"]:
        assert stored[line["SalesOrderItem"]].quantity == Decimal(line["RequestedQuantity"])
        assert stored[line["SalesOrderItem"]].material == line["Material"]
    assert loaded[sample].sold_to == wire["SoldToParty"] and loaded[sample].net_amount == Decimal(wire["TotalNetAmount"])
    assert summary["items_written"] == sum(len(so.get_order(k)["to_Item"]) for k in clean(so))

    # A dirty order is quarantined once, whole, with its failed rules; none of its items loaded.
    refused = quarantined()
    assert set(refused) == set(so.dirty_ids)
    by_kind = {kind: order for order, kind in so.dirty_ids.items()}
    expected_rule = {
        "missing_material": "sales_orders.item.material.required",
        "invalid_quantity": "sales_orders.item.quantity.positive",
        "unknown_unit": "sales_orders.item.unit.known",
        "missing_sold_to": "sales_orders.sold_to.required",
        "future_change": "sales_orders.sap_changed_at.not_future",
        "currency_mismatch": "sales_orders.item.currency.matches_order",
    }
    for kind, rule in expected_rule.items():
        order = by_kind[kind]
        record = refused[order]
        assert rule in {f["rule_id"] for f in record.failed_expectations}, (kind, record.failed_expectations)
        assert record.raw_record["SalesOrder"] == order
        assert len(record.mapped_record["rows"]) == len(so.get_order(order)["to_Item"])
        assert items(order) == {}
    bad_item = refused[by_kind["missing_material"]].failed_expectations
    assert any(f["kwargs"].get("at", "").startswith("item ") for f in bad_item)

    [validation] = errors("DATA_VALIDATION_FAILED")
    assert validation.response_data["rows_quarantined"] == len(so.dirty_ids)
    state = cursor()
    assert state and state["last_change_at"] == summary["watermark"]["last_change_at"] and state["reconciled_at"]


def test_items_changed_added_and_removed_in_sap_are_right_after_the_next_incremental_run(so: SalesOrderSandbox) -> None:
    first = run()
    targets = clean(so)[10:40]
    so.advance_clock(60)
    changes = so.change_items(targets, seed=3)
    assert {"quantity", "item_added", "item_removed"} <= set(changes.values())
    rejected_order = clean(so)[50]
    rejected_item = so.reject_item(rejected_order)
    second = run()
    assert second["mode"] == "incremental"
    assert second["since"] == first["watermark"]["last_change_at"]
    assert second["extracted"] < ORDERS  # only what changed since the watermark (less the overlap)
    assert second["upserted"] == len(changes) + 1
    for order in [*changes, rejected_order]:
        wire = {i["SalesOrderItem"]: i for i in so.get_order(order)["to_Item"]}
        stored = items(order)
        assert set(stored) == set(wire), (order, changes.get(order))
        for number, line in wire.items():
            assert stored[number].quantity == Decimal(line["RequestedQuantity"])
    assert second["items_deleted"] == sum(1 for kind in changes.values() if kind == "item_removed")
    kept = items(rejected_order)[rejected_item]
    assert kept.rejection_reason == "03"  # a rejected item stays, with its reason
    assert orders()[rejected_order].rejection_status in ("B", "C")

    third = run()
    assert third["upserted"] == 0 and third["unchanged"] == third["valid"]


def test_an_order_deleted_in_sap_is_marked_after_the_reconciling_read_only(so: SalesOrderSandbox) -> None:
    run()
    gone = so.delete_orders(clean(so)[5:8])
    incremental = run()
    assert incremental["mode"] == "incremental"
    assert all(orders()[k].deleted_in_sap_at is None for k in gone)  # an incremental read cannot see a deletion

    full = run(full_refresh=True)
    assert full["mode"] == "full" and full["orders_marked_deleted"] == 3
    marked = orders()
    assert all(marked[k].deleted_in_sap_at is not None for k in gone)
    assert items(gone[0])  # kept, with its items: marked, not silently dropped
    assert sum(o.deleted_in_sap_at is not None for o in marked.values()) == 3
    assert run(full_refresh=True)["orders_marked_deleted"] == 0  # marked once


def test_a_reconciliation_is_due_after_reconcile_after_h(so: SalesOrderSandbox) -> None:
    run()
    gone = so.delete_orders(clean(so)[:1])
    # The last full read is older than reconcile_after_h (24 h by default): the scheduled run reads it all.
    with get_engine().begin() as conn:
        state = read_cursor(conn, "sap", "sales_orders")
        assert state is not None
        conn.execute(
            update(SyncState)
            .where(SyncState.integration == "sap", SyncState.dataset == "sales_orders")
            .values(cursor={**state, "reconciled_at": "2026-01-01T00:00:00+00:00"})
        )
    summary = run()
    assert summary["mode"] == "full" and summary["orders_marked_deleted"] == 1
    assert orders()[gone[0]].deleted_in_sap_at is not None


def test_a_short_read_marks_nothing_and_keeps_the_watermark(so: SalesOrderSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    run()
    before = cursor()
    so.delete_orders(clean(so)[:2])
    from connectors.sap.sales_orders import SapSalesOrderConnector

    real = SapSalesOrderConnector.count
    monkeypatch.setattr(SapSalesOrderConnector, "count", lambda self, stream, position: real(self, stream, position) + 5)
    with pytest.raises(Exception, match="READ_SHORTFALL|distinct ones were read"):
        run(full_refresh=True)
    assert all(o.deleted_in_sap_at is None for o in orders().values())
    assert cursor() == before


def test_a_failed_batch_leaves_the_watermark_and_the_rerun_completes(so: SalesOrderSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.ledger.loading as loading

    real = loading.load_batch
    calls = {"n": 0}

    def crash_on_second(conn: Any, batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed between batches")
        return real(conn, batch)

    monkeypatch.setattr("tasks.load.load_batch", crash_on_second)
    with pytest.raises(Exception, match="worker killed"):
        run(batch_pages=1)
    monkeypatch.setattr("tasks.load.load_batch", real)
    assert cursor() is None  # the watermark never runs ahead of what loaded
    [row] = errors("SYNC_FAILED")
    assert row.unit and row.unit["kind"] == "sap.sales_orders.batch" and row.unit["batch"] == 2
    loaded_before = len(orders())
    assert 0 < loaded_before < ORDERS - len(so.dirty_ids)

    summary = run(resume={**row.unit, "error_id": row.id})
    assert summary["mode"] == "resume"
    assert set(orders()) == set(clean(so))
    state = cursor()
    assert state and state["last_change_at"]
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(SalesOrderItem)).scalar_one() == sum(
            len(so.get_order(k)["to_Item"]) for k in clean(so)
        )


def test_a_database_refusal_quarantines_the_whole_order(so: SalesOrderSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the database refuses in one item (here: a check constraint) refuses its order, not half of it."""
    victim = clean(so)[7]
    victim_items = {i["SalesOrderItem"] for i in so.get_order(victim)["to_Item"]}
    refused = f"sales_order = '{victim}' AND item = '{min(victim_items)}'"
    with get_engine().begin() as conn:
        if conn.dialect.name == "sqlite":  # no ALTER TABLE ... ADD CONSTRAINT: a trigger refuses the row as a constraint would
            for event in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER ck_test_victim_{event.lower()} BEFORE {event} ON sales_order_items "
                    f"WHEN {refused.replace('sales_order', 'NEW.sales_order').replace('item =', 'NEW.item =')} "
                    "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: ck_test_victim'); END"
                )
        else:
            conn.exec_driver_sql(f"ALTER TABLE sales_order_items ADD CONSTRAINT ck_test_victim CHECK (NOT ({refused}))")
    try:
        summary = run()
    finally:
        with get_engine().begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER ck_test_victim_insert")
                conn.exec_driver_sql("DROP TRIGGER ck_test_victim_update")
            else:
                conn.exec_driver_sql("ALTER TABLE sales_order_items DROP CONSTRAINT ck_test_victim")
    assert summary["refused"] == 1
    assert victim not in orders() and items(victim) == {}
    record = quarantined()[victim]
    assert record.failed_expectations[0]["expectation"] == "database_refused"
    assert len(record.mapped_record["rows"]) == len(victim_items)
    assert summary["valid"] == ORDERS - len(so.dirty_ids) - 1

    # Once the database takes it, the order replays whole (header and every item) from its raw record;
    # the dirty orders stay quarantined, each with today's failed rules.
    from hub.ledger.quarantine import replay

    outcome = replay(by="test", reason="constraint removed", integration="sap", dataset="sales_orders")
    assert outcome.loaded == 1 and outcome.still_failing == len(so.dirty_ids)
    assert victim in orders() and set(items(victim)) == victim_items
    assert quarantined()[victim].status == "replayed"
    assert all(quarantined()[k].status == "quarantined" for k in so.dirty_ids)
