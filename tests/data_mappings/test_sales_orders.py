"""The sales-order mapping: one row per item with the header repeated, partners by function, pricing summed,
exact decimals, /Date()/ values parsed, unreadable values as mapping errors (never guessed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from data_mappings.columns import SALES_ORDER_FRAME_COLUMNS
from data_mappings.sales_orders import (
    SOURCE_FIELDS,
    flatten_sales_orders,
    items_frame,
    map_sales_order_records,
    orders_frame,
    parse_decimals,
    parse_edm_datetimes,
)


def order(so: str = "1000001", **header: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "SalesOrder": so,
        "SalesOrderType": "OR",
        "SalesOrganization": "1710",
        "DistributionChannel": "10",
        "OrganizationDivision": "00",
        "SoldToParty": "1000042",
        "PurchaseOrderByCustomer": " PO-77 ",
        "CustomerPurchaseOrderDate": "/Date(1764460800000)/",
        "SalesOrderDate": "/Date(1764547200000)/",
        "RequestedDeliveryDate": None,
        "TotalNetAmount": "1200.500",
        "TransactionCurrency": "inr",
        "CustomerPaymentTerms": "0004",
        "IncotermsClassification": "EXW",
        "OverallSDProcessStatus": "A",
        "OverallDeliveryStatus": "",
        "OverallOrdReltdBillgStatus": "A",
        "TotalCreditCheckStatus": "A",
        "OverallSDDocumentRejectionSts": "B",
        "TotalBlockStatus": "",
        "CreationDate": "/Date(1764547200000)/",
        "LastChangeDateTime": "/Date(1764583200123+0000)/",
        "to_Partner": {"results": [
            {"PartnerFunction": "AG", "Customer": "1000042"},
            {"PartnerFunction": "WE", "Customer": "1000050"},
            {"PartnerFunction": "RE", "Customer": "1000042"},
            {"PartnerFunction": "RG", "Customer": "1000060"},
            {"PartnerFunction": "VE", "Customer": ""},
        ]},
        "to_PricingElement": {"results": [
            {"ConditionClass": "B", "ConditionAmount": "1300.000", "ConditionIsForStatistics": False, "ConditionInactiveReason": ""},
            {"ConditionClass": "A", "ConditionAmount": "-99.500", "ConditionIsForStatistics": False, "ConditionInactiveReason": ""},
            {"ConditionClass": "D", "ConditionAmount": "108.045", "ConditionIsForStatistics": False, "ConditionInactiveReason": ""},
            {"ConditionClass": "D", "ConditionAmount": "108.045", "ConditionIsForStatistics": False, "ConditionInactiveReason": ""},
            {"ConditionClass": "D", "ConditionAmount": "50.000", "ConditionIsForStatistics": True, "ConditionInactiveReason": ""},
            {"ConditionClass": "A", "ConditionAmount": "-10.000", "ConditionIsForStatistics": False, "ConditionInactiveReason": "X"},
        ]},
        "to_Item": {"results": [item("10"), item("20", SalesDocumentRjcnReason="03", SDProcessStatus="C")]},
    }
    record.update(header)
    return record


def item(number: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "SalesOrderItem": number,
        "Material": "FG-TA-C1-25",
        "SalesOrderItemText": "Tile Adhesive C1 25 kg",
        "RequestedQuantity": "40.000",
        "RequestedQuantityUnit": "bag",
        "NetAmount": "600.250",
        "TransactionCurrency": "INR",
        "ProductionPlant": "1710",
        "StorageLocation": "FG01",
        "ShippingPoint": "1710",
        "ItemGrossWeight": "1000.000",
        "ItemNetWeight": "1000.000",
        "ItemWeightUnit": "KG",
        "Batch": "",
        "SalesOrderItemCategory": "TAN",
        "SDProcessStatus": "A",
        "DeliveryStatus": "A",
        "SalesDocumentRjcnReason": "",
    }
    values.update(fields)
    return values


def test_one_row_per_item_with_the_header_repeated_and_the_record_position() -> None:
    frame = map_sales_order_records([order("1000001"), order("1000002", to_Item={"results": [item("10")]})])
    assert list(frame.columns) == list(SALES_ORDER_FRAME_COLUMNS)
    assert frame["record"].tolist() == [0, 0, 1]
    assert frame["sales_order"].tolist() == ["1000001", "1000001", "1000002"]
    assert frame["item"].tolist() == ["10", "20", "10"]
    assert frame.index.is_unique
    assert frame["mapping_errors"].isna().all()


def test_header_values_partners_dates_and_pricing() -> None:
    row = map_sales_order_records([order()]).iloc[0]
    assert (row["sold_to"], row["ship_to"], row["bill_to"], row["payer"]) == ("1000042", "1000050", "1000042", "1000060")
    assert row["customer_po"] == "PO-77"
    assert row["customer_po_date"] == date(2025, 11, 30) and row["order_date"] == date(2025, 12, 1)
    assert row["requested_delivery_date"] is None
    assert row["currency"] == "INR"
    assert row["net_amount"] == Decimal("1200.500") and isinstance(row["net_amount"], Decimal)
    # Active, non-statistical conditions by class: B prices, A discounts, D taxes.
    assert (row["gross_amount"], row["discount_amount"], row["tax_amount"]) == (Decimal("1300.000"), Decimal("-99.500"), Decimal("216.090"))
    assert row["sap_changed_at"] == pd.Timestamp(datetime(2025, 12, 1, 10, 0, 0, 123000, tzinfo=UTC))
    assert row["sap_created_at"] == pd.Timestamp(datetime(2025, 12, 1, tzinfo=UTC))
    assert (row["process_status"], row["delivery_status"], row["rejection_status"]) == ("A", None, "B")


def test_item_values_and_a_rejected_item_kept_with_its_reason() -> None:
    items = items_frame(map_sales_order_records([order()]))
    first, rejected = items.iloc[0], items.iloc[1]
    assert first["quantity"] == Decimal("40.000") and first["unit"] == "BAG"
    assert first["net_amount"] == Decimal("600.250") and first["currency"] == "INR"
    assert first["batch"] is None and first["rejection_reason"] is None
    assert (rejected["item"], rejected["rejection_reason"], rejected["process_status"]) == ("20", "03", "C")


def test_orders_and_items_frames_split_the_rows_for_their_tables() -> None:
    frame = map_sales_order_records([order("1000001"), order("1000002")])
    orders, items = orders_frame(frame), items_frame(frame)
    assert orders["sales_order"].tolist() == ["1000001", "1000002"]
    assert "row_hash" in orders.columns and "item" not in orders.columns
    assert list(zip(items["sales_order"], items["item"], strict=True)) == [("1000001", "10"), ("1000001", "20"), ("1000002", "10"), ("1000002", "20")]
    assert {"material", "quantity", "row_hash"} <= set(items.columns) and "item_material" not in items.columns


def test_an_order_without_items_is_one_row_with_empty_item_columns() -> None:
    frame = map_sales_order_records([order(to_Item={"results": []})])
    assert len(frame) == 1 and frame.iloc[0]["item"] is None and frame.iloc[0]["item_material"] is None
    assert items_frame(frame).empty


def test_unreadable_values_are_mapping_errors_of_the_row_never_guesses() -> None:
    frame = map_sales_order_records([
        order(LastChangeDateTime="2026-12-01T10:00:00Z", to_Item={"results": [item("10", RequestedQuantity="forty"), item("20")]}),
    ])
    assert "LastChangeDateTime: not an Edm.DateTimeOffset" in frame.iloc[0]["mapping_errors"]
    assert "RequestedQuantity: not an Edm.Decimal" in frame.iloc[0]["mapping_errors"]
    assert frame.iloc[0]["item_quantity"] is None
    assert "RequestedQuantity" not in frame.iloc[1]["mapping_errors"]  # the other item read fine (its header did not)


def test_decimals_come_from_strings_exactly_and_floats_are_refused() -> None:
    values, bad = parse_decimals(pd.Series(["0.1", "12.345", None, "", 7, 0.1, "1e3", "NaN", True], dtype=object))
    assert values.tolist()[:5] == [Decimal("0.1"), Decimal("12.345"), None, None, Decimal(7)]
    assert bad.tolist() == [False, False, False, False, False, True, False, True, True]


def test_edm_datetimes_are_parsed_as_utc_whatever_the_offset_suffix() -> None:
    stamps, bad = parse_edm_datetimes(pd.Series(["/Date(0)/", "/Date(1000+0530)/", None, "", "/Date(x)/", 5], dtype=object))
    assert stamps.iloc[0] == pd.Timestamp(0, unit="ms", tz="UTC")
    assert stamps.iloc[1] == pd.Timestamp(1000, unit="ms", tz="UTC")
    assert stamps.iloc[2:4].isna().all()
    assert bad.tolist() == [False, False, False, False, True, True]


def test_same_order_maps_to_the_same_hashes_and_a_changed_item_changes_only_its_hash() -> None:
    first = map_sales_order_records([order()])
    again = map_sales_order_records([order()])
    changed = map_sales_order_records([order(to_Item={"results": [item("10", RequestedQuantity="41.000"), item("20", SalesDocumentRjcnReason="03", SDProcessStatus="C")]})])
    assert first["order_hash"].tolist() == again["order_hash"].tolist()
    assert first["item_hash"].tolist() == again["item_hash"].tolist()
    assert changed["item_hash"].iloc[0] != first["item_hash"].iloc[0]
    assert changed["item_hash"].iloc[1] == first["item_hash"].iloc[1]
    assert changed["order_hash"].iloc[0] == first["order_hash"].iloc[0]


def test_source_fields_name_what_the_flattening_reads() -> None:
    raw, pricing = flatten_sales_orders([order()])
    assert "to_Item/Material" in SOURCE_FIELDS and "to_Partner/PartnerFunction" in SOURCE_FIELDS
    assert "to_PricingElement/ConditionAmount" in SOURCE_FIELDS
    assert len(raw) == 2 and len(pricing) == 6 and set(pricing["record"]) == {0}


def test_an_empty_batch_maps_to_an_empty_frame_with_every_column() -> None:
    frame = map_sales_order_records([])
    assert frame.empty and list(frame.columns) == list(SALES_ORDER_FRAME_COLUMNS)
