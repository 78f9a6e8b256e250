"""Lab testing-machine exports: find finished files in a drop folder and read them tolerantly but strictly.

Testers (Matest, Controls, ZwickRoell, Instron Bluehill exports, Humboldt LIMS output) write one CSV per
test session into a shared folder, in place, with no "done" marker (api-contracts section 7). So:

- **When is a file finished?** When its size and modification time have stood still for `settle_s`
  (the "minimum file age" rule of Apache NiFi's ListFile and similar pollers), and they are unchanged
  again after the bytes were read. Names of the partial/lock conventions some writers do use
  (`.part`, `.tmp`, `.partial`, `.crdownload`, `~$`/dot-files, or a `<name>.lock` beside the file)
  are never read. Nothing is remembered between scans: a scheduled flow has no memory to keep.
- **Which file is new?** The sha256 of its content, not its name: a re-dropped copy under another name
  is the same export (see `hub.systems.lab`), and a corrected file under the same name is a new one.
- **Parsing.** The csv module splits fields (quotes, embedded delimiters). The delimiter is chosen as
  the candidate that maps the most header cells to known field names (csv.Sniffer guesses from
  character frequencies and is fooled by decimal commas). Header cells are matched by name and alias
  in any order, units in brackets are read (`Fmax [N]`). A decimal comma is detected per file. Every
  data line either becomes a row or a `BadLine` with the reason (wrong field count, truncated last
  line): nothing is dropped silently. Numbers and dates are converted by `data_mappings.lab`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.core.base import Integration

log = logging.getLogger(__name__)

#: Canonical fields of one result row, in the order the hub writes them.
FIELDS: tuple[str, ...] = (
    "specimen_id",
    "batch_id",
    "product_code",
    "test_type",
    "test_standard",
    "age_days",
    "length_mm",
    "width_mm",
    "height_mm",
    "span_mm",
    "area_mm2",
    "peak_load_kn",
    "strength_mpa",
    "tested_at",
    "machine_id",
    "operator",
)
#: Without these a file cannot be read at all (it is rejected as a whole, with the reason).
REQUIRED: tuple[str, ...] = ("specimen_id", "batch_id", "test_type", "age_days", "peak_load_kn", "strength_mpa", "tested_at", "machine_id")

# Normalised header names (lower case, ASCII, words joined by "_", unit removed) -> canonical field.
_ALIASES: dict[str, tuple[str, ...]] = {
    "specimen_id": ("specimen_id", "specimen", "specimen_no", "specimen_number", "specimen_name", "specimen_label", "pruefkoerper", "probekoerper", "probe_id"),
    "batch_id": ("batch_id", "batch", "batch_no", "batch_number", "production_batch", "lot", "lot_no", "lot_number", "charge", "charge_nr", "chargennummer"),
    "product_code": ("product_code", "product", "product_id", "material", "material_code", "recipe", "recipe_code", "mortar", "article", "artikel"),
    "test_type": ("test_type", "test", "test_mode", "type_of_test", "type", "pruefart"),
    "test_standard": ("test_standard", "standard", "norm", "method", "test_method"),
    "age_days": ("age_days", "age", "age_d", "specimen_age", "age_at_test", "test_age", "alter"),
    "length_mm": ("length_mm", "length", "specimen_length", "laenge"),
    "width_mm": ("width_mm", "width", "breadth", "b", "breite"),
    "height_mm": ("height_mm", "height", "depth", "thickness", "d", "hoehe"),
    "span_mm": ("span_mm", "span", "support_span", "span_length", "stuetzweite"),
    "area_mm2": ("area_mm2", "area", "loaded_area", "cross_section", "cross_sectional_area", "flaeche"),
    "peak_load_kn": ("peak_load_kn", "peak_load", "max_load", "maximum_load", "fmax", "f_max", "load", "breaking_load", "failure_load", "ultimate_load", "bruchlast", "hoechstkraft"),
    "strength_mpa": ("strength_mpa", "strength", "result", "fc", "fm", "ff", "festigkeit"),
    "tested_at": ("tested_at", "test_date", "test_datetime", "test_time", "date_time", "datetime", "date", "timestamp", "tested", "pruefdatum"),
    "machine_id": ("machine_id", "machine", "machine_no", "instrument", "tester", "frame", "testing_machine", "pruefmaschine"),
    "operator": ("operator", "tested_by", "user", "technician", "pruefer"),
}
_HEADER_INDEX: dict[str, str] = {alias: canonical for canonical, aliases in _ALIASES.items() for alias in aliases}
# Units that headers may carry, and what they mean for the fields that have units.
_LOAD_UNITS: dict[str, float] = {"kn": 1.0, "n": 0.001}
_STRESS_UNITS = frozenset({"mpa", "n_mm2", "n_mm_2", "n_mm"})
_LENGTH_UNITS = frozenset({"mm"})
_AREA_UNITS = frozenset({"mm2", "mm_2", "mm"})
_AGE_UNITS = frozenset({"d", "days", "day", "tage"})

DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
_HEADER_SEARCH_LINES = 10
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".lock", ".filepart")
_ARCHIVE_DIRS = ("processed", "duplicates", "rejected")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
_NUMERIC_FIELDS = ("age_days", "length_mm", "width_mm", "height_mm", "span_mm", "area_mm2", "peak_load_kn", "strength_mpa")


class ExportRejected(ValueError):
    """The file as a whole cannot be read as a lab export (the reason says why)."""


@dataclass(frozen=True)
class ExportDialect:
    """How one file was written: what the parser found out, kept in the lab_exports ledger."""

    encoding: str
    delimiter: str
    decimal_comma: bool
    header_line: int
    columns: dict[str, str]  # canonical field -> header cell as written
    load_unit: str = "kN"
    ignored_columns: tuple[str, ...] = ()
    preamble: tuple[str, ...] = ()
    # Set by an instrument profile (connectors/lab/profiles.py); the defaults are the generic parser's.
    profile: str | None = None
    thousands: str = ""
    datetime_formats: tuple[str, ...] = ()  # empty: ISO 8601 and the usual dd.mm.yyyy / dd/mm/yyyy forms
    timezone: str | None = None  # None: [lab] timezone
    factors: dict[str, float] = field(default_factory=dict)  # field -> factor to the ERP unit
    metadata: dict[str, str] = field(default_factory=dict)  # `key: value` lines above the header


@dataclass(frozen=True)
class BadLine:
    """A data line that could not be read as a row: quarantined with its text and the reason."""

    line: int
    text: str
    reason: str
    values: dict[str, str]


@dataclass
class ParsedExport:
    """The rows of one export (strings by canonical field, plus `source_line`) and its unreadable lines."""

    name: str
    sha256: str
    size: int
    dialect: ExportDialect
    records: list[dict[str, str | int | None]] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    lines: list[str] = field(default_factory=list, repr=False)

    @property
    def data_lines(self) -> int:
        return len(self.records) + len(self.bad_lines)

    def line_text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""


def checksum(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def normalise_header(cell: str) -> tuple[str, str | None]:
    """`"Fmax [kN]"` -> `("fmax", "kn")`: ASCII lower-case words joined by `_`, and the unit if any."""
    text = cell.strip().strip("\ufeff")
    unit = None
    match = re.search(r"[\[(]([^\])]*)[\])]\s*$", text)
    if match:
        unit = _slug(match.group(1)) or None
        text = text[: match.start()]
    return _slug(text), unit


def _slug(text: str) -> str:
    text = text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("Ä", "Ae").replace("Ö", "Oe").replace("Ü", "Ue").replace("ß", "ss")
    text = text.replace("²", "2").replace("/", "_")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")


def decode(content: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM), else Windows-1252 (lab PCs), else Latin-1 (which decodes anything)."""
    if content[:2] == b"PK":
        raise ExportRejected("a ZIP/XLSX file: export the results as CSV")
    if b"\x00" in content[:4096]:
        raise ExportRejected("binary content (NUL bytes): not a CSV export; UTF-16 exports are not read, export the results as CSV")
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return content.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise ExportRejected("undecodable text")  # unreachable: latin-1 decodes every byte


