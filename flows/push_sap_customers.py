"""ERP `customer_outbox` -> SAP business partners (API_BUSINESS_PARTNER): extract a page of due rows, push them in batches.

Reads top to bottom like the pipeline it runs, one page of outbox rows per task:

1. extract: the next page of due rows (pending, their retry time come);
2. look up: one GET per 40 rows finds what SAP keeps under each row's ERP reference (BusinessPartnerIDByExtSystem)
   and reads the partners the updates change, with their ETags;
3. push: the page's rows in OData `$batch` requests of `batch_size` customers (`[sap.customer_push]`), each
   customer's writes one change set that SAP applies all or nothing, so one customer's refusal never undoes
   another's. A `$batch` is one HTTP request, one token of SAP's rate budget (the connector's `RateBudget`,
   shared by every worker). A create adopts the partner SAP already keeps under its ERP reference, else
   deep-inserts one and writes the partner key back to the ERP; an update writes the ERP-owned fields that
   differ (`If-Match` on the partner), and after a 412 re-reads the partner and retries once, in a later batch,
   with the rule (connectors/sap/partners_write.py `plan_update`). A batch whose answer is lost leaves all its
   customers unknown: its creates are looked up together (and adopted when found) before anything is retried.

What becomes of a row: pushed; `conflict` (a second 412, or SAP and the ERP both changed a field), one error row
holding both versions; `failed` (SAP refused it: DATA_VALIDATION_FAILED with SAP's message); or, after a timeout,
a 5xx or a 429, still `pending` with `next_attempt_at` (backoff), failed once `max_attempts` ran out.

Failed units are rerun through this flow (hub/ledger/retry_units.py): one customer (`sap.customer_push.customer`:
pushed again whatever its retry time; after a conflict the ERP's values win over SAP's current version) and a
page the run itself stopped in (`sap.customer_push.page`: its outbox id range). The run's bookkeeping (metrics,
the page's error row, the summary) is tasks/engine.py `DatasetRun`'s.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from connectors.core.client import retries_of
from connectors.core.errors import IntegrationError, InvalidRequest, classify_exception
from connectors.core.retry import backoff_delay
from connectors.sap.batch import BatchRequest
from connectors.sap.partners_write import (
    BusinessPartnerWrites,
    CreateResult,
    PartnerRead,
    PreconditionFailed,
    create_request,
    part_error,
    plan_update,
)
from hub.ledger.errors import record_error
from hub.ledger.retry_units import SAP_CUSTOMER_PUSH, SAP_CUSTOMER_PUSH_PAGE, UnitFailed
from hub.runtime.connections import build_sap_connector
from hub.systems.sap_push import (
    DATASET,
    INTEGRATION,
    CustomerPushOptions,
    claim_page,
    push_options,
    read_row,
    record_conflict,
    record_failed,
    record_pushed,
    record_retry_later,
    resolve_customer_errors,
    start_attempt,
)
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only

CONFLICT_CODE = "CONFLICT"
log = logging.getLogger(__name__)


class Conflict(Exception):
    """SAP changed the partner too, and the rule could not settle it: both versions go to a person."""

    def __init__(self, reason: str, *, fields: list[str], erp: dict[str, Any], sap: dict[str, Any], base: dict[str, Any] | None,
                 etag: str | None) -> None:
        super().__init__(reason)
        self.reason, self.fields, self.erp, self.sap, self.base, self.etag = reason, fields, erp, sap, base, etag


@dataclass
class Pushed:
    partner: str
    etag: str | None
    outcome: str  # created | adopted | updated | unchanged
    record: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0


@dataclass
class PageOutcome:
    created: int = 0
    adopted: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    refused: int = 0
    retry_later: int = 0
    failed: int = 0
    resolved_on_retry: int = 0  # a 412 the rule settled with one retry
    latencies_ms: list[float] = field(default_factory=list)
    error_ids: list[int] = field(default_factory=list)
    # A rerun's failure (and the unit as it stands now): its own error row is updated, no new one.
    unrecorded: list[tuple[IntegrationError, dict[str, Any]]] = field(default_factory=list)


@dataclass
class PushSummary:
    integration: str = INTEGRATION
    dataset: str = DATASET
    flow_run_id: str | None = None
    pages: int = 0
    claimed: int = 0
    created: int = 0
    adopted: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    refused: int = 0
    retry_later: int = 0
    failed: int = 0
    resolved_on_retry: int = 0
    quarantined: int = 0
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, page: PageOutcome) -> None:
        for name in ("created", "adopted", "updated", "unchanged", "conflicts", "refused", "retry_later", "failed", "resolved_on_retry"):
            setattr(self, name, getattr(self, name) + getattr(page, name))
        self.error_ids.extend(page.error_ids)
        self.latencies_ms.extend(page.latencies_ms)

    def as_dict(self) -> dict[str, Any]:
        # "upserted" is the run summary's "loaded" figure: the customers that reached SAP.
        return {**asdict(self), "upserted": self.created + self.adopted + self.updated + self.unchanged}


@task(name="read_customer_outbox_page", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[1.0, 4.0],
      retry_condition_fn=retry_transient_only, task_run_name="read-customer-outbox-page")
def read_outbox_page(after_id: int, limit: int, through_id: int | None = None) -> list[dict[str, Any]]:
    """The next page of due outbox rows."""
    return claim_page(after_id, limit, through_id=through_id)


@dataclass
class Job:
    """One outbox row on its way through the page's batches: what it writes now, and how far it got."""

    row: dict[str, Any]
    attempts: int
    started: float
    force: bool
    read: PartnerRead | None = None  # an update's partner as last read
    changes: dict[str, Any] = field(default_factory=dict)
    requests: list[BatchRequest] = field(default_factory=list)
    kind: str = "update"  # create | update
    label: str = "updated"  # what a success counts as: created | adopted | updated
    try_no: int = 1  # 2 after a 412: the re-read partner, the rule again, one retry
    record: dict[str, Any] = field(default_factory=dict)
    http_retries_before: int = 0  # the SAP client's HTTP retries when the row started: its error row counts those since

    @property
    def keys(self) -> set[str]:
        keys = {f"ref:{self.row['erp_ref']}"}
        if self.read is not None:
            keys.add(f"partner:{self.read.record['BusinessPartner']}")
        elif self.row.get("partner"):
            keys.add(f"partner:{self.row['partner']}")
        return keys


