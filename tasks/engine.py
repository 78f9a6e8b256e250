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

import threading
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
from connectors.core.gcpause import freeze_long_lived, long_lived_frozen
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
from tasks import extract_process
from tasks.extract import (
    ExtractedBatch,
    ReadKeys,
    drop_exact_duplicates,
    drop_mapped_duplicates,
    extract_batch,
)
from tasks.extract_process import ExtractProcess
from tasks.load import load_batch_task
from tasks.report import publish_error_row, publish_sync_summary
from tasks.retry import retry_transient_only, task_retries
from tasks.streams import ALL_BUT_VALIDATION, ApplyContext, PullStream, ReadPlan, RunOptions
from tasks.transform import validate_batch

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
    # CPU seconds of the thread that ran each stage: the stages overlap (a batch is mapped while the one before
    # is validated and loaded), so a stage's clock also holds time it waited for the other's share of the GIL.
    stage_cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("map", "validate", "load"), 0.0))
    counts: dict[str, int] = field(default_factory=dict)  # a dataset's own counts (applied, stale, ...)
    read: dict[str, Any] = field(default_factory=dict)  # what the read covered beyond `since` (a time window, ...)

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + now - since, 3)
        return now

    def cpu_timed(self, stage: str, since: float) -> float:
        """`timed` for this thread's CPU seconds (`time.thread_time()`)."""
        now = time.thread_time()
        self.stage_cpu_seconds[stage] = round(self.stage_cpu_seconds.get(stage, 0.0) + now - since, 3)
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
        self.retries_elsewhere = 0  # retries the run's partitions made in their own processes (tasks/partitions.py)
        self.failures: dict[str, int] = {}
        self.sample: list[dict[str, Any]] = []
        self.refused: dict[str, Refused] = {}  # a run of several datasets: what each one refused (count_refused)

    @property
    def retries(self) -> int:
        """HTTP retries this process made for the integration since the run started, plus every retry its partitions
        made in theirs."""
        return METRICS.total(self.integration, "retries") - self._retries_before + self.retries_elsewhere

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
            # What retried before the run gave up: the connector's HTTP retries and Prefect's task retries.
            retry_count=self.retries + task_retries(self.run_id),
            max_retries=max_retries,
            exc=exc,
        )
        hint = publish_error_row(error, error_id, integration=self.integration, dataset=self.dataset,
                                 unit=dict(unit) if unit is not None else None, rerun_hint=rerun_hint)
        self.logger.error("%s %s failed%s: %s. %s (%s)", self.integration, self.dataset, f" {done}" if done else "", error, error.remedy, hint)
        if error is exc:
            raise error
        raise error from exc

    def record_failure(
        self, error: IntegrationError, *, unit: Mapping[str, Any] | None = None, dataset: str | None = None, max_retries: int = 0,
        exc: BaseException | None = None,
    ) -> int:
        """One error row for a failure the run survives (a unit that failed while the others went on); its retry count is
        the run's HTTP retries plus its Prefect task retries so far, its stack trace `exc`'s (else `error`'s)."""
        return record_error(error, integration=self.integration, dataset=dataset or self.dataset, flow_run_id=self.run_id, unit=unit,
                            retry_count=self.retries + task_retries(self.run_id), max_retries=max_retries, exc=exc)

    def unit_failed(self, exc: BaseException, *, operation: str, what: str, unit: Mapping[str, Any] | None = None,
                    max_retries: int = 0, then: str = "") -> int:
        """A unit failed and the run goes on with the others: one error row (its id returned) and a log line saying
        what happens to it (`then`); on the rerun of a unit, `fail` (`UnitFailed`): the rerun is of that unit only."""
        if self.resume is not None:
            self.fail(exc, operation=operation, unit=unit, max_retries=max_retries)
        error = classify_exception(exc, integration=self.integration, operation=operation)
        error_id = self.record_failure(error, unit=unit, max_retries=max_retries, exc=exc)
        rerun = f"; just it: `{retry_command(error_id)}`" if unit is not None and has_rerun_handler(unit) else ""
        self.logger.error("%s failed: %s (recorded as integration_errors #%d%s%s)", what, error, error_id, f"; {then}" if then else "", rerun)
        return error_id

    def build_report(self) -> str | None:
        """Data Docs for the validations this run made (GX imported only now)."""
        from expectations.runner import build_data_docs
        from hub.ledger.report_targets import quarantine_target

        settings = get_settings()
        # The registry tells the report where refused rows are quarantined and what keys them.
        return build_data_docs(settings.data_docs_dir, run_name=self.run_id, keep_runs=settings.data_docs_keep_runs,
                               quarantine=quarantine_target)

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


