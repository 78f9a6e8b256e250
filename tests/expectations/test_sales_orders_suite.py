"""The sales-order suite: each rule refuses what it says, on the mapped frame (one row per item), and every
limit of both ERP tables is a rule (the item table's columns under their `item_` frame names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import String, Table

from data_mappings.columns import SALES_ORDER_COLUMNS, SALES_ORDER_ITEM_COLUMNS, item_frame_column
from data_mappings.sales_orders import map_sales_order_records
from expectations import sales_orders
from expectations.limits import ColumnLimit, covered
from expectations.runner import validate_frame
from hub.core.models import SalesOrder, SalesOrderItem
from tests.data_mappings.test_sales_orders import item, order


def _ms(moment: datetime) -> str:
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def failed_rules(records: list[dict[str, Any]]) -> dict[int, set[str]]:
    """Rule ids each refused frame row failed (critical only), by row position."""
    frame = map_sales_order_records(records)
    outcome = validate_frame("sales_orders", frame)
    return {int(label): {f.rule_id or "" for f in fails if f.severity == "critical"} for label, fails in outcome.failures.items()
            if any(f.severity == "critical" for f in fails)}


def test_a_clean_order_passes() -> None:
    assert failed_rules([order()]) == {}


@pytest.mark.parametrize(
    ("item_fields", "rule"),
    [
        ({"Material": ""}, "sales_orders.item.material.required"),
        ({"RequestedQuantity": "0.000"}, "sales_orders.item.quantity.positive"),
        ({"RequestedQuantity": "-5.000"}, "sales_orders.item.quantity.positive"),
        ({"RequestedQuantityUnit": "XX"}, "sales_orders.item.unit.known"),
        ({"TransactionCurrency": "USD"}, "sales_orders.item.currency.matches_order"),
        ({"SDProcessStatus": "Z"}, "sales_orders.item_process_status.letter"),
        ({"RequestedQuantity": "forty"}, "sales_orders.mapping_errors.none"),
        ({"Material": "M" * 41}, "sales_orders.item_material.db_max_length"),
    ],
)
def test_an_invalid_item_fails_its_row_only(item_fields: dict[str, Any], rule: str) -> None:
    fails = failed_rules([order(to_Item={"results": [item("10"), item("20", **item_fields)]})])
    assert list(fails) == [1] and rule in fails[1]


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ({"SoldToParty": ""}, "sales_orders.sold_to.required"),
        ({"TransactionCurrency": "RUPEES"}, "sales_orders.currency.iso4217"),
        ({"OverallSDProcessStatus": "X"}, "sales_orders.process_status.letter"),
        ({"LastChangeDateTime": None}, "sales_orders.sap_changed_at.required"),
        ({"to_Item": {"results": []}}, "sales_orders.item.required"),
    ],
)
def test_an_invalid_header_fails_every_row_of_the_order(header: dict[str, Any], rule: str) -> None:
    fails = failed_rules([order(**header)])
    assert fails and all(rule in rules for rules in fails.values())


def test_a_change_time_beyond_the_clock_skew_tolerance_fails() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + sales_orders.CLOCK_SKEW_TOLERANCE + timedelta(minutes=5)
    assert failed_rules([order(LastChangeDateTime=_ms(soon))]) == {}
    assert "sales_orders.sap_changed_at.not_future" in failed_rules([order(LastChangeDateTime=_ms(later))])[0]


def test_a_duplicated_item_fails_both_copies() -> None:
    fails = failed_rules([order(to_Item={"results": [item("10"), item("10")]})])
    assert set(fails) == {0, 1} and all("sales_orders.item.unique" in rules for rules in fails.values())


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def test_every_limit_of_both_erp_tables_is_a_rule() -> None:
    suite = sales_orders.build_suite()
    strict = [e for e in suite.expectations if str(getattr(e.severity, "value", e.severity)).lower() == "critical" and not getattr(e, "row_condition", None)]
    frame_name = {**{c: c for c in SALES_ORDER_COLUMNS}, **{c: item_frame_column(c) for c in SALES_ORDER_ITEM_COLUMNS if c != "sales_order"}}
    for model, columns in ((SalesOrder, SALES_ORDER_COLUMNS), (SalesOrderItem, SALES_ORDER_ITEM_COLUMNS)):
        for column in _table(model).columns:
            if column.name not in columns or column.name == "row_hash":
                continue
            name = frame_name[column.name] if model is SalesOrderItem else column.name
            rules = [e for e in strict if getattr(e, "column", None) == name]
            if isinstance(column.type, String) and column.type.length:
                assert covered(ColumnLimit(name, "max_length", "", max_length=column.type.length), rules), f"{model.__tablename__}.{column.name}"
            if not column.nullable:
                assert covered(ColumnLimit(name, "not_null", ""), rules), f"{model.__tablename__}.{column.name} NOT NULL"


def test_every_column_the_hub_does_not_stamp_is_in_the_frame() -> None:
    """A column added to a model without the mapping and the suite knowing it fails here."""
    assert {c.name for c in _table(SalesOrder).columns} - set(SALES_ORDER_COLUMNS) == {"deleted_in_sap_at", "source_run_id", "synced_at"}
    assert {c.name for c in _table(SalesOrderItem).columns} - set(SALES_ORDER_ITEM_COLUMNS) == {"source_run_id", "synced_at"}
