"""Simulator of a mortar testing machine (compression/flexure frame) and the exports it writes.

EN 1015-11 (api-contracts section 7): prisms 40 x 40 x 160 mm; flexural strength by 3-point bending on
a 100 mm span, ``f = 1.5 F l / (b d^2)``; compressive strength on the two broken halves between
40 x 40 mm platens, ``fc = F / 1600 mm^2``; individual values to 0.05 N/mm2. Each production batch
is tested at the planned ages with 3 prisms: 3 flexural results (``...-P1``) and 6 compressive
results (``...-P1A``, ``...-P1B``).

A test session becomes one CSV in a drop folder, written the way real exports come: clean, or dirty
with a semicolon delimiter, decimal commas (and German dates, Windows-1252), a header in another order
with other names and the load in newtons, a preamble line (Humboldt LIMS report id), a truncated last
line, an unreadable number, a strength that does not match load / area, or the same file dropped
twice under two names. Files are written atomically (``.name.part`` then rename) by default, or in
place and slowly, as a tester that is still writing.

Two other machines' formats (`--format`, each read by a profile in config/lab/): a compression frame's
report (`compression-semicolon`: metadata block, `;`, decimal commas, kN) and a flexural tester's file
per specimen (`flexural-per-specimen`: a `key;value;unit` block and the load curve, Fmax its maximum).

The same sessions are served over a small HTTP API (``sandbox.core.Simulator``: in-process as an
httpx transport, or as a real server)::

    GET  /api/v1/results?after=<seq>&limit=<n>   records in arrival order: {"results": [...], "next_after": seq}
    GET  /api/v1/sessions                         sessions written so far
    GET  /api/v1/sessions/{id}/export             one session's CSV, byte for byte as dropped
    POST /_sandbox/lab/sessions                   {"batch_ids", "age_days", "rows", "variants"}: test a new session
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.core import (
    FaultSwitches,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    control_json_body,
    parse_fault_assignments,
    serve,
)

logger = logging.getLogger(__name__)

STANDARD = "EN 1015-11:2019"
PRISM_MM = (160.0, 40.0, 40.0)
SPAN_MM = 100.0
PLATEN_AREA_MM2 = 1600.0
LAB_TZ = "Asia/Kolkata"

# product code -> (28-day compressive mean MPa, 28-day flexural mean MPa): EN 998-2 M5/M10 masonry
# mortars, an EN 998-1 CS IV render, an EN 13813 CT-C25-F5 screed.
PRODUCTS: dict[str, tuple[float, float]] = {
    "MM-M5-25KG": (7.5, 2.2),
    "MM-M10-25KG": (13.0, 3.6),
    "RP-CSIV-25KG": (8.5, 2.7),
    "SC-C25F5-40KG": (29.0, 6.2),
}
# Strength at an age relative to 28 days (Portland-cement mortars at 20 C).
AGE_FACTOR: dict[int, float] = {1: 0.30, 2: 0.45, 3: 0.55, 7: 0.72, 14: 0.88, 28: 1.0, 56: 1.07, 90: 1.10}
PLANNED_AGES: tuple[int, ...] = (1, 7, 28)
MACHINES = ("MATEST-C089", "CONTROLS-AX7", "ZWICK-Z050")
OPERATORS = ("A. Sharma", "R. Iyer", "M. Keller", "S. Günther")

#: Dirty export variants, combinable.
VARIANTS: tuple[str, ...] = (
    "semicolon",  # ";" delimiter, decimal point
    "decimal_comma",  # ";" delimiter, decimal comma, dd.mm.yyyy local times, Windows-1252
    "reordered",  # header in another order with other names, load in N
    "preamble",  # a LIMS report id line before the header
    "truncated",  # the last line cut off mid-row, no line end
    "bad_number",  # one row with an unreadable peak load
    "strength_mismatch",  # one row whose strength does not match load / area
    "duplicate",  # the same bytes dropped again under a second name
    "missing_column",  # a required column (or, one file per specimen, the batch metadata line) left out
)
#: Export formats the machine writes (`--format`); each has a profile under config/lab/.
FORMATS: tuple[str, ...] = ("drymix-simulator", "compression-semicolon", "flexural-per-specimen")
#: Variants that only make sense for our own CSV (the other formats fix delimiter, decimal mark and layout).
DRYMIX_ONLY: frozenset[str] = frozenset({"semicolon", "decimal_comma", "reordered", "preamble"})
SERIALS = {"MATEST-C089": "C089N/0417", "CONTROLS-AX7": "50-C56Z02/1183", "ZWICK-Z050": "193412"}

CLEAN_HEADER: tuple[tuple[str, str], ...] = (
    ("specimen_id", "specimen_id"),
    ("batch_id", "batch_id"),
    ("product_code", "product_code"),
    ("test_type", "test_type"),
    ("test_standard", "test_standard"),
    ("age_days", "age_days"),
    ("length_mm", "length_mm"),
    ("width_mm", "width_mm"),
    ("height_mm", "height_mm"),
    ("span_mm", "span_mm"),
    ("area_mm2", "area_mm2"),
    ("peak_load_kn", "peak_load_kn"),
    ("strength_mpa", "strength_mpa"),
    ("tested_at", "tested_at"),
    ("machine_id", "machine_id"),
    ("operator", "operator"),
)
# What another vendor's export looks like: other names, another order, load in newtons.
REORDERED_HEADER: tuple[tuple[str, str], ...] = (
    ("tested_at", "Test date"),
    ("machine_id", "Machine"),
    ("specimen_id", "Specimen No."),
    ("test_type", "Test"),
    ("peak_load_kn", "Fmax [N]"),
    ("strength_mpa", "Strength [N/mm²]"),
    ("batch_id", "Batch"),
    ("product_code", "Product"),
    ("age_days", "Age [d]"),
    ("width_mm", "Width [mm]"),
    ("height_mm", "Height [mm]"),
    ("length_mm", "Length [mm]"),
    ("span_mm", "Span [mm]"),
    ("area_mm2", "Area [mm²]"),
    ("operator", "Operator"),
    ("test_standard", "Standard"),
)


def round_to(value: float, step: float) -> float:
    return round(round(value / step) * step, 4)


def flexural_strength(load_kn: float, span_mm: float, width_mm: float, height_mm: float) -> float:
    """EN 1015-11 three-point bending: 1.5 F l / (b d^2), N and mm in, MPa out."""
    return 1.5 * load_kn * 1000.0 * span_mm / (width_mm * height_mm**2)


def compressive_strength(load_kn: float, area_mm2: float = PLATEN_AREA_MM2) -> float:
    """F / A, N and mm2 in, MPa out."""
    return load_kn * 1000.0 / area_mm2


@dataclass
class Session:
    """One test session: its records and the export file the machine wrote for it."""

    session_id: int
    file_name: str
    records: list[dict[str, Any]]
    content: bytes
    variants: tuple[str, ...]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    fmt: str = "drymix-simulator"
    files: list[tuple[str, bytes]] = field(default_factory=list)  # every file written (one per specimen, or just this one)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [(self.file_name, self.content)]


class LabMachine:
    """Deterministic result generator (same seed, same results) and export writer."""

    def __init__(self, *, seed: int = 7, machine_id: str | None = None, lab_tz: str = LAB_TZ) -> None:
        self.rng = random.Random(seed)
        self.machine_id = machine_id or MACHINES[seed % len(MACHINES)]
        self.tz = ZoneInfo(lab_tz)
        self.session_seq = 0
        self.batch_seq = 1000 + seed * 10_000

    def batch_ids(self, count: int, mixer: int = 1) -> list[str]:
        """Batch ids in the plant's format (`B-M1-000123`)."""
        ids = []
        for _ in range(count):
            self.batch_seq += 1
            ids.append(f"B-M{mixer}-{self.batch_seq:06d}")
        return ids

    def test_batches(
        self,
        batch_ids: Sequence[str],
        *,
        age_days: int = 28,
        tested_at: datetime | None = None,
        products: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Test 3 prisms of each batch at one age: 3 flexural and 6 compressive records per batch.

        The session ends at `tested_at` (default now): a machine never reports a test from the future.
        """
        end = (tested_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        clock = end
        factor = AGE_FACTOR.get(age_days, 1.0)
        operator = self.rng.choice(OPERATORS)
        records: list[dict[str, Any]] = []
        codes = sorted(PRODUCTS)
        for batch_id in batch_ids:
            product = (products or {}).get(batch_id) or codes[sum(map(ord, batch_id)) % len(codes)]
            fc28, ff28 = PRODUCTS[product]
            for prism in (1, 2, 3):
                length = round(PRISM_MM[0] + self.rng.uniform(-0.4, 0.4), 1)
                width = round(PRISM_MM[1] + self.rng.uniform(-0.2, 0.2), 2)
                height = round(PRISM_MM[2] + self.rng.uniform(-0.2, 0.2), 2)
                base = f"{batch_id}-{age_days:02d}D-P{prism}"
                flex = max(0.2, self.rng.gauss(ff28 * factor, ff28 * factor * 0.08))
                load = round(flex * width * height**2 / (1.5 * SPAN_MM) / 1000.0, 3)
                clock += timedelta(seconds=self.rng.randint(70, 150))
                records.append(
                    self._record(base, batch_id, product, "flexural", age_days, length, width, height, load,
                                 round_to(flexural_strength(load, SPAN_MM, width, height), 0.05), clock, operator, span=SPAN_MM)
                )
                for half in ("A", "B"):
                    comp = max(0.5, self.rng.gauss(fc28 * factor, fc28 * factor * 0.06))
                    load_c = round(comp * PLATEN_AREA_MM2 / 1000.0, 2)
                    clock += timedelta(seconds=self.rng.randint(60, 120))
                    records.append(
                        self._record(base + half, batch_id, product, "compressive", age_days, round(length / 2, 1), width, height,
                                     load_c, round_to(compressive_strength(load_c), 0.05), clock, operator, area=PLATEN_AREA_MM2)
                    )
        shift = end - clock
        for record in records:
            record["tested_at"] += shift
        return records

    def _record(
        self, specimen: str, batch_id: str, product: str, test_type: str, age: int, length: float, width: float,
        height: float, load_kn: float, strength: float, tested_at: datetime, operator: str,
        *, span: float | None = None, area: float | None = None,
    ) -> dict[str, Any]:
        return {
            "specimen_id": specimen,
            "batch_id": batch_id,
            "product_code": product,
            "test_type": test_type,
            "test_standard": STANDARD,
            "age_days": age,
            "length_mm": length,
            "width_mm": width,
            "height_mm": height,
            "span_mm": span,
            "area_mm2": area,
            "peak_load_kn": load_kn,
            "strength_mpa": strength,
            "tested_at": tested_at,
            "machine_id": self.machine_id,
            "operator": operator,
        }

    def records_for_rows(self, rows: int, *, batch_ids: Sequence[str] | None = None, age_days: int = 28) -> list[dict[str, Any]]:
        """At least `rows` records (9 per batch), cut to exactly `rows`."""
        ids = list(batch_ids) if batch_ids else self.batch_ids(-(-rows // 9))
        return self.test_batches(ids, age_days=age_days)[:rows]

    def file_name(self, tested_at: datetime | None = None) -> str:
        self.session_seq += 1
        local = (tested_at or datetime.now(UTC)).astimezone(self.tz)
        return f"{self.machine_id}_{local:%Y%m%d_%H%M%S}_S{self.session_seq:04d}.csv"


def _fmt_number(value: Any, decimal_comma: bool) -> str:
    if value is None:
        return ""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace(".", ",") if decimal_comma else text


def render_export(records: Sequence[Mapping[str, Any]], variants: Iterable[str] = (), *, lab_tz: str = LAB_TZ) -> bytes:
    """The CSV bytes a machine would write for these records, dirty the way `variants` say."""
    flags = set(variants)
    unknown = flags - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown export variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    decimal_comma = "decimal_comma" in flags
    delimiter = ";" if decimal_comma or "semicolon" in flags else ","
    header = REORDERED_HEADER if "reordered" in flags else CLEAN_HEADER
    load_factor = 1000.0 if "reordered" in flags else 1.0
    tz = ZoneInfo(lab_tz)
    rows = [dict(r) for r in records]
    if "bad_number" in flags and rows:
        rows[len(rows) // 2]["peak_load_kn"] = "12..4"
    if "strength_mismatch" in flags and rows:
        target = rows[len(rows) // 3]
        target["strength_mpa"] = round_to(float(target["strength_mpa"]) * 1.3 + 0.5, 0.05)
    if "missing_column" in flags:
        header = tuple(h for h in header if h[0] != "machine_id")
    lines: list[str] = []
    if "preamble" in flags:
        lines.append(f"LIMS Report ID{delimiter}{abs(hash(tuple(r['specimen_id'] for r in rows))) % 100000:05d}")
    lines.append(delimiter.join(("Prüfer" if decimal_comma and name == "operator" else label) for name, label in header))
    for row in rows:
        cells = []
        for name, _label in header:
            value = row.get(name)
            if name == "tested_at" and isinstance(value, datetime):
                cell = f"{value.astimezone(tz):%d.%m.%Y %H:%M:%S}" if decimal_comma else value.astimezone(tz).isoformat()
            elif name == "peak_load_kn" and isinstance(value, float):
                cell = _fmt_number(round(value * load_factor, 4), decimal_comma)
            elif isinstance(value, int | float):
                cell = _fmt_number(value, decimal_comma)
            else:
                cell = "" if value is None else str(value)
            if delimiter in cell or '"' in cell:
                cell = '"' + cell.replace('"', '""') + '"'
            cells.append(cell)
        lines.append(delimiter.join(cells))
    text = "\r\n".join(lines) + "\r\n"
    if "truncated" in flags and rows:
        last = lines[-1]
        text = "\r\n".join(lines[:-1]) + "\r\n" + last[: max(1, len(last) * 2 // 3)]
    return text.encode("cp1252" if decimal_comma else "utf-8")


def _check_variants(flags: set[str], fmt: str) -> None:
    unknown = flags - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown export variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt != "drymix-simulator" and flags & DRYMIX_ONLY:
        raise ValueError(f"variant(s) {sorted(flags & DRYMIX_ONLY)} apply to the drymix-simulator format only")


def records_for_format(records: Sequence[Mapping[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """The results a machine of this format tests: a compression frame the compressive ones, a flexural tester the flexural ones."""
    if fmt == "compression-semicolon":
        return [dict(r) for r in records if r["test_type"] == "compressive"]
    if fmt == "flexural-per-specimen":
        return [dict(r) for r in records if r["test_type"] == "flexural"]
    return [dict(r) for r in records]


def _comma(value: float, places: int) -> str:
    return f"{value:.{places}f}".replace(".", ",")


def _grouped(value: float, places: int) -> str:
    """`1600.0` -> `1.600,0`: a German-locale machine writes thousands separators."""
    whole, _, fraction = f"{value:,.{places}f}".partition(".")
    return whole.replace(",", ".") + ("," + fraction if fraction else "")


def render_compression_semicolon(records: Sequence[Mapping[str, Any]], variants: Iterable[str] = (), *, lab_tz: str = LAB_TZ,
                                 printed_at: datetime | None = None) -> bytes:
    """A Controls/Matest-style compression report: a metadata block, then `;`-separated rows with decimal commas,
    loads in kN, the area with a thousands separator, `dd.mm.yyyy HH:MM` times; Windows-1252, CRLF."""
    flags = set(variants)
    _check_variants(flags, "compression-semicolon")
    rows = [dict(r) for r in records]
    tz = ZoneInfo(lab_tz)
    machine = str(rows[0]["machine_id"]) if rows else MACHINES[1]
    printed = (printed_at or (max(r["tested_at"] for r in rows) if rows else datetime.now(UTC))).astimezone(tz)
    if "bad_number" in flags and rows:
        rows[len(rows) // 2]["peak_load_kn"] = "2O,45"  # a letter O typed for a zero
    if "strength_mismatch" in flags and rows:
        target = rows[len(rows) // 3]
        target["strength_mpa"] = round_to(float(target["strength_mpa"]) * 1.3 + 0.5, 0.05)
    columns = [("specimen_id", "Specimen"), ("batch_id", "Batch"), ("product_code", "Product"), ("age_days", "Age [d]"),
               ("width_mm", "Width [mm]"), ("height_mm", "Depth [mm]"), ("area_mm2", "Area [mm²]"),
               ("peak_load_kn", "Fmax [kN]"), ("strength_mpa", "Rc [N/mm²]"), ("tested_at", "Date")]
    if "missing_column" in flags:
        columns = [c for c in columns if c[0] != "peak_load_kn"]
    lines = [
        f"Machine;{machine}",
        f"Serial no.;{SERIALS.get(machine, '0000')}",
        f"Operator;{rows[0]['operator'] if rows else ''}",
        "Standard;EN 1015-11",
        f"Report;CR-{printed:%Y%m%d-%H%M}",
        f"Printed;{printed:%d.%m.%Y %H:%M}",
        "",
        ";".join(label for _name, label in columns),
    ]
    for row in rows:
        cells = []
        for name, _label in columns:
            value: Any = row.get(name)
            if name == "tested_at":
                cells.append(f"{value.astimezone(tz):%d.%m.%Y %H:%M}")
            elif name == "area_mm2":
                cells.append(_grouped(float(value or PLATEN_AREA_MM2), 1))
            elif name in ("width_mm", "height_mm", "strength_mpa") or (name == "peak_load_kn" and isinstance(value, float)):
                cells.append(_comma(float(value), 2))
            else:
                cells.append("" if value is None else str(value))
        lines.append(";".join(cells))
    text = "\r\n".join(lines) + "\r\n"
    if "truncated" in flags and rows:
        text = text[: len(text) - 2 - len(lines[-1]) // 3]
    return text.encode("cp1252")


def _curve(load_n: float, rng: random.Random) -> list[tuple[float, float, float]]:
    """A three-point-bending load curve: preload, near-linear rise to the peak, the drop at fracture (s, mm, N)."""
    points: list[tuple[float, float, float]] = []
    steps = 40
    for i in range(steps + 1):
        share = i / steps
        force = 2.0 + (load_n - 2.0) * (share - 0.08 * share * (1 - share)) if i < steps else load_n
        points.append((round(i * 0.5, 2), round(share * 0.18 + rng.uniform(0, 0.002), 4), round(force, 1)))
    for drop in (0.31, 0.04):
        t, d, _ = points[-1]
        points.append((round(t + 0.5, 2), round(d + 0.01, 4), round(load_n * drop, 1)))
    return points


def render_flexural_specimen(record: Mapping[str, Any], variants: Iterable[str] = (), *, lab_tz: str = LAB_TZ, seed: int = 0) -> bytes:
    """A testXpert/Bluehill-style specimen file: a `key;value;unit` block (specimen, batch, age, geometry, span,
    the flexural strength), then the load curve under a `Curve data` line; Fmax is the curve's maximum, in N."""
    flags = set(variants)
    _check_variants(flags, "flexural-per-specimen")
    tz = ZoneInfo(lab_tz)
    tested = record["tested_at"].astimezone(tz)
    load_n = round(float(record["peak_load_kn"]) * 1000.0, 1)
    strength = float(record["strength_mpa"])
    if "strength_mismatch" in flags:
        strength = round_to(strength * 1.3 + 0.5, 0.05)
    machine = str(record["machine_id"])
    block = [
        ("Test program", "EN 1015-11 flexural, 3-point", ""),
        ("Machine", machine, ""),
        ("Serial number", SERIALS.get(machine, "0000"), ""),
        ("Tester", str(record["operator"]), ""),
        ("Date", f"{tested:%d.%m.%Y}", ""),
        ("Clock time", f"{tested:%H:%M:%S}", ""),
        ("Specimen ID", str(record["specimen_id"]), ""),
        ("Batch", str(record["batch_id"]), ""),
        ("Material", str(record["product_code"]), ""),
        ("Age", str(record["age_days"]), "d"),
        ("Specimen width", _comma(float(record["width_mm"]), 2), "mm"),
        ("Specimen thickness", _comma(float(record["height_mm"]), 2), "mm"),
        ("Specimen length", _comma(float(record["length_mm"]), 1), "mm"),
        ("Support span", _comma(float(record["span_mm"] or SPAN_MM), 1), "mm"),
        ("Flexural strength", _comma(strength, 2), "MPa"),
        ("Standard", STANDARD, ""),
    ]
    if "missing_column" in flags:
        block = [b for b in block if b[0] != "Batch"]
    lines = [";".join(cell for cell in item if cell) if not item[2] else ";".join(item) for item in block]
    lines += ["", "Curve data", "Time [s];Deformation [mm];Standard force [N]"]
    curve = _curve(load_n, random.Random(seed))
    for index, (t, d, f) in enumerate(curve):
        force = _comma(f, 1)
        if "bad_number" in flags and index == len(curve) // 2:
            force = "#WERT!"
        lines.append(f"{_comma(t, 2)};{_comma(d, 4)};{force}")
    text = "\r\n".join(lines) + "\r\n"
    if "truncated" in flags:
        cut = len(curve) // 2  # the machine stopped writing halfway up the curve: the maximum is not in the file
        text = "\r\n".join(lines[: len(lines) - len(curve) + cut]) + "\r\n" + lines[len(lines) - len(curve) + cut][:4]
    return text.encode("utf-8")


def render_files(records: Sequence[Mapping[str, Any]], variants: Iterable[str], fmt: str, first_name: str, *, lab_tz: str = LAB_TZ) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file one session writes in a format."""
    flags = tuple(variants)
    if fmt == "drymix-simulator":
        return [(first_name, render_export(records, flags, lab_tz=lab_tz))]
    if fmt == "compression-semicolon":
        return [(first_name, render_compression_semicolon(records, flags, lab_tz=lab_tz))]
    _check_variants(set(flags), fmt)
    stem = first_name.rsplit(".", 1)[0]
    files = []
    for index, record in enumerate(records):
        # the dirty variant hits the last specimen of the session; the others are clean
        mine = flags if index == len(records) - 1 else tuple(f for f in flags if f == "duplicate")
        files.append((f"{stem}_{record['specimen_id']}.txt", render_flexural_specimen(record, mine, lab_tz=lab_tz, seed=index)))
    return files


def write_export(drop_dir: Path, name: str, content: bytes, *, atomic: bool = True, chunk_delay_s: float = 0.0, chunks: int = 4) -> Path:
    """Write an export into the drop folder: atomically (`.name.part`, then rename) or in place in chunks."""
    drop_dir.mkdir(parents=True, exist_ok=True)
    target = drop_dir / name
    if atomic:
        partial = drop_dir / f".{name}.part"
        with partial.open("wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, target)
        return target
    # In place, as most testers do: a reader may see the file before it is complete.
    size = max(1, -(-len(content) // max(1, chunks)))
    with target.open("wb") as fh:
        for start in range(0, len(content), size):
            fh.write(content[start : start + size])
            fh.flush()
            if chunk_delay_s and start + size < len(content):
                time.sleep(chunk_delay_s)
    return target


class LabSandbox(Simulator):
    """The testing machine: writes sessions to a drop folder and serves them over HTTP."""

    name = "lab"

    def __init__(
        self,
        *,
        drop_dir: Path | None = None,
        seed: int = 7,
        atomic: bool = True,
        slow_write_s: float = 0.0,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
        fmt: str = "drymix-simulator",
    ) -> None:
        super().__init__(faults=faults)
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
        self.fmt = fmt
        self.machine = LabMachine(seed=seed, machine_id={"compression-semicolon": "CONTROLS-AX7", "flexural-per-specimen": "ZWICK-Z050"}.get(fmt))
        self.drop_dir = drop_dir
        self.atomic = atomic
        self.slow_write_s = slow_write_s
        self.sessions: list[Session] = []
        self.results: list[dict[str, Any]] = []  # every record served by the API, with its seq

    def test_session(
        self,
        *,
        batch_ids: Sequence[str] | None = None,
        age_days: int = 28,
        rows: int | None = None,
        variants: Iterable[str] = (),
        tested_at: datetime | None = None,
        fmt: str | None = None,
    ) -> Session:
        """Test a session of specimens; writes its export(s) to the drop folder when there is one."""
        flags = tuple(variants)
        fmt = fmt or self.fmt
        with self.lock:
            if rows is not None:
                records = self.machine.records_for_rows(rows, batch_ids=batch_ids, age_days=age_days)
            else:
                records = self.machine.test_batches(batch_ids or self.machine.batch_ids(2), age_days=age_days, tested_at=tested_at)
            records = records_for_format(records, fmt)
            files = render_files(records, flags, fmt, self.machine.file_name(tested_at))
            session = Session(len(self.sessions) + 1, files[0][0], records, files[0][1], flags, fmt=fmt, files=files)
            self.sessions.append(session)
            for record in records:
                self.results.append({"seq": len(self.results) + 1, "session_id": session.session_id, **record})
        if self.drop_dir is not None:
            self.drop(session)
        return session

    def drop(self, session: Session) -> list[Path]:
        """Write a session's export (twice under two names for the `duplicate` variant)."""
        assert self.drop_dir is not None
        paths = [write_export(self.drop_dir, name, content, atomic=self.atomic, chunk_delay_s=self.slow_write_s) for name, content in session.files]
        if "duplicate" in session.variants:
            stem, _, suffix = session.file_name.rpartition(".")
            paths.append(write_export(self.drop_dir, f"{stem}_copy.{suffix}", session.content, atomic=self.atomic))
        return paths

    # -- HTTP API -----------------------------------------------------------------------------

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        if req.method != "GET":
            return SandboxResponse.json(405, {"error": "method not allowed"})
        path = req.path.rstrip("/")
        if path == "/api/v1/results":
            return self._results(req)
        if path == "/api/v1/sessions":
            return SandboxResponse.json(200, {"sessions": [self._session_summary(s) for s in self.sessions]})
        match = re.fullmatch(r"/api/v1/sessions/(\d+)/export", path)
        if match:
            index = int(match.group(1)) - 1
            if not 0 <= index < len(self.sessions):
                return SandboxResponse.json(404, {"error": f"no session {match.group(1)}"})
            session = self.sessions[index]
            return SandboxResponse(200, [("content-type", "text/csv"), ("content-disposition", f'attachment; filename="{session.file_name}"')], session.content)
        return SandboxResponse.json(404, {"error": f"no route {req.path}"})

    def _results(self, req: SandboxRequest) -> SandboxResponse:
        try:
            after = int(req.query_get("after") or 0)
            limit = min(1000, int(req.query_get("limit") or 500))
        except ValueError:
            return SandboxResponse.json(400, {"error": "after and limit are integers"})
        if limit < 1 or after < 0:
            return SandboxResponse.json(400, {"error": "limit >= 1 and after >= 0"})
        page = self.results[after : after + limit]
        body = [{**r, "tested_at": r["tested_at"].isoformat()} for r in page]
        return SandboxResponse.json(200, {"results": body, "next_after": page[-1]["seq"] if page else after})

    @staticmethod
    def _session_summary(session: Session) -> dict[str, Any]:
        return {
            "session_id": session.session_id,
            "file_name": session.file_name,
            "records": len(session.records),
            "variants": list(session.variants),
            "format": session.fmt,
            "files": [name for name, _content in session.files],
            "created_at": session.created_at.isoformat(),
        }

    def control_routes(self) -> list[str]:
        return ["POST /_sandbox/lab/sessions {batch_ids, age_days, rows, variants, format}: test a new session"]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        if req.path.rstrip("/") != "/_sandbox/lab/sessions":
            return None
        if req.method != "POST":
            return SandboxResponse.json(405, {"error": "use POST"})
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            session = self.test_session(
                batch_ids=body.get("batch_ids"),
                age_days=int(body.get("age_days", 28)),
                rows=body.get("rows"),
                variants=body.get("variants", ()),
                fmt=body.get("format"),
            )
        except ValueError as exc:
            return SandboxResponse.json(400, {"error": str(exc)})
        return SandboxResponse.json(201, self._session_summary(session))


def run_lab_sandbox(
    *,
    drop_dir: Path | None,
    sessions: int = 1,
    interval_s: float = 0.0,
    variants: Sequence[str] = (),
    dirty_every: int = 0,
    batch_ids: Sequence[str] | None = None,
    age_days: int = 28,
    rows: int | None = None,
    seed: int = 7,
    atomic: bool = True,
    slow_write_s: float = 0.0,
    host: str = "127.0.0.1",
    port: int | None = None,
    faults: Mapping[str, Any] | None = None,
    log_level: str = "info",
    echo: Any = print,
    fmt: str = "drymix-simulator",
) -> LabSandbox:
    """Write `sessions` exports (every `interval_s` seconds while serving), and serve the API when `port` is set."""
    sandbox = LabSandbox(drop_dir=drop_dir, seed=seed, atomic=atomic, slow_write_s=slow_write_s, faults=faults, fmt=fmt)
    rotation = [v for v in VARIANTS if fmt == "drymix-simulator" or v not in DRYMIX_ONLY]

    def one(index: int) -> None:
        chosen = list(variants)
        if dirty_every and index % dirty_every == dirty_every - 1:
            chosen.append(rotation[(index // dirty_every) % len(rotation)])
        session = sandbox.test_session(batch_ids=batch_ids, age_days=age_days, rows=rows, variants=chosen)
        where = f" -> {session.file_name}" + (f" (+{len(session.files) - 1} more)" if len(session.files) > 1 else "") if drop_dir else ""
        echo(f"session {session.session_id}: {len(session.records)} results{' (' + ', '.join(chosen) + ')' if chosen else ''}{where}")

    if drop_dir is not None:
        echo(f"writing test-session exports to {drop_dir}")
    if port is None or interval_s <= 0:
        for index in range(sessions):
            one(index)
    if port is None:
        return sandbox
    if interval_s > 0:
        def loop() -> None:
            for index in range(sessions):
                one(index)
                time.sleep(interval_s)

        threading.Thread(target=loop, name="lab-sessions", daemon=True).start()
    echo(f"lab sandbox API on http://{host}:{port}/api/v1/results")
    serve(sandbox, host, port, log_level=log_level)
    return sandbox


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox lab [options]``: write test-session exports and optionally serve the API."""
    parser = argparse.ArgumentParser(prog="python -m sandbox lab", description="Lab testing-machine simulator.")
    parser.add_argument("--drop-dir", type=Path, default=Path("var/lab_drop"))
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--interval-s", type=float, default=0.0)
    parser.add_argument("--variant", action="append", default=[], choices=VARIANTS)
    parser.add_argument("--format", dest="fmt", default="drymix-simulator", choices=FORMATS, help="export format (each has a profile in config/lab/)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--age-days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--slow-write-s", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    run_lab_sandbox(
        drop_dir=args.drop_dir, sessions=args.sessions, interval_s=args.interval_s, variants=args.variant, rows=args.rows,
        age_days=args.age_days, seed=args.seed, atomic=args.slow_write_s == 0, slow_write_s=args.slow_write_s,
        host=args.host, port=args.port, faults=parse_fault_assignments(args.fault), fmt=args.fmt,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
