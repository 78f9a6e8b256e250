"""SAP sales orders (API_SALES_ORDER_SRV OData V2 records) -> the ERP's order and item frame. Pure pandas, no I/O.

An order has several items, so the mapped frame has one row per item with the order's header columns
repeated on each, and a `record` column holding the source record's position in the batch: the sync
engine validates the rows, refuses a whole order when any of its rows fails (`PullStream.record_column`)
and writes header and items together (hub/systems/sap.py `load_sales_orders`). An order SAP sends without
items is one row with empty item columns, which the suite refuses (SAP does not save an order without items).

`flatten_sales_orders` walks the nested OData results once (orders, their partners, their items, the
items' pricing elements); everything after it is columnar. A value that cannot be parsed is never guessed:
it goes to `mapping_errors`, and the suite refuses the order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd

from data_mappings.columns import (
    SALES_ORDER_COLUMNS,
    SALES_ORDER_FRAME_COLUMNS,
    SALES_ORDER_ITEM_COLUMNS,
    item_frame_column,
)

# A_SalesOrder field -> header column, for values that need no more than a rename and a strip.
HEADER_TEXT: dict[str, str] = {
    "SalesOrder": "sales_order",
    "SalesOrderType": "order_type",
    "SalesOrganization": "sales_org",
    "DistributionChannel": "distribution_channel",
    "OrganizationDivision": "division",
    "SoldToParty": "sold_to",
    "PurchaseOrderByCustomer": "customer_po",
    "TransactionCurrency": "currency",
    "CustomerPaymentTerms": "payment_terms",
    "IncotermsClassification": "incoterms",
    "OverallSDProcessStatus": "process_status",
    "OverallDeliveryStatus": "delivery_status",
    "OverallOrdReltdBillgStatus": "billing_status",
    "TotalCreditCheckStatus": "credit_status",
    "OverallSDDocumentRejectionSts": "rejection_status",
    "TotalBlockStatus": "block_status",
}
HEADER_DATES: dict[str, str] = {
    "CustomerPurchaseOrderDate": "customer_po_date",
    "SalesOrderDate": "order_date",
    "RequestedDeliveryDate": "requested_delivery_date",
}
# A_SalesOrderItem field -> item column (the frame names it `item_<column>`, see data_mappings/columns.py).
ITEM_TEXT: dict[str, str] = {
    "SalesOrderItem": "item",
    "Material": "material",
    "SalesOrderItemText": "text",
    "RequestedQuantityUnit": "unit",
    "TransactionCurrency": "currency",
    "ProductionPlant": "plant",
    "StorageLocation": "storage_location",
    "ShippingPoint": "shipping_point",
    "ItemWeightUnit": "weight_unit",
    "Batch": "batch",
    "SalesOrderItemCategory": "item_category",
    "SDProcessStatus": "process_status",
    "DeliveryStatus": "delivery_status",
    "SalesDocumentRjcnReason": "rejection_reason",
}
ITEM_DECIMALS: dict[str, str] = {
    "RequestedQuantity": "quantity",
    "NetAmount": "net_amount",
    "ItemGrossWeight": "gross_weight",
    "ItemNetWeight": "net_weight",
}
# to_Partner PartnerFunction -> header column. The API sends SAP's internal codes (WE ship-to, RE bill-to,
# RG payer); the English ones (SH, BP, PY) are what a system with English partner-function keys sends.
PARTNER_FUNCTIONS: dict[str, str] = {"WE": "ship_to", "SH": "ship_to", "RE": "bill_to", "BP": "bill_to", "RG": "payer", "PY": "payer"}
# Header to_PricingElement ConditionClass -> header amount column (B prices, A discounts and surcharges, D taxes).
# Statistical and inactive conditions do not count.
CONDITION_CLASSES: dict[str, str] = {"B": "gross_amount", "A": "discount_amount", "D": "tax_amount"}

_HEADER_FIELDS = [*HEADER_TEXT, "TotalNetAmount", *HEADER_DATES, "CreationDate", "LastChangeDateTime"]
_ITEM_FIELDS = [*ITEM_TEXT, *ITEM_DECIMALS]
_PARTNER_FIELDS = ["PartnerFunction", "Customer"]
_PRICING_FIELDS = ["ConditionClass", "ConditionAmount", "ConditionIsForStatistics", "ConditionInactiveReason"]
_PARTNER_COLUMNS = sorted(set(PARTNER_FUNCTIONS.values()))
RAW_COLUMNS = ["record", *_HEADER_FIELDS, *_PARTNER_COLUMNS, *(f"item.{f}" for f in _ITEM_FIELDS), "has_item"]
PRICING_COLUMNS = ["record", *_PRICING_FIELDS]

# What the mapping reads from an A_SalesOrder record, as OData V2 paths: the dataset's `$select` and
# `$expand` derive from it (hub/systems/sap.py), as the customers dataset's do.
SOURCE_FIELDS: tuple[str, ...] = (
    *_HEADER_FIELDS,
    *(f"to_Partner/{f}" for f in _PARTNER_FIELDS),
    *(f"to_Item/{f}" for f in _ITEM_FIELDS),
    *(f"to_PricingElement/{f}" for f in _PRICING_FIELDS),
)

HEADER_COLUMNS = [c for c in SALES_ORDER_COLUMNS if c != "row_hash"]
ITEM_COLUMNS = [c for c in SALES_ORDER_ITEM_COLUMNS if c != "row_hash"]
ITEM_FRAME = {c: item_frame_column(c) for c in ITEM_COLUMNS if c != "sales_order"}  # item column -> frame column


def _results(nav: Any) -> list[Mapping[str, Any]]:
    """An expanded to-many navigation property: `{"results": [...]}` (a bare list is tolerated)."""
    if isinstance(nav, Mapping):
        items = nav.get("results")
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
    if isinstance(nav, list):
        return [i for i in nav if isinstance(i, Mapping)]
    return []


def flatten_sales_orders(records: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One flat row per item (header fields repeated, partners by function) and one per header pricing element.

    The only per-record Python: the nested results are walked once here. `record` is the order's position in
    `records`, in both frames.
    """
    rows: list[list[Any]] = []
    pricing: list[list[Any]] = []
    for position, rec in enumerate(records):
        header = [rec.get(f) for f in _HEADER_FIELDS]
        partners: dict[str, Any] = {}
        for partner in _results(rec.get("to_Partner")):
            column = PARTNER_FUNCTIONS.get(str(partner.get("PartnerFunction") or "").strip())
            if column and column not in partners:
                partners[column] = partner.get("Customer")
        partner_values = [partners.get(c) for c in _PARTNER_COLUMNS]
        for element in _results(rec.get("to_PricingElement")):
            pricing.append([position, *(element.get(f) for f in _PRICING_FIELDS)])
        items: list[Mapping[str, Any] | None] = [*_results(rec.get("to_Item"))]
        for item in items or [None]:
            values = [item.get(f) for f in _ITEM_FIELDS] if item is not None else [None] * len(_ITEM_FIELDS)
            rows.append([position, *header, *partner_values, *values, item is not None])
    return pd.DataFrame(rows, columns=RAW_COLUMNS, dtype=object), pd.DataFrame(pricing, columns=PRICING_COLUMNS, dtype=object)


