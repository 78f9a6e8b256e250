"""SAP business partners -> ERP `customers`, run by the sync engine (tasks/engine.py).

The dataset is declared in hub/systems/sap.py (`CUSTOMERS`): the stream, the mapping, the suite, the table
and key, the watermark rule. The engine extracts batches of pages (the next batch's extract overlapping
this one's map, validate and load), commits the watermark with the last batch, quarantines refused rows
and records a failed batch as a unit that `resume=` (`drymix errors retry <id>`) reruns from.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from hub.systems.sap import CUSTOMERS
from tasks.engine import run_pull


@flow(name="sync-sap-customers", description="SAP S/4HANA business partners into the ERP customers table.")
def sync_sap_customers(
    full_refresh: bool = False,
    page_size: int | None = None,
    batch_pages: int | None = None,
    resume: dict[str, Any] | None = None,
    partitions: int = 1,
    cluster: str | None = None,
) -> dict[str, Any]:
    """Sync customers from SAP; incremental from the watermark unless `full_refresh`; from a failed unit with `resume`.

    `partitions` > 1 reads a full sync as that many key ranges in parallel processes, or on the Dask cluster whose
    scheduler address is `cluster` (docs/scaling.md): an initial load of millions of partners.
    """
    return run_pull(CUSTOMERS, full_refresh=full_refresh, page_size=page_size, batch_pages=batch_pages, resume=resume,
                    partitions=partitions, cluster=cluster)
