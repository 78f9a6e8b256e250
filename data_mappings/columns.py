"""Canonical column lists of the ERP frames the mappings produce (no pandas: suites import them too)."""

from __future__ import annotations

# customers (hub.core.models.Customer without the hub's own columns, plus mapping_errors and row_hash).
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "sap_customer",
    "category",
    "name",
    "first_name",
    "last_name",
    "search_term",
    "bp_grouping",
    "language",
    "industry",
    "email",
    "phone",
    "mobile",
    "street",
    "house_number",
    "city",
    "postal_code",
    "region",
    "country",
    "gstin",
    "account_group",
    "is_blocked",
    "is_archived",
    "deletion_flag",
    "order_block",
    "sap_created_at",
    "sap_changed_at",
    "mapping_errors",
    "row_hash",
)

# lab_results (hub.core.models.LabResult without the hub's own columns, plus the strength check, mapping_errors and row_hash).
LAB_RESULT_COLUMNS: tuple[str, ...] = (
    "specimen_id",
    "batch_id",
    "product_code",
    "test_type",
    "test_standard",
    "age_days",
    "length_mm",
    "width_mm",
    "height_mm",
    "span_mm",
    "area_mm2",
    "peak_load_kn",
    "strength_mpa",
    "computed_strength_mpa",
    "strength_deviation_mpa",
    "strength_allowed_mpa",
    "strength_min_mpa",
    "strength_max_mpa",
    "tested_at",
    "machine_id",
    "operator",
    "batch_known",
    "source_line",
    "mapping_errors",
    "row_hash",
)

# plant_readings (hub.core.models.PlantReading without id/loaded_at, plus the measurement the suite checks by).
PLANT_READING_COLUMNS: tuple[str, ...] = (
    "reading_key",
    "tag",
    "node_id",
    "equipment",
    "measurement",
    "value",
    "value_text",
    "unit",
    "status_code",
    "status_name",
    "quality",
    "source_timestamp",
    "server_timestamp",
    "collected_at",
    "quality_flags",
    "row_hash",
)

# production_batches (hub.core.models.ProductionBatch without id/source_run_id/loaded_at, plus the checks' helpers).
PRODUCTION_BATCH_COLUMNS: tuple[str, ...] = (
    "batch_id",
    "batch_seq",
    "product_code",
    "recipe_code",
    "mixer",
    "started_at",
    "ended_at",
    "mixing_time_s",
    "total_target_kg",
    "total_actual_kg",
    "max_deviation_pct",
    "components",
    "quality_flags",
    "duration_s",
    "min_target_kg",
    "min_actual_kg",
    "record_complete",
    "row_hash",
)

# sales_orders (hub.core.models.SalesOrder without the hub's own columns and deleted_in_sap_at, plus row_hash).
SALES_ORDER_COLUMNS: tuple[str, ...] = (
    "sales_order",
    "order_type",
    "sales_org",
    "distribution_channel",
    "division",
    "sold_to",
    "ship_to",
    "bill_to",
    "payer",
    "customer_po",
    "customer_po_date",
    "order_date",
    "requested_delivery_date",
    "net_amount",
    "currency",
    "gross_amount",
    "discount_amount",
    "tax_amount",
    "payment_terms",
    "incoterms",
    "process_status",
    "delivery_status",
    "billing_status",
    "credit_status",
    "rejection_status",
    "block_status",
    "sap_created_at",
    "sap_changed_at",
    "row_hash",
)

# sales_order_items (hub.core.models.SalesOrderItem without the hub's own columns, plus row_hash).
SALES_ORDER_ITEM_COLUMNS: tuple[str, ...] = (
    "sales_order",
    "item",
    "material",
    "text",
    "quantity",
    "unit",
    "net_amount",
    "currency",
    "plant",
    "storage_location",
    "shipping_point",
    "gross_weight",
    "net_weight",
    "weight_unit",
    "batch",
    "item_category",
    "process_status",
    "delivery_status",
    "rejection_reason",
    "row_hash",
)


def item_frame_column(column: str) -> str:
    """An item column's name in the mapped sales-order frame: `item_` before it, beside the header's (`item` stays)."""
    return column if column == "item" else f"item_{column}"


# The mapped sales-order frame: one row per item, the order's header columns repeated on each; `record` is the
# source record's position in the batch (several rows per record), `order_hash`/`item_hash` the two tables'
# row hashes. The order key `sales_order` is shared by both tables.
SALES_ORDER_FRAME_COLUMNS: tuple[str, ...] = (
    "record",
    *(c if c != "row_hash" else "order_hash" for c in SALES_ORDER_COLUMNS),
    *(item_frame_column(c) if c != "row_hash" else "item_hash" for c in SALES_ORDER_ITEM_COLUMNS if c != "sales_order"),
    "mapping_errors",
)
