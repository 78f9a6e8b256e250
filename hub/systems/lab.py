"""Lab exports into the ERP: one export = one transaction (its rows, its quarantined lines, its ledger row).

Reads top to bottom like the pipeline: checksum -> parse (connectors.lab) -> map (data_mappings.lab)
-> validate (expectations/lab.py through the runner) -> load (hub.ledger.loading). No Prefect here: the
collect-lab-results flow calls `process_export` once per file, the benchmark calls it directly.

Exactly once: the `lab_exports` row (unique sha256 of the content) commits in the same transaction
as the export's rows and quarantine entries. A crash before the commit leaves nothing, and the file
is read again next run; after the commit the same content is skipped (counted as a duplicate),
whatever its name. Two runs racing on one file: the second commit hits the unique checksum and
rolls back, and is reported as a duplicate.

Quarantined lines keep their parsed values and their export's number format, so that `drymix quarantine
replay` maps them with the same code as a fresh export (`replay_frame`, registered in hub/ledger/quarantine.py).
`drymix lab replay <sha>` is the other replay: the whole file again, through today's parser.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
from sqlalchemy import Connection, Engine, Table, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.core.errors import SyncFailed
from connectors.lab.api import RESULTS, records_to_csv
from connectors.lab.exports import ExportRejected, ParsedExport, checksum, parse_export, uses_decimal_comma
from connectors.lab.profiles import InstrumentProfile, NoProfileFits, load_profiles, parse_with_profiles
from data_mappings.lab import LabMappingOptions, map_lab_results, records_frame
from hub.core.models import (
    LabExport,
    LabExportStatus,
    LabResult,
    ProductionBatch,
    QuarantinedRecord,
)
from hub.core.settings import LabConfig, lab_config
from hub.ledger.loading import (
    BatchLoad,
    QuarantineRow,
    count_failures,
    failure_entry,
    load_batch,
    quarantine_rows,
)
from hub.ledger.retry_units import LAB_RESULTS_API
from tasks.streams import ApplyContext, PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from connectors.core.base import Connector, Stream

INTEGRATION = "lab"
DATASET = "lab_results"
SUITE = "lab"
_KEY_MAX = 128
_HEAD_CHARS = 4000


@dataclass
class ExportOutcome:
    """What happened to one export; the flow sums these into the run summary."""

    name: str
    sha256: str
    status: str  # processed | rejected | duplicate
    rows_total: int = 0
    valid: int = 0
    quarantined: int = 0
    written: int = 0
    unchanged: int = 0
    batch_unknown: int = 0
    delimiter: str | None = None
    decimal_comma: bool | None = None
    profile: str | None = None  # the instrument profile that read it (None: the API's canonical CSV, or none fitted)
    unmatched: bool = False  # no profile fits: quarantined whole
    reason: str | None = None
    failures_by_expectation: dict[str, int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Validator = Callable[..., Any]


def _validate(frame: pd.DataFrame, run_name: str | None) -> Any:
    from expectations.runner import validate_frame

    return validate_frame(SUITE, frame, run_name=run_name)


def find_export(conn: Connection, sha256: str) -> bool:
    """Whether this content was processed (or rejected) already."""
    return conn.execute(select(LabExport.id).where(LabExport.sha256 == sha256)).first() is not None


def processed_under_name(conn: Connection, name: str) -> bool:
    """Whether an export arrived under this file name and was processed (or skipped as a duplicate)."""
    name = name[:255]
    query = select(LabExport.id).where(or_(LabExport.file_name == name, LabExport.last_duplicate_name == name)).limit(1)
    return conn.execute(query).first() is not None


def known_batch_ids(conn: Connection, batch_ids: Iterable[str]) -> set[str]:
    """Which of these batch ids the plant has reported (production_batches)."""
    wanted = sorted({b for b in batch_ids if isinstance(b, str) and b})
    found: set[str] = set()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        found.update(conn.execute(select(ProductionBatch.batch_id).where(ProductionBatch.batch_id.in_(chunk))).scalars())
    return found


def refresh_batch_flags(conn: Connection) -> int:
    """Results loaded before their batch record arrived: set `batch_known` now that it has."""
    result = conn.execute(
        update(LabResult)
        .where(LabResult.batch_known.is_(False), LabResult.batch_id.in_(select(ProductionBatch.batch_id)))
        .values(batch_known=True)
    )
    return int(result.rowcount or 0)


def _note_duplicate(engine: Engine, sha256: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(LabExport)
            .where(LabExport.sha256 == sha256)
            .values(duplicates_seen=LabExport.duplicates_seen + 1, last_duplicate_name=name[:255], last_duplicate_at=datetime.now(UTC))
        )


def _ledger_row(name: str, sha256: str, content: bytes, *, status: str, source: str, run_id: str | None,
                file_mtime: datetime | None, received_at: datetime) -> dict[str, Any]:
    return {
        "sha256": sha256,
        "file_name": name[:255],
        "source": source,
        "size_bytes": len(content),
        "file_mtime": file_mtime,
        "received_at": received_at,
        "processed_at": datetime.now(UTC),
        "status": status,
        "flow_run_id": run_id,
        "duplicates_seen": 0,
        "rows_total": 0,
        "rows_loaded": 0,
        "rows_written": 0,
        "rows_quarantined": 0,
    }


def _key(base: str | None, sha256: str, line: int) -> str:
    key = base if base else f"{sha256[:12]}:L{line}"
    return key if len(key) <= _KEY_MAX else f"{sha256[:12]}:L{line}"


def site_profiles(config: LabConfig) -> list[InstrumentProfile]:
    """The instrument profiles of this site ([lab] profiles, config/lab/), read again when a file changed."""
    directory = config.profiles_dir
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in files)
    return list(_cached_profiles(str(directory), tuple(config.profiles) if config.profiles is not None else None, stamp))


@lru_cache(maxsize=8)
def _cached_profiles(directory: str, names: tuple[str, ...] | None, stamp: tuple[tuple[str, int], ...]) -> tuple[InstrumentProfile, ...]:
    return tuple(load_profiles(Path(directory), list(names) if names is not None else None))


def mapping_options(config: LabConfig, *, decimal_comma: bool = False, load_unit: str = "kN", dialect: Mapping[str, Any] | None = None) -> LabMappingOptions:
    """How to read one export's values: its number format, units and times (its profile), and the configured tolerances."""
    dialect = dialect or {}
    return LabMappingOptions(
        decimal_comma=bool(dialect.get("decimal_comma", decimal_comma)),
        load_unit=str(dialect.get("load_unit") or load_unit),
        timezone=str(dialect.get("timezone") or config.timezone),
        thousands=str(dialect.get("thousands") or ""),
        datetime_formats=tuple(dialect.get("datetime_formats") or ()),
        factors=tuple(sorted((str(k), float(v)) for k, v in (dialect.get("factors") or {}).items())),
        abs_tolerance_mpa=config.strength_abs_tolerance_mpa,
        rel_tolerance=config.strength_rel_tolerance,
    )


