"""Manual review of quarantined rows: list them with their failed expectations, replay them through the
CURRENT mapping and suite after a fix, or discard them with a reason. Nothing is deleted.

Replay is per dataset behind one registry (`register_replay(ReplaySpec(...))` below): a spec turns raw
source records into the dataset's mapped frame and names the ERP table, its key and (optionally) the column
that orders versions. Rows that now pass are upserted idempotently and their quarantine rows marked
`replayed`; rows that still fail stay quarantined with today's reasons. A row whose ERP record is already
newer (a later sync loaded a fixed version) is not overwritten: it is marked replayed as superseded. When no
row of a DATA_VALIDATION_FAILED error is open any more, the error is resolved. Every replay and discard is
written to the error's audit trail.

Registered: SAP customers, plant readings and production batches, lab results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.orm import Session

from hub.core.db import rows_for_update, session_scope
from hub.core.models import ErrorEventAction, QuarantinedRecord, QuarantineStatus
from hub.ledger.errors import add_event, resolve_if_quarantine_closed

if TYPE_CHECKING:
    import pandas as pd

    from expectations.runner import ValidationOutcome


@dataclass(frozen=True)
class ReplaySpec:
    """How one dataset's quarantined raw records go through today's mapping and suite into the ERP."""

    integration: str
    dataset: str
    suite: str  # expectations/<suite>.py
    to_frame: Callable[[list[dict[str, Any]], Connection], pd.DataFrame]  # raw records -> mapped frame, positional index
    table: Callable[[], Table]
    key: tuple[str, ...]
    drop_columns: tuple[str, ...] = ()
    changed_at_column: str | None = None  # a newer ERP row (by this column) is never overwritten
    existing_wins: bool = False  # records that never change (a measurement): an ERP row with the key is never overwritten
    # When the suite is not `expectations/<suite>.py`'s build_suite (several datasets in one module):
    validate: Callable[[pd.DataFrame], ValidationOutcome] | None = None
    # Rows that pass -> the rows the table holds (derived columns), given the raw records and the outcome:
    to_rows: Callable[[pd.DataFrame, list[dict[str, Any]], ValidationOutcome, str], pd.DataFrame] | None = None
    # A dataset of several rows per record (tasks/streams.py `PullStream.record_column`): the frame column holding
    # the record's position, and the writer of a record's rows (`PullStream.load`); a record replays whole.
    record_column: str | None = None
    row_label: str | None = None
    load: Callable[[Connection, pd.DataFrame, str | None], Mapping[str, int]] | None = None


_REPLAYS: dict[tuple[str, str], ReplaySpec] = {}


def register_replay(spec: ReplaySpec) -> ReplaySpec:
    _REPLAYS[(spec.integration, spec.dataset)] = spec
    return spec


def replay_spec(integration: str, dataset: str) -> ReplaySpec | None:
    """How rows of a dataset replay: a spec registered here, else the one its sync-engine stream implies."""
    return _REPLAYS.get((integration, dataset)) or _from_stream(integration, dataset)


def _replay_of_stream(stream: Any) -> ReplaySpec | None:
    if stream.apply is not None or stream.map is None or stream.suite is None or stream.table is None:
        return None  # applied by a rule of its own (forward-only payments): nothing is quarantined to replay
    mapper: Callable[[list[dict[str, Any]]], pd.DataFrame] = stream.map

    def to_frame(records: list[dict[str, Any]], conn: Connection) -> pd.DataFrame:
        return mapper(records)

    return ReplaySpec(
        integration=stream.integration,
        dataset=stream.dataset,
        suite=stream.suite,
        to_frame=to_frame,
        table=stream.table,
        key=stream.key,
        drop_columns=("mapping_errors",),
        changed_at_column=stream.newer_wins,
        record_column=stream.record_column,
        row_label=stream.row_label,
        load=stream.load,
    )


def _from_stream(integration: str, dataset: str) -> ReplaySpec | None:
    """A registered dataset the sync engine runs (hub/datasets.py `Dataset.stream`) replays through the same
    mapping, suite, table and key as its sync: nothing to declare twice."""
    from hub.datasets import all_datasets

    for declared in all_datasets():
        if declared.stream is None or (declared.integration, declared.dataset) != (integration, dataset):
            continue
        return _replay_of_stream(declared.load_stream())
    return None


class NothingSelected(Exception):
    """No open quarantined row matched."""


class NoReplayHandler(Exception):
    """Rows of a dataset nobody registered a replay for."""


# --- the hub's datasets -------------------------------------------------------------------------------


def _plant_spec(dataset: str, table: Callable[[], Table], key: str) -> ReplaySpec:
    """A plant dataset: its own suite in expectations/plant.py, warning rules become `quality_flags`."""

    def to_frame(records: list[dict[str, Any]], conn: Connection) -> pd.DataFrame:
        from hub.systems.plant import replay_frame

        return replay_frame(dataset, records)

    def validate(frame: pd.DataFrame) -> ValidationOutcome:
        from hub.systems.plant import validate_plant

        return validate_plant(dataset, frame, run_name=None)

    def to_rows(loadable: pd.DataFrame, records: list[dict[str, Any]], outcome: ValidationOutcome, run_id: str) -> pd.DataFrame:
        from hub.systems.plant import replay_rows

        return replay_rows(dataset, loadable, outcome)

    return ReplaySpec(
        integration="plant_opcua", dataset=dataset, suite=dataset, to_frame=to_frame, table=table, key=(key,),
        existing_wins=True, validate=validate, to_rows=to_rows,
    )


def _plant_readings_table() -> Table:
    from hub.core.models import PlantReading

    return cast(Table, PlantReading.__table__)


def _production_batches_table() -> Table:
    from hub.core.models import ProductionBatch

    return cast(Table, ProductionBatch.__table__)


register_replay(_plant_spec("plant_readings", _plant_readings_table, "reading_key"))
register_replay(_plant_spec("production_batches", _production_batches_table, "batch_id"))


def _lab_frame(records: list[dict[str, Any]], conn: Connection) -> pd.DataFrame:
    from hub.systems.lab import replay_frame

    return replay_frame(records, conn)


def _lab_rows(loadable: pd.DataFrame, records: list[dict[str, Any]], outcome: ValidationOutcome, run_id: str) -> pd.DataFrame:
    from hub.systems.lab import replay_rows

    return replay_rows(loadable, records, run_id)


def _lab_results_table() -> Table:
    from hub.core.models import LabResult

    return cast(Table, LabResult.__table__)


register_replay(
    ReplaySpec(
        integration="lab",
        dataset="lab_results",
        suite="lab",
        to_frame=_lab_frame,
        table=_lab_results_table,
        key=("specimen_id",),
        drop_columns=("mapping_errors",),
        existing_wins=True,  # a specimen is tested once: one loaded since (a corrected export) is kept
        to_rows=_lab_rows,
    )
)


# --- reading ------------------------------------------------------------------------------------------


def _filtered(
    query: Any,
    *,
    ids: Sequence[int] | None,
    error_id: int | None,
    integration: str | None,
    dataset: str | None,
    status: str | None,
    since: datetime | None,
) -> Any:
    if ids:
        query = query.where(QuarantinedRecord.id.in_(list(ids)))
    if error_id is not None:
        query = query.where(QuarantinedRecord.error_id == error_id)
    if integration:
        query = query.where(QuarantinedRecord.integration == integration)
    if dataset:
        query = query.where(QuarantinedRecord.dataset == dataset)
    if status:
        query = query.where(QuarantinedRecord.status == status)
    if since:
        query = query.where(QuarantinedRecord.updated_at >= since)
    return query


def list_quarantine(
    *,
    integration: str | None = None,
    dataset: str | None = None,
    status: str | None = QuarantineStatus.QUARANTINED.value,
    error_id: int | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[QuarantinedRecord]:
    """Quarantined rows newest first (open ones by default)."""
    with session_scope() as session:
        query = _filtered(
            select(QuarantinedRecord).order_by(QuarantinedRecord.id.desc()).limit(limit),
            ids=None, error_id=error_id, integration=integration, dataset=dataset, status=status, since=since,
        )
        return list(session.scalars(query))


def get_record(record_id: int) -> QuarantinedRecord | None:
    with session_scope() as session:
        return session.get(QuarantinedRecord, record_id)


def record_as_dict(row: QuarantinedRecord, *, full: bool = True) -> dict[str, Any]:
    from hub.ledger.loading import json_safe

    data = {c.name: getattr(row, c.name) for c in QuarantinedRecord.__table__.columns}
    if not full:
        data.pop("raw_record", None)
        data.pop("mapped_record", None)
    return cast(dict[str, Any], json_safe(data))


def failure_summary(failures: Sequence[Mapping[str, Any]]) -> str:
    """`rule_id: expect_...(column)=value` per failed expectation (rule id when it has one), for a table cell."""
    parts = []
    for f in failures:
        name = str(f.get("expectation", "?")).removeprefix("expect_column_values_to_").removeprefix("expect_")
        rule = f"{f['rule_id']}: " if f.get("rule_id") else ""
        parts.append(f"{rule}{name}({f.get('column') or '-'})={f.get('value')!r}")
    return "; ".join(parts)


# --- replay and discard -------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    selected: int = 0
    loaded: int = 0  # rows that now pass and were written (new or changed)
    unchanged: int = 0  # rows that now pass and were already in the ERP exactly so
    superseded: int = 0  # rows that now pass but the ERP already holds a newer version
    still_failing: int = 0
    replayed_ids: list[int] = field(default_factory=list)
    failing_ids: list[int] = field(default_factory=list)
    errors_resolved: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _open_rows(session: Session, **filters: Any) -> list[QuarantinedRecord]:
    """The open rows the filters select, locked: a replay and a discard of the same rows (or two replays) take
    turns, and the second finds them closed. PostgreSQL skips rows another transaction holds; SQLite reads them
    again once the other committed (hub.core.db rows_for_update)."""
    query = _filtered(select(QuarantinedRecord).order_by(QuarantinedRecord.id), status=QuarantineStatus.QUARANTINED.value, since=None, **filters)
    return rows_for_update(session, query, skip_locked=True)


def _selectors_given(ids: Sequence[int] | None, error_id: int | None, integration: str | None, dataset: str | None, everything: bool) -> None:
    if not (ids or error_id is not None or integration or dataset or everything):
        raise ValueError("say which rows: record ids, --error <id>, --integration/--dataset, or --all")


def replay(
    *,
    by: str,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    error_id: int | None = None,
    integration: str | None = None,
    dataset: str | None = None,
    everything: bool = False,
) -> ReplayResult:
    """Put open quarantined rows through the current mapping and suite; load what passes, in one transaction."""
    _selectors_given(ids, error_id, integration, dataset, everything)
    result = ReplayResult()
    now = datetime.now(UTC)
    with session_scope() as session:
        rows = _open_rows(session, ids=ids, error_id=error_id, integration=integration, dataset=dataset)
        if not rows:
            raise NothingSelected("no open quarantined rows match")
        result.selected = len(rows)
        groups: dict[tuple[str, str], list[QuarantinedRecord]] = defaultdict(list)
        for row in rows:
            groups[(row.integration, row.dataset)].append(row)
        missing = [f"{i}/{d}" for i, d in groups if replay_spec(i, d) is None]
        if missing:
            raise NoReplayHandler(f"no replay registered for {', '.join(missing)} (hub/ledger/quarantine.py register_replay)")
        touched_errors: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (integ, ds), group in groups.items():
            spec = replay_spec(integ, ds)
            assert spec is not None
            _replay_group(session, spec, group, result, touched_errors, by=by, reason=reason, now=now)
        for err_id, counts in touched_errors.items():
            add_event(
                session,
                err_id,
                ErrorEventAction.QUARANTINE_REPLAYED,
                actor=by,
                reason=reason or "replayed through the current mapping and suite",
                details=dict(counts),
            )
            if resolve_if_quarantine_closed(
                session, err_id, actor=by, reason="every quarantined row was replayed or discarded" + (f": {reason}" if reason else ""), now=now
            ):
                result.errors_resolved.append(err_id)
    return result


def _replay_group(
    session: Session,
    spec: ReplaySpec,
    rows: list[QuarantinedRecord],
    result: ReplayResult,
    touched: dict[int, dict[str, int]],
    *,
    by: str,
    reason: str | None,
    now: datetime,
) -> None:
    from expectations.runner import validate_frame
    from hub.ledger.loading import failure_entry, upsert_rows

    if spec.record_column is not None:
        _replay_records(session, spec, rows, result, touched, by=by, reason=reason, now=now)
        return
    conn = session.connection()
    records = [dict(r.raw_record) for r in rows]
    frame = spec.to_frame(records, conn).reset_index(drop=True)
    if len(frame) != len(rows):
        raise ValueError(f"mapping of {spec.dataset} returned {len(frame)} rows for {len(rows)} records")
    outcome = spec.validate(frame) if spec.validate is not None else validate_frame(spec.suite, frame)
    valid_positions = [int(label) for label in outcome.valid.index]
    table = spec.table()
    newer: set[int] = set()
    if (spec.changed_at_column or spec.existing_wins) and valid_positions:
        newer = _positions_with_newer_erp_row(conn, table, spec, outcome.valid)
    loadable = outcome.valid.drop(index=[p for p in valid_positions if p in newer])
    run_id = f"quarantine-replay:{by}"[:64]
    if spec.to_rows is not None and not loadable.empty:
        loadable = spec.to_rows(loadable, records, outcome, run_id)
    if spec.drop_columns:
        loadable = loadable.drop(columns=[c for c in spec.drop_columns if c in loadable.columns])
    if "source_run_id" in table.c:
        loadable = loadable.assign(source_run_id=run_id)
    written = upsert_rows(conn, table, loadable, list(spec.key)) if not loadable.empty else 0
    result.loaded += written
    result.unchanged += len(loadable.drop_duplicates(subset=list(spec.key))) - written if not loadable.empty else 0
    note = f"replayed by {by}" + (f": {reason}" if reason else "")
    kept = "the ERP already holds this record, loaded since" if spec.existing_wins else "the ERP already holds a newer version"
    for position in valid_positions:
        row = rows[position]
        superseded = position in newer
        result.superseded += int(superseded)
        row.status = QuarantineStatus.REPLAYED.value
        row.resolved_by = by[:128]
        row.resolved_at = now
        row.updated_at = now
        row.resolution_note = f"{note} (not written: {kept})" if superseded else note
        result.replayed_ids.append(int(row.id))
        if row.error_id is not None:
            touched[int(row.error_id)]["superseded" if superseded else "loaded"] += 1
    for label in outcome.invalid.index:
        row = rows[int(label)]
        row.failed_expectations = [
            failure_entry(f.expectation, column=f.column, rule_id=f.rule_id, kwargs=f.kwargs, value=f.value)
            for f in outcome.failures.get(label, [])
            if f.severity == "critical"
        ]
        row.updated_at = now
        result.still_failing += 1
        result.failing_ids.append(int(row.id))
        if row.error_id is not None:
            touched[int(row.error_id)]["still_failing"] += 1


def _replay_records(
    session: Session,
    spec: ReplaySpec,
    rows: list[QuarantinedRecord],
    result: ReplayResult,
    touched: dict[int, dict[str, int]],
    *,
    by: str,
    reason: str | None,
    now: datetime,
) -> None:
    """Replay records of several rows each (an order and its items): a record loads whole through the dataset's
    `load`, or stays quarantined whole with today's failed rules of all its rows."""
    from expectations.runner import validate_frame
    from hub.ledger.loading import quarantine_rows

    assert spec.record_column is not None and spec.load is not None
    column = spec.record_column
    conn = session.connection()
    records = [dict(r.raw_record) for r in rows]
    frame = spec.to_frame(records, conn).reset_index(drop=True)
    outcome = spec.validate(frame) if spec.validate is not None else validate_frame(spec.suite, frame)
    failing = list(dict.fromkeys(int(p) for p in frame.loc[outcome.invalid.index, column].tolist()))
    loadable = frame[~frame[column].isin(failing)]
    run_id = f"quarantine-replay:{by}"[:64]
    if not loadable.empty:
        loadable = loadable.drop(columns=[c for c in spec.drop_columns if c in loadable.columns]).assign(source_run_id=run_id)
        counts = spec.load(conn, loadable, run_id)
        result.loaded += int(counts.get("upserted", 0))
        result.unchanged += int(counts.get("unchanged", 0))
    note = f"replayed by {by}" + (f": {reason}" if reason else "")
    for position in sorted({int(p) for p in loadable[column].tolist()}):
        row = rows[position]
        row.status = QuarantineStatus.REPLAYED.value
        row.resolved_by = by[:128]
        row.resolved_at = now
        row.updated_at = now
        row.resolution_note = note
        result.replayed_ids.append(int(row.id))
        if row.error_id is not None:
            touched[int(row.error_id)]["loaded"] += 1
    row_name = (lambda label: f"{spec.row_label} {frame.at[label, spec.row_label]}") if spec.row_label else None
    refused = quarantine_rows(outcome, frame, raw_of=lambda label: records[int(frame.at[label, column])],
                              record_column=column, row_name=row_name)
    for position, again in zip(failing, refused, strict=True):
        row = rows[position]
        row.failed_expectations = again.failed_expectations
        row.updated_at = now
        result.still_failing += 1
        result.failing_ids.append(int(row.id))
        if row.error_id is not None:
            touched[int(row.error_id)]["still_failing"] += 1


