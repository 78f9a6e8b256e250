"""Lab export rows (strings by canonical field, from `connectors.lab.exports`) -> ERP `lab_results` frame.

Pure pandas: no I/O, no Prefect. Numbers are read with the export's decimal mark, strictly: in a
decimal-comma file "1.600" could be a thousands separator, so it is unreadable, not guessed, unless the
export's instrument profile declares that separator. Units and time formats come from the profile too. A value
that cannot be read becomes a reason in `mapping_errors` (the suite quarantines those rows), never a
silent null. The strength is recomputed from the load and the geometry (EN 1015-11):

- compressive: F / A, A = the platen area (40 x 40 = 1600 mm2 unless the export gives one);
- flexural: 1.5 F l / (b d^2), l = the span (100 mm unless given), b and d the measured width and
  depth (40 mm nominal when the export has none);

and `strength_allowed_mpa = max(abs tolerance, rel tolerance x computed)` is what the suite compares
`strength_deviation_mpa` with; `strength_min_mpa`/`strength_max_mpa` are the plausible range for the
row's test type. These helper columns let the suite check per-row limits without GX row conditions
(each costs a pandas query per metric: a third of the validation time of a 1,000-row export).
A missing required value is a reason in `mapping_errors` too (one expectation instead of eight).
`batch_known` says whether the batch is in `production_batches`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from data_mappings.columns import LAB_RESULT_COLUMNS

REQUIRED_FIELDS: tuple[str, ...] = ("specimen_id", "batch_id", "test_type", "age_days", "peak_load_kn", "strength_mpa", "tested_at", "machine_id")
#: Plausible strength of EN 1015-11 prisms of dry-mix mortars, renders and screeds (M1 ... C80 / F15), MPa.
PLAUSIBLE_STRENGTH_MPA: dict[str, tuple[float, float]] = {"compressive": (0.3, 80.0), "flexural": (0.1, 20.0)}
TEXT_FIELDS: tuple[str, ...] = ("specimen_id", "batch_id", "product_code", "test_type", "test_standard", "machine_id", "operator")
NUMBER_FIELDS: tuple[str, ...] = ("length_mm", "width_mm", "height_mm", "span_mm", "area_mm2", "peak_load_kn", "strength_mpa")
NOMINAL_SIDE_MM = 40.0
NOMINAL_SPAN_MM = 100.0
PLATEN_AREA_MM2 = 1600.0
# Columns whose values decide whether a stored row must be rewritten.
HASHED: tuple[str, ...] = (
    "batch_id", "product_code", "test_type", "test_standard", "age_days", "length_mm", "width_mm", "height_mm", "span_mm",
    "area_mm2", "peak_load_kn", "strength_mpa", "tested_at", "machine_id", "operator", "batch_known",
)

TEST_TYPES: dict[str, str] = {
    "compressive": "compressive", "compression": "compressive", "comp": "compressive", "c": "compressive",
    "druck": "compressive", "druckfestigkeit": "compressive", "compressive strength": "compressive",
    "flexural": "flexural", "flexure": "flexural", "flex": "flexural", "bending": "flexural", "f": "flexural",
    "3-point bending": "flexural", "three-point bending": "flexural", "biegezug": "flexural",
    "biegezugfestigkeit": "flexural", "flexural strength": "flexural",
}
_DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d.%m.%Y", "%d/%m/%Y")
_AGE = re.compile(r"^\s*(\d+)(?:[.,]0+)?\s*(?:d|days?|tage)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class LabMappingOptions:
    """How to read one export's values (from its dialect and the [lab] configuration)."""

    decimal_comma: bool = False
    load_unit: str = "kN"  # "kN" or "N"
    timezone: str = "UTC"  # zone of naive export times
    thousands: str = ""  # a thousands separator the export writes ("" none): "1.600,5" with "." and a decimal comma
    datetime_formats: tuple[str, ...] = ()  # strptime formats, "iso" for ISO 8601; empty: ISO and the usual European forms
    factors: tuple[tuple[str, float], ...] = ()  # (field, factor) to the ERP unit, from an instrument profile (N -> kN: 0.001)
    abs_tolerance_mpa: float = 0.05
    rel_tolerance: float = 0.02


