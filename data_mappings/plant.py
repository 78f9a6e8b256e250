"""Plant OPC UA readings and completed-batch records -> ERP `plant_readings` and `production_batches`.

Pure pandas: no I/O, no Prefect. Input records are what connectors/plant produces (and the durable
buffer stores): ``TagReading.to_record()`` dicts and batch-record dicts.

Quality of a reading follows the OPC UA StatusCode severity bits (Part 4, 7.39): ``00`` Good, ``01``
Uncertain, ``10``/``11`` Bad. A continuously sampled measurement (motor current, silo level, dryer
temperatures) whose source timestamp is older than ``stale_after_s`` when it was collected is
``stale``: the device stopped updating it although the server still answers Good.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from data_mappings.columns import PLANT_READING_COLUMNS, PRODUCTION_BATCH_COLUMNS

#: Measurements a device samples all the time: an old source timestamp means the value is stale. The tag map's
#: ``sampling = "subscription"`` says it per tag; this set serves readings buffered without it.
#: Setpoints and states (TargetKg, State, Material ...) legitimately keep their timestamp until they change.
CONTINUOUS_MEASUREMENTS: frozenset[str] = frozenset(
    {"MotorCurrentA", "LevelPct", "SandTemperatureC", "ExhaustTemperatureC", "MoistureInPct"}
)

_SEVERITY_MASK = 0xC0000000
_UNCERTAIN = 0x40000000


def quality_of(status_code: int) -> str:
    """good | uncertain | bad from the StatusCode's severity bits."""
    severity = int(status_code) & _SEVERITY_MASK
    if severity == 0:
        return "good"
    return "uncertain" if severity == _UNCERTAIN else "bad"


def _digest(*parts: Any) -> str:
    return hashlib.md5(json.dumps(parts, sort_keys=True, default=str).encode(), usedforsecurity=False).hexdigest()


def reading_key(tag: str, source_ts: str | None, server_ts: str | None, collected_at: str | None) -> str:
    """Identity of a reading: the tag at its source timestamp (the server's, else ours, when it has none).

    The same value read twice (a stale tag, a repeated buffer flush) has the same key, so it is stored once.
    """
    when = f"src:{source_ts}" if source_ts else (f"srv:{server_ts}" if server_ts else f"hub:{collected_at}")
    return hashlib.sha1(f"{tag}|{when}".encode(), usedforsecurity=False).hexdigest()


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


def _split_value(value: Any) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, int | float):
        number = float(value)
        return (None, None) if number != number else (number, None)
    if isinstance(value, list | dict):
        return None, json.dumps(value)[:255]
    return None, str(value)[:255]


def map_plant_readings(records: Iterable[Mapping[str, Any]], *, stale_after_s: float) -> pd.DataFrame:
    """One row per reading, with quality, flags, a stable `reading_key` and a `row_hash`."""
    raw = pd.DataFrame(list(records))
    if raw.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PLANT_READING_COLUMNS})
    for column in ("tag", "node_id", "unit", "value", "status_code", "status_name", "source_timestamp", "server_timestamp", "collected_at",
                   "equipment", "sampling"):
        if column not in raw.columns:
            raw[column] = None
    out = pd.DataFrame(index=raw.index)
    out["tag"] = raw["tag"].astype("string").str.strip().str.strip("/").astype(object)
    out["node_id"] = raw["node_id"]
    parts = out["tag"].fillna("").str.rsplit("/", n=1)
    # The site tag map names the equipment; records without it (buffered before the map) take the tag's parent path.
    out["equipment"] = [e if isinstance(e, str) and e else (p[0] if len(p) == 2 else "") for e, p in zip(raw["equipment"], parts, strict=True)]
    out["measurement"] = [p[-1] if p else "" for p in parts]
    status = pd.to_numeric(raw["status_code"], errors="coerce").fillna(0x80000000).astype("int64")
    quality = [quality_of(int(code)) for code in status]
    split = [_split_value(v) for v in raw["value"]]
    out["value"] = [number if q != "bad" else None for (number, _), q in zip(split, quality, strict=True)]
    out["value_text"] = [text if q != "bad" else None for (_, text), q in zip(split, quality, strict=True)]
    out["unit"] = raw["unit"].where(raw["unit"].notna(), None)
    out["status_code"] = status
    out["status_name"] = raw["status_name"].fillna("").astype(str)
    out["source_timestamp"] = _utc(raw["source_timestamp"])
    out["server_timestamp"] = _utc(raw["server_timestamp"])
    out["collected_at"] = _utc(raw["collected_at"])
    age_s = (out["collected_at"] - out["source_timestamp"]).dt.total_seconds()
    # Continuously sampled: what the map subscribes to; records without `sampling` fall back to the known measurements.
    continuous = pd.Series(
        [s == "subscription" if isinstance(s, str) else m in CONTINUOUS_MEASUREMENTS for s, m in zip(raw["sampling"], out["measurement"], strict=True)],
        index=out.index,
    )
    stale = continuous & (age_s > stale_after_s)
    flags: list[list[str]] = []
    final_quality: list[str] = []
    for q, is_stale, has_source in zip(quality, stale.fillna(False), out["source_timestamp"].notna(), strict=True):
        row_flags = []
        if q == "bad":
            row_flags.append("bad_quality")
        elif q == "uncertain":
            row_flags.append("uncertain_quality")
        if is_stale and q == "good":
            row_flags.append("stale")
            q = "stale"
        if not has_source:
            row_flags.append("no_source_timestamp")
        flags.append(row_flags)
        final_quality.append(q)
    out["quality"] = final_quality
    out["quality_flags"] = flags
    out["reading_key"] = [
        reading_key(str(t), s, v, c)
        for t, s, v, c in zip(out["tag"], raw["source_timestamp"], raw["server_timestamp"], raw["collected_at"], strict=True)
    ]
    return with_row_hash_readings(out[list(c for c in PLANT_READING_COLUMNS if c != "row_hash")])


