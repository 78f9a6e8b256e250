"""Plant collection steps shared by the flow, the CLI and the tests (no Prefect here).

read (OPC UA) -> buffer (local disk, fsync'd) -> per chunk, oldest first: map -> validate -> load
(one database transaction with the batch cursor) -> remove the chunk from the buffer.

Nothing is lost and nothing is doubled across failures:

* the server down: nothing new is buffered; what is already buffered still flushes.
* the database down: readings and batch records wait in the buffer (the next batch position comes from the
  buffer's own meta when sync_state cannot be read) and flush in order once it is back.
* a crash between the commit and the buffer removal: the chunk loads again; readings are keyed by
  ``reading_key`` and batches by ``batch_id``, so the upserts change nothing.
* the OPC UA server restarted: its batch counter and ring survive (sandbox state file, a PLC's retained
  memory in a real plant); records are collected by sequence number after the cursor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Engine, Table

from connectors.core.errors import classify_exception
from hub.core.models import PlantReading, ProductionBatch
from hub.core.settings import PlantOpcuaConfig
from hub.ledger.buffer import BufferedEntry, DurableBuffer
from hub.ledger.loading import (
    BatchLoad,
    QuarantineRow,
    count_failures,
    load_batch,
    quarantine_rows,
    read_cursor,
)

if TYPE_CHECKING:
    import pandas as pd

    from connectors.plant import PlantConnector
    from expectations.runner import ValidationOutcome

logger = logging.getLogger(__name__)
T = TypeVar("T")

INTEGRATION = "plant_opcua"
READINGS = "plant_readings"
BATCHES = "production_batches"
READING, BATCH = "reading", "batch"
BATCH_SEQ_META = "batch_seq_buffered"


@dataclass
class PlantCollection:
    """What one visit to the OPC UA server brought back (JSON-safe records)."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    after_seq: int | None = None
    counter: int = 0
    missed: int = 0
    counter_reset: bool = False
    subscribed_changes: int = 0
    batches_note: str | None = None  # one line when batch collection was skipped (not declared, not on the server)
    batches_declared: bool = True
    drift: dict[str, Any] | None = None  # TagDrift.as_dict() when the map and the server disagree
    drift_warning: str | None = None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the calling thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def collect_from_plant(plant: PlantConnector, after_seq: int | None, *, listen_seconds: float = 0.0) -> PlantCollection:
    """The status snapshot of the mapped tags, optionally the changes of the subscription-sampled ones for a
    while, and new batch records when the map declares them and the server has them.

    Drift (mapped tags missing on the server, unmapped variables, unit disagreements) is reported, never a
    failure: the tags that are there are collected. Batches not declared in the map are skipped with one
    informational line; declared but absent on the server, with a warning line.
    """
    collection = PlantCollection(after_seq=after_seq)
    collection.readings = [r.to_record() for r in await plant.read_snapshot()]
    drift = plant.drift
    if not drift.clean:
        collection.drift = drift.as_dict()
        collection.drift_warning = drift.summary()
    if listen_seconds > 0:
        tags = [t for t in await plant.status_tags() if t.sampling == "subscription"]
        if tags:
            subscription = await plant.subscribe(tags)
            try:
                changes = await subscription.collect(listen_seconds)
            finally:
                await subscription.close()
            collection.subscribed_changes = len(changes)
            collection.readings.extend(r.to_record() for r in changes)
    if not plant.batches_declared:
        collection.batches_declared = False
        collection.batches_note = f"batches: not declared in {plant.tag_map.path}"
        return collection
    if drift.batches:
        collection.batches_note = f"{drift.batches}; batch collection skipped"
        return collection
    batches = await plant.read_batches(after_seq)
    collection.batches = batches.records
    collection.counter = batches.counter
    collection.missed = batches.missed
    collection.counter_reset = batches.counter_reset
    return collection


def read_plant(config: PlantOpcuaConfig, after_seq: int | None, *, listen_seconds: float = 0.0) -> PlantCollection:
    """Open a session, collect, close (synchronous entry point for flows and the CLI)."""
    from hub.runtime.connections import build_plant_connector

    async def _run() -> PlantCollection:
        async with build_plant_connector(config) as plant:
            return await collect_from_plant(plant, after_seq, listen_seconds=listen_seconds)

    return run_async(_run())


def open_buffer(config: PlantOpcuaConfig) -> DurableBuffer:
    return DurableBuffer(config.buffer_dir / "plant_buffer.sqlite3")


@dataclass(frozen=True)
class StartPosition:
    after_seq: int | None
    database_ok: bool
    database_error: str | None = None