def map_records(conn: Connection, records: list[dict[str, Any]], options: LabMappingOptions) -> pd.DataFrame:
    """Parsed export rows -> the `lab_results` frame, `batch_known` from the batches the plant reported."""
    raw = records_frame(records)
    known = known_batch_ids(conn, raw["batch_id"].dropna().tolist() if "batch_id" in raw.columns else [])
    return map_lab_results(raw, options, known)


def result_rows(valid: pd.DataFrame, *, export_sha256: str | list[str], export_file: str | list[str], run_id: str | None) -> pd.DataFrame:
    """Rows that passed, as `lab_results` holds them: which export (and line) each came from."""
    return valid.assign(
        age_days=valid["age_days"].astype("int64"),
        source_line=valid["source_line"].astype("int64"),
        export_sha256=export_sha256,
        export_file=export_file if isinstance(export_file, list) else export_file[:255],
        source_run_id=run_id,
    )


def export_dialect(parsed: ParsedExport) -> dict[str, Any]:
    """How the export writes its values: kept with each quarantined line, so that a replay reads them alike."""
    d = parsed.dialect
    dialect: dict[str, Any] = {"decimal_comma": d.decimal_comma, "load_unit": d.load_unit}
    if d.profile is not None:
        dialect.update(profile=d.profile, thousands=d.thousands, datetime_formats=list(d.datetime_formats), timezone=d.timezone,
                       factors=dict(d.factors))
    return dialect