def pages_per_batch(spec: PullStream, integration_pages: int, requested: int | None = None,
                    resume: Mapping[str, Any] | None = None) -> int:
    """A read's pages per batch: a rerun's recorded size, else the one asked for (`--batch-pages`), else the
    dataset's own (its code's, then its configuration's), else the integration's configured `batch_pages`."""
    configured = spec.configured_batch_pages() if spec.configured_batch_pages is not None else None
    return int((resume or {}).get("batch_pages") or requested or spec.batch_pages or configured or integration_pages)


@long_lived_frozen
def run_pull(
    spec: PullStream,
    *,
    full_refresh: bool = False,
    page_size: int | None = None,
    batch_pages: int | None = None,
    resume: Mapping[str, Any] | None = None,
    partitions: int = 1,
    cluster: str | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """Run one pull-shaped dataset: incremental from its watermark unless `full_refresh`; from a failed unit with `resume`.

    `partitions` > 1 splits a full read into key ranges read in parallel processes (tasks/partitions.py): the
    watermark commits only after every partition committed, and a failed partition is its own unit to rerun.
    """
    run = DatasetRun(spec.integration, spec.dataset, spec.flow_name, resume=resume)
    logger = run.logger
    single = partitions <= 1 or resume is not None  # a partitioned read validates in its partitions' processes
    config = integration_config(spec.integration)
    if single and not (config.extract_process and spec.map is not None):
        start_preload(spec, logger)  # else once the extract process is forked: no import under way at the fork
    batch_pages = pages_per_batch(spec, config.batch_pages, batch_pages, resume)
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
    read = Read(cursor=cursor, batch_pages=batch_pages, first_batch=first_batch, read_started=datetime.now(UTC))
    try:
        connector = spec.connect(options)
        if resume is not None and resume.get("position") and spec.resumable(PagePosition.from_dict(resume["position"])):
            read.plan = ReadPlan(
                position=PagePosition.from_dict(resume["position"]),
                mode="resume",
                since=resume.get("since"),
                state={k: v for k, v in resume.items() if k not in UNIT_KEYS},
            )
            logger.info("%s %s: resuming integration_errors #%s at batch %d (%s)", spec.integration, spec.dataset,
                        resume.get("error_id"), first_batch, read.plan.position.url)
        else:
            # A fresh read; or the rerun of a unit whose position cannot be trusted (recorded before keyset
            # paging), which reads again with the failed run's cursor.
            read.plan = spec.plan(connector, spec.stream, cursor, options)
            if resume is not None:
                read.plan.mode = "resume"
        summary.mode, summary.since, summary.read = read.plan.mode, read.plan.since, dict(read.plan.state)
        read.position = read.plan.position
        if single:
            read.process = extract_process.start(config.extract_process, connector, spec.stream,
                                                 spec.map if spec.apply is None else None, spec.record_column, logger)
            start_preload(spec, logger)
        if partitions > 1 and resume is None:
            from tasks.partitions import run_partitioned

            return run_partitioned(spec, run, summary, connector, read, options, partitions=partitions, cluster=cluster)
        read_all(spec, run, summary, connector, read, options)
    except Exception as exc:
        if read.pending is not None:
            read.pending.wait()  # let an in-flight extract finish before its client is closed
        if getattr(exc, "code", None) == "PARTITIONS_FAILED":
            raise  # each failed partition is recorded as its own unit already
        unit = read.unit(spec, summary)
        run.fail(
            exc,
            operation=spec.operation,
            unit=unit,
            max_retries=config.retry.max_retries,
            done=f"at batch {unit['batch']} after {summary.batches} committed batch(es)",
        )
    finally:
        if read.process is not None:
            read.process.close()
        if connector is not None:
            connector.close()
    return finish_pull(spec, run, summary)


def finish_pull(spec: PullStream, run: DatasetRun, summary: RunSummary) -> dict[str, Any]:
    """After a read that did its work: an empty full read on the books, then the run's report and summary."""
    if spec.full_read_must_find and summary.mode == "full" and summary.extracted == 0:
        error = DataValidationFailed(spec.full_read_must_find, code="EMPTY_DATASET", operation=spec.operation)
        summary.error_ids.append(run.record_failure(error))
        run.logger.warning(str(error))
    return run.finish(summary, rows_checked=summary.mapped, report=spec.suite is not None, resolve=spec.resolve)


@dataclass
class Read:
    """Where one read is: its plan, the batch it is at, what it has read. A run has one; so does each partition."""

    cursor: Mapping[str, Any] | None  # the watermark the read started from
    batch_pages: int
    first_batch: int
    read_started: datetime
    plan: ReadPlan | None = None
    position: PagePosition | None = None  # the start of the batch in hand (or being fetched)
    high_water: Any = None
    read_keys: ReadKeys = field(default_factory=ReadKeys)
    rerun_batch: int | None = None  # where a rerun starts when it is not the batch that failed
    pending: Any = None  # the next batch's extract future
    process: ExtractProcess | None = None  # the run's extract process, when it reads in one (tasks/extract_process.py)
    commit: bool = True  # False in a partition: the run commits the watermark after every partition committed

    def unit(self, spec: PullStream, summary: RunSummary) -> dict[str, Any]:
        """The failed unit a rerun resumes from."""
        return {
            "kind": spec.unit_kind,
            "batch": self.rerun_batch or self.first_batch + summary.batches,
            "position": self.position.to_dict() if self.position else None,
            "mode": summary.mode,
            "cursor": dict(self.cursor) if self.cursor else None,
            "since": summary.since,
            "batch_pages": self.batch_pages,
            **summary.read,
        }


def read_all(spec: PullStream, run: DatasetRun, summary: RunSummary, connector: Connector, read: Read, options: RunOptions) -> None:
    """Read from `read.plan` to the end, batch by batch, each committed (the last with the watermark, when `read.commit`)."""
    assert read.plan is not None and read.position is not None
    logger = run.logger
    plan = read.plan
    batch_pages = read.batch_pages
    if spec.count:
        summary.source_count = connector.count(spec.stream, plan.position)  # type: ignore[attr-defined]
    logger.info("%s %s: %s sync%s", spec.integration, spec.dataset, summary.mode, f" since {summary.since}" if summary.since else "")
    start_preload(spec, logger)
    key_field = spec.stream.primary_key
    fetching: PagePosition | None = read.position
    # A mapped dataset's pages are mapped as they arrive, in the extract task (tasks/extract.py says why).
    mapper = spec.map if spec.apply is None else None
    read.pending = extract_batch.submit(connector, spec.stream, read.position, batch_pages, mapper, spec.record_column, read.process)
    while read.pending is not None:
        clock = time.perf_counter()
        read.position = fetching  # a failed fetch is recorded with the start of the batch it was fetching
        try:
            batch: ExtractedBatch = read.pending.result()
        except ResyncRequired:
            if not spec.resync or plan.mode.startswith("full") or read.cursor is None:
                raise
            # The source no longer knows the cursor (expired sync token, lost delta state): read it all
            # again. The old watermark stays until the new one commits with the read's last batch.
            logger.warning("%s %s: the source refused the cursor (resync required): running a full read",
                           spec.integration, spec.dataset)
            plan = read.plan = spec.plan(connector, spec.stream, None, options)
            plan.mode = "full (resync required)"
            summary.mode, summary.since, summary.read = plan.mode, plan.since, dict(plan.state)
            fetching = read.position = plan.position
            read.pending = extract_batch.submit(connector, spec.stream, read.position, batch_pages, mapper, spec.record_column, read.process)
            continue
        clock = summary.timed("extract_wait", clock)
        read.position = batch.start
        # Start fetching the next batch while this one is validated and loaded.
        fetching = batch.next
        read.pending = extract_batch.submit(connector, spec.stream, batch.next, batch_pages, mapper, spec.record_column, read.process) if batch.next else None
        if spec.apply is not None:
            records, duplicates = drop_exact_duplicates(batch.records, key_field)
            read.read_keys.add(str(k) for r in records if (k := r.get(key_field)) is not None)
        else:
            duplicates = drop_mapped_duplicates(batch, spec.record_column)
            read.read_keys.add(batch.keys)
            summary.stage_seconds["map"] = round(summary.stage_seconds["map"] + batch.map_seconds, 3)
            summary.stage_cpu_seconds["map"] = round(summary.stage_cpu_seconds["map"] + batch.map_cpu_seconds, 3)
        summary.duplicates += duplicates
        last = read.pending is None
        if last:
            summary.distinct_read = len(read.read_keys)  # counted once: a million keys take a moment
        shortfall = last and summary.source_count is not None and summary.distinct_read < summary.source_count
        complete = last and not shortfall and read.commit
        if spec.apply is not None:
            new_cursor = spec.next_cursor(plan, batch.end_cursor, read.read_started) if complete else None
            context = ApplyContext(spec.integration, spec.cursor_key(options) if spec.cursor_key is not None else spec.dataset,
                                   run.run_id, plan, options)
            counts = apply_batch(spec.dataset, quote(spec), quote(records), new_cursor, quote(context))  # type: ignore[call-overload]
            for name, n in counts.items():
                summary.counts[name] = summary.counts.get(name, 0) + int(n)
            summary.timed("load", clock)
            summary.mapped += len(records)
            summary.valid += len(records)
        else:
            read.high_water, new_cursor = _load_mapped(spec, run, summary, batch, read.high_water, complete,
                                                       plan, read.cursor, read.read_started, clock, read.read_keys)
        summary.batches += 1
        summary.pages += batch.pages
        summary.extracted += batch.read
        if summary.mapped != summary.valid + summary.quarantined or summary.extracted != summary.mapped + summary.duplicates:
            raise SyncFailed(
                f"row counts do not balance: extracted {summary.extracted} (of which {summary.duplicates} exact "
                f"duplicates), mapped {summary.mapped}, valid {summary.valid} + quarantined {summary.quarantined}",
                code="COUNT_IMBALANCE",
            )
        if shortfall:
            read.position, read.rerun_batch = plan.position, read.first_batch  # the whole read is the unit to rerun
            raise SyncFailed(
                f"the source counted {summary.source_count} {spec.dataset} for this read but only {summary.distinct_read} "
                "distinct ones were read: the rows read were loaded, the watermark was not moved",
                code="READ_SHORTFALL",
            )
        if last and new_cursor:
            summary.watermark = _watermark_label(new_cursor)
        logger.info("batch %d: %d records, %d valid, %d quarantined, %d upserted", summary.batches, batch.read,
                    summary.valid, summary.quarantined, summary.upserted)
        # Drop this batch before the next one is taken, and hand its pages back to the OS. It is emptied
        # in place because the extract task's future still refers to the batch object.
        batch.release()
        del batch
        release_free_memory()


def _load_mapped(
    spec: PullStream,
    run: DatasetRun,
    summary: RunSummary,
    batch: ExtractedBatch,
    high_water: Any,
    complete: bool,
    plan: ReadPlan,
    cursor: Mapping[str, Any] | None,
    read_started: datetime,
    clock: float,
    read_keys: ReadKeys,
) -> tuple[Any, dict[str, Any] | None]:
    """Validate and upsert one mapped batch; on the read's last batch, with the watermark in the same transaction."""
    assert spec.map is not None and spec.suite is not None and spec.table is not None and batch.frame is not None
    grouped = spec.record_column
    frame = batch.frame
    cpu = time.thread_time()
    if len(frame):
        outcome = validate_batch(spec.suite, frame, run_name=run.run_id)
        valid, invalid = outcome.valid, outcome.invalid
        record_of = (lambda label: int(frame.at[label, grouped])) if grouped else int
        if grouped and len(invalid):
            # A refused row refuses its record: none of an order's items loads when one of them fails.
            refused_records = frame.loc[invalid.index, grouped].unique()
            valid, invalid = frame[~frame[grouped].isin(refused_records)], frame[frame[grouped].isin(refused_records)]
        quarantine = quarantine_rows(outcome, frame, raw_of=lambda label: batch.source_record(record_of(label)),
                                     key_of=lambda label: batch.keys[record_of(label)],
                                     record_column=grouped, row_name=_row_name(frame, spec.row_label))
        batch.raw.close_page()  # the refused records are read; the load asks again only for a row the database refuses
        clock = summary.timed("validate", clock)
        cpu = summary.cpu_timed("validate", cpu)
    else:  # the empty page that ends $top/$skip paging: nothing to validate
        valid = invalid = frame
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
    if new_cursor is not None and plan.state.get("partition_run"):
        # The rerun of one partition of a partitioned read: the watermark that read would have written, and only
        # once no other partition of it waits for its rerun (tasks/partitions.py).
        from tasks.partitions import last_open_partition

        last = last_open_partition(spec.integration, spec.dataset, plan.state["partition_run"], run.resume and run.resume.get("error_id"))
        new_cursor = dict(plan.state["pending_cursor"]) if last and plan.state.get("pending_cursor") else None
    rows = valid.drop(columns=[c for c in ("mapping_errors",) if c in valid.columns]).assign(source_run_id=run.run_id)
    # A complete, counted full read knows every key the source holds: the dataset marks what it no longer has.
    finish = None
    if spec.reconcile is not None and complete and plan.mode.startswith("full") and summary.source_count is not None:
        reconcile, seen, run_id = spec.reconcile, read_keys.as_frozenset(), run.run_id
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
            raw_of=batch.source_record,  # a row the database refuses is quarantined with its source record
            write=spec.load,
            record_column=grouped,
            finish=finish,
        ))
    )
    summary.timed("load", clock)
    summary.cpu_timed("load", cpu)
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


