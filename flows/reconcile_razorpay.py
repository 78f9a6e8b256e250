"""Razorpay payments API -> ERP `payments`: fill whatever the webhooks missed.

Razorpay advises polling for business-critical flows and disables a webhook after 24 h of failures.
Each run reads payments created in [watermark - overlap, now] (a fixed window, so payments created
while paging cannot shift the count/skip offsets) and applies each with the same forward-only rule as
the webhooks, source "reconciliation". Each page commits with its rows; the watermark (`sync_state`
razorpay/payments, `{"since": unix}`) is written in the transaction of the last page, so it never
stands ahead of the rows it covers, and never moves back. The overlap re-reads recent payments whose state
may have moved after an earlier run saw them (authorized, then captured).

A failed page is recorded as a unit (`razorpay.payments.page`: the run's window and the page's position in
it). Because the window is fixed, `resume=` can rerun from exactly that page to the window's last page (the
pages that committed are not read again; hub/ledger/retry_units.py, `drymix errors retry <id>`); the next scheduled
run would cover the window too, from the unchanged watermark.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from connectors.core.errors import classify_exception
from connectors.core.paging import PagePosition
from connectors.razorpay import PAYMENTS, RazorpayConnector, build_razorpay_connector
from data_mappings.payments import EventNotApplicable, update_from_payment
from hub.core.db import get_engine
from hub.ledger.errors import record_error, resolve_open_errors
from hub.ledger.loading import read_cursor, write_cursor
from hub.ledger.retry_units import RAZORPAY_PAYMENTS_PAGE, UnitFailed
from hub.monitoring.health import ensure_flusher
from hub.systems.razorpay import apply_update
from tasks.retry import retry_transient_only

INTEGRATION = "razorpay"
DATASET = "payments"
DEFAULT_OVERLAP_S = 3600
# First run without a watermark: look back this far (Razorpay replays webhooks for 15 days at most).
DEFAULT_LOOKBACK_S = 15 * 24 * 3600


@dataclass
class PageOutcome:
    records: int = 0
    applied: int = 0
    stale: int = 0
    skipped: int = 0


@dataclass
class ReconcileSummary:
    flow_run_id: str | None = None
    since: int | None = None
    until: int | None = None
    pages: int = 0
    records: int = 0
    applied: int = 0
    stale: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_payments(records: list[dict[str, Any]], cursor: dict[str, Any] | None, flow_run_id: str | None) -> PageOutcome:
    """One page of payments (and, on the last page, the watermark unless it already stands later) in one transaction."""
    outcome = PageOutcome(records=len(records))
    with get_engine().begin() as conn:
        for payment in records:
            try:
                change = update_from_payment(payment, source="reconciliation")
                result = apply_update(conn, change)
            except EventNotApplicable:
                # A payment without an order (payment links, ...) is not tracked in `payments`; one dated in
                # the future is not believed.
                outcome.skipped += 1
                continue
            outcome.applied += result == "applied"
            outcome.stale += result != "applied"
        if cursor is not None:
            current = read_cursor(conn, INTEGRATION, DATASET) or {}
            # A rerun of an older window finishes after a later run moved the watermark: leave it there.
            if current.get("since") is None or int(current["since"]) < int(cursor["since"]):
                write_cursor(conn, INTEGRATION, DATASET, cursor, flow_run_id=flow_run_id, rows_added=outcome.applied)
    return outcome


@task(
    name="reconcile_payments_page",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[1.0, 4.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="reconcile-payments-page",
)
def reconcile_page(connector: RazorpayConnector, position: PagePosition, cursor: dict[str, Any] | None,
                   flow_run_id: str | None) -> tuple[PageOutcome, PagePosition | None]:
    """Fetch one page of payments and apply it; the cursor is written only when it is the last page."""
    page = connector.fetch_page(PAYMENTS, position)
    outcome = apply_payments(page.records, cursor if page.next is None else None, flow_run_id)
    return outcome, page.next


@flow(name="reconcile-razorpay", description="Poll Razorpay payments since the watermark and fill what webhooks missed.")
def reconcile_razorpay(overlap_s: int = DEFAULT_OVERLAP_S, page_size: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reconcile ERP payments with Razorpay's payments API from the watermark (minus `overlap_s`); with `resume`,
    the failed run's window from its failed page on."""
    ensure_flusher()  # this process's connector calls reach call_metrics in batches
    logger = get_run_logger()
    started = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    if resume is not None:
        since, until = int(resume["since"]), int(resume["until"])
        logger.info("Razorpay reconciliation: rerun of integration_errors #%s: window [%d, %d] from page %s",
                    resume.get("error_id"), since, until, resume.get("page"))
    else:
        with get_engine().connect() as conn:
            cursor = read_cursor(conn, INTEGRATION, DATASET)
        until = int(time.time())
        since = max(0, int(cursor["since"]) - overlap_s) if cursor and cursor.get("since") is not None else until - DEFAULT_LOOKBACK_S
    summary = ReconcileSummary(flow_run_id=run_id, since=since, until=until)
    new_cursor = {"since": until}
    first_page = int(resume.get("page") or 1) if resume is not None else 1
    connector: RazorpayConnector | None = None
    position: PagePosition | None = None
    try:
        connector = build_razorpay_connector(page_size=page_size)
        if resume is not None and resume.get("position"):
            position = PagePosition.from_dict(resume["position"])
        else:
            position = connector.start(PAYMENTS, {"from": since, "to": until})
        while position is not None:
            # quote(): the connector holds a client and a lock that Prefect need not walk.
            outcome, position = reconcile_page(quote(connector), position, new_cursor, run_id)  # type: ignore[call-overload]
            summary.pages += 1
            summary.records += outcome.records
            summary.applied += outcome.applied
            summary.stale += outcome.stale
            summary.skipped += outcome.skipped
    except Exception as exc:
        error = classify_exception(exc, integration=INTEGRATION, operation="reconcile_payments")
        unit = {
            "kind": RAZORPAY_PAYMENTS_PAGE,
            "since": since,
            "until": until,
            "page": first_page + summary.pages,
            "position": position.to_dict() if position else None,
        }
        if resume is not None:
            # A rerun of a recorded unit: the retry workflow updates that row; no new row.
            logger.error("rerun of integration_errors #%s failed at page %d: %s", resume.get("error_id"), unit["page"], error)
            raise UnitFailed(error, unit) from exc
        error_id = record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id, unit=unit)
        logger.error(
            "Razorpay reconciliation failed after %d page(s): %s. Recorded as integration_errors #%d. %s "
            "`drymix errors retry %d` rereads just the failed page onward; the next `reconcile-razorpay` run starts "
            "again from the unchanged watermark anyway.",
            summary.pages,
            error,
            error_id,
            error.remedy,
            error_id,
        )
        if error is exc:
            raise
        raise error from exc
    finally:
        if connector is not None:
            connector.close()
    if resume is None:
        resolve_open_errors(INTEGRATION, DATASET, note=f"reconcile-razorpay run {run_id} succeeded",
                            categories=("SERVER_ERROR", "TIMEOUT", "RATE_LIMIT_EXCEEDED"))
    summary.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "Razorpay reconciliation [%d, %d]: %d payments in %d page(s), %d applied, %d already current, %d without order",
        since,
        until,
        summary.records,
        summary.pages,
        summary.applied,
        summary.stale,
        summary.skipped,
    )
    return summary.as_dict()
