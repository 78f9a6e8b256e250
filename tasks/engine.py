"""The sync engine: one path that runs every pull-shaped dataset, and the run hooks every job shares.

A pull-shaped dataset is a `PullStream` declaration in its system's place (hub/systems/<system>.py), named
by the registry (hub/datasets.py `Dataset.stream`). `run_pull` runs any of them the same way:

    plan the read from the watermark (or from a failed unit) -> count what the source holds (optional)
    -> batches of pages, the next batch's extract overlapping this batch's map, validate and load
    -> the watermark committed with the last batch, only from rows that loaded, never on a short read
    -> on failure: one classified `integration_errors` row holding the unit a rerun resumes from

A dataset whose records are applied by a rule of its own (Razorpay's forward-only payment states) declares
`apply` instead of a mapping, a suite and a table; it still gets the batches, the cursor, the unit and the
summary from here.

`DatasetRun` holds what every job of the hub shares, pull or push: the metrics flusher, the run id, the
failure path (classify, record the unit or hand it to the rerun, say which command reruns it, publish it
on the run), the validation-failure row, Data Docs, the resolution of earlier errors and the run summary
artifact. Push-shaped flows (document upload, calendar push, WhatsApp send) use it directly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, cast

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from connectors.core.errors import (
    DataValidationFailed,
    IntegrationError,
    ResyncRequired,
    SyncFailed,
    classify_exception,
)
from connectors.core.memory import release_free_memory
from connectors.core.metrics import METRICS
from connectors.core.paging import PagePosition
from hub.core.db import get_engine
from hub.core.settings import get_settings, integration_config
from hub.ledger.errors import (
    flow_actor,
    record_error,
    record_validation_failure,
    resolve_open_errors,
    retry_command,
)
from hub.ledger.loading import (
    BatchLoad,
    LoadResult,
    QuarantineRow,
    count_failures,
    quarantine_rows,
    read_cursor,
)
from hub.ledger.retry_units import UnitFailed, has_rerun_handler
from hub.monitoring.health import ensure_flusher
from tasks.extract import ExtractedBatch, drop_exact_duplicates, extract_batch
from tasks.load import load_batch_task
from tasks.report import publish_error_row, publish_sync_summary
from tasks.retry import retry_transient_only
from tasks.streams import ALL_BUT_VALIDATION, ApplyContext, PullStream, ReadPlan, RunOptions
from tasks.transform import map_batch, validate_batch

if TYPE_CHECKING:
    from sqlalchemy import Table

    from connectors.core.base import Connector

SAMPLE_SIZE = 10
# What the engine keeps in a failed unit; anything else in it is the read's own state (ReadPlan.state).
UNIT_KEYS = frozenset({"kind", "batch", "page", "position", "mode", "cursor", "since", "batch_pages", "error_id"})


# --- the run hooks every job shares -------------------------------------------------------------------


@dataclass
class RunSummary:
    """What a run did; published as a Prefect table artifact and printed by the CLI (`drymix sync`)."""

    integration: str
    dataset: str
    mode: str = "full"
    flow_run_id: str | None = None
    since: Any = None
    watermark: Any = None
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
    counts: dict[str, int] = field(default_factory=dict)  # a dataset's own counts (applied, stale, ...)
    read: dict[str, Any] = field(default_factory=dict)  # what the read covered beyond `since` (a time window, ...)

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + now - since, 3)
        return now

    def as_dict(self) -> dict[str, Any]:
        """Flat: a dataset's own counts and read window sit beside the common figures."""
        data = asdict(self)
        counts, read = data.pop("counts"), data.pop("read")
        return {**data, **read, **counts}


class Summary(Protocol):
    """What `DatasetRun.finish` fills in and publishes: a `RunSummary`, or a push-shaped flow's own summary
    (whose `as_dict()` carries `integration`, `dataset`, `upserted` and `quarantined` for the artifact)."""

    retries: int
    seconds: float
    report_path: str | None
    quarantined: int
    error_ids: list[int]

    def as_dict(self) -> dict[str, Any]: ...


