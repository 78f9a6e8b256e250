"""Idempotent loads: upsert a batch, its quarantined rows and its watermark in ONE transaction.

PostgreSQL: COPY into a temporary staging table, then `INSERT ... ON CONFLICT DO UPDATE` (about 1.5x
the speed of executemany here); the COPY text is built column by column (hub/ledger/pgcopy.py), and
quarantine rows go as JSON texts written once by orjson. SQLite: a multi-row upsert. Either way a row whose `row_hash` did not
change is not rewritten, so running the same sync twice changes nothing.

A row the database refuses although it passed validation (a value too long, a NULL, a number out of
range, a check or unique constraint) does not fail the batch: the batch is tried whole under a
SAVEPOINT, and only when that fails it is bisected under nested SAVEPOINTs until the refused rows are
isolated; they are quarantined with their key and the database's message, the rest load in the same
transaction. An outage (OperationalError) still fails the batch. A record that loads cleanly closes its
open quarantine entry, and the DATA_VALIDATION_FAILED error that held it when nothing else is open.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson
import pandas as pd
from pandas.api.types import infer_dtype
from sqlalchemy import JSON, Connection, Date, DateTime, NestedTransaction, Table, func, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import NullType

from connectors.core.gcpause import paused_gc
from hub.core.models import QuarantinedRecord, QuarantineStatus, SyncState
from hub.ledger.pgcopy import copy_chunks

if TYPE_CHECKING:
    from expectations.runner import ValidationOutcome

_CRITICAL = "critical"  # expectations.runner.CRITICAL: only these failures refuse a row


@dataclass
class QuarantineRow:
    record_key: str
    raw_record: dict[str, Any]
    mapped_record: dict[str, Any] | None
    failed_expectations: list[dict[str, Any]]  # items built by `failure_entry`


FAILURE_VALUE_MAX_CHARS = 500  # an offending value kept in a failure (a whole document's text is not evidence)


def failure_entry(
    expectation: str,
    *,
    column: str | None = None,
    rule_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    value: Any = None,
) -> dict[str, Any]:
    """One item of `failed_expectations`, the same five keys for every integration, JSON-safe, the value bounded."""
    return {
        "expectation": str(expectation),
        "column": None if column is None else str(column),
        "rule_id": rule_id or None,
        "kwargs": json_safe(kwargs) if kwargs else {},
        "value": _bounded(json_safe(value)),
    }


def _bounded(value: Any) -> Any:
    # A long text is cut; a long list or dict (a multi-column value) is kept as its cut JSON text.
    if type(value) is str:
        return value if len(value) <= FAILURE_VALUE_MAX_CHARS else value[: FAILURE_VALUE_MAX_CHARS - 1] + "…"
    if type(value) is dict or type(value) is list:
        text = json.dumps(value, default=str)
        if len(text) > FAILURE_VALUE_MAX_CHARS:
            return text[: FAILURE_VALUE_MAX_CHARS - 1] + "…"
    return value


def quarantine_rows(
    outcome: ValidationOutcome,
    frame: pd.DataFrame,
    *,
    raw_of: Callable[[Any], Mapping[str, Any]],
    key_of: Callable[[Any], str | None] | None = None,
    critical_only: bool = True,
    record_column: str | None = None,
    row_name: Callable[[Any], str] | None = None,
) -> list[QuarantineRow]:
    """A quarantine row for every refused row of `outcome`: its source record, its mapped values, its failures.

    `raw_of(label)` is the source record of the frame row `label`; `key_of(label)` its record key (a record
    without one is keyed by the digest of its source record). Warnings are left out unless `critical_only` is off.

    With `record_column` (a frame of several rows per source record, an order's items) the refused rows are
    grouped by that column: ONE quarantine row per record, its mapped value `{"rows": [...]}` (every row of the
    record), its failures those of all its refused rows, each failure's kwargs naming its row (`row_name(label)`,
    `"at"`), so that one bad item reads as what it is.
    """
    labels = list(outcome.invalid.index)
    if not labels:
        return []
    if record_column is not None:
        return _quarantine_records(outcome, frame, labels, raw_of=raw_of, key_of=key_of, critical_only=critical_only,
                                   record_column=record_column, row_name=row_name)
    mapped = json_safe_records(frame.loc[labels].drop(columns=["row_hash"], errors="ignore"))
    rows = []
    for label, mapped_record in zip(labels, mapped, strict=True):
        raw = dict(raw_of(label))
        key = json_safe(key_of(label)) if key_of is not None else None  # a missing value (NaN, NA) is no key
        failures = [
            failure_entry(f.expectation, column=f.column, rule_id=f.rule_id, kwargs=f.kwargs, value=f.value)
            for f in outcome.failures.get(label, [])
            if not critical_only or f.severity == _CRITICAL
        ]
        rows.append(
            QuarantineRow(
                record_key=str(key) if key not in (None, "") else record_digest(raw),
                raw_record=raw,
                mapped_record=mapped_record,
                failed_expectations=failures,
            )
        )
    return rows


def _quarantine_records(
    outcome: ValidationOutcome,
    frame: pd.DataFrame,
    labels: list[Any],
    *,
    raw_of: Callable[[Any], Mapping[str, Any]],
    key_of: Callable[[Any], str | None] | None,
    critical_only: bool,
    record_column: str,
    row_name: Callable[[Any], str] | None,
) -> list[QuarantineRow]:
    by_record: dict[Any, list[Any]] = {}
    for label in labels:
        by_record.setdefault(frame.at[label, record_column], []).append(label)
    # Every row of each refused record, found in one pass rather than one scan of the frame per record.
    grouped = frame[frame[record_column].isin(list(by_record))].drop(columns=["row_hash"], errors="ignore")
    members_of = dict(iter(grouped.groupby(record_column, sort=False, dropna=False)))
    rows = []
    for record, refused in by_record.items():
        first = refused[0]
        raw = dict(raw_of(first))
        key = json_safe(key_of(first)) if key_of is not None else None
        members = members_of[record].drop(columns=[record_column])
        failures = [
            failure_entry(f.expectation, column=f.column, rule_id=f.rule_id,
                          kwargs={**(f.kwargs or {}), **({"at": row_name(label)} if row_name is not None else {})}, value=f.value)
            for label in refused
            for f in outcome.failures.get(label, [])
            if not critical_only or f.severity == _CRITICAL
        ]
        rows.append(
            QuarantineRow(
                record_key=str(key) if key not in (None, "") else record_digest(raw),
                raw_record=raw,
                mapped_record={"rows": json_safe_records(members)},
                failed_expectations=failures,
            )
        )
    return rows


def failure_name(failure: Mapping[str, Any]) -> str:
    """How a failure is counted and reported: its rule id, else `expectation(column)` (or the bare expectation)."""
    if failure.get("rule_id"):
        return str(failure["rule_id"])
    column = failure.get("column")
    return f"{failure.get('expectation')}({column})" if column else str(failure.get("expectation"))


def count_failures(rows: Iterable[QuarantineRow]) -> dict[str, int]:
    """Failures by `failure_name`, for a DATA_VALIDATION_FAILED error's `failures_by_expectation`."""
    counts: dict[str, int] = {}
    for row in rows:
        for failure in row.failed_expectations:
            name = failure_name(failure)
            counts[name] = counts.get(name, 0) + 1
    return counts