def start_position(engine: Engine, buffer: DurableBuffer) -> StartPosition:
    """Collect batches after the later of the committed cursor and what is already buffered.

    When the database cannot be read, the buffer's own position is enough: nothing after it has been
    collected, and everything up to it waits in the buffer or is committed.
    """
    buffered = buffer.get_meta(BATCH_SEQ_META)
    try:
        with engine.connect() as conn:
            cursor = read_cursor(conn, INTEGRATION, BATCHES) or {}
    except Exception as exc:  # noqa: BLE001 - classified; an unreachable database is expected here
        error = classify_exception(exc, integration=INTEGRATION, operation="read_cursor")
        return StartPosition(after_seq=int(buffered) if buffered is not None else None, database_ok=False, database_error=str(error))
    known = [int(v) for v in (cursor.get("batch_seq"), buffered) if v is not None]
    return StartPosition(after_seq=max(known) if known else None, database_ok=True)


def buffer_collection(buffer: DurableBuffer, collection: PlantCollection) -> int:
    """Append the collection to the durable buffer (readings first, then batches by seq) in one commit."""
    entries: list[tuple[str, dict[str, Any]]] = [(READING, r) for r in collection.readings]
    entries.extend((BATCH, b) for b in sorted(collection.batches, key=lambda b: int(b.get("seq") or 0)))
    meta: dict[str, Any] = {}
    if collection.batches:
        meta[BATCH_SEQ_META] = max(int(b.get("seq") or 0) for b in collection.batches)
    elif collection.counter_reset:
        meta[BATCH_SEQ_META] = collection.counter
    if not entries and not meta:
        return 0
    return buffer.append(entries, meta)


# ---------------------------------------------------------------------- per chunk: map, validate, load


@dataclass
class PreparedChunk:
    """One chunk of buffered entries, mapped and validated, ready for one transaction."""

    last_seq: int
    entries: int
    readings: pd.DataFrame
    batches: pd.DataFrame
    reading_quarantine: list[QuarantineRow]
    batch_quarantine: list[QuarantineRow]
    duplicates: int
    flagged: int
    failures_by_expectation: dict[str, int]
    sample: list[dict[str, Any]]
    max_batch_seq: int | None
    last_collected_at: str | None
    raw_readings: list[dict[str, Any]] = field(default_factory=list)  # frame index -> raw record (for a row the database refuses)
    raw_batches: list[dict[str, Any]] = field(default_factory=list)


def map_entries(entries: Sequence[BufferedEntry], stale_after_s: float) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """Buffered entries -> (readings frame, batches frame, raw readings, raw batches); frame index = raw position."""
    from data_mappings.plant import map_plant_readings, map_production_batches

    raw_readings = [e.payload for e in entries if e.kind == READING]
    raw_batches = [e.payload for e in entries if e.kind == BATCH]
    return (
        map_plant_readings(raw_readings, stale_after_s=stale_after_s),
        map_production_batches(raw_batches),
        raw_readings,
        raw_batches,
    )


def validate_plant(dataset: str, frame: pd.DataFrame, run_name: str | None) -> ValidationOutcome:
    from expectations.plant import batches_suite, readings_suite
    from expectations.runner import validate_frame

    suite = readings_suite() if dataset == READINGS else batches_suite()
    return validate_frame(dataset, frame, suite=suite, run_name=run_name)


def flagged_valid(dataset: str, outcome: ValidationOutcome) -> tuple[pd.DataFrame, int]:
    """The rows that pass, with the warning rules they broke added to `quality_flags`; and how many got a flag.

    A batch dosed off target is loaded and flagged, not refused: it happened and must stay traceable.
    """
    from data_mappings.plant import add_quality_flags
    from expectations.plant import FLAG_FOR_RULE

    flags: dict[Any, list[str]] = {}
    for label, items in outcome.warnings.items():
        if label in outcome.valid.index:
            names = [FLAG_FOR_RULE[f.rule_id] for f in items if f.rule_id in FLAG_FOR_RULE]
            if names:
                flags[label] = names
    return add_quality_flags(outcome.valid, flags, batches=dataset == BATCHES), len(flags)


def _quarantine_rows(dataset: str, frame: pd.DataFrame, raw: list[dict[str, Any]], outcome: ValidationOutcome) -> list[QuarantineRow]:
    """Refused readings or batches with their raw record, keyed by reading key or batch id."""
    key_column = "reading_key" if dataset == READINGS else "batch_id"

    def key_of(label: Any) -> str | None:
        key = frame.at[label, key_column]
        return key if isinstance(key, str) else None

    return quarantine_rows(outcome, frame, raw_of=lambda label: raw[int(label)], key_of=key_of)


