"""Razorpay payments API -> ERP `payments`: fill whatever the webhooks missed, run by the sync engine.

The dataset is declared in hub/systems/razorpay.py (`RECONCILIATION`): a fixed time window from the
watermark minus `overlap_s`, each page applied forward-only with its rows in one transaction, the
watermark with the last page; a failed page is a unit `resume=` (`drymix errors retry <id>`) reruns from.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from hub.systems.razorpay import DEFAULT_OVERLAP_S, RECONCILIATION
from tasks.engine import run_pull


@flow(name="reconcile-razorpay", description="Poll Razorpay payments since the watermark and fill what webhooks missed.")
def reconcile_razorpay(overlap_s: int = DEFAULT_OVERLAP_S, page_size: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reconcile ERP payments with Razorpay's payments API from the watermark (minus `overlap_s`); with `resume`,
    the failed run's window from its failed page on."""
    return run_pull(RECONCILIATION, page_size=page_size, resume=resume, overlap_s=overlap_s)
