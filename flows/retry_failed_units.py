"""Queued reruns: every minute, rerun the failed units whose `next_retry_at` has come, and only those.

Each due `integration_errors` row is claimed (status retrying, attempt counted, leased so that a
concurrent run skips it), its unit goes to the rerun handler registered for its kind (hub/ledger/retry_units.py:
an SAP customer batch resumes the read at that batch as a subflow; a webhook event is applied again; a lab
file, a plant buffer flush, a document, an outbox page, a calendar pull or push, a Razorpay page: their
flow reruns just that unit as a subflow), and the row is resolved, rescheduled with backoff, or escalated
(notified) when its attempts are exhausted. docs/troubleshooting.md lists what each kind reruns.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from hub.ledger.errors import ErrorNotFound, ErrorStateConflict, due_error_ids, flow_actor
from hub.ledger.retry_units import RerunOutcome, rerun
from hub.ledger.spool import drain_spool_quietly

FLOW_NAME = "retry-failed-units"


@dataclass
class RetrySummary:
    due: int = 0
    resolved: int = 0
    rescheduled: int = 0
    escalated: int = 0
    skipped: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@flow(name=FLOW_NAME, description="Rerun the failed units (batch, page, event, file, push) of integration_errors rows whose next_retry_at has come.")
def retry_failed_units(limit: int = 20, error_ids: list[int] | None = None) -> dict[str, Any]:
    """Rerun up to `limit` due units, oldest due first; with `error_ids`, those rows' units now, due or not
    (`drymix errors retry --queue`, hub/runtime/jobs.py `hub.errors.retry`)."""
    logger = get_run_logger()
    started = time.perf_counter()
    summary = RetrySummary()
    actor = flow_actor(FLOW_NAME)
    # Failures kept in this machine's error spool while the database was down become rows first (and are
    # then due like any other).
    drained = drain_spool_quietly()
    if drained.written:
        logger.warning("wrote %d failure(s) spooled while the database was unavailable: integration_errors #%s",
                       len(drained.written), ", #".join(map(str, drained.written)))
    due = list(error_ids) if error_ids is not None else due_error_ids(limit=limit)
    summary.due = len(due)
    for error_id in due:
        try:
            outcome = rerun(error_id, by=actor, manual=error_ids is not None)
        except (ErrorNotFound, ErrorStateConflict) as exc:  # a queued rerun whose row was resolved (or deleted) meanwhile
            outcome = RerunOutcome(error_id, "skipped", error=str(exc))
        summary.outcomes.append(outcome.as_dict())
        if outcome.status == "resolved":
            summary.resolved += 1
            logger.info("integration_errors #%d: rerun %d succeeded, resolved", error_id, outcome.attempt)
        elif outcome.status == "escalated":
            summary.escalated += 1
            logger.error("integration_errors #%d: rerun %d failed, escalated: %s", error_id, outcome.attempt, outcome.error)
        elif outcome.status == "skipped":
            summary.skipped += 1
            if outcome.error:
                logger.warning("integration_errors #%d: not rerun: %s", error_id, outcome.error)
        else:
            summary.rescheduled += 1
            logger.warning("integration_errors #%d: rerun %d failed, rescheduled: %s", error_id, outcome.attempt, outcome.error)
    summary.seconds = round(time.perf_counter() - started, 3)
    if summary.due:
        create_table_artifact(
            key="retry-failed-units",
            table=[
                {"integration_errors": f"#{o['error_id']}", "attempt": o["attempt"], "status": o["status"], "error": (o["error"] or "")[:300]}
                for o in summary.outcomes
            ],
            description=f"{summary.resolved} resolved, {summary.rescheduled} rescheduled, {summary.escalated} escalated",
        )
    logger.info(
        "queued reruns: %d due, %d resolved, %d rescheduled, %d escalated, %d skipped",
        summary.due, summary.resolved, summary.rescheduled, summary.escalated, summary.skipped,
    )
    return summary.as_dict()
