"""The plant mappings: OPC UA quality, staleness, reading identity, batch dosing figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from asyncua import ua

from data_mappings.columns import PLANT_READING_COLUMNS, PRODUCTION_BATCH_COLUMNS
from data_mappings.plant import add_quality_flags, map_plant_readings, map_production_batches, quality_of

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def raw(tag: str, value: Any, *, status: int = 0, age_s: float = 1.0, source: bool = True) -> dict[str, Any]:
    stamp = (NOW - timedelta(seconds=age_s)).isoformat()
    return {
        "tag": tag, "node_id": f"ns=2;s=Plant.{tag.replace('/', '.')}", "unit": "A", "value": value,
        "status_code": status, "status_name": ua.StatusCode(status).name,
        "source_timestamp": stamp if source else None, "server_timestamp": stamp, "collected_at": NOW.isoformat(),
    }


def test_quality_follows_the_status_code_severity_bits() -> None:
    assert quality_of(0) == "good"
    assert quality_of(ua.StatusCodes.UncertainLastUsableValue) == "uncertain"
    assert quality_of(ua.StatusCodes.BadSensorFailure) == "bad"
    assert quality_of(ua.StatusCodes.BadNodeIdUnknown) == "bad"


def test_readings_keep_status_flag_bad_and_stale_and_drop_unusable_values() -> None:
    frame = map_plant_readings(
        [
            raw("Mixers/M1/MotorCurrentA", 85.5),
            raw("Mixers/M1/MotorCurrentA", 12.0, status=ua.StatusCodes.BadSensorFailure, age_s=2.0),
            raw("Dryer/MoistureInPct", 0.2, age_s=600.0),
            raw("Mixers/M1/Scales/Cement/TargetKg", 350.0, age_s=600.0),  # a setpoint keeps its timestamp: not stale
            raw("Mixers/M1/State", "Mixing", source=False),
        ],
        stale_after_s=120.0,
    )
    assert list(frame.columns) == list(PLANT_READING_COLUMNS)
    good, bad, stale, setpoint, state = frame.to_dict("records")
    assert good["quality"] == "good" and good["value"] == 85.5 and good["quality_flags"] == []
    assert good["equipment"] == "Mixers/M1" and good["measurement"] == "MotorCurrentA"
    assert bad["quality"] == "bad" and pd.isna(bad["value"]) and bad["status_name"] == "BadSensorFailure"
    assert bad["quality_flags"] == ["bad_quality"] and bad["status_code"] == ua.StatusCodes.BadSensorFailure
    assert stale["quality"] == "stale" and stale["quality_flags"] == ["stale"] and stale["value"] == 0.2
    assert setpoint["quality"] == "good"
    assert state["value_text"] == "Mixing" and pd.isna(state["value"]) and "no_source_timestamp" in state["quality_flags"]
    assert frame["collected_at"].dt.tz is not None


def test_the_same_reading_read_twice_has_one_key_and_a_new_value_a_new_one() -> None:
    first = map_plant_readings([raw("Silos/S1/LevelPct", 60.0)], stale_after_s=120.0)
    again = map_plant_readings([raw("Silos/S1/LevelPct", 60.0)], stale_after_s=120.0)
    later = map_plant_readings([raw("Silos/S1/LevelPct", 59.0, age_s=0.5)], stale_after_s=120.0)
    assert first.at[0, "reading_key"] == again.at[0, "reading_key"]
    assert first.at[0, "row_hash"] == again.at[0, "row_hash"]
    assert later.at[0, "reading_key"] != first.at[0, "reading_key"]


def batch(**overrides: Any) -> dict[str, Any]:
    record = {
        "seq": 4, "batch_id": "M1-261130-000004-002", "product_code": "PLASTER-GP", "recipe_code": "R-PL-GP", "mixer": "M1",
        "started_at": "2026-11-30T08:00:00+00:00", "ended_at": "2026-11-30T08:03:10+00:00", "mixing_time_s": 120.0,
        "components": ["Cement", "Sand", "Lime"], "target_kg": [180.0, 700.0, 55.0], "actual_kg": [181.8, 693.0, 55.0],
        "bad_fields": {},
    }
    record.update(overrides)
    return record


def test_batches_carry_components_totals_and_the_largest_dosing_deviation() -> None:
    frame = map_production_batches([batch()])
    assert list(frame.columns) == list(PRODUCTION_BATCH_COLUMNS)
    row = frame.iloc[0]
    assert row["batch_seq"] == 4 and row["record_complete"]
    assert row["total_target_kg"] == 935.0 and row["total_actual_kg"] == 929.8
    assert row["max_deviation_pct"] == 1.0  # cement and sand are both 1 % off
    assert row["components"][0] == {"component": "Cement", "target_kg": 180.0, "actual_kg": 181.8, "deviation_pct": 1.0}
    assert row["started_at"] == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def test_an_incomplete_batch_record_is_marked_so() -> None:
    short = map_production_batches([batch(actual_kg=[181.8, 693.0])]).iloc[0]
    bad_field = map_production_batches([batch(bad_fields={"ActualKg": "BadSensorFailure"})]).iloc[0]
    assert not short["record_complete"]
    assert not bad_field["record_complete"] and bad_field["quality_flags"] == ["bad_status:ActualKg"]


def test_added_quality_flags_change_the_row_hash() -> None:
    frame = map_production_batches([batch()])
    flagged = add_quality_flags(frame, {0: ["dosing_out_of_tolerance"]}, batches=True)
    assert flagged.at[0, "quality_flags"] == ["dosing_out_of_tolerance"]
    assert flagged.at[0, "row_hash"] != frame.at[0, "row_hash"]