def _raw_line(parsed: ParsedExport, label: Any) -> dict[str, Any]:
    """A mapped row's source: its export line, its text and parsed values, its number format (a replay maps it again)."""
    record = parsed.records[int(label)]
    line = int(record.get("source_line") or 0)
    return {"file": parsed.name, "sha256": parsed.sha256, "line": line, "text": parsed.line_text(line), "values": record,
            "dialect": export_dialect(parsed)}


def _quarantine_rows(parsed: ParsedExport, frame: pd.DataFrame, outcome: Any) -> list[QuarantineRow]:
    """Unreadable lines and refused rows, each with its export line, its text, its number format and the reasons."""
    rows: list[QuarantineRow] = []
    dialect = export_dialect(parsed)
    for bad in parsed.bad_lines:
        rows.append(
            QuarantineRow(
                record_key=_key((bad.values.get("specimen_id") or "").strip() or None, parsed.sha256, bad.line),
                raw_record={"file": parsed.name, "sha256": parsed.sha256, "line": bad.line, "text": bad.text, "values": bad.values,
                            "dialect": dialect, "reason": bad.reason},
                mapped_record=None,
                failed_expectations=[failure_entry("readable_line", value=bad.reason)],
            )
        )
    if outcome is not None:

        def key_of(label: Any) -> str:
            record = parsed.records[int(label)]
            specimen = record.get("specimen_id")
            return _key(str(specimen) if specimen else None, parsed.sha256, int(record.get("source_line") or 0))

        rows += quarantine_rows(outcome, frame, raw_of=lambda label: _raw_line(parsed, label), key_of=key_of)
    # Two refused lines with one specimen id must not collapse into one quarantine entry.
    counts = Counter(r.record_key for r in rows)
    for row in rows:
        if counts[row.record_key] > 1:
            row.record_key = f"{row.record_key[:100]}#{parsed.sha256[:12]}:L{row.raw_record['line']}"
    return rows


