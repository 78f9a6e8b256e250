"""Rerun handlers for failed units of work, one registry for every integration.

A failed unit is recorded in `integration_errors.unit` as JSON with a `kind` naming its handler, plus
whatever the handler needs to redo exactly that unit (a batch's start position and filter, an inbox
event id). The retry-failed-units flow and `drymix errors retry <id>` look the handler up here.

Adding an integration: write a function `(claim: ClaimedUnit) -> dict` that reruns one unit (idempotently:
a rerun may repeat work that half-committed) and returns a small summary, or raises (`UnitFailed` when
the rerun got further and the unit to record next is different); decorate it with
`@register_rerun("<integration>.<dataset>.<unit>")` below; record failures with
`unit={"kind": "<integration>.<dataset>.<unit>", ...}`. A handler that reruns through a flow must not let
that flow record a new error row for the rerun's own failure (raise `UnitFailed` instead, as every flow
below does with `resume=`): the retry workflow updates the row it is rerunning. A unit without a handler is
not queued; work whose next scheduled run redoes it anyway and that cannot be redone on its own needs none
(process-webhooks' whole-batch failures, a failed plant read: past OPC UA values cannot be read again): its
next success resolves the open errors. Imports stay inside the handlers: this module is imported by the CLI
and by `record_error`, which must not load Prefect.

What each kind reruns is listed in docs/troubleshooting.md ("What a rerun reruns").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.core.errors import IntegrationError
    from hub.ledger.errors import ClaimedUnit

RerunHandler = Callable[["ClaimedUnit"], Mapping[str, Any]]


@dataclass(frozen=True)
class RerunSpec:
    kind: str
    handler: RerunHandler
    description: str


_REGISTRY: dict[str, RerunSpec] = {}


def register_rerun(kind: str, *, description: str) -> Callable[[RerunHandler], RerunHandler]:
    """Register the handler that reruns units of `kind` (one handler per kind)."""

    def decorate(handler: RerunHandler) -> RerunHandler:
        if kind in _REGISTRY and _REGISTRY[kind].handler is not handler:
            raise ValueError(f"a rerun handler for {kind!r} is already registered")
        _REGISTRY[kind] = RerunSpec(kind, handler, description)
        return handler

    return decorate


def rerun_spec(unit: Mapping[str, Any] | None) -> RerunSpec | None:
    kind = unit.get("kind") if unit else None
    return _REGISTRY.get(str(kind)) if kind else None


def has_rerun_handler(unit: Mapping[str, Any] | None) -> bool:
    return rerun_spec(unit) is not None


def registered_kinds() -> dict[str, str]:
    return {kind: spec.description for kind, spec in sorted(_REGISTRY.items())}


class UnitFailed(Exception):
    """A rerun failed; `unit` is where the work stands now (None: the same unit as before)."""

    def __init__(self, error: IntegrationError, unit: Mapping[str, Any] | None = None) -> None:
        super().__init__(error, dict(unit) if unit is not None else None)
        self.error = error
        self.unit = dict(unit) if unit is not None else None

    def __str__(self) -> str:
        return str(self.error)


# --- the hub's handlers ------------------------------------------------------------------------------

SAP_CUSTOMERS_BATCH = "sap.customers.batch"
WEBHOOK_EVENT = "webhooks.event"
PLANT_BUFFER_FLUSH = "plant_opcua.buffer.flush"
LAB_EXPORT_FILE = "lab.lab_results.file"
LAB_RESULTS_API = "lab.lab_results.api"
DOCUMENT_UPLOAD = "microsoft365.documents.document"
DOCUMENTS_PAGE = "microsoft365.documents.page"
OUTLOOK_CALENDAR_PULL = "microsoft365.calendar_events.pull"
OUTLOOK_SCHEDULES_PUSH = "microsoft365.schedules.push"
GOOGLE_CALENDAR_PULL = "google_workspace.calendar_events.pull"
GOOGLE_SCHEDULES_PUSH = "google_workspace.schedules.push"
RAZORPAY_PAYMENTS_PAGE = "razorpay.payments.page"


def _pick(summary: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: summary.get(k) for k in keys}


@register_rerun(
    SAP_CUSTOMERS_BATCH,
    description="SAP customers: resume the read at the failed batch (its start position and filter) through "
    "the batches the failed run never reached; batches that committed are not read again",
)
def rerun_sap_customers_batch(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    summary: dict[str, Any] = sync_sap_customers(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "batches", "source_count", "extracted", "distinct_read", "duplicates", "valid", "quarantined", "upserted", "unchanged", "watermark", "flow_run_id")


@register_rerun(WEBHOOK_EVENT, description="Webhooks: apply the one stored event again (idempotent, forward-only)")
def rerun_webhook_event(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.process_webhooks import apply_stored_event

    return apply_stored_event(int(claim.unit["inbox_id"]))


@register_rerun(
    PLANT_BUFFER_FLUSH,
    description="Plant: load the buffered entries the failed flush left (up to its last seq), oldest first; nothing is "
    "read from the plant, and entries buffered after the failure wait for collect-plant",
)
def rerun_plant_buffer_flush(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.collect_plant import collect_plant

    summary: dict[str, Any] = collect_plant(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "batches", "extracted", "valid", "quarantined", "upserted", "unchanged", "watermark", "buffer_pending", "flow_run_id")


@register_rerun(
    LAB_EXPORT_FILE,
    description="Lab: process the one export file again from the drop folder (its checksum ledger makes a repeat a no-op); "
    "the other files wait for collect-lab-results",
)
def rerun_lab_export_file(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.collect_lab_results import collect_lab_results

    summary: dict[str, Any] = collect_lab_results(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "exports_processed", "exports_rejected", "duplicates_skipped", "extracted", "valid", "quarantined", "upserted", "exports", "flow_run_id")


@register_rerun(
    LAB_RESULTS_API,
    description="Lab: read the results API again from its committed cursor (each page commits with its cursor); "
    "the drop folder is not scanned",
)
def rerun_lab_results_api(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.collect_lab_results import collect_lab_results

    summary: dict[str, Any] = collect_lab_results(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "api_pages", "extracted", "valid", "quarantined", "upserted", "flow_run_id")


@register_rerun(
    DOCUMENT_UPLOAD,
    description="Documents: upload the one outbox document again (an open upload session resumes where it stopped; "
    "an uploaded document is left alone)",
)
def rerun_document_upload(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.upload_documents import upload_documents

    summary: dict[str, Any] = upload_documents(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "claimed", "valid", "quarantined", "uploaded", "bytes_uploaded", "flow_run_id")


@register_rerun(
    DOCUMENTS_PAGE,
    description="Documents: extract, validate and upload the one outbox page (its id range) the run stopped in; "
    "rows after it wait for upload-documents",
)
def rerun_documents_page(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.upload_documents import upload_documents

    summary: dict[str, Any] = upload_documents(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "claimed", "valid", "quarantined", "uploaded", "failed", "bytes_uploaded", "error_ids", "flow_run_id")


@register_rerun(
    OUTLOOK_CALENDAR_PULL,
    description="Outlook calendar: read people's changes again from the saved delta link and apply them "
    "(pages that committed apply again as no-ops); the ERP's changes are not pushed",
)
def rerun_outlook_calendar_pull(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    summary: dict[str, Any] = sync_microsoft_calendar(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "mode", "pages", "pull", "flow_run_id")


@register_rerun(
    OUTLOOK_SCHEDULES_PUSH,
    description="Outlook calendar: push the schedules whose push failed (all pending ones when the whole push "
    "stage failed); creates carry a transactionId, so a repeat creates nothing twice",
)
def rerun_outlook_schedules_push(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    summary: dict[str, Any] = sync_microsoft_calendar(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "batch_created", "push", "flow_run_id")


@register_rerun(
    GOOGLE_CALENDAR_PULL,
    description="Google calendar: read the changes again from the saved sync token and apply them "
    "(pages that committed apply again as no-ops); the ERP's changes are not pushed",
)
def rerun_google_calendar_pull(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_google_calendar import sync_google_calendar

    summary: dict[str, Any] = sync_google_calendar(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "mode", "pages", "pull", "flow_run_id")


@register_rerun(
    GOOGLE_SCHEDULES_PUSH,
    description="Google calendar: push the schedules whose push failed (all pending ones when the whole push "
    "stage failed); our deterministic event ids make a repeat create nothing twice",
)
def rerun_google_schedules_push(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_google_calendar import sync_google_calendar

    summary: dict[str, Any] = sync_google_calendar(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "push", "flow_run_id")


@register_rerun(
    RAZORPAY_PAYMENTS_PAGE,
    description="Razorpay reconciliation: resume the failed run's fixed time window at the failed page through its "
    "last page (forward-only applies); the watermark moves only if no later run moved it",
)
def rerun_razorpay_payments_page(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.reconcile_razorpay import reconcile_razorpay

    summary: dict[str, Any] = reconcile_razorpay(resume={**claim.unit, "error_id": claim.error_id})
    return _pick(summary, "since", "until", "pages", "records", "applied", "stale", "skipped", "flow_run_id")


# --- running one rerun -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RerunOutcome:
    error_id: int
    status: str  # the error's status afterwards; "skipped" when it was not due or already taken
    attempt: int = 0
    summary: Mapping[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"error_id": self.error_id, "status": self.status, "attempt": self.attempt, "summary": dict(self.summary or {}), "error": self.error}


def rerun(error_id: int, *, by: str, manual: bool = False) -> RerunOutcome:
    """Rerun the failed unit of one error: claim it, run its handler, then resolve, reschedule or escalate."""
    from connectors.core.errors import classify_exception
    from hub.ledger.errors import claim_for_rerun, finish_rerun_failure, finish_rerun_success

    claim = claim_for_rerun(error_id, by=by, manual=manual)
    if claim is None:
        return RerunOutcome(error_id, "skipped")
    spec = rerun_spec(claim.unit)
    assert spec is not None  # claim_for_rerun checked it
    try:
        summary = spec.handler(claim)
    except UnitFailed as failed:
        status = finish_rerun_failure(claim, failed.error, by=by, unit=failed.unit, manual=manual)
        return RerunOutcome(error_id, status, claim.attempt, error=str(failed.error))
    except Exception as exc:  # noqa: BLE001 - every failure of a rerun is classified and recorded on the row
        error = classify_exception(exc, integration=claim.integration, operation=f"rerun {spec.kind}")
        status = finish_rerun_failure(claim, error, by=by, manual=manual)
        return RerunOutcome(error_id, status, claim.attempt, error=str(error))
    finish_rerun_success(claim, by=by, outcome=summary)
    return RerunOutcome(error_id, "resolved", claim.attempt, summary=summary)
