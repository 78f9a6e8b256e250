"""Expectation suite for the mapped SAP sales-order frame (``sales_orders``).

The frame has one row per order item with the order's header columns repeated (data_mappings/sales_orders.py);
item columns are named ``item_<column>``. The rules are row-level, and the sync engine refuses a whole
order when any of its rows fails (``PullStream.record_column``): an invalid item quarantines its order,
once, with every failed rule of the header and of each item.

``critical`` rules quarantine; table-level rules (the column set) flag the batch. "Not in the future" for
``sap_changed_at`` is evaluated at validation time via :func:`suite_parameters`.

Importing this module does not import Great Expectations; only :func:`build_suite` does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from data_mappings.columns import (
    SALES_ORDER_COLUMNS,
    SALES_ORDER_FRAME_COLUMNS,
    SALES_ORDER_ITEM_COLUMNS,
    item_frame_column,
)

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME: Final = "sales_orders"
FRAME_COLUMNS: Final[tuple[str, ...]] = tuple(SALES_ORDER_FRAME_COLUMNS)

SALES_ORDER_PATTERN: Final = r"^[0-9A-Za-z]{1,10}\Z"
ITEM_PATTERN: Final = r"^[0-9]{1,6}\Z"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}\Z"  # ISO 4217 alphabetic: three capital letters
#: Sales units the ERP knows (SAP's commercial unit codes as RequestedQuantityUnit sends them).
KNOWN_UNITS: Final[tuple[str, ...]] = (
    "BAG", "KG", "G", "TO", "L", "M3", "PC", "EA", "PAL",
)
#: SAP's status letters: A not yet processed, B partly processed, C completely processed (blank: not relevant).
STATUS_LETTERS: Final[tuple[str, ...]] = ("A", "B", "C")
HEADER_STATUSES: Final[tuple[str, ...]] = (
    "process_status", "delivery_status", "billing_status", "credit_status", "rejection_status", "block_status",
)
ITEM_STATUSES: Final[tuple[str, ...]] = ("item_process_status", "item_delivery_status")
CLOCK_SKEW_TOLERANCE: Final = timedelta(minutes=5)

SUITE_DESCRIPTION: Final = (
    "Quality gate for SAP sales orders and their items (one row per item, header repeated). A row failing a "
    "critical rule quarantines its whole order: no header and none of its items are written."
)


def suite_parameters(now: datetime) -> dict[str, Any]:
    """Runtime suite parameters for one validation call at time ``now`` (UTC)."""
    return {"max_sap_changed_at": now + CLOCK_SKEW_TOLERANCE}


def build_suite() -> gx.ExpectationSuite:
    """Build the ``sales_orders`` expectation suite (not yet added to a context)."""
    import great_expectations as gx

    from expectations.limits import database_limits
    from hub.core.models import SalesOrder, SalesOrderItem

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"{SUITE_NAME}.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(FRAME_COLUMNS), exact_match=True, meta=meta("columns"),
            notes="The mapping must emit exactly the sales-order frame columns: a failure is code drift, not bad rows.",
        ),
        # --- identity --------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(column="sales_order", meta=meta("sales_order.required"), notes="Every order needs its SAP number."),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sales_order", regex=SALES_ORDER_PATTERN, meta=meta("sales_order.format"),
            notes="SAP sales order numbers are 1-10 letters or digits.",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="item", meta=meta("item.required"),
            notes="An order has at least one item (SAP does not save one without); an order sent without items is refused.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(column="item", regex=ITEM_PATTERN, meta=meta("item.format"), notes="SAP item numbers are 1-6 digits."),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["sales_order", "item"], meta=meta("item.unique"),
            notes="An item appears once per order in a batch: every copy of a duplicated item is refused (which one is current?).",
        ),
        # --- parties and money -----------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(column="sold_to", meta=meta("sold_to.required"), notes="Every order has a sold-to party."),
        gxe.ExpectColumnValuesToMatchRegex(
            column="currency", regex=CURRENCY_PATTERN, meta=meta("currency.iso4217"),
            notes="The document currency is empty or an ISO 4217 code (three capital letters).",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="item_currency", regex=CURRENCY_PATTERN, meta=meta("item.currency.iso4217"),
            notes="The item currency is empty or an ISO 4217 code.",
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="currency", column_B="item_currency", ignore_row_if="either_value_is_missing", meta=meta("item.currency.matches_order"),
            notes="An item is priced in its order's currency: a different one means the amounts cannot be summed.",
        ),
        # --- items -----------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(column="item_material", meta=meta("item.material.required"), notes="Every item names its material."),
        gxe.ExpectColumnValuesToNotBeNull(column="item_quantity", meta=meta("item.quantity.required"), notes="Every item has a requested quantity."),
        gxe.ExpectColumnValuesToBeBetween(
            column="item_quantity", min_value=0, strict_min=True, meta=meta("item.quantity.positive"),
            notes="The requested quantity is more than zero.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="item_unit", value_set=list(KNOWN_UNITS), meta=meta("item.unit.known"),
            notes=f"The sales unit is one the ERP knows: {', '.join(KNOWN_UNITS)}.",
        ),
        # --- statuses --------------------------------------------------------
        *(
            gxe.ExpectColumnValuesToBeInSet(
                column=column, value_set=list(STATUS_LETTERS), meta=meta(f"{column}.letter"),
                notes="SAP statuses are A (open), B (partly processed), C (completed) or empty (not relevant).",
            )
            for column in (*HEADER_STATUSES, *ITEM_STATUSES)
        ),
        # --- timestamps ------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(
            column="sap_changed_at", meta=meta("sap_changed_at.required"),
            notes="LastChangeDateTime drives the incremental read and must be present.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="sap_changed_at", max_value={"$PARAMETER": "max_sap_changed_at"}, meta=meta("sap_changed_at.not_future"),
            notes=f"LastChangeDateTime may not lie in the future (beyond {int(CLOCK_SKEW_TOLERANCE.total_seconds() // 60)} minutes of clock skew).",
        ),
        # --- mapping ---------------------------------------------------------
        gxe.ExpectColumnValuesToBeNull(
            column="mapping_errors", meta=meta("mapping_errors.none"),
            notes="The mapping records here why a value could not be converted; the order is refused with the reason.",
        ),
    ]
    # Every other limit of the two ERP tables (VARCHAR lengths, NOT NULL, NUMERIC ranges), generated from the models.
    header = [c for c in SALES_ORDER_COLUMNS if c != "row_hash"]
    expectations += database_limits(SalesOrder, header, expectations, rule_prefix=SUITE_NAME)
    items = {c: item_frame_column(c) for c in SALES_ORDER_ITEM_COLUMNS if c not in ("sales_order", "row_hash")}
    expectations += database_limits(SalesOrderItem, list(items), expectations, rule_prefix=SUITE_NAME, frame_columns=items)
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={"notes": {"format": "markdown", "content": [SUITE_DESCRIPTION]}, "dataset": "sales_orders"},
    )
