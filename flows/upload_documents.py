"""ERP `document_outbox` -> SharePoint (Microsoft Graph): extract a page of due rows, map, validate, upload.

Reads top to bottom like the pipeline it runs, one page of outbox rows per task:

1. extract: the next page of due rows (pending, mid-upload, or failed and due for a retry), files stat'ed;
2. map + validate: the documents suite (SharePoint name rules, size limits, known folders); refused rows
   are quarantined (`quarantined_records`, status `quarantined`, one DATA_VALIDATION_FAILED error row)
   and never uploaded;
3. load: each valid file is uploaded on its own. An upload session's URL and confirmed bytes are saved
   after every fragment, so a crash resumes where it stopped; a failed file is recorded on its row and
   in `integration_errors` (unit = the document) and the run carries on with the next file. Transient
   failures are retried by later runs (backoff, `max_attempts`); others wait for `drymix m365 requeue`.

Failed units are queued for a rerun (hub/ledger/retry_units.py): a document's upload
(`microsoft365.documents.document`) and a page the run itself stopped in (`microsoft365.documents.page`: its
outbox id range). `resume=` reruns exactly that unit: the one document (whatever its retry time), or the
rows of that one page; nothing after them. The run's bookkeeping (metrics, the page's error row, the
validation-failure row, Data Docs, the run summary) is tasks/engine.py `DatasetRun`'s.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from connectors.core.client import retries_of
from connectors.core.errors import IntegrationError, classify_exception
from connectors.core.retry import backoff_delay
from connectors.microsoft365 import DocumentOptions, Microsoft365Connector, UploadProgress
from data_mappings.documents import map_documents, normalise_folder
from hub.core.db import get_engine
from hub.core.settings import microsoft365_options as load_options
from hub.ledger.errors import record_error
from hub.ledger.loading import QuarantineRow, failure_name, quarantine_rows, upsert_quarantine
from hub.ledger.retry_units import DOCUMENT_UPLOAD, DOCUMENTS_PAGE, UnitFailed
from hub.runtime.connections import build_microsoft365_connector
from hub.runtime.jobs import follow_up
from hub.systems.documents import (
    claim_page,
    read_document,
    record_failure,
    record_progress,
    record_quarantined,
    record_uploaded,
    resolve_document_errors,
    start_attempt,
)
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only
from tasks.transform import map_batch, validate_batch

INTEGRATION = "microsoft365"
DATASET = "documents"


@dataclass
class PageOutcome:
    uploaded: int = 0
    failed: int = 0
    bytes_uploaded: int = 0
    error_ids: list[int] = field(default_factory=list)
    unrecorded: list[IntegrationError] = field(default_factory=list)  # a document rerun's failure: its error row is updated


@dataclass
class UploadSummary:
    integration: str = INTEGRATION
    dataset: str = DATASET
    flow_run_id: str | None = None
    pages: int = 0
    claimed: int = 0
    valid: int = 0
    quarantined: int = 0
    uploaded: int = 0
    failed: int = 0
    bytes_uploaded: int = 0
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "upserted": self.uploaded}  # the run summary's "loaded" figure


@task(name="read_outbox_page", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[1.0, 4.0],
      retry_condition_fn=retry_transient_only, task_run_name="read-outbox-page")
def read_outbox_page(after_id: int, limit: int, max_attempts: int, through_id: int | None = None) -> list[dict[str, Any]]:
    """The next page of due outbox rows (files stat'ed: size and existence)."""
    return claim_page(after_id, limit, max_attempts, through_id=through_id)


def _raw_for_quarantine(row: dict[str, Any]) -> dict[str, Any]:
    """The outbox row as evidence, without the document's bytes."""
    raw = {k: v for k, v in row.items() if k != "content"}
    if row.get("content") is not None:
        raw["content_bytes"] = len(row["content"])
    return raw


def quarantine_refused(rows: list[dict[str, Any]], frame: Any, outcome: Any, run_id: str | None) -> list[QuarantineRow]:
    """Refused rows: a quarantine entry each (raw row, mapped values, failed rules) and status `quarantined`."""
    by_id = {int(r["id"]): r for r in rows}
    entries = quarantine_rows(outcome, frame, raw_of=lambda label: _raw_for_quarantine(by_id[int(label)]),
                              key_of=lambda label: str(by_id[int(label)].get("document_key") or "") or None)
    reasons = {int(label): "refused by the documents suite: " + ", ".join(sorted({failure_name(f) for f in entry.failed_expectations}))
               for label, entry in zip(outcome.invalid.index, entries, strict=True)}
    if entries:
        with get_engine().begin() as conn:
            upsert_quarantine(conn, INTEGRATION, DATASET, entries, run_id)
        record_quarantined(reasons)
    return entries


def upload_row(connector: Microsoft365Connector, row: dict[str, Any], options: DocumentOptions, run_id: str | None,
               result: PageOutcome, rerun_of: int | None = None) -> None:
    """Upload one document and record what happened on its row; a failure stays with this document.

    `rerun_of`: the integration_errors row this upload reruns; a failure is then left to the retry workflow
    (`result.unrecorded`) instead of becoming a new row.
    """
    document_id = int(row["id"])
    source: str | bytes = row["content"] if row.get("content") is not None else str(row["source_path"])
    # The file may have gone since the page was read: the connector then fails this document, clearly.
    size = len(source) if isinstance(source, bytes) else (Path(source).stat().st_size if Path(source).is_file() else None)
    start_attempt(document_id, size)
    http_retries_before = retries_of(connector.client)

    def on_progress(progress: UploadProgress) -> None:
        record_progress(document_id, progress.upload_url, progress.confirmed, progress.expires_at)

    try:
        item = connector.upload(
            source, normalise_folder(row["folder_path"]) or "", unicodedata.normalize("NFC", str(row["file_name"])),
            conflict=row["conflict_policy"], resume_url=row.get("upload_url"), on_progress=on_progress,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is this document's, classified and recorded
        error = classify_exception(exc, integration=INTEGRATION, operation="upload_document")
        attempts = int(row.get("attempts") or 0) + 1
        retry_in = None
        if error.transient and attempts < options.max_attempts:
            retry_in = timedelta(seconds=backoff_delay(attempts, connector.client.retry, retry_after_s=error.retry_after_s))
        # A session the server no longer knows (expired, or ended by a name conflict) cannot be resumed.
        forget = error.code in ("uploadSessionNotFound", "nameAlreadyExists") or error.status_code in (404, 409)
        record_failure(document_id, error, retry_in=retry_in, forget_session=forget)
        result.failed += 1
        if rerun_of is not None:
            result.unrecorded.append(error)
            return
        unit = {"kind": DOCUMENT_UPLOAD, "document_id": document_id, "document_key": row["document_key"],
                "file_name": row["file_name"], "attempt": attempts, "retry_scheduled": retry_in is not None}
        # What retried this document: the outbox's earlier runs (each a retry of the upload, with backoff) and this
        # upload's HTTP retries (chunks, session calls); this task has no Prefect retry.
        retry_count = attempts - 1 + retries_of(connector.client) - http_retries_before
        result.error_ids.append(record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id, unit=unit,
                                             retry_count=retry_count, max_retries=options.max_attempts, next_retry_in=retry_in, exc=exc))
        return
    record_uploaded(document_id, item_id=item.id, web_url=item.web_url, name=item.name, size=item.size)
    resolve_document_errors(document_id, f"uploaded by run {run_id}", keep=rerun_of)
    result.uploaded += 1
    result.bytes_uploaded += item.size


@task(name="upload_documents_page", cache_policy=NO_CACHE, persist_result=False, task_run_name="upload-documents-page")
def upload_documents_page(connector: Microsoft365Connector, rows: list[dict[str, Any]], valid_ids: list[int],
                          options: DocumentOptions, run_id: str | None, rerun_of: int | None = None) -> PageOutcome:
    """Upload the valid rows of a page one by one (no task retry: each file's failure is recorded on its row)."""
    result = PageOutcome()
    by_id = {int(r["id"]): r for r in rows}
    for document_id in valid_ids:
        upload_row(connector, by_id[document_id], options, run_id, result, rerun_of)
    return result


@flow(name="upload-documents", description="Upload ERP documents from document_outbox to SharePoint (Microsoft Graph).")
def upload_documents(max_pages: int | None = None, rows_per_page: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Drain the document outbox: every due row, a page per task; returns the run's counts. With `resume`, only
    the failed unit: one document, or one page."""
    run = DatasetRun(INTEGRATION, DATASET, "upload-documents", resume=resume)
    logger, run_id = run.logger, run.run_id
    options, _ = load_options()
    limit = rows_per_page or options.rows_per_task
    summary = UploadSummary(flow_run_id=run_id)
    connector: Microsoft365Connector | None = None
    kind = resume.get("kind") if resume is not None else None
    rerun_of = int(resume.get("error_id") or 0) if resume is not None and kind == DOCUMENT_UPLOAD else None
    after_id, through_id = 0, None
    if resume is not None and kind == DOCUMENTS_PAGE:
        after_id, through_id = int(resume.get("after_document_id") or 0), resume.get("through_document_id")
        limit = int(resume.get("rows") or limit)
    if resume is not None:
        logger.info("documents: rerun of integration_errors #%s: %s", resume.get("error_id"),
                    f"document {resume.get('document_key')}" if kind == DOCUMENT_UPLOAD else f"the page after outbox id {after_id}")
    page_start, page_end = after_id, None
    unrecorded: list[IntegrationError] = []
    try:
        connector = build_microsoft365_connector()
        while max_pages is None or summary.pages < max_pages:
            page_start, page_end = after_id, None
            if kind == DOCUMENT_UPLOAD and resume is not None:
                rows = read_document(int(resume["document_id"])) if summary.pages == 0 else []
            else:
                rows = read_outbox_page(after_id, limit, options.max_attempts, through_id)
            if not rows:
                break
            summary.pages += 1
            summary.claimed += len(rows)
            after_id = page_end = max(int(r["id"]) for r in rows)
            # map + validate: the frame is indexed by outbox id, so refused labels are row ids.
            frame = map_batch(DATASET, map_documents, quote(rows))  # type: ignore[call-overload]
            frame.index = [int(r["id"]) for r in rows]
            outcome = validate_batch(DATASET, frame, run_name=run_id)  # type: ignore[call-overload]
            refused = quarantine_refused(rows, frame, outcome, run_id)
            run.count_quarantined(refused)
            summary.quarantined += len(refused)
            valid_ids = [int(i) for i in outcome.valid.index]
            summary.valid += len(valid_ids)
            if valid_ids:
                page = upload_documents_page(quote(connector), quote(rows), valid_ids, options, run_id, rerun_of)  # type: ignore[call-overload]
                summary.uploaded += page.uploaded
                summary.failed += page.failed
                summary.bytes_uploaded += page.bytes_uploaded
                summary.error_ids.extend(page.error_ids)
                unrecorded.extend(page.unrecorded)
            if kind == DOCUMENTS_PAGE:
                break  # exactly the failed page
    except Exception as exc:
        # Only the run's own machinery fails here (credentials, database): files record their own failures. A
        # document's rerun that fails so leaves its unit as it was (the retry workflow updates that row).
        unit = {"kind": DOCUMENTS_PAGE, "after_document_id": page_start, "through_document_id": page_end, "rows": limit,
                "pages_done": summary.pages}
        run.fail(exc, operation="upload_documents", unit=None if kind == DOCUMENT_UPLOAD else unit,
                 done=f"after {summary.pages} page(s)")
    finally:
        if connector is not None:
            connector.close()
    if unrecorded:
        raise UnitFailed(unrecorded[0])  # the rerun document failed again: its own error row is updated
    if connector is not None and resume is None and max_pages is not None and summary.pages >= max_pages and page_end is not None:
        # A bounded run stopped with a full outbox: the rest goes to a queued run now, not at the next schedule.
        follow_up(connector, "microsoft365.documents.upload", {"max_pages": max_pages}, run_id, logger)
    logger.info("documents: %d claimed, %d uploaded (%d bytes), %d failed (recorded per document), %d quarantined, in %d page(s)",
                summary.claimed, summary.uploaded, summary.bytes_uploaded, summary.failed, summary.quarantined, summary.pages)
    # A document's errors are resolved when it uploads (hub.systems.documents.resolve_document_errors).
    return run.finish(summary, rows_checked=summary.claimed, report=bool(summary.quarantined), resolve=())