@dataclass
class BatchLoad:
    """What one transaction writes: valid rows, refused rows, and (optionally) the new cursor."""

    integration: str
    dataset: str
    table: Table
    key: Sequence[str]
    rows: pd.DataFrame
    quarantine: list[QuarantineRow] = field(default_factory=list)
    cursor: Mapping[str, Any] | None = None
    flow_run_id: str | None = None
    run_upserted_before: int = 0  # rows this run wrote in earlier batches (for sync_state.rows_total)
    # The column of `rows` whose value is the record's quarantine `record_key` (default: the first key column).
    quarantine_key: str | None = None
    # Index label of a row -> the source record it came from, kept with a row the database refuses
    # (so that a replay can map it again); without it the mapped row itself is kept. With `record_column`
    # it is called with the record (the column's value), not the row's label.
    raw_of: Callable[[Any], Mapping[str, Any]] | None = None
    # The rows' own writer, instead of the upsert into `table` (an order's header and items, in two tables):
    # (conn, rows, flow_run_id) -> counts, `upserted` and `unchanged` counted in records, any other key a
    # dataset's own count (items deleted, ...).
    write: Callable[[Connection, pd.DataFrame, str | None], Mapping[str, int]] | None = None
    # The column grouping rows into source records (several rows each): rows are not de-duplicated by `key`,
    # and a row the database refuses refuses its record's rows, quarantined once.
    record_column: str | None = None
    # Run after the rows and before the cursor, in the same transaction: a complete full read marking what the
    # source no longer holds. Returns the dataset's own counts.
    finish: Callable[[Connection], Mapping[str, int]] | None = None