def process_export(
    content: bytes,
    name: str,
    *,
    engine: Engine,
    config: LabConfig,
    run_id: str | None = None,
    file_mtime: datetime | None = None,
    source: str = "drop",
    validate: Validator | None = None,
    cursor: Mapping[str, Any] | None = None,
    profiles: Sequence[InstrumentProfile] | None = None,
) -> ExportOutcome:
    """Checksum, parse, map, validate and load one export, exactly once (with `cursor`, the watermark too).

    A dropped file is read with the site's instrument profiles (`profiles`, default [lab] profiles); a results-API
    page is the hub's own canonical CSV and is read by the generic parser."""
    received_at = datetime.now(UTC)
    clock = time.perf_counter()
    sha256 = checksum(content)
    with engine.connect() as conn:
        seen = find_export(conn, sha256)
    if seen:
        _note_duplicate(engine, sha256, name)
        return ExportOutcome(name=name, sha256=sha256, status="duplicate", reason="same content as an export already processed")

    # --- extract: parse the file with the profile that fits it --------------------------------
    try:
        if source == "api":
            parsed = parse_export(content, name)
        else:
            parsed = parse_with_profiles(content, name, site_profiles(config) if profiles is None else profiles)
    except ExportRejected as exc:
        tried = {"profiles_tried": [{"profile": p, "why_not": why} for p, why in exc.tried]} if isinstance(exc, NoProfileFits) else None
        outcome = _reject(engine, content, name, sha256, str(exc), source=source, run_id=run_id, file_mtime=file_mtime,
                          received_at=received_at, details=tried)
        outcome.unmatched = isinstance(exc, NoProfileFits)
        return outcome
    stages = {"parse": round(time.perf_counter() - clock, 4)}
    clock = time.perf_counter()

    # --- map ----------------------------------------------------------------------------------
    options = mapping_options(config, dialect=export_dialect(parsed))
    with engine.connect() as conn:
        frame = map_records(conn, parsed.records, options)
    stages["map"] = round(time.perf_counter() - clock, 4)
    clock = time.perf_counter()

    # --- validate -----------------------------------------------------------------------------
    checked = (validate or _validate)(frame, run_id) if len(frame) else None
    valid = checked.valid if checked is not None else frame.iloc[0:0]
    quarantine = _quarantine_rows(parsed, frame, checked)
    stages["validate"] = round(time.perf_counter() - clock, 4)
    clock = time.perf_counter()

    # --- load: rows, quarantine and the ledger row in one transaction ------------------------
    rows = result_rows(valid, export_sha256=sha256, export_file=name, run_id=run_id)
    if len(rows) + len(quarantine) != parsed.data_lines:
        raise SyncFailed(
            f"{name}: row counts do not balance: {parsed.data_lines} data lines, {len(rows)} valid + {len(quarantine)} quarantined",
            code="COUNT_IMBALANCE",
            operation="process_export",
        )
    ledger = _ledger_row(name, sha256, content, status=LabExportStatus.PROCESSED.value, source=source, run_id=run_id, file_mtime=file_mtime, received_at=received_at)
    ledger.update(
        delimiter=parsed.dialect.delimiter,
        decimal_comma=parsed.dialect.decimal_comma,
        encoding=parsed.dialect.encoding,
        rows_total=parsed.data_lines,
        rows_loaded=len(rows),
        rows_quarantined=len(quarantine),
        note=f"profile {parsed.dialect.profile}" if parsed.dialect.profile else None,
    )

    def raw_line(label: Any) -> dict[str, Any]:
        """A row the database refuses is quarantined like a refused line: a replay maps its values again."""
        return _raw_line(parsed, label)

    try:
        with engine.begin() as conn:
            # A specimen that loads cleanly closes its open quarantine entry (an earlier export refused it).
            result = load_batch(
                conn,
                BatchLoad(integration=INTEGRATION, dataset=DATASET, table=cast(Table, LabResult.__table__), key=["specimen_id"],
                          rows=rows, quarantine=quarantine, cursor=cursor, flow_run_id=run_id, raw_of=raw_line),
            )
            ledger["rows_written"] = result.upserted
            ledger["rows_loaded"] = len(rows) - result.refused
            ledger["rows_quarantined"] = len(quarantine) + result.refused
            conn.execute(insert(LabExport).values(**ledger))
    except IntegrityError:
        with engine.connect() as conn:
            if not find_export(conn, sha256):
                raise
        return ExportOutcome(name=name, sha256=sha256, status="duplicate", reason="processed by a concurrent run")
    stages["load"] = round(time.perf_counter() - clock, 4)

    sample: list[dict[str, Any]] = []
    quarantine = [*quarantine, *result.refused_rows]
    for row in quarantine:
        if len(sample) < 10:
            sample.append({"record_key": row.record_key, "file": name, "line": row.raw_record["line"], "failed": row.failed_expectations[:3]})
    return ExportOutcome(
        name=name,
        sha256=sha256,
        status=LabExportStatus.PROCESSED.value,
        rows_total=parsed.data_lines,
        valid=len(rows) - result.refused,
        quarantined=len(quarantine),
        written=result.upserted,
        unchanged=result.unchanged,
        batch_unknown=int((~rows["batch_known"].astype(bool)).sum()) if len(rows) else 0,
        delimiter=parsed.dialect.delimiter,
        decimal_comma=parsed.dialect.decimal_comma,
        profile=parsed.dialect.profile,
        failures_by_expectation=count_failures(quarantine),
        sample=sample,
        stage_seconds=stages,
    )


def _reject(engine: Engine, content: bytes, name: str, sha256: str, reason: str, *, source: str, run_id: str | None,
            file_mtime: datetime | None, received_at: datetime, details: Mapping[str, Any] | None = None) -> ExportOutcome:
    """A file that is not a readable export: one quarantine entry with its head (and which profiles were tried), and the ledger row."""
    raw: dict[str, Any] = {"file": name, "sha256": sha256, "size_bytes": len(content), **(details or {})}
    head = content[:_HEAD_CHARS]
    if b"\x00" in head:  # binary: JSON text columns cannot hold NUL (PostgreSQL refuses \u0000)
        raw["head_base64"] = base64.b64encode(head).decode()
    else:
        raw["head"] = head.decode("utf-8", errors="replace")
    entry = QuarantineRow(
        record_key=f"export:{sha256[:40]}",
        raw_record=raw,
        mapped_record=None,
        failed_expectations=[failure_entry("readable_export", value=reason)],
    )
    ledger = _ledger_row(name, sha256, content, status=LabExportStatus.REJECTED.value, source=source, run_id=run_id, file_mtime=file_mtime, received_at=received_at)
    ledger.update(note=reason, rows_quarantined=1)
    try:
        with engine.begin() as conn:
            load_batch(conn, BatchLoad(integration=INTEGRATION, dataset=DATASET, table=cast(Table, LabResult.__table__),
                                       key=["specimen_id"], rows=pd.DataFrame(), quarantine=[entry], flow_run_id=run_id))
            conn.execute(insert(LabExport).values(**ledger))
    except IntegrityError:
        return ExportOutcome(name=name, sha256=sha256, status="duplicate", reason="processed by a concurrent run")
    return ExportOutcome(
        name=name, sha256=sha256, status=LabExportStatus.REJECTED.value, quarantined=1, reason=reason,
        failures_by_expectation=count_failures([entry]),
        sample=[{"record_key": entry.record_key, "file": name, "line": None, "failed": entry.failed_expectations}],
    )