def _text(series: pd.Series) -> pd.Series:
    """Strip; empty or whitespace-only becomes None; non-strings become their string form."""
    values = [
        (v.strip() or None) if v.__class__ is str else (None if v is None or (isinstance(v, float) and v != v) else str(v).strip() or None)
        for v in series.tolist()
    ]
    return pd.Series(values, index=series.index, dtype=object)


_EDM_DATETIME = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/\Z")


def parse_edm_datetimes(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`/Date(ms)/` and `/Date(ms+0000)/` -> UTC timestamps (the offset only says how to display: ms are UTC),
    plus a mask of values present but unreadable. Vectorised: one regex extraction over the column."""
    present = series.notna() & series.map(lambda v: v != "", na_action="ignore").fillna(False).astype(bool)
    text = series.where(present).astype("string")
    ms = text.str.extract(_EDM_DATETIME, expand=False)
    bad = present & ms.isna()
    stamps = pd.to_datetime(pd.to_numeric(ms, errors="coerce").astype("Int64"), unit="ms", utc=True)
    return pd.Series(stamps, index=series.index), pd.Series(bad.to_numpy(dtype=bool), index=series.index)


def _decimal_or_bad(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return _BAD
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        return _BAD
    return number if number.is_finite() else _BAD


_BAD = object()


def parse_decimals(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Edm.Decimal travels as a JSON string: exact `Decimal`s (object column), plus a mask of unreadable values.

    A JSON float is refused too: SAP never sends one, and its binary value is not the amount SAP holds.
    """
    parsed = [_decimal_or_bad(v) for v in series.tolist()]
    bad = pd.Series([p is _BAD for p in parsed], index=series.index, dtype=bool)
    return pd.Series([None if p is _BAD else p for p in parsed], index=series.index, dtype=object), bad


def _append_error(errors: pd.Series, mask: pd.Series, message: str) -> pd.Series:
    add = pd.Series(message, index=errors.index, dtype=object).where(mask.to_numpy(dtype=bool))
    return errors.where(add.isna(), errors.fillna("").str.cat(add, sep="; ").str.lstrip("; ")).where(errors.notna() | add.notna())


def _pricing_amounts(pricing: pd.DataFrame, records: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Header amounts summed by condition class over the active, non-statistical conditions, on each of the
    order's rows (`records`: the rows' record positions); rows of an order with an unreadable ConditionAmount
    are flagged."""
    amounts = pd.DataFrame({c: pd.Series([None] * len(records), index=records.index, dtype=object) for c in CONDITION_CLASSES.values()})
    if pricing.empty:
        return amounts, pd.Series(False, index=records.index)
    value, bad = parse_decimals(pricing["ConditionAmount"])
    owner = pricing["record"].astype(int)
    bad_rows = records.isin(owner[bad].unique())
    statistical = pricing["ConditionIsForStatistics"].map(lambda v: v is True).astype(bool)
    active = ~bad & value.notna() & ~statistical & _text(pricing["ConditionInactiveReason"]).isna()
    column = _text(pricing["ConditionClass"]).map(CONDITION_CLASSES)
    counted = pd.DataFrame({"record": owner, "column": column, "value": value})[active & column.notna()]
    for name, group in counted.groupby("column"):
        sums = group.groupby("record")["value"].agg(lambda values: sum(values, Decimal(0)))
        amounts[str(name)] = records.map(sums).astype(object).where(records.isin(sums.index), None)
    return amounts, bad_rows


def map_sales_orders(raw: pd.DataFrame, pricing: pd.DataFrame) -> pd.DataFrame:
    """Flat item rows and pricing elements (see `flatten_sales_orders`) -> the mapped order/item frame, same index."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"sales-order frame lacks columns: {', '.join(missing)}")
    out = pd.DataFrame(index=raw.index)
    out["record"] = raw["record"].astype(int)
    errors = pd.Series([None] * len(raw), index=raw.index, dtype=object)

    for source, target in HEADER_TEXT.items():
        out[target] = _text(raw[source])
    for column in _PARTNER_COLUMNS:
        out[column] = _text(raw[column])
    out["currency"] = out["currency"].str.upper()
    out["net_amount"], bad = parse_decimals(raw["TotalNetAmount"])
    errors = _append_error(errors, bad, "TotalNetAmount: not an Edm.Decimal")
    for source, target in HEADER_DATES.items():
        stamps, bad = parse_edm_datetimes(raw[source])
        out[target] = pd.Series([None if pd.isna(s) else s.date() for s in stamps], index=raw.index, dtype=object)
        errors = _append_error(errors, bad, f"{source}: not an Edm.DateTime")
    out["sap_created_at"], bad = parse_edm_datetimes(raw["CreationDate"])
    errors = _append_error(errors, bad, "CreationDate: not an Edm.DateTime")
    out["sap_changed_at"], bad = parse_edm_datetimes(raw["LastChangeDateTime"])
    errors = _append_error(errors, bad, "LastChangeDateTime: not an Edm.DateTimeOffset")

    for source, target in ITEM_TEXT.items():
        out[ITEM_FRAME[target]] = _text(raw[f"item.{source}"])
    out[ITEM_FRAME["currency"]] = out[ITEM_FRAME["currency"]].str.upper()
    out[ITEM_FRAME["unit"]] = out[ITEM_FRAME["unit"]].str.upper()
    for source, target in ITEM_DECIMALS.items():
        out[ITEM_FRAME[target]], bad = parse_decimals(raw[f"item.{source}"])
        errors = _append_error(errors, bad, f"{source}: not an Edm.Decimal")
    amounts, bad = _pricing_amounts(pricing, out["record"])
    for column in CONDITION_CLASSES.values():
        out[column] = amounts[column]
    errors = _append_error(errors, bad, "to_PricingElement ConditionAmount: not an Edm.Decimal")

    out["mapping_errors"] = errors.astype(object).where(errors.notna(), None)
    out["order_hash"] = _hashes(out, HEADER_COLUMNS)
    out["item_hash"] = _hashes(out, ["sales_order", *(ITEM_FRAME[c] for c in ITEM_COLUMNS if c != "sales_order")])
    return out[list(SALES_ORDER_FRAME_COLUMNS)]


def _hashes(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A stable digest of the mapped values (Decimals by their text), so a load can skip rows that did not change."""
    hashed = pd.util.hash_pandas_object(frame[columns].astype(str), index=False)
    return pd.Series([f"{h:016x}" for h in hashed.tolist()], index=frame.index, dtype=object)


def map_sales_order_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    """SAP's nested order records -> the mapped frame (flattened once, then mapped); `record` = position in `records`."""
    return map_sales_orders(*flatten_sales_orders(records))


def orders_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The `sales_orders` rows of mapped rows: one per order, the header columns and its hash."""
    return rows.drop_duplicates(subset=["sales_order"], keep="last")[HEADER_COLUMNS + ["order_hash"]].rename(columns={"order_hash": "row_hash"})


def items_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The `sales_order_items` rows of mapped rows (an order without items has none)."""
    present = rows[rows["item"].notna()]
    frame_columns = ["sales_order", *(ITEM_FRAME[c] for c in ITEM_COLUMNS if c != "sales_order"), "item_hash"]
    names = {ITEM_FRAME[c]: c for c in ITEM_FRAME} | {"item_hash": "row_hash"}
    return present[frame_columns].rename(columns=names)