_preloads: set[str] = set()
_preloads_lock = threading.Lock()


def start_preload(spec: PullStream, logger: Any) -> None:
    """Great Expectations' import and the suite's registration (~4 s in a fresh process), in a thread of their own
    while the run reads its watermark, connects and fetches its first pages; once per suite and process."""
    if spec.suite is None:
        return
    with _preloads_lock:
        if spec.suite in _preloads:
            return
        _preloads.add(spec.suite)
    threading.Thread(target=_preload_suite, args=(spec.suite, logger), name=f"preload-{spec.suite}", daemon=True).start()


def _preload_suite(suite: str, logger: Any) -> None:
    from expectations.runner import preload

    try:
        preload(suite)
    except Exception as exc:  # the first batch's validation raises it again, where it is classified and recorded
        logger.warning("preloading the %s suite failed: %s", suite, exc)
        with _preloads_lock:
            _preloads.discard(suite)  # the next run tries again
        return
    freeze_long_lived()  # Great Expectations' modules and the suite live as long as the process


def _row_name(frame: pd.DataFrame, column: str | None) -> Any:
    """How a failure names its row inside a record (`item 20`), for a dataset of several rows per record."""
    if column is None:
        return None
    return lambda label: f"{column} {frame.at[label, column]}"


def _watermark_label(cursor: Mapping[str, Any]) -> Any:
    """The one value a watermark holds, for the summary (`{"last_change_date": "2026-11-30"}` -> the date)."""
    return next(iter(cursor.values())) if len(cursor) == 1 else dict(cursor)


def _watermark_unchanged(spec: PullStream, read_with: Mapping[str, Any] | None) -> bool:
    with get_engine().connect() as conn:
        current = read_cursor(conn, spec.integration, spec.dataset)
    return (current or None) == (dict(read_with) if read_with else None)
