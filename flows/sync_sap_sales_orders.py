"""SAP sales orders -> ERP `sales_orders` and `sales_order_items`, run by the sync engine (tasks/engine.py).

The dataset is declared in hub/systems/sap.py (`SALES_ORDERS`): the stream, the mapping (one row per item),
the suite, the load of an order's header and items together, the watermark rule and the reconciliation of
orders deleted in SAP. The engine extracts batches of pages, validates and quarantines whole orders, commits
the watermark with the last batch and records a failed batch as a unit that `resume=` reruns from.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from hub.systems.sap import SALES_ORDERS
from tasks.engine import run_pull


@flow(name="sync-sap-sales-orders", description="SAP S/4HANA sales orders and their items into the ERP.")
def sync_sap_sales_orders(
    full_refresh: bool = False,
    page_size: int | None = None,
    batch_pages: int | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sync sales orders from SAP; incremental from the watermark unless `full_refresh` (or a reconciliation is due)."""
    return run_pull(SALES_ORDERS, full_refresh=full_refresh, page_size=page_size, batch_pages=batch_pages, resume=resume)