class PagePush:
    """A page's rows pushed in `$batch` requests of up to `batch_size` customers, each customer one change set.

    A row is prepared (create, adopt, or an update planned under the rule), its change set joins the batch, and
    the batch's answer settles each row on its own: a 412 re-reads the partner and sends the rule's new plan in
    a later batch (once), a refusal or conflict is that customer's alone. Two rows of one customer never share
    a batch: the second is prepared after the first is settled (its ETag has moved on).
    """

    def __init__(self, writes: BusinessPartnerWrites, rows: list[dict[str, Any]], options: CustomerPushOptions, run_id: str | None,
                 rerun_of: int | None, force: bool) -> None:
        self.writes, self.options, self.run_id, self.rerun_of, self.force = writes, options, run_id, rerun_of, force
        self.rows = deque(rows)
        self.result = PageOutcome()
        creates = [str(r["erp_ref"]) for r in rows if not r.get("partner")]
        self.found = writes.find_by_erp_refs(creates) if creates else {}
        partners = [str(r["partner"]) for r in rows if r.get("partner")]
        self.reads = writes.read_many(partners) if partners else {}
        self.known_partners: dict[str, str] = {}
        self.again: deque[Job] = deque()  # jobs whose next change set goes in a later batch (after a 412, an adoption)

    def run(self) -> PageOutcome:
        while self.rows or self.again:
            batch = self._fill()
            if batch:
                self._send(batch)
        return self.result

    # -- preparing ------------------------------------------------------------------------------------------
    def _fill(self) -> list[Job]:
        batch: list[Job] = []
        busy: set[str] = set()
        while len(batch) < self.options.batch_size and (self.again or self.rows):
            if self.again:
                job = self.again.popleft()
            else:
                row = self.rows[0]
                if {f"ref:{row['erp_ref']}", f"partner:{row.get('partner')}"} & busy:
                    break  # the same customer again: after this batch
                self.rows.popleft()
                attempts = int(row.get("attempts") or 0) + 1
                start_attempt(int(row["id"]), attempts)
                job = Job(row, attempts, time.perf_counter(), self.force, http_retries_before=retries_of(self.writes.client))
                try:
                    if self._start(job):
                        continue
                except Exception as exc:  # noqa: BLE001 - the row's own failure, recorded on it
                    self._settle(job, exc)
                    continue
            batch.append(job)
            busy |= job.keys
        return batch

    def _start(self, job: Job) -> bool:
        """A fresh row: its change set planned (False), or settled already (True: unchanged, a conflict)."""
        row = job.row
        erp_ref = str(row["erp_ref"])
        partner = row.get("partner") or self.known_partners.get(erp_ref)
        if partner is None:
            existing = self.found.get(erp_ref)
            if existing is None:
                existing = self.writes.find_by_erp_refs([erp_ref]).get(erp_ref, [])
            if row["operation"] == "update" and existing:
                partner = str(existing[0].record["BusinessPartner"])
                self.reads.setdefault(partner, existing[0])
            elif existing:
                # SAP keeps it already (an earlier attempt made it): adopt it, and write the ERP's values over it.
                return self._adopt(job, BusinessPartnerWrites.adopt(erp_ref, existing))
            else:
                # A create, or an update of a customer SAP does not know (its create never reached SAP): create it.
                job.kind, job.label, job.requests = "create", "created", [create_request(erp_ref, row["fields"])]
                return False
        job.read = self.reads.get(partner) or self.writes.read(partner)
        return self._plan(job)

    def _adopt(self, job: Job, created: CreateResult) -> bool:
        self.known_partners[str(job.row["erp_ref"])] = created.partner
        job.kind, job.label, job.force, job.record = "update", "adopted", True, created.record
        job.read = PartnerRead(created.record, created.etag)
        return self._plan(job)

    def _plan(self, job: Job) -> bool:
        """The rule over the partner as read: a conflict or nothing to write settles the row; else its change set."""
        assert job.read is not None
        fields, base = dict(job.row["fields"]), None if job.force else job.row.get("base_fields")
        plan = plan_update(fields, job.read.view, base)
        if plan.conflicts:
            self._settle(job, Conflict(f"SAP and the ERP both changed {', '.join(plan.conflicts)} since the ERP read the partner",
                                       fields=plan.conflicts, erp=fields, sap=job.read.view, base=base, etag=job.read.etag))
            return True
        if not plan.changes:
            outcome = job.label if job.label == "adopted" or job.try_no == 2 else "unchanged"
            self._settle(job, Pushed(str(job.read.record["BusinessPartner"]), job.read.etag, outcome, job.record))
            return True
        job.changes = plan.changes
        if BusinessPartnerWrites.needs_address(job.read, plan.changes):
            # The address comes first and its e-mail or phone after: two steps, sent one by one.
            try:
                etag = self.writes.update(job.read, plan.changes)
            except PreconditionFailed:
                return self._precondition_failed(job)
            except Exception as exc:  # noqa: BLE001 - the row's own failure, recorded on it
                self._settle(job, exc)
                return True
            self._succeeded(job, etag)
            return True
        job.requests = BusinessPartnerWrites.update_requests(job.read, plan.changes)
        return False

    # -- sending and settling -------------------------------------------------------------------------------
    def _send(self, batch: list[Job]) -> None:
        try:
            results = self.writes.batch([job.requests for job in batch])
        except Exception as exc:  # noqa: BLE001 - the whole request failed: each customer in it settles by itself
            self._batch_failed(batch, classify_exception(exc, integration=INTEGRATION, operation="push_customers_batch"))
            return
        lost_creates: list[tuple[Job, IntegrationError]] = []
        for job, answer in zip(batch, results, strict=True):
            error = answer.error
            if error is None:
                etag = next((p.etag for p, r in zip(answer.parts, job.requests, strict=False) if r.operation in ("update_partner", "create_partner")),
                            None)
                if job.kind == "create":
                    record = dict((answer.parts[0].body or {}).get("d") or {})
                    job.record = record
                    self.known_partners[str(job.row["erp_ref"])] = str(record["BusinessPartner"])
                    self._settle(job, Pushed(str(record["BusinessPartner"]), etag, "created", record))
                else:
                    self._succeeded(job, etag)
                continue
            if job.kind == "create" and error.transient:
                lost_creates.append((job, error))
                continue
            mapped = part_error(error)
            if isinstance(mapped, PreconditionFailed) and job.kind == "update":
                self._precondition_failed(job)
            else:
                self._settle(job, mapped)
        if lost_creates:
            self._look_up_lost_creates(lost_creates)

    def _batch_failed(self, batch: list[Job], error: IntegrationError) -> None:
        """No answer for any customer of the batch. After a timeout or a 5xx its creates may exist: all of them are
        looked up (one GET) before anything is retried; its updates are left to a later run (they are idempotent)."""
        creates = [(job, error) for job in batch if job.kind == "create"]
        for job in batch:
            if job.kind != "create":
                self._settle(job, error)
        if creates and error.transient:
            self._look_up_lost_creates(creates)
        else:
            for job, _ in creates:
                self._settle(job, error)

    def _look_up_lost_creates(self, lost: list[tuple[Job, IntegrationError]]) -> None:
        try:
            found = self.writes.find_by_erp_refs([str(job.row["erp_ref"]) for job, _ in lost])
        except Exception as exc:  # noqa: BLE001 - unknown still: each row is retried later
            for job, _ in lost:
                self._settle(job, exc)
            return
        for job, error in lost:
            existing = found.get(str(job.row["erp_ref"])) or []
            if not existing:
                self._settle(job, error)
                continue
            log.info("SAP create of %s answered %s but the partner exists: adopted", job.row["erp_ref"], error.category.value)
            try:
                if not self._adopt(job, BusinessPartnerWrites.adopt(str(job.row["erp_ref"]), existing)):
                    self.again.append(job)
            except Exception as exc:  # noqa: BLE001 - the row's own failure, recorded on it
                self._settle(job, exc)

    def _precondition_failed(self, job: Job) -> bool:
        """A 412: SAP changed the partner since it was read. Re-read and plan again once; a second one is a conflict."""
        assert job.read is not None
        partner = str(job.read.record["BusinessPartner"])
        try:
            job.read = self.writes.read(partner)
        except Exception as exc:  # noqa: BLE001 - the row's own failure, recorded on it
            self._settle(job, exc)
            return True
        if job.try_no == 2:
            base = None if job.force else job.row.get("base_fields")
            self._settle(job, Conflict("SAP changed the partner again between our re-read and our write (a second 412)",
                                       fields=sorted(job.changes), erp=dict(job.row["fields"]), sap=job.read.view, base=base,
                                       etag=job.read.etag))
            return True
        job.try_no = 2
        if not self._plan(job):
            self.again.append(job)
        return True

    def _succeeded(self, job: Job, etag: str | None) -> None:
        assert job.read is not None
        if job.try_no == 2:
            self.result.resolved_on_retry += 1
        self._settle(job, Pushed(str(job.read.record["BusinessPartner"]), etag or job.read.etag, job.label, job.record))

    def _settle(self, job: Job, outcome: Pushed | Exception) -> None:
        """Record what became of one row; a second row of the same partner reads it afresh afterwards."""
        settle_row(job.row, job.attempts, job.started, outcome, self.writes, self.options, self.run_id, self.result, self.rerun_of,
                   http_retries=retries_of(self.writes.client) - job.http_retries_before)
        if job.row.get("partner"):
            self.reads.pop(str(job.row["partner"]), None)