def _failure_counts(dataset: str, rows: Sequence[QuarantineRow]) -> dict[str, int]:
    """`count_failures` with every name under its dataset (the run's counts hold both datasets)."""
    prefix = f"{dataset}."
    return {name if name.startswith(prefix) else prefix + name: n for name, n in count_failures(rows).items()}


def _add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, n in other.items():
        into[name] = into.get(name, 0) + n


def prepare_chunk(entries: Sequence[BufferedEntry], *, stale_after_s: float, run_name: str | None) -> PreparedChunk:
    """Map and validate one chunk; refused rows become quarantine rows with their raw record."""
    readings, batches, raw_readings, raw_batches = map_entries(entries, stale_after_s)
    before = len(readings) + len(batches)
    # The same reading or the same batch record collected twice (e.g. re-read while the database was away)
    # is one row: keep the latest copy, so that the batch-id uniqueness rule sees real conflicts only.
    readings = readings.drop_duplicates(subset=["reading_key"], keep="last")
    batches = batches.drop_duplicates(subset=["batch_id", "row_hash"], keep="last")
    duplicates = before - len(readings) - len(batches)
    counts: dict[str, int] = {}
    sample: list[dict[str, Any]] = []
    quarantines: dict[str, list[QuarantineRow]] = {READINGS: [], BATCHES: []}
    valid_frames: dict[str, pd.DataFrame] = {}
    flagged = 0
    for dataset, frame, raw in ((READINGS, readings, raw_readings), (BATCHES, batches, raw_batches)):
        if frame.empty:
            valid_frames[dataset] = frame
            continue
        outcome = validate_plant(dataset, frame, run_name)
        refused = _quarantine_rows(dataset, frame, raw, outcome)
        _add_counts(counts, _failure_counts(dataset, refused))
        quarantines[dataset] = refused
        for row in refused[: max(0, 10 - len(sample))]:
            sample.append({"dataset": dataset, "record_key": row.record_key, "failed": row.failed_expectations[:3]})
        valid, flagged_rows = flagged_valid(dataset, outcome)
        flagged += flagged_rows
        valid_frames[dataset] = valid
    seqs = [int(b.get("seq") or 0) for b in raw_batches]
    collected = [str(r.get("collected_at")) for r in raw_readings if r.get("collected_at")]
    return PreparedChunk(
        last_seq=entries[-1].seq,
        entries=len(entries),
        readings=valid_frames[READINGS],
        batches=valid_frames[BATCHES],
        reading_quarantine=quarantines[READINGS],
        batch_quarantine=quarantines[BATCHES],
        duplicates=duplicates,
        flagged=flagged,
        failures_by_expectation=counts,
        sample=sample,
        max_batch_seq=max(seqs) if seqs else None,
        last_collected_at=max(collected) if collected else None,
        raw_readings=raw_readings,
        raw_batches=raw_batches,
    )


