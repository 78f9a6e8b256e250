"""Drain the webhook inbox: apply each stored Razorpay event to ERP `payments` and each WhatsApp message
or status to ERP `whatsapp_messages`, exactly once.

Per batch, one transaction claims up to `batch_size` received events (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so concurrent runs never take the same event), applies each inside a savepoint, marks the
applied ones processed and the refused ones failed, and commits: an event's effect and its
`processed` mark commit together, which is what makes the effect happen once. A crash before the
commit leaves the events `received` for the next run; applying is idempotent besides (the row keeps
the last applied event id, and state only moves forward), so a replay changes nothing twice.

Providers "razorpay" and "whatsapp" are claimed together, oldest first; each event goes to its
provider's writer (`hub/payments.py`, `hub/whatsapp.py`), both forward-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy import Connection

from connectors.core.errors import IntegrationError, InvalidRequest, classify_exception
from data_mappings.payments import EventNotApplicable
from data_mappings.whatsapp import EventNotApplicable as WhatsAppEventNotApplicable
from hub.db import get_engine
from hub.errors import record_error
from hub.payments import apply_razorpay_event
from hub.webhooks.inbox import InboxEvent, claim_received, mark_failed, mark_processed
from hub.whatsapp import apply_whatsapp_event
from tasks.retry import retry_transient_only

# provider -> (ERP dataset, writer applying one stored event in the caller's transaction)
APPLIERS: dict[str, tuple[str, Callable[[Connection, InboxEvent], str]]] = {
    "razorpay": ("payments", apply_razorpay_event),
    "whatsapp": ("whatsapp_messages", apply_whatsapp_event),
}
PROVIDERS = tuple(APPLIERS)


@dataclass
class EventFailure:
    provider: str
    inbox_id: int
    event_id: str
    event_type: str
    error: IntegrationError


@dataclass
class BatchOutcome:
    claimed: int = 0
    applied: int = 0
    stale: int = 0
    unchanged: int = 0
    duplicate: int = 0
    ignored: int = 0
    failures: list[EventFailure] = field(default_factory=list)


@dataclass
class ProcessSummary:
    """What a run did; returned by the flow and printed by `drymix webhooks process`."""

    flow_run_id: str | None = None
    batches: int = 0
    claimed: int = 0
    applied: int = 0
    stale: int = 0
    unchanged: int = 0
    duplicate: int = 0
    ignored: int = 0
    failed: int = 0
    error_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _classify(exc: Exception, provider: str) -> IntegrationError:
    not_applicable = EventNotApplicable | WhatsAppEventNotApplicable | KeyError | TypeError | ValueError
    if isinstance(exc, not_applicable) and not isinstance(exc, IntegrationError):
        # The event itself is wrong: retrying cannot help, replay it after a fix.
        return InvalidRequest(f"event cannot be applied: {exc}", code=type(exc).__name__, integration=provider, operation="apply_event")
    return classify_exception(exc, integration=provider, operation="apply_event")


def apply_batch(batch_size: int) -> BatchOutcome:
    """One transaction: claim, apply each event in a savepoint, mark processed or failed, commit."""
    outcome = BatchOutcome()
    with get_engine().begin() as conn:
        events = claim_received(conn, providers=PROVIDERS, limit=batch_size)
        outcome.claimed = len(events)
        done: list[int] = []
        for event in events:
            _, apply = APPLIERS[event.provider]
            try:
                with conn.begin_nested():
                    result = apply(conn, event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the batch; it is recorded
                error = _classify(exc, event.provider)
                if error.transient:
                    raise  # the database or the like: the whole batch rolls back and is retried
                mark_failed(conn, event.id, str(error))
                outcome.failures.append(EventFailure(event.provider, event.id, event.event_id, event.event_type, error))
                continue
            setattr(outcome, result, getattr(outcome, result) + 1)
            done.append(event.id)
        mark_processed(conn, done)
    return outcome


@task(
    name="apply_webhook_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[1.0, 4.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="apply-webhook-events",
)
def apply_webhook_batch(batch_size: int) -> BatchOutcome:
    """A batch of Razorpay and WhatsApp events applied to the ERP in one transaction."""
    return apply_batch(batch_size)


@flow(name="process-webhooks", description="Apply stored Razorpay and WhatsApp webhook events to the ERP payments and whatsapp_messages tables.")
def process_webhooks(batch_size: int = 200, max_batches: int = 50) -> dict[str, Any]:
    """Drain received Razorpay and WhatsApp events in batches until the inbox is empty (or `max_batches`)."""
    logger = get_run_logger()
    started = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    summary = ProcessSummary(flow_run_id=run_id)
    while summary.batches < max_batches:
        outcome = apply_webhook_batch(batch_size)
        summary.batches += 1
        summary.claimed += outcome.claimed
        summary.applied += outcome.applied
        summary.stale += outcome.stale
        summary.unchanged += outcome.unchanged
        summary.duplicate += outcome.duplicate
        summary.ignored += outcome.ignored
        summary.failed += len(outcome.failures)
        # Recorded after the batch committed: the ledger write is its own transaction (SQLite has one writer).
        for failure in outcome.failures:
            error_id = record_error(
                failure.error,
                integration=failure.provider,
                dataset=APPLIERS[failure.provider][0],
                flow_run_id=run_id,
                unit={"event_id": failure.event_id, "event_type": failure.event_type, "inbox_id": failure.inbox_id},
            )
            summary.error_ids.append(error_id)
            logger.error(
                "%s event %s (%s) not applied: %s. Recorded as integration_errors #%d; fix, then "
                "`drymix webhooks replay %s`.",
                failure.provider,
                failure.event_id,
                failure.event_type,
                failure.error,
                error_id,
                failure.event_id,
            )
        if outcome.claimed < batch_size:
            break
    summary.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "webhooks: %d claimed, %d applied, %d stale, %d unchanged, %d duplicate, %d ignored, %d failed",
        summary.claimed,
        summary.applied,
        summary.stale,
        summary.unchanged,
        summary.duplicate,
        summary.ignored,
        summary.failed,
    )
    return summary.as_dict()