def _positions_with_newer_erp_row(conn: Any, table: Table, spec: ReplaySpec, valid: pd.DataFrame) -> set[int]:
    """Positions whose ERP row is newer (by `changed_at_column`), or exists at all when `existing_wins`."""
    import pandas as pd

    assert len(spec.key) == 1
    key = spec.key[0]
    keys = [k for k in valid[key].tolist() if k is not None]
    if spec.existing_wins:
        found: set[Any] = set()
        for start in range(0, len(keys), 1000):
            found.update(conn.execute(select(table.c[key]).where(table.c[key].in_(keys[start : start + 1000]))).scalars())
        return {int(label) for label, k in zip(valid.index, valid[key], strict=True) if k in found}
    assert spec.changed_at_column is not None
    col = spec.changed_at_column
    existing = dict(conn.execute(select(table.c[key], table.c[col]).where(table.c[key].in_(keys))).all()) if keys else {}
    newer = set()
    for label, k, changed in zip(valid.index, valid[key], valid[col], strict=True):
        current = existing.get(k)
        if current is not None and not pd.isna(changed) and current > pd.Timestamp(changed).to_pydatetime():
            newer.add(int(label))
    return newer


@dataclass
class DiscardResult:
    discarded_ids: list[int] = field(default_factory=list)
    errors_resolved: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"discarded": len(self.discarded_ids), "discarded_ids": self.discarded_ids, "errors_resolved": self.errors_resolved}


