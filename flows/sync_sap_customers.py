"""SAP business partners -> ERP `customers`: extract, map, validate, load, in batches of pages.

Reads top to bottom like the pipeline it runs. Extraction of batch N+1 overlaps the mapping,
validation and load of batch N. The watermark (`sync_state`) is written in the same transaction as the
run's last batch, so it can never stand ahead of the rows it covers; a crash leaves it where it was and
the rerun re-reads from there (upserts make that harmless).

A failed batch is recorded as a unit (`sap.customers.batch`: its start position, the filter the run read
with, the batch geometry). `resume=` reruns from that unit: the failed batch and the batches the run never
reached, not the batches that committed (hub/ledger/retry_units.py; `drymix errors retry <id>`). The new
watermark is written only if the watermark has not moved since the failed run read it.

A read must survive change: pages are keyset-paged on the partner key (a partner changed mid-read stays
where it was, so nothing is skipped), and before reading the run asks SAP how many partners its filter
covers (`$count`). Fewer distinct partners read than counted is a shortfall: the rows that were read
still load, but the watermark does not move and the run fails with a rerunnable unit. The watermark
comes only from rows that loaded (a quarantined partner dated 2100 cannot freeze later runs) and never
stands after the day the read started; the next read re-reads `overlap_days` before it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from sqlalchemy import Table

from connectors.core.errors import DataValidationFailed, ErrorCategory, SyncFailed, classify_exception
from connectors.core.memory import release_free_memory
from connectors.core.metrics import METRICS
from connectors.core.paging import PagePosition
from connectors.sap import BUSINESS_PARTNERS, SapConnector, build_sap_connector
from data_mappings.customers import change_dates, flatten_business_partners, map_customers
from hub.core.db import get_engine
from hub.core.models import Customer
from hub.core.settings import get_settings, integration_config
from hub.ledger.errors import flow_actor, record_error, record_validation_failure, resolve_open_errors
from hub.ledger.loading import BatchLoad, QuarantineRow, read_cursor, record_digest
from hub.ledger.retry_units import SAP_CUSTOMERS_BATCH, UnitFailed
from hub.monitoring.health import ensure_flusher
from tasks.extract import ExtractedBatch, drop_exact_duplicates, extract_batch
from tasks.load import load_batch_task
from tasks.report import publish_error_row, publish_sync_summary
from tasks.transform import map_batch, validate_batch

INTEGRATION = "sap"
DATASET = "customers"
FLOW_NAME = "sync-sap-customers"


@dataclass
class SyncSummary:
    """What a run did; published as a Prefect table artifact and printed by the CLI."""

    integration: str = INTEGRATION
    dataset: str = DATASET
    mode: str = "full"
    flow_run_id: str | None = None
    since: str | None = None
    watermark: str | None = None
    batches: int = 0
    pages: int = 0
    source_count: int | None = None
    extracted: int = 0
    distinct_read: int = 0
    duplicates: int = 0
    mapped: int = 0
    valid: int = 0
    quarantined: int = 0
    refused: int = 0  # valid rows the database refused at load: counted in quarantined, not in valid
    upserted: int = 0
    unchanged: int = 0
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("extract_wait", "map", "validate", "load"), 0.0))

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[stage] = round(self.stage_seconds[stage] + now - since, 3)
        return now

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    return map_customers(flatten_business_partners(records))


def _quarantine_rows(records: list[dict[str, Any]], frame: pd.DataFrame, outcome: Any) -> list[QuarantineRow]:
    """Each refused row with its raw SAP record, its mapped values and the expectations it failed."""
    labels = list(outcome.invalid.index)
    mapped = frame.loc[labels].drop(columns=["row_hash"]).to_dict("records") if labels else []
    rows = []
    for label, mapped_record in zip(labels, mapped, strict=True):
        raw = records[int(label)]
        key = raw.get("BusinessPartner") if isinstance(raw, dict) else None
        failures = [
            {"expectation": f.expectation, "column": f.column, "kwargs": f.kwargs, "value": f.value}
            for f in outcome.failures.get(label, [])
        ]
        rows.append(
            QuarantineRow(
                record_key=str(key) if key else record_digest(raw),
                raw_record=raw,
                mapped_record=mapped_record,
                failed_expectations=failures,
            )
        )
    return rows


@flow(name=FLOW_NAME, description="SAP S/4HANA business partners into the ERP customers table.")
def sync_sap_customers(
    full_refresh: bool = False,
    page_size: int | None = None,
    batch_pages: int | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sync customers from SAP; incremental from the watermark unless `full_refresh`; from a failed unit with `resume`."""
    ensure_flusher()  # this process's connector calls reach call_metrics in batches
    logger = get_run_logger()
    started = time.perf_counter()
    config = integration_config(INTEGRATION)
    if resume is not None:
        batch_pages = int(resume.get("batch_pages") or batch_pages or config.batch_pages)
    batch_pages = batch_pages or config.batch_pages
    run_id = str(flow_run.id) if flow_run.id else None
    summary = SyncSummary(flow_run_id=run_id)
    first_batch = int(resume.get("batch") or 1) if resume is not None else 1

    if resume is not None:
        cursor = resume.get("cursor") or None  # what the failed run read with; its filter is in the position URL
        summary.mode = "resume"
    else:
        try:
            with get_engine().connect() as conn:
                cursor = None if full_refresh else read_cursor(conn, INTEGRATION, DATASET)
        except Exception as exc:
            # The database is gone before anything was read: no unit to rerun (the next scheduled run
            # starts from the same watermark), but the failure is on the books (spooled while it is down).
            error = classify_exception(exc, integration=INTEGRATION, operation="read_watermark")
            record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id)
            raise error from exc
        summary.mode = "incremental" if cursor else "full"
    summary.since = (cursor or {}).get("last_change_date")

    connector: SapConnector | None = None
    pending: Any = None
    high_water: date | None = None
    position: PagePosition | None = None
    read_from: PagePosition | None = None
    read_started = datetime.now(UTC)
    read_keys: set[str] = set()
    rerun_batch: int | None = None  # where a rerun starts when it is not the batch that failed
    validation_counts: dict[str, int] = {}
    retries_before = METRICS.total(INTEGRATION, "retries")
    sample: list[dict[str, Any]] = []
    try:
        connector = build_sap_connector(page_size=page_size)
        if resume is not None and resume.get("position") and "filter" in (resume["position"].get("state") or {}):
            position = PagePosition.from_dict(resume["position"])
            logger.info("SAP customers: resuming integration_errors #%s at batch %d (%s)", resume.get("error_id"), first_batch, position.url)
        else:
            # A fresh read; or the rerun of a unit recorded before keyset paging (its offset position
            # cannot be trusted), which reads again with the failed run's cursor.
            position = connector.start(BUSINESS_PARTNERS, cursor)
        read_from = position
        summary.source_count = connector.count(BUSINESS_PARTNERS, position)
        logger.info("SAP customers: %s sync%s", summary.mode, f" since {summary.since}" if summary.since else "")
        fetching: PagePosition | None = position
        pending = extract_batch.submit(connector, BUSINESS_PARTNERS, position, batch_pages)
        while pending is not None:
            clock = time.perf_counter()
            position = fetching  # a failed fetch is recorded with the start of the batch it was fetching
            batch: ExtractedBatch = pending.result()
            clock = summary.timed("extract_wait", clock)
            position = batch.start
            # Start fetching the next batch while this one is mapped, validated and loaded.
            fetching = batch.next
            pending = (
                extract_batch.submit(connector, BUSINESS_PARTNERS, batch.next, batch_pages) if batch.next else None
            )
            records, duplicates = drop_exact_duplicates(batch.records, BUSINESS_PARTNERS.primary_key)
            summary.duplicates += duplicates
            read_keys.update(k for r in records if isinstance(k := r.get(BUSINESS_PARTNERS.primary_key), str))
            if records:
                frame = map_batch(DATASET, to_records, quote(records))  # type: ignore[call-overload]
                clock = summary.timed("map", clock)
                outcome = validate_batch(DATASET, frame, run_name=run_id)
                valid, invalid = outcome.valid, outcome.invalid
                quarantine = _quarantine_rows(records, frame, outcome)
                clock = summary.timed("validate", clock)
            else:  # the empty page that ends $top/$skip paging: nothing to map or validate
                frame = valid = invalid = to_records([])
                quarantine = []
            for row in quarantine:
                for failure in row.failed_expectations:
                    name = f"{failure['expectation']}({failure['column']})"
                    validation_counts[name] = validation_counts.get(name, 0) + 1
                if len(sample) < 10:
                    sample.append({"record_key": row.record_key, "failed": row.failed_expectations[:3]})
            # Only rows that load move the watermark: a quarantined row's date (2100, say) never does.
            dates = change_dates(valid).dropna()
            if not dates.empty:
                high_water = max(high_water or dates.max(), dates.max())
            last = pending is None
            new_cursor = None
            summary.distinct_read = len(read_keys)
            shortfall = last and summary.source_count is not None and summary.distinct_read < summary.source_count
            if last and not shortfall:
                new_cursor = next_cursor(high_water, summary.since, read_started)
                if resume is not None and not _watermark_unchanged(cursor):
                    new_cursor = None  # another run moved the watermark meanwhile: leave it to that run
            # quote(): Prefect would otherwise walk every record looking for futures (~5 s per 20k rows).
            result = load_batch_task(  # type: ignore[call-overload]
                quote(BatchLoad(
                    integration=INTEGRATION,
                    dataset=DATASET,
                    table=cast(Table, Customer.__table__),
                    key=["customer_id"],
                    rows=valid.drop(columns=["mapping_errors"]).assign(source_run_id=run_id),
                    quarantine=quarantine,
                    cursor=new_cursor,
                    flow_run_id=run_id,
                    run_upserted_before=summary.upserted,
                    raw_of=records.__getitem__,  # a row the database refuses is quarantined with its SAP record
                ))
            )
            summary.timed("load", clock)
            summary.batches += 1
            summary.pages += batch.pages
            summary.extracted += len(batch.records)
            summary.mapped += len(frame)
            summary.valid += len(valid) - result.refused
            summary.quarantined += len(invalid) + result.refused
            summary.refused += result.refused
            summary.upserted += result.upserted
            summary.unchanged += result.unchanged
            for row in result.refused_rows:
                name = f"database_refused({row.failed_expectations[0]['column']})"
                validation_counts[name] = validation_counts.get(name, 0) + 1
                if len(sample) < 10:
                    sample.append({"record_key": row.record_key, "failed": row.failed_expectations[:3]})
            if summary.mapped != summary.valid + summary.quarantined or summary.extracted != summary.mapped + summary.duplicates:
                raise SyncFailed(
                    f"row counts do not balance: extracted {summary.extracted} (of which {summary.duplicates} exact "
                    f"duplicates), mapped {summary.mapped}, valid {summary.valid} + quarantined {summary.quarantined}",
                    code="COUNT_IMBALANCE",
                )
            if shortfall:
                position, rerun_batch = read_from, first_batch  # the whole read is the unit to rerun
                raise SyncFailed(
                    f"SAP counted {summary.source_count} business partners for this read but only {summary.distinct_read} "
                    "distinct ones were read: the rows read were loaded, the watermark was not moved",
                    code="READ_SHORTFALL",
                )
            if last:
                summary.watermark = (new_cursor or {}).get("last_change_date")
            logger.info(
                "batch %d: %d records, %d valid, %d quarantined, %d upserted",
                summary.batches,
                len(batch.records),
                len(valid),
                len(invalid),
                result.upserted,
            )
            # Drop this batch before the next one is taken, and hand its pages back to the OS. The list
            # is emptied in place because the extract task's future still refers to the batch object.
            batch.records.clear()
            del batch, frame, valid, invalid, quarantine
            release_free_memory()
    except Exception as exc:
        if pending is not None:
            pending.wait()  # let an in-flight extract finish before its client is closed
        error = classify_exception(exc, integration=INTEGRATION, operation="sync_customers")
        summary.retries = METRICS.total(INTEGRATION, "retries") - retries_before
        unit = {
            "kind": SAP_CUSTOMERS_BATCH,
            "batch": rerun_batch or first_batch + summary.batches,
            "position": position.to_dict() if position else None,
            "mode": summary.mode,
            "cursor": cursor,
            "batch_pages": batch_pages,
        }
        if resume is not None:
            # A rerun of a recorded unit: the retry workflow updates that row; no new row.
            logger.error(
                "rerun of integration_errors #%s failed at batch %d after %d committed batch(es): %s",
                resume.get("error_id"), unit["batch"], summary.batches, error,
            )
            raise UnitFailed(error, unit) from exc
        error_id = record_error(
            error,
            integration=INTEGRATION,
            dataset=DATASET,
            flow_run_id=run_id,
            unit=unit,
            retry_count=summary.retries,
            max_retries=config.retry.max_retries,
        )
        logger.error(
            "SAP customer sync failed after %d committed batch(es): %s. Recorded as integration_errors #%d. "
            "%s Rerun only the failed batch onwards: `drymix errors retry %d` (or the whole read from the "
            "watermark %s: `drymix sync sap-customers`).",
            summary.batches,
            error,
            error_id,
            error.remedy,
            error_id,
            summary.since or "(none: full sync)",
        )
        publish_error_row(error, error_id, integration=INTEGRATION, dataset=DATASET, unit=unit)
        if error is exc:
            raise
        raise error from exc
    finally:
        if connector is not None:
            connector.close()

    summary.retries = METRICS.total(INTEGRATION, "retries") - retries_before
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.report_path = _build_report(run_id)
    if summary.quarantined:
        summary.error_ids.append(
            record_validation_failure(
                integration=INTEGRATION,
                dataset=DATASET,
                flow_run_id=run_id,
                rows_checked=summary.mapped,
                rows_quarantined=summary.quarantined,
                failures_by_expectation=validation_counts,
                sample=sample,
                report_path=summary.report_path,
            )
        )
    if summary.mode == "full" and summary.extracted == 0:
        error = DataValidationFailed(
            "SAP returned no business partners for a full sync: check the communication user's authorisations "
            "and that API_BUSINESS_PARTNER serves data",
            code="EMPTY_DATASET",
            operation="sync_customers",
        )
        summary.error_ids.append(record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id))
        logger.warning(str(error))
    resolved = resolve_open_errors(
        INTEGRATION,
        DATASET,
        note=(
            f"a later run ({run_id}) synced {DATASET} successfully"
            if resume is None
            else f"run {run_id} resumed the read of integration_errors #{resume.get('error_id')} to the end successfully"
        ),
        categories=tuple(c.value for c in ErrorCategory if c is not ErrorCategory.DATA_VALIDATION_FAILED),
        actor=flow_actor(FLOW_NAME),
    )
    if resolved:
        logger.info("resolved %d earlier error(s) of this sync", resolved)
    publish_sync_summary(summary.as_dict())
    return summary.as_dict()


def next_cursor(high_water: date | None, since: str | None, read_started: datetime) -> dict[str, Any]:
    """The watermark after a complete read: the latest change date that loaded, never after the read's start.

    SAP's clock, a future-dated record that passed validation or a partner changed while it was read can
    put a date beyond the read's start; a watermark there would make later incremental reads skip what
    changes until then. The next read starts `overlap_days` before the watermark.
    """
    started = read_started.astimezone(UTC).date()
    mark = min(high_water, started) if high_water else None
    if mark is None and since:
        mark = min(date.fromisoformat(since), started)
    return {"last_change_date": mark.isoformat()} if mark else {}


def _watermark_unchanged(read_with: dict[str, Any] | None) -> bool:
    with get_engine().connect() as conn:
        current = read_cursor(conn, INTEGRATION, DATASET)
    return (current or None) == (read_with or None)


def _build_report(run_id: str | None) -> str | None:
    from expectations.runner import build_data_docs

    settings = get_settings()
    return build_data_docs(settings.data_docs_dir, run_name=run_id, keep_runs=settings.data_docs_keep_runs)