def _conflict_error(row: dict[str, Any], conflict: Conflict) -> tuple[IntegrationError, dict[str, Any]]:
    error = InvalidRequest(
        f"customer {row['erp_ref']} (SAP partner {conflict.sap.get('partner')}): {conflict.reason}; fields {', '.join(conflict.fields)}. "
        "`drymix errors show` prints both versions; `drymix errors retry` writes the ERP's, "
        "`drymix sap customers requeue` pushes chosen values, `drymix errors resolve` keeps SAP's",
        code=CONFLICT_CODE, status_code=412, integration=INTEGRATION, operation="update_partner",
    )
    unit = {"kind": SAP_CUSTOMER_PUSH, "outbox_id": int(row["id"]), "erp_ref": row["erp_ref"], "partner": conflict.sap.get("partner"),
            "operation": row["operation"],
            "conflict": {"fields": conflict.fields, "erp": conflict.erp, "sap": conflict.sap, "base": conflict.base}}
    return error, unit


def settle_row(row: dict[str, Any], attempts: int, started: float, outcome: Pushed | Exception, writes: BusinessPartnerWrites,
               options: CustomerPushOptions, run_id: str | None, result: PageOutcome, rerun_of: int | None = None,
               http_retries: int = 0) -> None:
    """Record what happened to one row; a failure stays with this customer."""
    outbox_id = int(row["id"])
    # What retried this customer: the outbox's earlier runs (each a retry of the push, with backoff) and the HTTP
    # retries of the requests made while its row was in the page ($batch requests carry several rows; no task retry here).
    retry_count = attempts - 1 + http_retries
    if isinstance(outcome, Conflict):
        error, unit = _conflict_error(row, outcome)
        result.conflicts += 1
        if rerun_of is not None:
            record_conflict(outbox_id, attempts=attempts, message=str(error), error_id=rerun_of, etag=outcome.etag)
            result.unrecorded.append((error, unit))  # the error row shows the versions as they are now
            return
        error_id = record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id, unit=unit, retry_count=retry_count)
        record_conflict(outbox_id, attempts=attempts, message=str(error), error_id=error_id, etag=outcome.etag)
        result.error_ids.append(error_id)
        return
    if isinstance(outcome, Exception):
        error = classify_exception(outcome, integration=INTEGRATION, operation="push_customer")
        if error.transient and attempts < options.max_attempts and rerun_of is None:
            retry_in = timedelta(seconds=backoff_delay(attempts, writes.client.retry, retry_after_s=error.retry_after_s))
            record_retry_later(outbox_id, attempts=attempts, message=str(error), retry_in=retry_in)
            result.retry_later += 1
            return
        if error.category.value == "DATA_VALIDATION_FAILED":
            result.refused += 1
        else:
            result.failed += 1
        unit = {"kind": SAP_CUSTOMER_PUSH, "outbox_id": outbox_id, "erp_ref": row["erp_ref"], "partner": row.get("partner"),
                "operation": row["operation"], "attempt": attempts}
        if rerun_of is not None:
            record_failed(outbox_id, attempts=attempts, message=str(error), error_id=rerun_of)
            result.unrecorded.append((error, unit))
            return
        error_id = record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id, unit=unit,
                                retry_count=retry_count, max_retries=options.max_attempts, exc=outcome)
        record_failed(outbox_id, attempts=attempts, message=str(error), error_id=error_id)
        result.error_ids.append(error_id)
        return
    result.latencies_ms.append(round((time.perf_counter() - started) * 1000, 1))
    record_pushed(row, partner=outcome.partner, etag=outcome.etag, created=outcome.outcome in ("created", "adopted"), record=outcome.record)
    resolve_customer_errors(outbox_id, f"pushed to SAP by run {run_id}", keep=rerun_of)
    setattr(result, outcome.outcome, getattr(result, outcome.outcome) + 1)