def _clean(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value).strip() or None


def _text(series: pd.Series) -> pd.Series:
    """Stripped strings, blanks and missing values as None (object dtype)."""
    return pd.Series([_clean(v) for v in series.tolist()], index=series.index, dtype=object)


def _numbers(series: pd.Series, decimal_comma: bool, thousands: str = "") -> tuple[pd.Series, pd.Series]:
    """(values, unreadable mask): one decimal mark per file, thousands separators only where declared, no guessing."""
    text = series.astype("string").str.strip()
    present = text.notna() & (text != "")
    if thousands:
        # Only a correctly grouped number loses its separators ("1.600,5"); "16.00,5" stays unreadable.
        mark = re.escape("," if decimal_comma else ".")
        grouped = re.compile(rf"^[-+]?\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+(?:{mark}\d+)?$")
        text = text.map(lambda v: v.replace(thousands, "") if isinstance(v, str) and grouped.match(v) else v, na_action="ignore").astype("string")
    wrong_mark = text.str.contains("." if decimal_comma else ",", regex=False).fillna(False)
    cleaned = text.str.replace(",", ".", regex=False) if decimal_comma else text
    values = pd.to_numeric(cleaned.where(~wrong_mark).astype(object), errors="coerce").astype(float)
    values = values.where(np.isfinite(values.to_numpy()))
    return values, present & values.isna()


@lru_cache(maxsize=4096)
def _parse_time(value: str, timezone: str, formats: tuple[str, ...] = ()) -> datetime | None:
    text = value.strip()
    parsed: datetime | None = None
    try:
        if formats and "iso" not in formats:
            raise ValueError("ISO 8601 is not one of this export's formats")
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for fmt in [f for f in formats if f != "iso"] or _DATE_FORMATS:
            try:
                # Export times without an offset are local to the lab: the zone is attached just below.
                parsed = datetime.strptime(text, fmt)  # noqa: DTZ007
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)