def _map_header(cells: list[str]) -> tuple[dict[str, int], dict[str, str | None], list[str], list[str]]:
    """Header cells -> ({field: column index}, {field: unit}, ignored cells, problems)."""
    positions: dict[str, int] = {}
    units: dict[str, str | None] = {}
    ignored: list[str] = []
    problems: list[str] = []
    for index, cell in enumerate(cells):
        name, unit = normalise_header(cell)
        canonical = _HEADER_INDEX.get(name)
        if canonical is None:
            # "peak_load_kn" written as "Peak load kN" (unit as a last word rather than in brackets)
            head, _, tail = name.rpartition("_")
            canonical = _HEADER_INDEX.get(head) if tail in _LOAD_UNITS or tail in _STRESS_UNITS or tail in _LENGTH_UNITS or tail in _AGE_UNITS else None
            unit = unit or (tail if canonical else None)
        if canonical is None:
            if cell.strip():
                ignored.append(cell.strip())
            continue
        if canonical in positions:
            problems.append(f"two columns map to {canonical}: {cells[positions[canonical]]!r} and {cell!r}")
            continue
        positions[canonical] = index
        units[canonical] = unit
    return positions, units, ignored, problems


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def _find_header(lines: list[str]) -> tuple[int, str, list[str]]:
    """(line index, delimiter, cells) of the first line that reads as a header with the most known fields."""
    best: tuple[int, int, str, list[str]] | None = None
    for index, line in enumerate(lines[:_HEADER_SEARCH_LINES]):
        if not line.strip():
            continue
        for delimiter in DELIMITERS:
            if delimiter not in line:
                continue
            cells = _split(line, delimiter)
            known = len(_map_header(cells)[0])
            if known >= 4 and (best is None or known > best[1]):
                best = (index, known, delimiter, cells)
        if best is not None:
            break  # the first line that looks like a header is the header; later lines are data
    if best is None:
        raise ExportRejected(
            f"no header row found in the first {_HEADER_SEARCH_LINES} lines (expected columns such as "
            "specimen_id, batch_id, test_type, age_days, peak_load_kn, strength_mpa, tested_at, machine_id)"
        )
    return best[0], best[2], best[3]


