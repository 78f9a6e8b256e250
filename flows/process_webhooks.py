"""Drain the webhook inbox: apply each stored Razorpay event to ERP `payments` and each WhatsApp message
or status to ERP `whatsapp_messages`, exactly once.

Per batch, one transaction claims up to `batch_size` received events (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so concurrent runs never take the same event), applies each inside a savepoint, marks the
applied ones processed and the refused ones failed, and commits: an event's effect and its
`processed` mark commit together, which is what makes the effect happen once. A crash before the
commit leaves the events `received` for the next run; applying is idempotent besides (the row keeps
the last applied event id, and state only moves forward), so a replay changes nothing twice.

Providers "razorpay" and "whatsapp" are claimed together, oldest first; each event goes to its
provider's writer (`hub/systems/razorpay.py`, `hub/systems/whatsapp.py`), both forward-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy import Connection

from connectors.core.errors import IntegrationError, InvalidRequest, classify_exception
from data_mappings.payments import EventNotApplicable
from data_mappings.whatsapp import EventNotApplicable as WhatsAppEventNotApplicable
from hub.core.db import get_engine
from hub.core.models import WebhookStatus
from hub.ingress.inbox import InboxEvent, claim_event, claim_received, mark_failed, mark_processed
from hub.ledger.errors import record_error, resolve_event_errors, resolve_open_errors, retry_command
from hub.ledger.retry_units import WEBHOOK_EVENT
from hub.monitoring.health import ensure_flusher, record_webhook_processing
from hub.systems.razorpay import apply_razorpay_event
from hub.systems.whatsapp import apply_whatsapp_event
from tasks.retry import retry_transient_only, task_retries

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
    attempts: int = 1  # the inbox's claims of the event, this one included (a rolled-back batch claims it again)
    exc: BaseException | None = field(default=None, repr=False, compare=False)  # what was raised: the error row's stack trace


@dataclass
class BatchOutcome:
    claimed: int = 0
    applied: int = 0
    stale: int = 0
    unchanged: int = 0
    duplicate: int = 0
    ignored: int = 0
    failures: list[EventFailure] = field(default_factory=list)
    redone: list[tuple[str, str]] = field(default_factory=list)  # (provider, event id) applied on a later attempt


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
    measured: list[tuple[str, bool, datetime]] = []  # (provider, applied, received_at), recorded once committed
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
                outcome.failures.append(EventFailure(event.provider, event.id, event.event_id, event.event_type, error, event.attempts, exc))
                measured.append((event.provider, False, event.received_at))
                continue
            setattr(outcome, result, getattr(outcome, result) + 1)
            done.append(event.id)
            if event.attempts > 1:
                outcome.redone.append((event.provider, event.event_id))
            measured.append((event.provider, True, event.received_at))
        mark_processed(conn, done)
    record_webhook_processing(measured)
    return outcome


def apply_stored_event(inbox_id: int) -> dict[str, Any]:
    """Apply one stored event now, whatever its status (the rerun of a failed event's unit).

    Idempotent like a batch: a processed event is left alone, and applying is forward-only. A refused
    event is marked failed again and its error raised after the commit.
    """
    failure: IntegrationError | None = None
    with get_engine().begin() as conn:
        event = claim_event(conn, inbox_id)
        if event is None:
            raise InvalidRequest(f"no stored webhook event with inbox id {inbox_id}", code="EVENT_NOT_FOUND", operation="apply_event")
        if event.status == WebhookStatus.PROCESSED.value:
            return {"event_id": event.event_id, "provider": event.provider, "result": "already processed"}
        _, apply = APPLIERS[event.provider]
        try:
            with conn.begin_nested():
                result = apply(conn, event)
        except Exception as exc:  # noqa: BLE001 - classified; a refused event is marked failed and reported
            error = _classify(exc, event.provider)
            if error.transient:
                raise error from exc
            mark_failed(conn, event.id, str(error))
            failure = error
        else:
            mark_processed(conn, [event.id])
    if failure is not None:
        raise failure
    return {"event_id": event.event_id, "provider": event.provider, "result": result}


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
    ensure_flusher()  # this process's connector calls reach call_metrics in batches
    logger = get_run_logger()
    started = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    summary = ProcessSummary(flow_run_id=run_id)
    failed_events: list[tuple[int, EventFailure]] = []
    while summary.batches < max_batches:
        try:
            outcome = apply_webhook_batch(batch_size)
        except Exception as exc:
            # The whole batch rolled back (its events stay received): record it and fail the run. The next
            # scheduled run drains them again and, succeeding, resolves this row.
            from tasks.report import publish_error_row

            error = _classify(exc, "webhooks")
            unit = {"batch_size": batch_size, "batch": summary.batches + 1}
            # What retried: Prefect's task retries of the batch (a transient failure rolls it back whole); applying
            # events makes no HTTP call.
            error_id = record_error(error, integration="webhooks", dataset="webhook_events", flow_run_id=run_id, unit=unit,
                                    retry_count=task_retries(run_id), exc=exc)
            summary.error_ids.append(error_id)
            logger.error("webhook batch %d failed and rolled back: %s. Recorded as integration_errors #%d.", summary.batches + 1, error, error_id)
            publish_error_row(
                error, error_id, integration="webhooks", dataset="webhook_events", unit=unit,
                rerun_hint="the next scheduled process-webhooks run, or `drymix webhooks process` now",
            )
            if error is exc:
                raise
            raise error from exc
        summary.batches += 1
        summary.claimed += outcome.claimed
        summary.applied += outcome.applied
        summary.stale += outcome.stale
        summary.unchanged += outcome.unchanged
        summary.duplicate += outcome.duplicate
        summary.ignored += outcome.ignored
        summary.failed += len(outcome.failures)
        if outcome.redone:
            # Replayed events that applied this time: the error rows their earlier failures left are fixed.
            resolve_event_errors(outcome.redone, note=f"the event applied on a later attempt (process-webhooks run {run_id})", actor="flow:process-webhooks")
        # Recorded after the batch committed: the ledger write is its own transaction (SQLite has one writer).
        for failure in outcome.failures:
            error_id = record_error(
                failure.error,
                integration=failure.provider,
                dataset=APPLIERS[failure.provider][0],
                flow_run_id=run_id,
                unit={
                    "kind": WEBHOOK_EVENT,
                    "provider": failure.provider,
                    "event_id": failure.event_id,
                    "event_type": failure.event_type,
                    "inbox_id": failure.inbox_id,
                },
                # The event's earlier claims (rolled-back batches retried by Prefect, earlier runs): each applied it again.
                retry_count=max(0, failure.attempts - 1),
                exc=failure.exc,
            )
            summary.error_ids.append(error_id)
            failed_events.append((error_id, failure))
            logger.error(
                "%s event %s (%s) not applied: %s. Recorded as integration_errors #%d; fix, then "
                "`%s` (or `drymix webhooks replay %s`).",
                failure.provider,
                failure.event_id,
                failure.event_type,
                failure.error,
                error_id,
                retry_command(error_id),
                failure.event_id,
            )
        if outcome.claimed < batch_size:
            break
    resolve_open_errors(
        "webhooks",
        "webhook_events",
        note=f"process-webhooks run {run_id} drained the inbox",
        categories=("SERVER_ERROR", "TIMEOUT", "SYNC_FAILED"),
        actor="flow:process-webhooks",
    )
    summary.seconds = round(time.perf_counter() - started, 3)
    if failed_events:
        _publish_failed_events(failed_events)
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


def _publish_failed_events(failed: list[tuple[int, EventFailure]]) -> None:
    """A markdown artifact on the run: each event it could not apply, its error row and the rerun command."""
    from prefect.artifacts import create_markdown_artifact

    lines = [
        f"## {len(failed)} webhook event(s) not applied",
        "",
        "| integration_errors | provider | event | type | error | rerun after the fix |",
        "|---|---|---|---|---|---|",
    ]
    for error_id, f in failed[:200]:
        message = str(f.error).replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| #{error_id} | {f.provider} | `{f.event_id}` | {f.event_type} | {message} | `{retry_command(error_id)}` |")
    create_markdown_artifact(
        key="process-webhooks-failures",
        markdown="\n".join(lines),
        description=f"{len(failed)} event(s) not applied: integration_errors #{failed[0][0]}..",
    )