def discard(*, by: str, reason: str, ids: Sequence[int] | None = None, error_id: int | None = None) -> DiscardResult:
    """Mark open quarantined rows discarded (kept, never deleted) with who and why, audited on their error."""
    if not reason or not reason.strip():
        raise ValueError("a discard needs a reason (--reason)")
    if not ids and error_id is None:
        raise ValueError("say which rows to discard: record ids or --error <id>")
    now = datetime.now(UTC)
    result = DiscardResult()
    with session_scope() as session:
        rows = _open_rows(session, ids=ids, error_id=error_id, integration=None, dataset=None)
        if not rows:
            raise NothingSelected("no open quarantined rows match")
        ids_by_error: dict[int, list[int]] = defaultdict(list)
        session.execute(
            update(QuarantinedRecord)
            .where(QuarantinedRecord.id.in_([r.id for r in rows]))
            .values(status=QuarantineStatus.DISCARDED.value, resolved_by=by[:128], resolved_at=now, updated_at=now, resolution_note=f"discarded by {by}: {reason}")
        )
        for r in rows:
            result.discarded_ids.append(int(r.id))
            if r.error_id is not None:
                ids_by_error[int(r.error_id)].append(int(r.id))
        for err_id, record_ids in ids_by_error.items():
            add_event(
                session,
                err_id,
                ErrorEventAction.QUARANTINE_DISCARDED,
                actor=by,
                reason=reason,
                details={"discarded": len(record_ids), "record_ids": record_ids[:200]},
            )
            if resolve_if_quarantine_closed(session, err_id, actor=by, reason=f"every quarantined row was replayed or discarded: {reason}", now=now):
                result.errors_resolved.append(err_id)
    return result