class Refused(NamedTuple):
    """What validation refused in one dataset of a run: its DATA_VALIDATION_FAILED row's counts."""

    checked: int
    quarantined: int
    failures: dict[str, int]
    sample: list[dict[str, Any]]


class DatasetRun:
    """One run of one dataset: what every flow of the hub does around its own work, in one place."""

    def __init__(
        self, integration: str, dataset: str, flow_name: str, *, resume: Mapping[str, Any] | None = None, datasets: Sequence[str] = ()
    ) -> None:
        ensure_flusher()  # this process's connector calls reach call_metrics in batches, under a worker too
        self.integration = integration
        self.dataset = dataset  # errors are recorded under it
        self.datasets = tuple(datasets) or (dataset,)  # a run that loads several (plant): a success resolves each one's errors
        self.flow_name = flow_name
        self.resume = resume
        self.logger = get_run_logger()
        self.run_id = str(flow_run.id) if flow_run.id else None
        self.started = time.perf_counter()
        self._retries_before = METRICS.total(integration, "retries")
        self.failures: dict[str, int] = {}
        self.sample: list[dict[str, Any]] = []
        self.refused: dict[str, Refused] = {}  # a run of several datasets: what each one refused (count_refused)

    @property
    def retries(self) -> int:
        """HTTP retries this process made for the integration since the run started."""
        return METRICS.total(self.integration, "retries") - self._retries_before

    def count_quarantined(self, rows: Sequence[QuarantineRow]) -> None:
        """Add refused rows to the run's failures by rule and to the sample the error row shows."""
        for name, n in count_failures(rows).items():
            self.failures[name] = self.failures.get(name, 0) + n
        for row in rows:
            if len(self.sample) >= SAMPLE_SIZE:
                break
            self.sample.append({"record_key": row.record_key, "failed": row.failed_expectations[:3]})

    def count_refused(self, dataset: str, *, checked: int, quarantined: int, failures: Mapping[str, int], sample: Sequence[Mapping[str, Any]]) -> None:
        """What validation refused in one dataset of a run that loads several: `finish` records one row for each."""
        self.refused[dataset] = Refused(checked, quarantined, dict(failures), [dict(s) for s in sample[:SAMPLE_SIZE]])

    def fail(
        self,
        exc: BaseException,
        *,
        operation: str,
        unit: Mapping[str, Any] | None = None,
        max_retries: int = 0,
        rerun_hint: str | None = None,
        done: str = "",
    ) -> NoReturn:
        """Classify the failure; a rerun hands its unit back (`UnitFailed`), a run records one error row and says how to rerun."""
        error = classify_exception(exc, integration=self.integration, operation=operation)
        if self.resume is not None:
            # A rerun of a recorded unit: the retry workflow updates that row; no new row.
            self.logger.error("rerun of integration_errors #%s failed%s: %s", self.resume.get("error_id"), f" {done}" if done else "", error)
            raise UnitFailed(error, unit) from exc
        error_id = record_error(
            error,
            integration=self.integration,
            dataset=self.dataset,
            flow_run_id=self.run_id,
            unit=unit,
            retry_count=self.retries,
            max_retries=max_retries,
        )
        hint = publish_error_row(error, error_id, integration=self.integration, dataset=self.dataset,
                                 unit=dict(unit) if unit is not None else None, rerun_hint=rerun_hint)
        self.logger.error("%s %s failed%s: %s. %s (%s)", self.integration, self.dataset, f" {done}" if done else "", error, error.remedy, hint)
        if error is exc:
            raise error
        raise error from exc

    def record_failure(
        self, error: IntegrationError, *, unit: Mapping[str, Any] | None = None, dataset: str | None = None, max_retries: int = 0
    ) -> int:
        """One error row for a failure the run survives (a unit that failed while the others went on)."""
        return record_error(error, integration=self.integration, dataset=dataset or self.dataset, flow_run_id=self.run_id, unit=unit,
                            retry_count=self.retries, max_retries=max_retries)

    def unit_failed(self, exc: BaseException, *, operation: str, what: str, unit: Mapping[str, Any] | None = None,
                    max_retries: int = 0, then: str = "") -> int:
        """A unit failed and the run goes on with the others: one error row (its id returned) and a log line saying
        what happens to it (`then`); on the rerun of a unit, `fail` (`UnitFailed`): the rerun is of that unit only."""
        if self.resume is not None:
            self.fail(exc, operation=operation, unit=unit, max_retries=max_retries)
        error = classify_exception(exc, integration=self.integration, operation=operation)
        error_id = self.record_failure(error, unit=unit, max_retries=max_retries)
        rerun = f"; just it: `{retry_command(error_id)}`" if unit is not None and has_rerun_handler(unit) else ""
        self.logger.error("%s failed: %s (recorded as integration_errors #%d%s%s)", what, error, error_id, f"; {then}" if then else "", rerun)
        return error_id

    def build_report(self) -> str | None:
        """Data Docs for the validations this run made (GX imported only now)."""
        from expectations.runner import build_data_docs

        settings = get_settings()
        return build_data_docs(settings.data_docs_dir, run_name=self.run_id, keep_runs=settings.data_docs_keep_runs)

    def finish(
        self,
        summary: Summary,
        *,
        rows_checked: int,
        report: bool = True,
        resolve: Sequence[str] = ALL_BUT_VALIDATION,
        note: str | None = None,
        validation_dataset: str | None = None,
    ) -> dict[str, Any]:
        """After a run that did its work: report, the validation-failure row (under `validation_dataset` when the
        refused rows are another dataset's), resolve what it fixed, publish."""
        summary.retries = self.retries
        summary.seconds = round(time.perf_counter() - self.started, 3)
        if report:
            summary.report_path = self.build_report()
        refused = self.refused or {validation_dataset or self.dataset: Refused(rows_checked, summary.quarantined, self.failures, self.sample)}
        for dataset, counts in refused.items() if summary.quarantined else ():
            if counts.quarantined:
                summary.error_ids.append(
                    record_validation_failure(
                        integration=self.integration,
                        dataset=dataset,
                        flow_run_id=self.run_id,
                        rows_checked=counts.checked,
                        rows_quarantined=counts.quarantined,
                        failures_by_expectation=counts.failures,
                        sample=counts.sample,
                        report_path=summary.report_path,
                    )
                )
        for dataset in self.datasets if resolve else ():
            resolved = resolve_open_errors(
                self.integration,
                dataset,
                note=note
                or (
                    f"a later run ({self.run_id}) synced {self.dataset} successfully"
                    if self.resume is None
                    else f"run {self.run_id} resumed the read of integration_errors #{self.resume.get('error_id')} to the end successfully"
                ),
                categories=tuple(resolve),
                actor=flow_actor(self.flow_name),
            )
            if resolved:
                self.logger.info("resolved %d earlier error(s) of %s", resolved, dataset)
        result = summary.as_dict()
        publish_sync_summary(result)
        return result