def map_lab_results(raw: pd.DataFrame, options: LabMappingOptions | None = None, known_batches: Collection[str] = ()) -> pd.DataFrame:
    """Map export rows to the `lab_results` frame (index kept, one output row per input row)."""
    options = options or LabMappingOptions()
    n = len(raw)
    frame = pd.DataFrame(index=raw.index)
    errors: list[list[str]] = [[] for _ in range(n)]

    def column(name: str) -> pd.Series:
        return raw[name] if name in raw.columns else pd.Series([None] * n, index=raw.index, dtype=object)

    def note(mask: pd.Series | np.ndarray, message: Any) -> None:
        flags = mask.to_numpy(dtype=bool) if isinstance(mask, pd.Series) else np.asarray(mask, dtype=bool)
        for position in np.flatnonzero(flags):
            errors[position].append(message(position) if callable(message) else message)

    for name in TEXT_FIELDS:
        frame[name] = _text(column(name))
    kind = frame["test_type"].map(lambda v: TEST_TYPES.get(str(v).strip().lower(), str(v).strip().lower()) if v is not None else None)
    frame["test_type"] = kind.astype(object)

    raw_age = column("age_days")
    ages = raw_age.map(lambda v: _AGE.match(str(v)) if v is not None and str(v).strip() else None)
    frame["age_days"] = pd.array([int(m.group(1)) if m else None for m in ages], dtype="Int64")
    note(raw_age.notna().to_numpy() & ages.isna().to_numpy() & (raw_age.astype("string").str.strip() != "").fillna(False).to_numpy(),
         lambda i: f"age_days: {raw_age.iloc[i]!r} is not a whole number of days")

    for name in NUMBER_FIELDS:
        values, unreadable = _numbers(column(name), options.decimal_comma, options.thousands)
        mark = "decimal comma" if options.decimal_comma else "decimal point"
        note(unreadable, lambda i, name=name, mark=mark: f"{name}: {column(name).iloc[i]!r} is not a number (this export writes a {mark})")
        frame[name] = values
    if options.load_unit == "N":
        frame["peak_load_kn"] = frame["peak_load_kn"] / 1000.0
    for name, factor in options.factors:
        if name in NUMBER_FIELDS and factor != 1.0:
            frame[name] = frame[name] * factor

    raw_time = column("tested_at")
    formats = tuple(options.datetime_formats)
    times = [(_parse_time(str(v), options.timezone, formats) if v is not None and str(v).strip() else None) for v in raw_time]
    frame["tested_at"] = pd.to_datetime(pd.Series(times, index=raw.index, dtype=object), utc=True)
    note(raw_time.notna() & frame["tested_at"].isna() & (raw_time.astype("string").str.strip() != "").fillna(False),
         lambda i: f"tested_at: {raw_time.iloc[i]!r} is not a date and time ({_formats_text(formats)})")

    compressive = frame["test_type"] == "compressive"
    flexural = frame["test_type"] == "flexural"
    area = frame["area_mm2"].where(frame["area_mm2"].notna(), PLATEN_AREA_MM2)
    span = frame["span_mm"].where(frame["span_mm"].notna(), NOMINAL_SPAN_MM)
    width = frame["width_mm"].where(frame["width_mm"].notna(), NOMINAL_SIDE_MM)
    height = frame["height_mm"].where(frame["height_mm"].notna(), NOMINAL_SIDE_MM)
    load_n = frame["peak_load_kn"] * 1000.0
    computed = pd.Series(np.nan, index=raw.index, dtype=float)
    computed = computed.mask(compressive, load_n / area)
    computed = computed.mask(flexural, 1.5 * load_n * span / (width * height**2))
    frame["area_mm2"] = frame["area_mm2"].mask(compressive & frame["area_mm2"].isna(), PLATEN_AREA_MM2)
    frame["span_mm"] = frame["span_mm"].mask(flexural & frame["span_mm"].isna(), NOMINAL_SPAN_MM)
    frame["computed_strength_mpa"] = computed.round(3)
    frame["strength_deviation_mpa"] = (frame["strength_mpa"] - computed).abs().round(4)
    frame["strength_allowed_mpa"] = np.maximum(options.abs_tolerance_mpa, options.rel_tolerance * computed.to_numpy())

    limits = frame["test_type"].map(PLAUSIBLE_STRENGTH_MPA)
    frame["strength_min_mpa"] = limits.map(lambda v: v[0] if isinstance(v, tuple) else np.nan).astype(float)
    frame["strength_max_mpa"] = limits.map(lambda v: v[1] if isinstance(v, tuple) else np.nan).astype(float)
    for name in REQUIRED_FIELDS:
        note(_text(column(name)).isna(), f"{name}: missing")

    known = set(known_batches)
    frame["batch_known"] = frame["batch_id"].map(lambda b: b in known).astype(bool)
    frame["source_line"] = pd.array(column("source_line").tolist(), dtype="Int64") if "source_line" in raw.columns else pd.array([None] * n, dtype="Int64")
    frame["mapping_errors"] = [("; ".join(e) if e else None) for e in errors]
    frame["row_hash"] = row_hashes(frame)
    return frame[list(LAB_RESULT_COLUMNS)]


def _formats_text(formats: tuple[str, ...]) -> str:
    if not formats:
        return "ISO 8601 or dd.mm.yyyy hh:mm"
    return " or ".join("ISO 8601" if f == "iso" else f for f in formats)


def row_hashes(frame: pd.DataFrame) -> list[str]:
    """A digest of the measurement: a re-export with the same values is not rewritten."""
    if frame.empty:
        return []
    hashed = pd.util.hash_pandas_object(frame[list(HASHED)].astype(str), index=False)
    return [f"{int(v):016x}" for v in hashed]


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Parsed export records -> the raw frame `map_lab_results` reads (index = position in the export)."""
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["source_line"])