def _check_units(units: dict[str, str | None]) -> str:
    """Validate the units the header declares; returns the load unit ("kN" or "N")."""
    load_unit = units.get("peak_load_kn")
    if load_unit is not None and load_unit not in _LOAD_UNITS:
        raise ExportRejected(f"peak load in unsupported unit {load_unit!r} (kN or N expected)")
    checks = (
        ("strength_mpa", _STRESS_UNITS, "MPa or N/mm2"),
        ("length_mm", _LENGTH_UNITS, "mm"),
        ("width_mm", _LENGTH_UNITS, "mm"),
        ("height_mm", _LENGTH_UNITS, "mm"),
        ("span_mm", _LENGTH_UNITS, "mm"),
        ("area_mm2", _AREA_UNITS, "mm2"),
        ("age_days", _AGE_UNITS, "days"),
    )
    for name, allowed, expected in checks:
        unit = units.get(name)
        if unit is not None and unit not in allowed:
            raise ExportRejected(f"{name} in unsupported unit {unit!r} ({expected} expected)")
    return "N" if load_unit == "n" else "kN"


def parse_export(content: bytes, name: str) -> ParsedExport:
    """Read one export; raises `ExportRejected` when the file as a whole is not a readable lab export."""
    text, encoding = decode(content)
    text = text.rstrip("\x00\x1a")  # NUL padding and DOS end-of-file markers are not data
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ExportRejected("empty file")
    header_index, delimiter, header = _find_header(lines)
    positions, units, ignored, problems = _map_header(header)
    if problems:
        raise ExportRejected("; ".join(problems))
    missing = [f for f in REQUIRED if f not in positions]
    if missing:
        raise ExportRejected(f"header {header!r} lacks required column(s): {', '.join(missing)}")
    load_unit = _check_units(units)

    records, bad = read_body(text, lines, header_index, delimiter, positions, len(header))
    decimal_comma = delimiter != "," and any(uses_decimal_comma(r) for r in records)
    dialect = ExportDialect(
        encoding=encoding,
        delimiter=delimiter,
        decimal_comma=decimal_comma,
        header_line=header_index + 1,
        columns={f: header[i].strip() for f, i in positions.items()},
        load_unit=load_unit,
        ignored_columns=tuple(ignored),
        preamble=tuple(line for line in lines[:header_index] if line.strip()),
    )
    return ParsedExport(name=name, sha256=checksum(content), size=len(content), dialect=dialect, records=records, bad_lines=bad, lines=lines)


def read_body(
    text: str, lines: list[str], header_index: int, delimiter: str, positions: Mapping[str, int], width: int
) -> tuple[list[dict[str, str | int | None]], list[BadLine]]:
    """The data lines below the header: a row (strings by field, plus `source_line`) or a `BadLine` each."""
    terminated = text.endswith(("\n", "\r"))
    body = "\n".join(lines[header_index + 1 :])
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    first_line = header_index + 2  # 1-based line number of the first data line
    records: list[dict[str, str | int | None]] = []
    bad: list[BadLine] = []
    previous_end = 0
    rows = list(_read_rows(reader))
    for number, (cells, end) in enumerate(rows):
        start_line = first_line + previous_end
        previous_end = end
        raw_text = "\n".join(lines[start_line - 1 : first_line + end - 1])
        if not any(c.strip() for c in cells):
            continue  # a blank line carries nothing
        values = {f: cells[i] for f, i in positions.items() if i < len(cells)}
        is_last = number == len(rows) - 1
        if is_last and not terminated:
            bad.append(
                BadLine(start_line, raw_text, f"truncated last line: no line end after {len(cells)} of {width} fields (the file was cut off or is still being written)", values)
            )
            continue
        if len(cells) != width:
            bad.append(BadLine(start_line, raw_text, f"{len(cells)} fields where the header has {width}", values))
            continue
        record: dict[str, str | int | None] = {f: (cells[i].strip() or None) for f, i in positions.items()}
        record["source_line"] = start_line
        records.append(record)
    return records, bad


