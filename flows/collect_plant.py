"""Plant OPC UA -> ERP `plant_readings` and `production_batches`, every minute.

Reads top to bottom: extract (the status snapshot and the completed-batch records after the cursor; with
``listen_seconds`` also the data changes of continuous tags over a subscription) -> buffer on local disk
(fsync'd) -> for each buffered chunk, oldest first: map -> validate -> load (rows, quarantine and the batch
cursor in one transaction) -> drop the chunk from the buffer.

The buffer is what makes a database outage harmless: a run that cannot reach the database keeps what it
read on disk and fails loudly; the next run loads it, in order, before anything newer. A run that cannot
reach the plant still flushes what earlier runs buffered. See hub/systems/plant.py for the guarantees.

A failed flush is recorded as a unit (`plant_opcua.buffer.flush`: the buffer file and the seq range that was
waiting). `resume=` reruns exactly that: it reads nothing from the plant and loads the buffered entries up to
that seq, oldest first (the unit is declared in the registry, hub/datasets.py, so `drymix errors retry <id>` reruns
it through this flow); what later runs buffered waits for them. A failed read needs no rerun: past OPC UA values
cannot be read again, and the next minute's run reads the batch records after the cursor anyway. The run logic
every flow shares (error rows, the rerun's `UnitFailed`, Data Docs, the validation-failure rows, resolving
earlier errors, the summary artifact) is the engine's (tasks/engine.py `DatasetRun`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote
from sqlalchemy import Engine

from connectors.core.errors import IntegrationError, InvalidRequest, SyncFailed, classify_exception
from hub.core.db import get_engine
from hub.core.settings import PlantOpcuaConfig, plant_opcua_config
from hub.ledger.buffer import BufferedEntry, DurableBuffer
from hub.ledger.retry_units import PLANT_BUFFER_FLUSH
from hub.systems.plant import (
    BATCHES,
    INTEGRATION,
    READINGS,
    ChunkLoad,
    FlushResult,
    PlantCollection,
    PreparedChunk,
    buffer_collection,
    load_chunk,
    open_buffer,
    prepare_chunk,
    read_plant,
    start_position,
)
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only
from tasks.streams import ALL_BUT_VALIDATION


@dataclass
class CollectSummary:
    """What a run did; published as a Prefect table artifact and printed by the CLI."""

    integration: str = INTEGRATION
    dataset: str = "plant"  # plant_readings and production_batches
    flow_run_id: str | None = None
    since: int | None = None  # batch seq the run collected after
    watermark: int | None = None  # batch cursor committed
    readings_read: int = 0
    subscribed_changes: int = 0
    batches_read: int = 0
    batches_missed: int = 0
    buffered: int = 0
    buffer_pending: int = 0
    extracted: int = 0  # entries flushed from the buffer
    mapped: int = 0
    valid: int = 0
    quarantined: int = 0
    flagged: int = 0
    duplicates: int = 0
    upserted: int = 0
    unchanged: int = 0
    batches: int = 0  # chunks loaded
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)
    batches_note: str | None = None  # e.g. "batches: not declared in config/plant/kepware.toml" (information, not a failure)
    drift_warning: str | None = None  # the tag map and the server disagree (drymix plant tags --check lists it)
    drift: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(name="read_plant", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=[5.0],
      retry_condition_fn=retry_transient_only)
def read_plant_task(config: PlantOpcuaConfig, after_seq: int | None, listen_seconds: float) -> PlantCollection:
    """One OPC UA session: snapshot, optional subscription window, batch records after ``after_seq``."""
    return read_plant(config, after_seq, listen_seconds=listen_seconds)


@task(name="buffer_plant", cache_policy=NO_CACHE, persist_result=False)
def buffer_task(buffer: DurableBuffer, collection: PlantCollection) -> int:
    """Append to the local durable buffer (fsync'd) before anything touches the database."""
    return buffer_collection(buffer, collection)


@task(name="prepare_plant_chunk", cache_policy=NO_CACHE, persist_result=False)
def prepare_task(entries: list[BufferedEntry], stale_after_s: float, run_name: str | None) -> PreparedChunk:
    """Map and validate one buffered chunk (quarantine rows keep their raw record)."""
    return prepare_chunk(entries, stale_after_s=stale_after_s, run_name=run_name)


@task(name="load_plant_chunk", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[1.0, 4.0],
      retry_condition_fn=retry_transient_only)
def load_task(engine: Engine, chunk: PreparedChunk, flow_run_id: str | None) -> ChunkLoad:
    """Rows, quarantine and the batch cursor in one transaction."""
    return load_chunk(engine, chunk, flow_run_id=flow_run_id)


def _record(run: DatasetRun, error: IntegrationError, dataset: str = READINGS, unit: dict[str, Any] | None = None,
            exc: BaseException | None = None) -> list[int]:
    """The error row of a failure the run goes on after; when the database itself is down, the log says so instead
    (and the error waits in the local error spool). Its retry count is the engine's: the OPC UA connector's request
    retries (counted in METRICS like HTTP ones) plus the read and load tasks' Prefect retries."""
    try:
        return [run.record_failure(error, dataset=dataset, unit=unit, max_retries=plant_opcua_config().retry.max_retries, exc=exc)]
    except Exception as exc:  # noqa: BLE001 - the ledger lives in the database that may be the failure
        run.logger.error("could not record the error in integration_errors (%s): %s", classify_exception(exc), error)
        return []


def flush_unit(buffer: DurableBuffer, through_seq: int | None = None) -> dict[str, Any]:
    """The failed flush as a rerunnable unit: the buffer file and the entries that wait in it (up to `through_seq`)."""
    span = buffer.span(through_seq)
    first, last, entries = span if span is not None else (None, through_seq, 0)
    return {"kind": PLANT_BUFFER_FLUSH, "buffer": str(buffer.path), "first_seq": first, "through_seq": last, "entries": entries}


def _resumed_buffer(run: DatasetRun, resume: dict[str, Any], config: PlantOpcuaConfig) -> DurableBuffer:
    path = Path(resume["buffer"]) if resume.get("buffer") else config.buffer_dir / "plant_buffer.sqlite3"
    if not path.is_file():
        # The buffer is local to the worker that collects the plant; a rerun elsewhere cannot see it.
        run.fail(InvalidRequest(
            f"the plant buffer {path} is not on this machine: rerun integration_errors #{resume.get('error_id')} "
            "on the worker that runs collect-plant",
            code="BUFFER_NOT_FOUND",
        ), operation="load_plant")
    return DurableBuffer(path)


@flow(name="collect-plant", description="Plant OPC UA status and completed batches into plant_readings and production_batches.")
def collect_plant(listen_seconds: float = 0.0, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect from the plant, buffer durably, flush the buffer in order into the ERP; with `resume`, only load
    the buffered entries of a failed flush."""
    # Errors are recorded under plant_readings; a success resolves those of both datasets.
    run = DatasetRun(INTEGRATION, READINGS, "collect-plant", resume=resume, datasets=(READINGS, BATCHES))
    logger = run.logger
    config = plant_opcua_config()
    engine = get_engine()
    run_id = run.run_id
    summary = CollectSummary(flow_run_id=run_id)
    buffer = open_buffer(config) if resume is None else _resumed_buffer(run, resume, config)
    through_seq = int(resume["through_seq"]) if resume is not None and resume.get("through_seq") is not None else None
    read_error: IntegrationError | None = None
    read_exc: BaseException | None = None  # what the read raised: the error row's stack trace

    # --- extract: from the plant into the durable buffer (a rerun of a failed flush reads nothing) -----
    if resume is not None:
        logger.info("plant: rerun of integration_errors #%s: loading the buffered entries through seq %s; nothing is read from the plant",
                    resume.get("error_id"), through_seq)
    else:
        position = start_position(engine, buffer)
        summary.since = position.after_seq
        if not position.database_ok:
            logger.warning("database unreachable (%s): collecting after buffered batch seq %s", position.database_error, position.after_seq)
        try:
            collection = read_plant_task(quote(config), position.after_seq, listen_seconds)  # type: ignore[call-overload]
            summary.readings_read = len(collection.readings)
            summary.subscribed_changes = collection.subscribed_changes
            summary.batches_read = len(collection.batches)
            summary.batches_missed = collection.missed
            summary.buffered = buffer_task(buffer, quote(collection))  # type: ignore[call-overload]
            summary.batches_note = collection.batches_note
            summary.drift_warning = collection.drift_warning
            summary.drift = collection.drift
            if collection.batches_note:
                (logger.info if not collection.batches_declared else logger.warning)("plant: %s", collection.batches_note)
            if collection.drift_warning:
                logger.warning("plant: %s (drymix plant tags --check lists it)", collection.drift_warning)
            if collection.missed:
                gap = SyncFailed(
                    f"{collection.missed} batch record(s) after seq {position.after_seq} were overwritten in the server's ring "
                    "before they were collected: raise the ring size on the PLC or collect more often",
                    code="BATCH_RECORDS_MISSED",
                    operation="read_batches",
                )
                summary.error_ids += _record(run, gap, BATCHES, {"after_seq": position.after_seq})
            logger.info("plant: %d readings (%d from the subscription), %d new batch records (counter %d) buffered",
                        summary.readings_read, summary.subscribed_changes, summary.batches_read, collection.counter)
        except Exception as exc:  # noqa: BLE001 - classified; the buffer is flushed before the run fails
            read_error, read_exc = classify_exception(exc, integration=INTEGRATION, operation="collect_plant"), exc
            logger.error("reading the plant failed: %s. %s Buffered entries are still flushed.", read_error, read_error.remedy)

    # --- map, validate, load: every buffered chunk (up to the failed flush's last entry), oldest first ----
    result = FlushResult()
    try:
        while entries := buffer.pending(config.flush_chunk, through_seq=through_seq):
            chunk = prepare_task(quote(entries), config.stale_after_s, run_id)  # type: ignore[call-overload]
            loaded = load_task(engine, quote(chunk), run_id)  # type: ignore[call-overload]
            buffer.remove_through(chunk.last_seq)  # only after the commit
            result.add(chunk, loaded)
    except Exception as exc:
        error = classify_exception(exc, integration=INTEGRATION, operation="load_plant")
        if resume is None:
            error.message = f"{error.message}; {buffer.count()} entries stay in the local buffer and load on the next run"
        if error is not exc:
            error.__cause__ = exc
        run.fail(error, operation="load_plant", unit=flush_unit(buffer, through_seq), max_retries=config.retry.max_retries,
                 done=f"after {result.chunks} loaded chunk(s)")

    summary.batches = result.chunks
    summary.extracted = result.entries
    summary.duplicates = result.duplicates
    summary.mapped = result.entries - result.duplicates
    summary.quarantined = result.quarantined
    summary.valid = summary.mapped - result.quarantined
    summary.flagged = result.flagged
    summary.upserted = result.readings_upserted + result.batches_upserted
    summary.unchanged = result.readings_unchanged + result.batches_unchanged
    summary.watermark = result.batch_seq
    summary.buffer_pending = buffer.count()
    if summary.valid != summary.upserted + summary.unchanged:
        raise SyncFailed(
            f"row counts do not balance: {summary.valid} valid, {summary.upserted} upserted + {summary.unchanged} unchanged",
            code="COUNT_IMBALANCE",
        )
    # One validation-failure row per dataset: each links (and is resolved by a replay of) its own quarantined rows.
    for dataset in (READINGS, BATCHES):
        run.count_refused(
            dataset,
            checked=result.checked_by_dataset.get(dataset, 0),
            quarantined=result.quarantined_by_dataset.get(dataset, 0),
            failures={k: n for k, n in result.failures_by_expectation.items() if k.startswith(f"{dataset}.")},
            sample=[s for s in result.sample if s["dataset"] == dataset],
        )
    if read_error is not None:
        summary.error_ids += _record(run, read_error, exc=read_exc)
    else:
        logger.info("plant: %d entries loaded (%d upserted, %d unchanged, %d quarantined, %d flagged), batch cursor %s",
                    summary.extracted, summary.upserted, summary.unchanged, summary.quarantined, summary.flagged, summary.watermark)
    done = run.finish(
        summary,
        rows_checked=summary.mapped,
        report=bool(result.chunks),
        resolve=ALL_BUT_VALIDATION if read_error is None and resume is None else (),
        note=f"a later run ({run_id}) collected the plant",
    )
    if read_error is not None:
        raise read_error
    return done
