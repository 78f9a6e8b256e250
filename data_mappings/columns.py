"""Canonical column lists of the ERP frames the mappings produce (no pandas: suites import them too)."""

from __future__ import annotations

# customers (hub.models.Customer without the hub's own columns, plus mapping_errors and row_hash).
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
