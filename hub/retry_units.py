"""Rerun handlers for failed units of work, one registry for every integration.

A failed unit is recorded in `integration_errors.unit` as JSON with a `kind` naming its handler, plus
whatever the handler needs to redo exactly that unit (a batch's start position and filter, an inbox
event id). The retry-failed-units flow and `drymix errors retry <id>` look the handler up here.

Adding an integration: write a function `(claim: ClaimedUnit) -> dict` that reruns one unit (idempotently:
a rerun may repeat work that half-committed) and returns a small summary, or raises (`UnitFailed` when
the rerun got further and the unit to record next is different); decorate it with
`@register_rerun("<integration>.<dataset>.<unit>")` below; record failures with
`unit={"kind": "<integration>.<dataset>.<unit>", ...}`. A handler that reruns through a flow must not let
that flow record a new error row for the rerun's own failure (raise `UnitFailed` instead, as the SAP sync
does with `resume=`): the retry workflow updates the row it is rerunning. A unit without a handler is not
queued; a flow whose next scheduled run redoes the work anyway (reconcile-razorpay, process-webhooks'
whole-batch failures) needs none: its next success resolves the open errors. Imports stay inside the handlers: this module is
imported by the CLI and by `record_error`, which must not load Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.core.errors import IntegrationError
    from hub.errors import ClaimedUnit

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


@register_rerun(
    SAP_CUSTOMERS_BATCH,
    description="SAP customers: resume the read at the failed batch (its start position and filter) through "
    "the batches the failed run never reached; batches that committed are not read again",
)
def rerun_sap_customers_batch(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    summary: dict[str, Any] = sync_sap_customers(resume={**claim.unit, "error_id": claim.error_id})
    return {k: summary.get(k) for k in ("batches", "extracted", "valid", "quarantined", "upserted", "unchanged", "watermark", "flow_run_id")}


@register_rerun(WEBHOOK_EVENT, description="Webhooks: apply the one stored event again (idempotent, forward-only)")
def rerun_webhook_event(claim: ClaimedUnit) -> Mapping[str, Any]:
    from flows.process_webhooks import apply_stored_event

    return apply_stored_event(int(claim.unit["inbox_id"]))


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
    from hub.errors import claim_for_rerun, finish_rerun_failure, finish_rerun_success

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
