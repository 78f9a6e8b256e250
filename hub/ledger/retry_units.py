"""Rerun handlers for failed units of work, one registry for every integration.

A failed unit is recorded in `integration_errors.unit` as JSON with a `kind` naming its handler, plus
whatever the handler needs to redo exactly that unit (a batch's start position and filter, an inbox
event id). The retry-failed-units flow and `drymix errors retry <id>` look the handler up here.

A dataset declares its unit kinds in the registry (hub/datasets.py `Dataset.units`, each with what a rerun
does); its flow reruns one with `resume=<the unit>` (idempotently: a rerun may repeat work that
half-committed) and, when the rerun fails, raises `UnitFailed` instead of recording a new row: the retry
workflow updates the row it is rerunning. The sync engine (tasks/engine.py) does both for every pull-shaped
dataset. Work that is not a dataset's flow registers a handler here (`@register_rerun`, as the webhook
inbox's single event below). A unit without a handler is not queued; work whose next scheduled run redoes
it anyway and that cannot be redone on its own needs none (process-webhooks' whole-batch failures, a failed
plant read: past OPC UA values cannot be read again): its next success resolves the open errors. Imports
stay inside the handlers: this module is imported by the CLI and by `record_error`, which must not load Prefect.

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
    """The handler of a unit: one registered here for its kind, else its dataset's flow (hub/datasets.py)."""
    kind = unit.get("kind") if unit else None
    if not kind:
        return None
    return _REGISTRY.get(str(kind)) or _through_flow(str(kind))


def has_rerun_handler(unit: Mapping[str, Any] | None) -> bool:
    return rerun_spec(unit) is not None


def registered_kinds() -> dict[str, str]:
    """Every unit kind that can be rerun: the datasets' units, and handlers registered here."""
    from hub.datasets import all_datasets

    kinds = {unit.kind: unit.reruns for dataset in all_datasets() if dataset.flow is not None for unit in dataset.units}
    kinds.update({kind: spec.description for kind, spec in _REGISTRY.items()})
    return dict(sorted(kinds.items()))


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
SAP_SALES_ORDERS_BATCH = "sap.sales_orders.batch"
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
SAP_CUSTOMER_PUSH = "sap.customer_push.customer"
SAP_CUSTOMER_PUSH_PAGE = "sap.customer_push.page"


@register_rerun(WEBHOOK_EVENT, description="Webhooks: apply the one stored event again (idempotent, forward-only)")
def rerun_webhook_event(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.process_webhooks import apply_stored_event

    return apply_stored_event(int(claim.unit["inbox_id"]))


def _through_flow(kind: str) -> RerunSpec | None:
    """The rerun of a unit a registered dataset declares: its flow, run with `resume=<the unit>`.

    Every dataset's flow takes `resume=` and reruns exactly that unit (hub/datasets.py `Dataset.units`
    says what each kind reruns), raising `UnitFailed` instead of recording a new row when the rerun fails.
    """
    from hub.datasets import all_datasets

    for dataset in all_datasets():
        for unit in dataset.units:
            if unit.kind == kind and dataset.flow is not None:

                def handler(claim: ClaimedUnit, dataset: Any = dataset) -> Mapping[str, Any]:
                    summary: Mapping[str, Any] = dataset.load_flow()(resume={**claim.unit, "error_id": claim.error_id})
                    return {k: v for k, v in summary.items() if not isinstance(v, list | dict) or k in ("exports", "pull", "push", "error_ids")}

                return RerunSpec(kind, handler, unit.reruns)
    return None


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
        status = finish_rerun_failure(claim, failed.error, by=by, unit=failed.unit, manual=manual, exc=failed)
        return RerunOutcome(error_id, status, claim.attempt, error=str(failed.error))
    except Exception as exc:  # noqa: BLE001 - every failure of a rerun is classified and recorded on the row
        error = classify_exception(exc, integration=claim.integration, operation=f"rerun {spec.kind}")
        status = finish_rerun_failure(claim, error, by=by, manual=manual, exc=exc)
        return RerunOutcome(error_id, status, claim.attempt, error=str(error))
    finish_rerun_success(claim, by=by, outcome=summary)
    return RerunOutcome(error_id, "resolved", claim.attempt, summary=summary)