# --- replay of quarantined lines (drymix quarantine replay) -----------------------------------------


def replay_frame(records: list[dict[str, Any]], conn: Connection) -> pd.DataFrame:
    """Quarantined lab lines -> today's `lab_results` frame (one row each, positional index).

    A refused row is mapped again from its parsed values with its export's number format and today's
    mapping, tolerances and batches. An unreadable line (cut off, wrong field count) or a rejected export
    cannot become a row by replaying it: it keeps its reason in `mapping_errors`, so the suite refuses it
    again. A corrected export is a new file; a parser fix is replayed by `drymix lab replay <sha>`.
    """
    config = lab_config()
    groups: dict[str, list[int]] = {}
    for position, raw in enumerate(records):
        dialect = raw.get("dialect") or _dialect_of(raw.get("values") or {})
        groups.setdefault(json.dumps(dialect, sort_keys=True, default=str), []).append(position)
    frames = []
    for dialect_json, positions in groups.items():
        values = [dict(records[p].get("values") or {}) for p in positions]
        frame = map_records(conn, values, mapping_options(config, dialect=json.loads(dialect_json)))
        frame.index = positions
        unreadable = [(p, reason) for p in positions if (reason := _unreadable(records[p])) is not None]
        for position, reason in unreadable:
            frame.at[position, "mapping_errors"] = reason
        frames.append(frame)
    return pd.concat(frames).sort_index() if frames else map_records(conn, [], mapping_options(config))


def replay_rows(loadable: pd.DataFrame, records: list[dict[str, Any]], run_id: str) -> pd.DataFrame:
    """Replayed rows that pass, with the export (and line) each came from."""
    positions = [int(p) for p in loadable.index]
    return result_rows(
        loadable,
        export_sha256=[str(records[p].get("sha256") or "")[:64] for p in positions],
        export_file=[str(records[p].get("file") or "")[:255] for p in positions],
        run_id=run_id,
    )


def _dialect_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """Entries quarantined before they carried their export's format: a decimal comma in a number says it."""
    return {"decimal_comma": uses_decimal_comma(values), "load_unit": "kN"}


def _unreadable(raw: Mapping[str, Any]) -> str | None:
    """Why a quarantined entry is not a parsed row (None when it is one: its values carry their line)."""
    values = raw.get("values")
    if isinstance(values, Mapping) and values.get("source_line") is not None:
        return None
    if "line" in raw:
        return f"unreadable line {raw['line']} of {raw.get('file')}: {raw.get('reason') or 'cut off or wrong field count'}; drop a corrected export"
    sha = str(raw.get("sha256") or "")[:12]
    return f"the export {raw.get('file')} was rejected as a whole; after a parser fix: drymix lab replay {sha}"


def forget_export(engine: Engine, sha_prefix: str) -> LabExport:
    """Delete an export's ledger row so that its file is processed again (replay); loads are idempotent."""
    prefix = sha_prefix.strip().lower()
    if len(prefix) < 6 or not all(c in "0123456789abcdef" for c in prefix):
        raise ValueError("give at least 6 hex characters of the export's sha256")
    with Session(engine, expire_on_commit=False) as session, session.begin():
        found = list(session.scalars(select(LabExport).where(LabExport.sha256.like(prefix + "%"))))
        if not found:
            raise LookupError(f"no processed export with a checksum starting {prefix!r}")
        if len(found) > 1:
            raise LookupError(f"{len(found)} exports have a checksum starting {prefix!r}: give more characters")
        session.execute(delete(LabExport).where(LabExport.id == found[0].id))
    return found[0]