def replay_frame(dataset: str, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Quarantined raw readings or batch records -> today's mapped frame (one row each, positional index)."""
    from data_mappings.plant import map_plant_readings, map_production_batches
    from hub.core.settings import plant_opcua_config

    if dataset == READINGS:
        return map_plant_readings(records, stale_after_s=plant_opcua_config().stale_after_s)
    return map_production_batches(records)


def replay_rows(dataset: str, loadable: pd.DataFrame, outcome: ValidationOutcome) -> pd.DataFrame:
    """Replayed rows that pass, as `load_chunk` writes them: with their warning flags and `loaded_at`."""
    valid, _ = flagged_valid(dataset, outcome)
    return valid.loc[loadable.index].assign(loaded_at=datetime.now(UTC))


@dataclass(frozen=True)
class ChunkLoad:
    readings_upserted: int
    readings_unchanged: int
    batches_upserted: int
    batches_unchanged: int
    quarantined: int
    batch_seq: int | None
    refused: dict[str, list[QuarantineRow]] = field(default_factory=dict)  # by dataset: valid rows the database refused


def load_chunk(engine: Engine, chunk: PreparedChunk, *, flow_run_id: str | None) -> ChunkLoad:
    """Readings, batches, quarantine and both cursors in ONE transaction; the batch cursor never goes back."""
    readings = chunk.readings.drop(columns=["measurement"]) if "measurement" in chunk.readings.columns else chunk.readings
    batches = chunk.batches.drop(columns=[c for c in ("duration_s", "min_target_kg", "min_actual_kg", "record_complete") if c in chunk.batches.columns])
    now = datetime.now(UTC)
    if not readings.empty:
        readings = readings.assign(loaded_at=now)
    if not batches.empty:
        batches = batches.assign(source_run_id=flow_run_id, loaded_at=now)
    with engine.begin() as conn:
        previous = read_cursor(conn, INTEGRATION, BATCHES) or {}
        seqs = [int(v) for v in (previous.get("batch_seq"), chunk.max_batch_seq) if v is not None]
        batch_seq = max(seqs) if seqs else None
        reading_cursor = None
        if chunk.last_collected_at:
            before = (read_cursor(conn, INTEGRATION, READINGS) or {}).get("last_collected_at")
            reading_cursor = {"last_collected_at": max(filter(None, (before, chunk.last_collected_at)))}
        r = load_batch(
            conn,
            BatchLoad(
                integration=INTEGRATION,
                dataset=READINGS,
                table=cast(Table, PlantReading.__table__),
                key=["reading_key"],
                rows=readings,
                quarantine=chunk.reading_quarantine,
                cursor=reading_cursor,
                flow_run_id=flow_run_id,
                raw_of=lambda label: chunk.raw_readings[int(label)],
            ),
        )
        b = load_batch(
            conn,
            BatchLoad(
                integration=INTEGRATION,
                dataset=BATCHES,
                table=cast(Table, ProductionBatch.__table__),
                key=["batch_id"],
                rows=batches,
                quarantine=chunk.batch_quarantine,
                cursor={"batch_seq": batch_seq} if batch_seq is not None and chunk.max_batch_seq is not None else None,
                flow_run_id=flow_run_id,
                raw_of=lambda label: chunk.raw_batches[int(label)],
            ),
        )
    return ChunkLoad(
        readings_upserted=r.upserted,
        readings_unchanged=r.unchanged,
        batches_upserted=b.upserted,
        batches_unchanged=b.unchanged,
        quarantined=r.quarantined + b.quarantined,
        batch_seq=batch_seq,
        refused={READINGS: list(r.refused_rows), BATCHES: list(b.refused_rows)},
    )


@dataclass
class FlushResult:
    chunks: int = 0
    entries: int = 0
    readings_upserted: int = 0
    readings_unchanged: int = 0
    batches_upserted: int = 0
    batches_unchanged: int = 0
    quarantined: int = 0
    duplicates: int = 0
    flagged: int = 0
    batch_seq: int | None = None
    failures_by_expectation: dict[str, int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    checked_by_dataset: dict[str, int] = field(default_factory=dict)
    quarantined_by_dataset: dict[str, int] = field(default_factory=dict)

    def add(self, chunk: PreparedChunk, loaded: ChunkLoad) -> None:
        self.chunks += 1
        for dataset, valid, refused in ((READINGS, chunk.readings, chunk.reading_quarantine), (BATCHES, chunk.batches, chunk.batch_quarantine)):
            by_database = loaded.refused.get(dataset, [])
            self.checked_by_dataset[dataset] = self.checked_by_dataset.get(dataset, 0) + len(valid) + len(refused)
            self.quarantined_by_dataset[dataset] = self.quarantined_by_dataset.get(dataset, 0) + len(refused) + len(by_database)
            _add_counts(self.failures_by_expectation, _failure_counts(dataset, by_database))
            for row in by_database:
                if len(self.sample) < 10:
                    self.sample.append({"dataset": dataset, "record_key": row.record_key, "failed": row.failed_expectations})
        self.entries += chunk.entries
        self.readings_upserted += loaded.readings_upserted
        self.readings_unchanged += loaded.readings_unchanged
        self.batches_upserted += loaded.batches_upserted
        self.batches_unchanged += loaded.batches_unchanged
        self.quarantined += loaded.quarantined
        self.duplicates += chunk.duplicates
        self.flagged += chunk.flagged
        self.batch_seq = loaded.batch_seq if loaded.batch_seq is not None else self.batch_seq
        for name, count in chunk.failures_by_expectation.items():
            self.failures_by_expectation[name] = self.failures_by_expectation.get(name, 0) + count
        self.sample.extend(chunk.sample[: max(0, 10 - len(self.sample))])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flush_buffer(
    buffer: DurableBuffer,
    engine: Engine,
    *,
    stale_after_s: float,
    chunk_size: int,
    flow_run_id: str | None = None,
    run_name: str | None = None,
) -> FlushResult:
    """Load every buffered entry, oldest first, a chunk per transaction; remove a chunk only after its commit."""
    result = FlushResult()
    while True:
        entries = buffer.pending(chunk_size)
        if not entries:
            return result
        chunk = prepare_chunk(entries, stale_after_s=stale_after_s, run_name=run_name)
        loaded = load_chunk(engine, chunk, flow_run_id=flow_run_id)
        buffer.remove_through(chunk.last_seq)
        result.add(chunk, loaded)
