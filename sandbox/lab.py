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
)

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
    ) -> None:
        super().__init__(faults=faults)
        self.machine = LabMachine(seed=seed)
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
    ) -> Session:
        """Test a session of specimens; writes its export to the drop folder when there is one."""
        flags = tuple(variants)
        with self.lock:
            if rows is not None:
                records = self.machine.records_for_rows(rows, batch_ids=batch_ids, age_days=age_days)
            else:
                records = self.machine.test_batches(batch_ids or self.machine.batch_ids(2), age_days=age_days, tested_at=tested_at)
            content = render_export(records, flags)
            session = Session(len(self.sessions) + 1, self.machine.file_name(tested_at), records, content, flags)
            self.sessions.append(session)
            for record in records:
                self.results.append({"seq": len(self.results) + 1, "session_id": session.session_id, **record})
        if self.drop_dir is not None:
            self.drop(session)
        return session

    def drop(self, session: Session) -> list[Path]:
        """Write a session's export (twice under two names for the `duplicate` variant)."""
        assert self.drop_dir is not None
        paths = [write_export(self.drop_dir, session.file_name, session.content, atomic=self.atomic, chunk_delay_s=self.slow_write_s)]
        if "duplicate" in session.variants:
            copy = session.file_name.replace(".csv", "_copy.csv")
            paths.append(write_export(self.drop_dir, copy, session.content, atomic=self.atomic))
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
            "created_at": session.created_at.isoformat(),
        }

    def control_routes(self) -> list[str]:
        return ["POST /_sandbox/lab/sessions {batch_ids, age_days, rows, variants}: test a new session"]

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
) -> LabSandbox:
    """Write `sessions` exports (every `interval_s` seconds while serving), and serve the API when `port` is set."""
    sandbox = LabSandbox(drop_dir=drop_dir, seed=seed, atomic=atomic, slow_write_s=slow_write_s, faults=faults)
    rotation = [v for v in VARIANTS]

    def one(index: int) -> None:
        chosen = list(variants)
        if dirty_every and index % dirty_every == dirty_every - 1:
            chosen.append(rotation[(index // dirty_every) % len(rotation)])
        session = sandbox.test_session(batch_ids=batch_ids, age_days=age_days, rows=rows, variants=chosen)
        where = f" -> {session.file_name}" if drop_dir else ""
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
        host=args.host, port=args.port, faults=parse_fault_assignments(args.fault),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