@task(name="push_customers_page", cache_policy=NO_CACHE, persist_result=False, task_run_name="push-customers-page")
def push_customers_page(writes: BusinessPartnerWrites, rows: list[dict[str, Any]], options: CustomerPushOptions, run_id: str | None,
                        rerun_of: int | None = None, force: bool = False) -> PageOutcome:
    """Look the page's ERP references and partners up (a few GETs), then push its rows in `$batch` requests of
    `batch_size` customers (no task retry: each row's failure is recorded on it)."""
    return PagePush(writes, rows, options, run_id, rerun_of, force).run()


@flow(name="push-sap-customers", description="Push ERP customer creations and changes from customer_outbox to SAP business partners.")
def push_sap_customers(max_pages: int | None = None, rows_per_page: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Drain the customer outbox: every due row, a page per task; returns the run's counts. With `resume`, only the
    failed unit: one customer, or one page."""
    run = DatasetRun(INTEGRATION, DATASET, "push-sap-customers", resume=resume)
    logger, run_id = run.logger, run.run_id
    options = push_options()
    limit = rows_per_page or options.rows_per_task
    summary = PushSummary(flow_run_id=run_id)
    kind = resume.get("kind") if resume is not None else None
    rerun_of = int(resume.get("error_id") or 0) if resume is not None and kind == SAP_CUSTOMER_PUSH else None
    force = bool(resume.get("conflict")) if resume is not None and kind == SAP_CUSTOMER_PUSH else False
    after_id, through_id = 0, None
    if resume is not None and kind == SAP_CUSTOMER_PUSH_PAGE:
        after_id, through_id = int(resume.get("after_outbox_id") or 0), resume.get("through_outbox_id")
        limit = int(resume.get("rows") or limit)
    if resume is not None:
        logger.info("customer push: rerun of integration_errors #%s: %s", resume.get("error_id"),
                    f"customer {resume.get('erp_ref')}" if kind == SAP_CUSTOMER_PUSH else f"the page after outbox id {after_id}")
    page_start, page_end = after_id, None
    unrecorded: list[tuple[IntegrationError, dict[str, Any]]] = []
    connector = None
    try:
        connector = build_sap_connector()
        writes = BusinessPartnerWrites(connector)
        while max_pages is None or summary.pages < max_pages:
            page_start, page_end = after_id, None
            if kind == SAP_CUSTOMER_PUSH and resume is not None:
                rows = read_row(int(resume["outbox_id"])) if summary.pages == 0 else []
            else:
                rows = read_outbox_page(after_id, limit, through_id)
            if not rows:
                break
            summary.pages += 1
            summary.claimed += len(rows)
            after_id = page_end = max(int(r["id"]) for r in rows)
            page = push_customers_page(quote(writes), quote(rows), options, run_id, rerun_of, force)  # type: ignore[call-overload]
            summary.add(page)
            unrecorded.extend(page.unrecorded)
            if kind == SAP_CUSTOMER_PUSH_PAGE:
                break  # exactly the failed page
    except Exception as exc:
        # Only the run's own machinery fails here (credentials, the lookups, the database): customers record their
        # own failures. A customer's rerun that fails so leaves its unit as it was (the retry workflow updates it).
        unit = {"kind": SAP_CUSTOMER_PUSH_PAGE, "after_outbox_id": page_start, "through_outbox_id": page_end, "rows": limit,
                "pages_done": summary.pages}
        run.fail(exc, operation="push_customers", unit=None if kind == SAP_CUSTOMER_PUSH else unit, done=f"after {summary.pages} page(s)")
    finally:
        if connector is not None:
            connector.close()
    if unrecorded:
        raise UnitFailed(*unrecorded[0])  # the rerun customer failed again: its own error row is updated
    logger.info(
        "customer push: %d claimed, %d created, %d adopted, %d updated, %d unchanged, %d conflict(s), %d refused, %d to retry later, "
        "%d failed, in %d page(s)", summary.claimed, summary.created, summary.adopted, summary.updated, summary.unchanged,
        summary.conflicts, summary.refused, summary.retry_later, summary.failed, summary.pages,
    )
    # A customer's errors are resolved when it is pushed (hub.systems.sap_push.resolve_customer_errors).
    return run.finish(summary, rows_checked=summary.claimed, report=False, resolve=())