def with_row_hash_readings(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["row_hash"] = [
        _digest(v, t, u, int(sc), q, fl)
        for v, t, u, sc, q, fl in zip(
            frame["value"], frame["value_text"], frame["unit"], frame["status_code"], frame["quality"], frame["quality_flags"], strict=True
        )
    ]
    return frame[list(PLANT_READING_COLUMNS)]


def _as_float_list(value: Any) -> list[float | None]:
    if not isinstance(value, list | tuple):
        return []
    out: list[float | None] = []
    for item in value:
        try:
            number = float(item)
        except (TypeError, ValueError):
            out.append(None)
            continue
        out.append(None if number != number else number)
    return out


def map_production_batches(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per completed batch, with its components as a list of dicts and dosing deviations."""
    rows: list[dict[str, Any]] = []
    for rec in records:
        names = list(rec.get("components") or [])
        targets = _as_float_list(rec.get("target_kg"))
        actuals = _as_float_list(rec.get("actual_kg"))
        complete = bool(names) and len(names) == len(targets) == len(actuals) and not rec.get("bad_fields")
        components: list[dict[str, Any]] = []
        deviations: list[float] = []
        for i, name in enumerate(names):
            target = targets[i] if i < len(targets) else None
            actual = actuals[i] if i < len(actuals) else None
            deviation = None
            if target and actual is not None and target > 0:
                deviation = round(abs(actual - target) / target * 100.0, 3)
                deviations.append(deviation)
            components.append({"component": str(name), "target_kg": target, "actual_kg": actual, "deviation_pct": deviation})
        flags = sorted(f"bad_status:{field}" for field in (rec.get("bad_fields") or {}))
        known_targets = [t for t in targets if t is not None]
        known_actuals = [a for a in actuals if a is not None]
        rows.append(
            {
                "batch_id": (str(rec["batch_id"]).strip() or None) if rec.get("batch_id") is not None else None,
                "batch_seq": int(rec.get("seq") or 0),
                "product_code": rec.get("product_code") or None,
                "recipe_code": rec.get("recipe_code") or None,
                "mixer": rec.get("mixer") or None,
                "started_at": rec.get("started_at"),
                "ended_at": rec.get("ended_at"),
                "mixing_time_s": rec.get("mixing_time_s"),
                "total_target_kg": round(sum(known_targets), 3) if known_targets else None,
                "total_actual_kg": round(sum(known_actuals), 3) if known_actuals else None,
                "max_deviation_pct": max(deviations) if deviations else None,
                "components": components,
                "quality_flags": flags,
                "min_target_kg": min(known_targets) if known_targets else None,
                "min_actual_kg": min(known_actuals) if known_actuals else None,
                "record_complete": complete,
            }
        )
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PRODUCTION_BATCH_COLUMNS})
    frame = pd.DataFrame(rows)
    frame["started_at"] = _utc(frame["started_at"])
    frame["ended_at"] = _utc(frame["ended_at"])
    frame["duration_s"] = (frame["ended_at"] - frame["started_at"]).dt.total_seconds()
    frame["mixing_time_s"] = pd.to_numeric(frame["mixing_time_s"], errors="coerce")
    for column in ("total_target_kg", "total_actual_kg", "max_deviation_pct", "min_target_kg", "min_actual_kg"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return with_row_hash_batches(frame)


def with_row_hash_batches(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    cols = [c for c in PRODUCTION_BATCH_COLUMNS if c != "row_hash"]
    frame["row_hash"] = [_digest(*(row[c] for c in cols)) for _, row in frame[cols].iterrows()]
    return frame[list(PRODUCTION_BATCH_COLUMNS)]


def add_quality_flags(frame: pd.DataFrame, flags_by_label: Mapping[Any, Iterable[str]], *, batches: bool) -> pd.DataFrame:
    """Append flags (e.g. warning rules a row failed) to `quality_flags` and recompute `row_hash`."""
    if not flags_by_label:
        return frame
    frame = frame.copy()
    frame["quality_flags"] = [
        sorted(set(existing) | set(flags_by_label.get(label, ()))) for label, existing in zip(frame.index, frame["quality_flags"], strict=True)
    ]
    return with_row_hash_batches(frame) if batches else with_row_hash_readings(frame)