@dataclass(frozen=True)
class LoadResult:
    upserted: int
    unchanged: int
    quarantined: int  # quarantine entries written: the batch's own and the rows the database refused
    cursor_written: bool
    refused: int = 0  # rows (records, with `record_column`) that passed validation but the database refused
    released: int = 0  # open quarantine entries closed because their record has now loaded cleanly
    refused_rows: tuple[QuarantineRow, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)  # a `write`'s or `finish`'s own counts


_PLAIN = (str, int, bool)


def json_safe(value: Any) -> Any:
    """Plain JSON types for JSON columns (timestamps as ISO strings, NaN/NaT as null).

    Exact-type checks first: raw OData records are nested dicts and lists of strings, and ABC
    `isinstance` checks on every node made quarantining a few thousand records take seconds.
    """
    kind = type(value)
    if value is None or kind in _PLAIN:
        return value
    if kind is dict:
        return {str(k): json_safe(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_safe(v) for v in value]
    if kind is float:
        return None if value != value else value
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


# orjson hands `default` (json_safe) whatever it would write otherwise than json_safe does: datetimes, dates and
# times, subclasses of str, int, dict and list, dataclasses, numpy and pandas values, decimals.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS


def _json_text(value: Any, *, storable: bool = False) -> str:
    """The JSON text of `json_safe(value)` in one orjson pass, without walking the value in Python.

    `storable` (a quarantine column): a NUL character, which jsonb refuses, is kept as U+FFFD, found in the
    bytes; without it a NUL stays `\\u0000` and PostgreSQL refuses the row as before. What orjson cannot
    write (a dict key that is not a str, an integer beyond 64 bits, a lone surrogate, deep nesting) takes
    the long way through json_safe. The text differs from json.dumps (compact, UTF-8), the jsonb value not,
    but for two cases: ±inf is null (jsonb refused json.dumps's `Infinity`), an Enum member its value.
    """
    try:
        data = orjson.dumps(value, default=json_safe, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _dumps_plain(_without_nul(json_safe(value)) if storable else json_safe(value))
    if storable and b"\\u0000" in data:
        return _dumps_plain(_without_nul(json_safe(value)))
    return data.decode()


def _dumps_plain(safe: Any) -> str:
    try:
        return orjson.dumps(safe).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate: as json.dumps wrote them
        return json.dumps(safe)


def json_safe_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`json_safe` of each row's values (`to_dict("records")`), column by column: only values that are not
    already plain (a str, None, a bool, an int, a finite float) go through `json_safe`."""
    names = [str(c) for c in frame.columns]
    columns = [_json_safe_column(frame.iloc[:, i]) for i in range(frame.shape[1])]
    if not columns:
        return [{} for _ in range(len(frame))]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _json_safe_column(series: pd.Series) -> list[Any]:
    values = series.tolist()
    kind = series.dtype
    if kind == np.bool_ or pd.api.types.is_integer_dtype(kind) and not isinstance(kind, pd.api.extensions.ExtensionDtype):
        return values  # tolist() gives Python bools and ints
    if kind == np.float64 or kind == np.float32:
        return [None if v != v else v for v in values]
    if pd.api.types.is_object_dtype(kind):
        return [v if v is None or type(v) is str else json_safe(v) for v in values]
    return [json_safe(v) for v in values]


def record_digest(raw: Mapping[str, Any]) -> str:
    """A key for a record that has none of its own (an all-null partner)."""
    blob = json.dumps(json_safe(raw), sort_keys=True).encode()
    return "digest:" + hashlib.sha1(blob).hexdigest()[:20]


def frame_rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain Python values, missing values as None (what drivers expect)."""
    cols = [plain_values(frame[name]) for name in columns]
    return list(zip(*cols, strict=True)) if cols else []


def plain_values(series: pd.Series) -> list[Any]:
    """A column as plain Python values, missing values as None: what `frame_rows` hands the driver."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
        return [None if pd.isna(v) else v.to_pydatetime() for v in series]
    if pd.api.types.is_bool_dtype(series):
        return [bool(v) for v in series]
    return [None if (v is None or (isinstance(v, float) and v != v)) else v for v in series.tolist()]


def _dedupe_last(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    # ON CONFLICT cannot touch one row twice in a statement: the last version of a key in the batch wins.
    return frame.drop_duplicates(subset=list(key), keep="last")


def upsert_rows(conn: Connection, table: Table, frame: pd.DataFrame, key: Sequence[str]) -> int:
    """Insert new rows and rewrite changed ones (by `row_hash`); returns how many rows were written."""
    if frame.empty:
        return 0
    frame = _dedupe_last(frame, key)
    if "synced_at" in table.c and "synced_at" not in frame.columns:
        frame = frame.assign(synced_at=datetime.now(UTC))
    columns = [c.name for c in table.columns if c.name in frame.columns]
    updatable = [c for c in columns if c not in key]
    if conn.dialect.name == "postgresql":
        return _pg_copy_upsert(conn, table, frame, columns, updatable, key)
    with paused_gc():
        rows = frame_rows(frame, columns)
    return _sqlite_upsert(conn, table, columns, updatable, key, rows)


def _sqlite_upsert(
    conn: Connection,
    table: Table,
    columns: list[str],
    updatable: list[str],
    key: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> int:
    # The driver's executemany with one prepared statement: compiling multi-row VALUES statements in
    # SQLAlchemy cost ~0.7 ms a row here. Column types still convert values (UTC timestamps).
    processors = [table.c[c].type.bind_processor(conn.dialect) for c in columns]
    if any(processors):
        rows = [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]
    cols = ", ".join(f'"{c}"' for c in columns)
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in updatable)
    sql = (
        f'INSERT INTO "{table.name}" ({cols}) VALUES ({", ".join("?" for _ in columns)}) '
        f'ON CONFLICT ({", ".join(key)}) DO UPDATE SET {sets} WHERE "{table.name}".row_hash IS NOT excluded.row_hash'
    )
    before = conn.exec_driver_sql("SELECT total_changes()").scalar_one()
    conn.exec_driver_sql(sql, rows)
    return int(conn.exec_driver_sql("SELECT total_changes()").scalar_one() - before)


def _pg_copy_upsert(
    conn: Connection,
    table: Table,
    frame: pd.DataFrame,
    columns: list[str],
    updatable: list[str],
    key: Sequence[str],
) -> int:
    stage = f"_stage_{table.name}"
    cols = ", ".join(f'"{c}"' for c in columns)
    # COPY sends text: a JSON column's list or dict goes as its JSON text (psycopg would adapt a list as an array).
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    timestamp_columns = {c for c in columns if issubclass(table.c[c].type._type_affinity or NullType, DateTime | Date)}
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        # The frame is encoded column by column (hub/ledger/pgcopy.py), not row by row with `write_row`:
        # a value psycopg refuses (a NUL character) raises here, before the COPY, as `write_row` raised it.
        with paused_gc():  # lists of strings and nothing cyclic: a collection would only walk the whole heap
            chunks = copy_chunks(frame, columns, json_columns=json_columns, timestamp_columns=timestamp_columns,
                                 json_text=_json_text, plain_values=plain_values, cursor=cur)
        cur.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" (LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
        )
        with cur.copy(f'COPY "{stage}" ({cols}) FROM STDIN') as copy, paused_gc():
            for chunk in chunks:  # joined as it is written (copy_chunks)
                copy.write(chunk)
        sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in updatable)
        conflict = ", ".join(f'"{k}"' for k in key)
        cur.execute(
            f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "{stage}" '
            f"ON CONFLICT ({conflict}) DO UPDATE SET {sets} "
            f'WHERE "{table.name}".row_hash IS DISTINCT FROM EXCLUDED.row_hash'
        )
        written = cur.rowcount
        cur.execute(f'TRUNCATE "{stage}"')
    return int(written)


def upsert_quarantine(
    conn: Connection, integration: str, dataset: str, rows: list[QuarantineRow], flow_run_id: str | None
) -> int:
    """Open one quarantine entry per source record; seeing the same record again refreshes it."""
    if not rows:
        return 0
    latest: dict[str, QuarantineRow] = {storable_key(r.record_key): r for r in rows}
    now = datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        return _pg_upsert_quarantine(conn, integration, dataset, latest, flow_run_id, now)
    table = cast(Table, QuarantinedRecord.__table__)
    values = [
        {
            "integration": integration,
            "dataset": dataset,
            "record_key": key,
            "raw_record": _storable_json(r.raw_record),
            "mapped_record": _storable_json(r.mapped_record),
            "failed_expectations": _storable_json(r.failed_expectations),
            "flow_run_id": flow_run_id,
            "status": QuarantineStatus.QUARANTINED.value,
            "seen_count": 1,
            "created_at": now,
            "updated_at": now,
        }
        for key, r in latest.items()
    ]
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["integration", "dataset", "record_key"],
        # A literal, not a bound parameter: executemany cannot carry "expanding" parameters.
        index_where=text("status = 'quarantined'"),
        set_={
            "raw_record": stmt.excluded.raw_record,
            "mapped_record": stmt.excluded.mapped_record,
            "failed_expectations": stmt.excluded.failed_expectations,
            "flow_run_id": stmt.excluded.flow_run_id,
            "seen_count": table.c.seen_count + 1,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    per_chunk = 2000
    for start in range(0, len(values), per_chunk):
        conn.execute(stmt, values[start : start + per_chunk])
    return len(values)


def _pg_upsert_quarantine(
    conn: Connection, integration: str, dataset: str, latest: Mapping[str, QuarantineRow], flow_run_id: str | None, now: datetime
) -> int:
    """`upsert_quarantine` on PostgreSQL: one statement over arrays of JSON texts, each written once by orjson.

    The SQLAlchemy path serialised every value twice (json_safe + json.dumps to look for NUL, then the JSON
    type's own json.dumps) and bound eleven parameters a row; jsonb keeps the same values either way.
    """
    columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    keys, raws, mapped, failed = columns
    for key, r in latest.items():
        keys.append(key)
        raws.append(_json_text(r.raw_record, storable=True))
        mapped.append(_json_text(r.mapped_record, storable=True))
        failed.append(_json_text(r.failed_expectations, storable=True))
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        cur.execute(
            "INSERT INTO quarantined_records (integration, dataset, record_key, raw_record, mapped_record, failed_expectations,"
            " flow_run_id, status, seen_count, created_at, updated_at)"
            " SELECT %(integration)s, %(dataset)s, k, r::jsonb, m::jsonb, f::jsonb, %(run)s, %(status)s, 1, %(now)s, %(now)s"
            # Binary parameters (%b): a text array in text format escapes every quote of the JSON in Python.
            " FROM unnest(%(keys)b::text[], %(raws)b::text[], %(mapped)b::text[], %(failed)b::text[]) AS q(k, r, m, f)"
            " ON CONFLICT (integration, dataset, record_key) WHERE status = 'quarantined' DO UPDATE SET"
            " raw_record = EXCLUDED.raw_record, mapped_record = EXCLUDED.mapped_record,"
            " failed_expectations = EXCLUDED.failed_expectations, flow_run_id = EXCLUDED.flow_run_id,"
            " seen_count = quarantined_records.seen_count + 1, updated_at = EXCLUDED.updated_at",
            {"integration": integration, "dataset": dataset, "run": flow_run_id, "status": QuarantineStatus.QUARANTINED.value,
             "now": now, "keys": keys, "raws": raws, "mapped": mapped, "failed": failed},
        )
    return len(keys)


_RECORD_KEY_MAX = 128  # quarantined_records.record_key


def storable_key(key: str) -> str:
    """A record key that fits `quarantined_records.record_key`: an oversized one keeps its head and a digest."""
    if len(key) <= _RECORD_KEY_MAX:
        return key
    return f"{key[:80]}#sha1:{hashlib.sha1(key.encode()).hexdigest()}"


def _storable_json(value: Any) -> Any:
    """JSON for a quarantine column: PostgreSQL's jsonb refuses the NUL character, so it is kept as U+FFFD."""
    safe = json_safe(value)
    if safe is None or "\\u0000" not in json.dumps(safe):
        return safe
    return _without_nul(safe)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def release_quarantine(conn: Connection, integration: str, dataset: str, keys: Sequence[Any], *, flow_run_id: str | None) -> int:
    """Close the open quarantine entries of records that have now loaded cleanly; resolve errors left with none open.

    Closed as `replayed` (the status a replay gives a row the ERP now holds), with who and why; each
    DATA_VALIDATION_FAILED error they belonged to gets an audit entry, and is resolved once none of its
    rows is open. Runs in the caller's transaction. Reads the dataset's open keys once: usually few.
    """
    table = cast(Table, QuarantinedRecord.__table__)
    open_rows = conn.execute(
        select(table.c.id, table.c.record_key, table.c.error_id).where(
            table.c.integration == integration,
            table.c.dataset == dataset,
            table.c.status == QuarantineStatus.QUARANTINED.value,
        )
    ).all()
    if not open_rows:
        return 0
    loaded = _loaded_keys(keys, {k for _, k, _ in open_rows})
    closing = [(int(i), k, e) for i, k, e in open_rows if k in loaded]
    if not closing:
        return 0
    now = datetime.now(UTC)
    actor = f"flow-run:{flow_run_id}" if flow_run_id else "hub"
    note = f"loaded cleanly by {'run ' + flow_run_id if flow_run_id else 'a later load'}"
    ids = [i for i, _, _ in closing]
    for start in range(0, len(ids), 1000):
        conn.execute(
            update(table)
            .where(table.c.id.in_(ids[start : start + 1000]), table.c.status == QuarantineStatus.QUARANTINED.value)
            .values(status=QuarantineStatus.REPLAYED.value, resolved_by=actor[:128], resolved_at=now, updated_at=now, resolution_note=note)
        )
    by_error: dict[int, list[str]] = {}
    for _, key, error_id in closing:
        if error_id is not None:
            by_error.setdefault(int(error_id), []).append(key)
    if by_error:
        _close_errors(conn, by_error, actor=actor, note=note, now=now)
    return len(closing)


def _loaded_keys(keys: Sequence[Any], open_keys: set[str]) -> set[str]:
    """The open keys among `keys` as `storable_key(str(key))` (missing and empty keys left out).

    Keys are usually str and the open ones a few: a set intersection, rather than a digest check per loaded key,
    unless an open key is a long key's digest form.
    """
    if infer_dtype(keys, skipna=True) == "string" and not any("#sha1:" in k for k in open_keys):
        return (open_keys & set(keys)) - {""}
    return {storable_key(str(k)) for k in keys if k is not None and not (isinstance(k, float) and k != k) and str(k)}


def _close_errors(conn: Connection, keys_by_error: Mapping[int, list[str]], *, actor: str, note: str, now: datetime) -> None:
    # hub.ledger.errors imports this module: imported here, and run on the caller's connection and transaction.
    from sqlalchemy.orm import Session

    from hub.core.models import ErrorEventAction
    from hub.ledger.errors import add_event, resolve_if_quarantine_closed

    with Session(bind=conn) as session:
        for error_id, keys in keys_by_error.items():
            add_event(
                session, error_id, ErrorEventAction.QUARANTINE_REPLAYED, actor=actor,
                reason=f"{len(keys)} quarantined record(s) {note}", details={"loaded": len(keys), "record_keys": sorted(keys)[:50]},
            )
            resolve_if_quarantine_closed(
                session, error_id, actor=actor, reason=f"every quarantined row was loaded, replayed or discarded ({note})", now=now
            )
        session.flush()


def read_cursor(conn: Connection, integration: str, dataset: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(SyncState.cursor).where(SyncState.integration == integration, SyncState.dataset == dataset)
    ).first()
    return dict(row[0]) if row and row[0] else None


def write_cursor(
    conn: Connection,
    integration: str,
    dataset: str,
    cursor: Mapping[str, Any],
    *,
    flow_run_id: str | None,
    rows_added: int = 0,
) -> None:
    now = datetime.now(UTC)
    table = cast(Table, SyncState.__table__)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table).values(
        integration=integration,
        dataset=dataset,
        cursor=json_safe(dict(cursor)),
        last_run_id=flow_run_id,
        last_success_at=now,
        rows_total=rows_added,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["integration", "dataset"],
        set_={
            "cursor": stmt.excluded.cursor,
            "last_run_id": stmt.excluded.last_run_id,
            "last_success_at": stmt.excluded.last_success_at,
            "rows_total": table.c.rows_total + rows_added,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt)


def reset_cursor(conn: Connection, integration: str, dataset: str) -> None:
    conn.execute(
        update(SyncState)
        .where(SyncState.integration == integration, SyncState.dataset == dataset)
        .values(cursor=None, updated_at=datetime.now(UTC))
    )


def load_batch(conn: Connection, batch: BatchLoad) -> LoadResult:
    """Rows, quarantine and cursor in the caller's transaction: all of it commits, or none of it.

    Rows the database refuses are quarantined instead of failing the batch (see the module docstring).
    """
    grouped = batch.record_column is not None
    rows = _dedupe_last(batch.rows, batch.key) if not batch.rows.empty and not grouped else batch.rows
    counts, refused_labels, refused = _upsert_isolating_refusals(conn, batch, rows)
    upserted = counts.pop("upserted", 0)
    key_column = batch.quarantine_key or batch.key[0]
    loaded = rows.drop(index=refused_labels) if refused_labels else rows
    loaded_units = loaded[batch.record_column].nunique() if grouped and not loaded.empty else len(loaded)
    unchanged = counts.pop("unchanged", loaded_units - upserted)
    released = 0
    if not loaded.empty:
        released = release_quarantine(conn, batch.integration, batch.dataset, loaded[key_column].tolist(), flow_run_id=batch.flow_run_id)
    quarantined = upsert_quarantine(conn, batch.integration, batch.dataset, [*batch.quarantine, *refused], batch.flow_run_id)
    if batch.finish is not None:
        for name, n in batch.finish(conn).items():
            counts[name] = counts.get(name, 0) + int(n)
    if batch.cursor is not None:
        write_cursor(conn, batch.integration, batch.dataset, batch.cursor, flow_run_id=batch.flow_run_id, rows_added=batch.run_upserted_before + upserted)
    return LoadResult(
        upserted=upserted,
        unchanged=unchanged,
        quarantined=quarantined,
        cursor_written=batch.cursor is not None,
        refused=len(refused),
        released=released,
        refused_rows=tuple(refused),
        counts=counts,
    )


def _write(conn: Connection, batch: BatchLoad, rows: pd.DataFrame) -> dict[str, int]:
    if batch.write is not None:
        return {name: int(n) for name, n in batch.write(conn, rows, batch.flow_run_id).items()}
    return {"upserted": upsert_rows(conn, batch.table, rows, batch.key)}


def _add(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for name, n in counts.items():
        total[name] = total.get(name, 0) + n


def _upsert_isolating_refusals(conn: Connection, batch: BatchLoad, rows: pd.DataFrame) -> tuple[dict[str, int], list[Any], list[QuarantineRow]]:
    """Write `rows`; rows the database refuses are bisected out under SAVEPOINTs and returned as quarantine rows.

    The whole batch is tried first under one SAVEPOINT, so a clean batch costs one savepoint. A refused
    part is halved until single rows remain (single records, with `record_column`: an order's rows are
    never split); each refused row costs about 2 log2(n) attempts.
    """
    if rows.empty:
        return {}, [], []
    try:
        with _savepoint(conn):
            return _write(conn, batch, rows), [], []
    except Exception as exc:
        if _refusal(exc) is None:
            raise
        first = exc
    written: dict[str, int] = {}
    labels: list[Any] = []
    refused: list[QuarantineRow] = []
    parts = _halves(rows, batch.record_column)
    while parts:
        part = parts.pop()
        try:
            with _savepoint(conn):
                _add(written, _write(conn, batch, part))
        except Exception as exc:
            reason = _refusal(exc)
            if reason is None:
                raise
            if _units(part, batch.record_column) > 1:
                parts.extend(_halves(part, batch.record_column))
                continue
            labels.extend(part.index)
            refused.append(_refused_row(batch, part, reason))
            if len(refused) > MAX_REFUSED_ROWS:
                # Not a few bad values but the table refusing rows wholesale (a constraint, a schema change):
                # the batch fails as before rather than quarantining it row by row.
                raise first from exc
    return written, labels, refused


MAX_REFUSED_ROWS = 100  # per batch; more fail the batch (each costs about 2 log2(n) savepoint attempts)


def _units(rows: pd.DataFrame, record_column: str | None) -> int:
    return len(rows) if record_column is None else int(rows[record_column].nunique())


def _halves(rows: pd.DataFrame, record_column: str | None = None) -> list[pd.DataFrame]:
    if record_column is not None:  # halve by records: every row of a record stays in one half
        records = pd.unique(rows[record_column])
        first = rows[record_column].isin(records[: len(records) // 2])
        return [rows[~first], rows[first]]
    middle = len(rows) // 2
    return [rows.iloc[middle:], rows.iloc[:middle]]  # popped from the end: the first half is tried first


def _savepoint(conn: Connection) -> NestedTransaction:
    if conn.dialect.name == "sqlite":
        # pysqlite opens a transaction only before DML: a SAVEPOINT issued first would start (and its
        # RELEASE commit) a transaction of its own, outside the caller's.
        dbapi = conn.connection.driver_connection
        if dbapi is not None and not getattr(dbapi, "in_transaction", True):
            conn.exec_driver_sql("BEGIN")
    return conn.begin_nested()


def _refusal(exc: BaseException) -> BaseException | None:
    """The driver's error when the database refused the data (DataError/IntegrityError); None for anything else.

    An OperationalError (the database is away, a timeout, a deadlock) is not a refusal of rows: it fails the batch.
    """
    import psycopg

    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        if isinstance(exc.orig, psycopg.Error):
            return exc.orig
        # SQLite: its own constraints only. A trigger's RAISE(ABORT) is an IntegrityError too, and refuses every row.
        return exc.orig if _SQLITE_REFUSAL.match(str(exc.orig)) else None
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return exc
    return None


_SQLITE_REFUSAL = re.compile(r"(NOT NULL|UNIQUE|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed|datatype mismatch")
_SQLITE_COLUMN = re.compile(r"constraint failed: \w+\.(\w+)")
_COPY_COLUMN = re.compile(r"column (\w+)")


def _refused_column(error: BaseException) -> str | None:
    diag = getattr(error, "diag", None)
    if diag is not None:
        if diag.column_name:
            return str(diag.column_name)
        found = _COPY_COLUMN.search(diag.context or "")  # COPY names the column in the error context
        if found:
            return found.group(1)
    found = _SQLITE_COLUMN.search(str(error))
    return found.group(1) if found else None


def _column_with_nul(mapped: Mapping[str, Any]) -> str | None:
    # psycopg refuses a NUL character in text itself, before the server could name the column.
    return next((name for name, value in mapped.items() if isinstance(value, str) and "\x00" in value), None)


def _refused_row(batch: BatchLoad, row: pd.DataFrame, error: BaseException) -> QuarantineRow:
    """The quarantine row of a row (a record's rows, with `record_column`) the database refused."""
    label = row.index[0] if batch.record_column is None else row[batch.record_column].iloc[0]
    mapped = {k: json_safe(v) for k, v in row.iloc[0].to_dict().items() if k != "row_hash"}
    raw = dict(batch.raw_of(label)) if batch.raw_of is not None else mapped
    key = mapped.get(batch.quarantine_key or batch.key[0])
    nul_column = next((c for r in row.to_dict("records") if (c := _column_with_nul(r))), None)
    if batch.record_column is not None:
        mapped = {"rows": [{str(k): json_safe(v) for k, v in r.items() if k != "row_hash"} for r in row.to_dict("records")]}
    diag = getattr(error, "diag", None)
    message = getattr(diag, "message_primary", None) or next(iter(str(error).splitlines()), "") or type(error).__name__
    return QuarantineRow(
        record_key=str(key) if key not in (None, "") else record_digest(raw),
        raw_record=raw,
        mapped_record=mapped,
        failed_expectations=[
            failure_entry(
                "database_refused",
                column=_refused_column(error) or nul_column,
                kwargs={"sqlstate": getattr(error, "sqlstate", None) or getattr(diag, "sqlstate", None), "table": batch.table.name},
                value=str(message),
            )
        ],
    )


def count_rows(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