# --- pull-shaped datasets -----------------------------------------------------------------------------


@task(
    name="apply_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[1.0, 4.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="apply-{dataset}",
)
def apply_batch(dataset: str, spec: PullStream, records: list[dict[str, Any]], cursor: Mapping[str, Any] | None,
                context: ApplyContext) -> Mapping[str, int]:
    """A batch applied by the dataset's own rule, with the cursor (on the last batch), in one transaction."""
    assert spec.apply is not None
    with get_engine().begin() as conn:
        return spec.apply(conn, records, cursor, context)


def run_pull(
    spec: PullStream,
    *,
    full_refresh: bool = False,
    page_size: int | None = None,
    batch_pages: int | None = None,
    resume: Mapping[str, Any] | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """Run one pull-shaped dataset: incremental from its watermark unless `full_refresh`; from a failed unit with `resume`."""
    run = DatasetRun(spec.integration, spec.dataset, spec.flow_name, resume=resume)
    logger = run.logger
    config = integration_config(spec.integration)
    batch_pages = int((resume or {}).get("batch_pages") or batch_pages or spec.batch_pages or config.batch_pages)
    summary = RunSummary(integration=spec.integration, dataset=spec.dataset, flow_run_id=run.run_id)
    first_batch = int(resume.get("batch") or resume.get("page") or 1) if resume is not None else 1
    options = RunOptions(full_refresh=full_refresh, page_size=page_size, parameters=parameters)
    cursor_key = spec.cursor_key(options) if spec.cursor_key is not None else spec.dataset

    cursor: Mapping[str, Any] | None = None
    if resume is not None:
        cursor = resume.get("cursor") or None  # what the failed run read with
    else:
        try:
            with get_engine().connect() as conn:
                cursor = None if full_refresh else read_cursor(conn, spec.integration, cursor_key)
        except Exception as exc:
            # The database is gone before anything was read: no unit to rerun (the next scheduled run
            # starts from the same watermark), but the failure is on the books (spooled while it is down).
            run.fail(exc, operation="read_watermark")

    connector: Connector | None = None
    pending: Any = None
    plan: ReadPlan | None = None
    high_water: Any = None
    position: PagePosition | None = None
    read_started = datetime.now(UTC)
    read_keys: set[Any] = set()
    rerun_batch: int | None = None  # where a rerun starts when it is not the batch that failed
    key_field = spec.stream.primary_key
    try:
        connector = spec.connect(options)
        if resume is not None and resume.get("position") and spec.resumable(PagePosition.from_dict(resume["position"])):
            plan = ReadPlan(
                position=PagePosition.from_dict(resume["position"]),
                mode="resume",
                since=resume.get("since"),
                state={k: v for k, v in resume.items() if k not in UNIT_KEYS},
            )
            logger.info("%s %s: resuming integration_errors #%s at batch %d (%s)", spec.integration, spec.dataset,
                        resume.get("error_id"), first_batch, plan.position.url)
        else:
            # A fresh read; or the rerun of a unit whose position cannot be trusted (recorded before keyset
            # paging), which reads again with the failed run's cursor.
            plan = spec.plan(connector, spec.stream, cursor, options)
            if resume is not None:
                plan.mode = "resume"
        summary.mode, summary.since, summary.read = plan.mode, plan.since, dict(plan.state)
        position = plan.position
        if spec.count:
            summary.source_count = connector.count(spec.stream, position)  # type: ignore[attr-defined]
        logger.info("%s %s: %s sync%s", spec.integration, spec.dataset, summary.mode, f" since {summary.since}" if summary.since else "")
        fetching: PagePosition | None = position
        pending = extract_batch.submit(connector, spec.stream, position, batch_pages)
        while pending is not None:
            clock = time.perf_counter()
            position = fetching  # a failed fetch is recorded with the start of the batch it was fetching
            try:
                batch: ExtractedBatch = pending.result()
            except ResyncRequired:
                if not spec.resync or plan.mode.startswith("full") or cursor is None:
                    raise
                # The source no longer knows the cursor (expired sync token, lost delta state): read it all
                # again. The old watermark stays until the new one commits with the read's last batch.
                logger.warning("%s %s: the source refused the cursor (resync required): running a full read",
                               spec.integration, spec.dataset)
                plan = spec.plan(connector, spec.stream, None, options)
                plan.mode = "full (resync required)"
                summary.mode, summary.since, summary.read = plan.mode, plan.since, dict(plan.state)
                fetching = position = plan.position
                pending = extract_batch.submit(connector, spec.stream, position, batch_pages)
                continue
            clock = summary.timed("extract_wait", clock)
            position = batch.start
            # Start fetching the next batch while this one is mapped, validated and loaded.
            fetching = batch.next
            pending = extract_batch.submit(connector, spec.stream, batch.next, batch_pages) if batch.next else None
            records, duplicates = drop_exact_duplicates(batch.records, key_field)
            summary.duplicates += duplicates
            read_keys.update(k for r in records if (k := r.get(key_field)) is not None)
            summary.distinct_read = len(read_keys)
            last = pending is None
            shortfall = last and summary.source_count is not None and summary.distinct_read < summary.source_count
            if spec.apply is not None:
                new_cursor = spec.next_cursor(plan, batch.end_cursor, read_started) if last and not shortfall else None
                context = ApplyContext(spec.integration, cursor_key, run.run_id, plan, options)
                counts = apply_batch(spec.dataset, quote(spec), quote(records), new_cursor, quote(context))  # type: ignore[call-overload]
                for name, n in counts.items():
                    summary.counts[name] = summary.counts.get(name, 0) + int(n)
                summary.timed("load", clock)
                summary.mapped += len(records)
                summary.valid += len(records)
            else:
                high_water, new_cursor = _load_mapped(spec, run, summary, records, high_water, last and not shortfall,
                                                      plan, cursor, read_started, clock, read_keys)
            summary.batches += 1
            summary.pages += batch.pages
            summary.extracted += len(batch.records)
            if summary.mapped != summary.valid + summary.quarantined or summary.extracted != summary.mapped + summary.duplicates:
                raise SyncFailed(
                    f"row counts do not balance: extracted {summary.extracted} (of which {summary.duplicates} exact "
                    f"duplicates), mapped {summary.mapped}, valid {summary.valid} + quarantined {summary.quarantined}",
                    code="COUNT_IMBALANCE",
                )
            if shortfall:
                position, rerun_batch = plan.position, first_batch  # the whole read is the unit to rerun
                raise SyncFailed(
                    f"the source counted {summary.source_count} {spec.dataset} for this read but only {summary.distinct_read} "
                    "distinct ones were read: the rows read were loaded, the watermark was not moved",
                    code="READ_SHORTFALL",
                )
            if last and new_cursor:
                summary.watermark = _watermark_label(new_cursor)
            logger.info("batch %d: %d records, %d valid, %d quarantined, %d upserted", summary.batches, len(batch.records),
                        summary.valid, summary.quarantined, summary.upserted)
            # Drop this batch before the next one is taken, and hand its pages back to the OS. The list
            # is emptied in place because the extract task's future still refers to the batch object.
            batch.records.clear()
            del batch, records
            release_free_memory()
    except Exception as exc:
        if pending is not None:
            pending.wait()  # let an in-flight extract finish before its client is closed
        unit = {
            "kind": spec.unit_kind,
            "batch": rerun_batch or first_batch + summary.batches,
            "position": position.to_dict() if position else None,
            "mode": summary.mode,
            "cursor": dict(cursor) if cursor else None,
            "since": summary.since,
            "batch_pages": batch_pages,
            **summary.read,
        }
        run.fail(
            exc,
            operation=spec.operation,
            unit=unit,
            max_retries=config.retry.max_retries,
            done=f"at batch {unit['batch']} after {summary.batches} committed batch(es)",
        )
    finally:
        if connector is not None:
            connector.close()

    if spec.full_read_must_find and summary.mode == "full" and summary.extracted == 0:
        error = DataValidationFailed(spec.full_read_must_find, code="EMPTY_DATASET", operation=spec.operation)
        summary.error_ids.append(run.record_failure(error))
        logger.warning(str(error))
    return run.finish(summary, rows_checked=summary.mapped, report=spec.suite is not None, resolve=spec.resolve)


def _load_mapped(
    spec: PullStream,
    run: DatasetRun,
    summary: RunSummary,
    records: list[dict[str, Any]],
    high_water: Any,
    complete: bool,
    plan: ReadPlan,
    cursor: Mapping[str, Any] | None,
    read_started: datetime,
    clock: float,
    read_keys: set[Any],
) -> tuple[Any, dict[str, Any] | None]:
    """Map, validate and upsert one batch; on the read's last batch, with the watermark in the same transaction."""
    assert spec.map is not None and spec.suite is not None and spec.table is not None
    grouped = spec.record_column
    if records:
        frame = map_batch(spec.dataset, spec.map, quote(records), grouped)  # type: ignore[call-overload]
        clock = summary.timed("map", clock)
        outcome = validate_batch(spec.suite, frame, run_name=run.run_id)
        valid, invalid = outcome.valid, outcome.invalid
        record_of = (lambda label: int(frame.at[label, grouped])) if grouped else int
        if grouped and len(invalid):
            # A refused row refuses its record: none of an order's items loads when one of them fails.
            refused_records = frame.loc[invalid.index, grouped].unique()
            valid, invalid = frame[~frame[grouped].isin(refused_records)], frame[frame[grouped].isin(refused_records)]
        quarantine = quarantine_rows(outcome, frame, raw_of=lambda label: records[record_of(label)],
                                     key_of=lambda label: _str_or_none(records[record_of(label)].get(spec.stream.primary_key)),
                                     record_column=grouped, row_name=_row_name(frame, spec.row_label))
        clock = summary.timed("validate", clock)
    else:  # the empty page that ends $top/$skip paging: nothing to map or validate
        frame = valid = invalid = spec.map([])
        quarantine = []
    run.count_quarantined(quarantine)
    # Only rows that load move the watermark: a quarantined row's date (2100, say) never does.
    if spec.high_water is not None and len(valid):
        mark = spec.high_water(valid)
        if mark is not None and not pd.isna(mark):
            high_water = mark if high_water is None else max(high_water, mark)
    new_cursor = spec.next_cursor(plan, high_water, read_started) if complete else None
    if complete and plan.mode == "resume" and spec.keep_cursor_on_resume and not _watermark_unchanged(spec, cursor):
        new_cursor = None  # another run moved the watermark meanwhile: leave it to that run
    rows = valid.drop(columns=[c for c in ("mapping_errors",) if c in valid.columns]).assign(source_run_id=run.run_id)
    # A complete, counted full read knows every key the source holds: the dataset marks what it no longer has.
    finish = None
    if spec.reconcile is not None and complete and plan.mode.startswith("full") and summary.source_count is not None:
        reconcile, seen, run_id = spec.reconcile, frozenset(str(k) for k in read_keys), run.run_id
        finish = lambda conn: reconcile(conn, seen, run_id)  # noqa: E731
    # quote(): Prefect would otherwise walk every record looking for futures (~5 s per 20k rows).
    result: LoadResult = load_batch_task(  # type: ignore[call-overload]
        quote(BatchLoad(
            integration=spec.integration,
            dataset=spec.dataset,
            table=cast("Table", spec.table()),
            key=list(spec.key),
            rows=rows,
            quarantine=quarantine,
            cursor=new_cursor,
            flow_run_id=run.run_id,
            run_upserted_before=summary.upserted,
            raw_of=records.__getitem__,  # a row the database refuses is quarantined with its source record
            write=spec.load,
            record_column=grouped,
            finish=finish,
        ))
    )
    summary.timed("load", clock)
    units = (lambda part: int(part[grouped].nunique())) if grouped else len
    summary.mapped += units(frame)
    summary.valid += units(valid) - result.refused
    summary.quarantined += units(invalid) + result.refused
    summary.refused += result.refused
    summary.upserted += result.upserted
    summary.unchanged += result.unchanged
    for name, n in result.counts.items():
        summary.counts[name] = summary.counts.get(name, 0) + int(n)
    run.count_quarantined(result.refused_rows)
    return high_water, new_cursor


def _row_name(frame: pd.DataFrame, column: str | None) -> Any:
    """How a failure names its row inside a record (`item 20`), for a dataset of several rows per record."""
    if column is None:
        return None
    return lambda label: f"{column} {frame.at[label, column]}"


def _str_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and value != "" else None


def _watermark_label(cursor: Mapping[str, Any]) -> Any:
    """The one value a watermark holds, for the summary (`{"last_change_date": "2026-11-30"}` -> the date)."""
    return next(iter(cursor.values())) if len(cursor) == 1 else dict(cursor)


def _watermark_unchanged(spec: PullStream, read_with: Mapping[str, Any] | None) -> bool:
    with get_engine().connect() as conn:
        current = read_cursor(conn, spec.integration, spec.dataset)
    return (current or None) == (dict(read_with) if read_with else None)