def list_exports(engine: Engine, limit: int = 50) -> list[LabExport]:
    with Session(engine) as session:
        return list(session.scalars(select(LabExport).order_by(LabExport.id.desc()).limit(limit)))


# --- the results API, as the sync engine runs it (flows/collect_lab_results.py) ----------------------
#
# Each page is an export of its own (`records_to_csv`), processed like a dropped file by `process_export`:
# its rows, its quarantined lines, its ledger row and the `after` cursor commit in one transaction, exactly
# once by checksum. So the cursor moves with every page, not only with the read's last one, and a failed
# read reruns from the committed cursor.

API_PAGE_PREFIX = "api-results-"
REFUSED_BY = "refused_by:"  # an apply's counts are integers: failures by expectation travel under this prefix


def apply_results_page(conn: Connection, records: list[dict[str, Any]], cursor: Mapping[str, Any] | None,
                       context: ApplyContext) -> dict[str, int]:
    """One results-API page with its `after` cursor, in `process_export`'s transaction (which writes it under
    `lab_results`, the `context.cursor_key` of a stream that declares no other).

    The engine's own cursor (last page only) is not needed: every page writes its own. Quarantined rows are
    this dataset's own counts (`rows_quarantined`, `refused_by:<expectation>`): to the engine every record of
    the page was applied. The engine's transaction (`conn`) holds nothing: `process_export` commits in its own,
    so that a concurrent run's commit of the same page is told apart (a duplicate) from a failure."""
    if not records:
        return {}  # the empty page after a full last one
    first, last = records[0]["seq"], records[-1]["seq"]
    outcome = process_export(
        records_to_csv(records), f"{API_PAGE_PREFIX}{first}-{last}.csv", engine=conn.engine, config=lab_config(),
        run_id=context.flow_run_id, source="api", cursor={"after": last},
    )
    counts = {
        "api_pages": 1,
        "pages_duplicate": int(outcome.status == "duplicate"),
        "rows_total": outcome.rows_total,
        "rows_loaded": outcome.valid,
        "rows_quarantined": outcome.quarantined,
        "rows_written": outcome.written,
        "rows_unchanged": outcome.unchanged,
        "batch_unknown": outcome.batch_unknown,
    }
    counts.update({f"{REFUSED_BY}{name}": n for name, n in outcome.failures_by_expectation.items()})
    return counts


def api_quarantine_sample(conn: Connection, run_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Rows this run's results-API pages quarantined, for the validation-failure row's sample."""
    if run_id is None or limit <= 0:
        return []
    query = (
        select(QuarantinedRecord.record_key, QuarantinedRecord.raw_record, QuarantinedRecord.failed_expectations)
        .where(QuarantinedRecord.integration == INTEGRATION, QuarantinedRecord.dataset == DATASET, QuarantinedRecord.flow_run_id == run_id)
        .order_by(QuarantinedRecord.id)
    )
    sample: list[dict[str, Any]] = []
    for row in conn.execute(query):
        raw = row.raw_record or {}
        if str(raw.get("file") or "").startswith(API_PAGE_PREFIX):
            sample.append({"record_key": row.record_key, "file": raw.get("file"), "line": raw.get("line"), "failed": row.failed_expectations[:3]})
            if len(sample) >= limit:
                break
    return sample


def _api_plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    return ReadPlan(
        position=connector.start(stream, cursor),
        mode="incremental" if cursor else "full",
        since=(cursor or {}).get("after"),
        state={"api": options.parameters.get("api_url")},  # in the failed unit: the rerun reads the same API
    )


def _connect_api(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_lab_api_connector

    return build_lab_api_connector(base_url=options.parameters.get("api_url"), page_size=options.page_size)


RESULTS_API = PullStream(
    integration=INTEGRATION,
    dataset=DATASET,
    flow_name="collect-lab-results",
    unit_kind=LAB_RESULTS_API,
    operation="read_results_api",
    stream=RESULTS,
    connect=_connect_api,
    plan=_api_plan,
    next_cursor=lambda plan, high_water, started: None,  # every page wrote its own cursor
    apply=apply_results_page,
    batch_pages=1,  # each page commits with its cursor
    keep_cursor_on_resume=False,  # the cursor is the last page committed, by whichever run
    # Nothing resolved here: the flow resolves after the whole run, and a file that failed in it stays open.
    resolve=(),
)