def uses_decimal_comma(record: Mapping[str, Any]) -> bool:
    """Whether a parsed row writes one of its numbers with a decimal comma (`12,4`)."""
    return any(isinstance(record.get(f), str) and _DECIMAL_COMMA.match(str(record[f])) for f in _NUMERIC_FIELDS)


def _read_rows(reader: Iterable[list[str]]) -> Iterable[tuple[list[str], int]]:
    """(cells, line number the record ended on, relative to the body) for every record."""
    try:
        for cells in reader:
            yield cells, reader.line_num  # type: ignore[attr-defined]
    except csv.Error as exc:  # e.g. a NUL byte inside the body: the rest cannot be split reliably
        raise ExportRejected(f"CSV structure broken after body line {reader.line_num}: {exc}") from exc  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# The drop folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropFile:
    """A candidate export as last seen: its path, size and modification time."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.name


def _is_partial(path: Path) -> bool:
    name = path.name
    return name.startswith((".", "~")) or name.lower().endswith(_PARTIAL_SUFFIXES) or path.with_name(name + ".lock").exists()


def scan_drop_folder(drop_dir: Path, *, settle_s: float, now: float | None = None) -> tuple[list[DropFile], list[DropFile]]:
    """(ready, settling): files whose size and mtime stood still for `settle_s`, oldest first, and the rest."""
    if not drop_dir.is_dir():
        return [], []
    now = time.time() if now is None else now
    ready: list[DropFile] = []
    settling: list[DropFile] = []
    for entry in os.scandir(drop_dir):
        if not entry.is_file(follow_symlinks=False):
            continue  # the archive folders, and anything else that is not a plain file
        path = Path(entry.path)
        if _is_partial(path):
            continue
        st = entry.stat(follow_symlinks=False)
        found = DropFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
        (ready if now - st.st_mtime_ns / 1e9 >= settle_s else settling).append(found)
    ready.sort(key=lambda f: (f.mtime_ns, f.name))
    return ready, settling


def read_settled(found: DropFile) -> bytes | None:
    """The file's bytes if it did not change since it was scanned (else None: it is still being written)."""
    try:
        with found.path.open("rb") as fh:
            content = fh.read()
        st = found.path.stat()
    except FileNotFoundError:
        return None  # moved away by a concurrent run or the writer
    if st.st_size != found.size or st.st_mtime_ns != found.mtime_ns or len(content) != found.size:
        return None
    return content


def archive(drop_dir: Path, path: Path, outcome: str, sha256: str) -> Path:
    """Move a handled file to `<drop>/<outcome>/` (processed, duplicates, rejected), never overwriting."""
    if outcome not in _ARCHIVE_DIRS:
        raise ValueError(f"unknown archive folder {outcome!r}")
    target_dir = drop_dir / outcome
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{sha256[:12]}-{path.name}"
    os.replace(path, target)
    return target


def find_archived(drop_dir: Path, sha256: str, name: str) -> Path | None:
    """The archived copy of an export (by name first, then any file with that checksum)."""
    candidates: list[Path] = []
    for folder in _ARCHIVE_DIRS:
        base = drop_dir / folder
        if base.is_dir():
            candidates += [base / name, base / f"{sha256[:12]}-{name}"]
    for path in candidates:
        if path.is_file() and checksum(path.read_bytes()) == sha256:
            return path
    for folder in _ARCHIVE_DIRS:
        base = drop_dir / folder
        for path in sorted(base.iterdir()) if base.is_dir() else []:
            if path.is_file() and checksum(path.read_bytes()) == sha256:
                return path
    return None


class LabDropFolder(Integration):
    """The lab reader: a testing machine's drop folder, as the integration base offers it (the name and
    `queue_job`); the steps are the functions above, bound to one folder and its settle time."""

    integration = "lab"

    def __init__(self, drop_dir: Path, *, settle_s: float) -> None:
        self.drop_dir = drop_dir
        self.settle_s = settle_s

    def scan(self, *, now: float | None = None) -> tuple[list[DropFile], list[DropFile]]:
        """(ready, settling), as `scan_drop_folder` sorts them."""
        return scan_drop_folder(self.drop_dir, settle_s=self.settle_s, now=now)

    def read(self, found: DropFile) -> bytes | None:
        return read_settled(found)

    def archive(self, path: Path, outcome: str, sha256: str) -> Path:
        return archive(self.drop_dir, path, outcome, sha256)

    def find_archived(self, sha256: str, name: str) -> Path | None:
        return find_archived(self.drop_dir, sha256, name)
