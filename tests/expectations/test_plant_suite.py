"""The plant suites: what is quarantined, what is only flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua

from data_mappings.plant import map_plant_readings, map_production_batches
from expectations.plant import batches_suite, readings_suite
from expectations.runner import validate_frame

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def raw(tag: str, value: Any, unit: str | None, *, status: int = 0, age_s: float = 1.0) -> dict[str, Any]:
    stamp = (NOW - timedelta(seconds=age_s)).isoformat()
    return {
        "tag": tag, "node_id": f"ns=2;s=Plant.{tag.replace('/', '.')}", "unit": unit, "value": value, "status_code": status,
        "status_name": ua.StatusCode(status).name, "source_timestamp": stamp, "server_timestamp": stamp, "collected_at": NOW.isoformat(),
    }


def rule_ids(outcome: Any, label: int) -> set[str]:
    return {f.rule_id for f in outcome.failures.get(label, [])}


def test_out_of_range_and_wrong_unit_readings_are_quarantined_bad_and_stale_only_flagged() -> None:
    frame = map_plant_readings(
        [
            raw("Mixers/M1/MotorCurrentA", 85.0, "A"),                                   # 0 fine
            raw("Silos/S1/LevelPct", 131.0, "%"),                                        # 1 over 100 %
            raw("Mixers/M1/Scales/Sand/ActualKg", 580.0, "lb"),                          # 2 wrong unit
            raw("Mixers/M1/Scales/Sand/ActualKg", -4.0, "kg"),                           # 3 negative weight
            raw("Dryer/SandTemperatureC", 0.0, "degC", status=ua.StatusCodes.BadSensorFailure),  # 4 bad: flagged
            raw("Dryer/MoistureInPct", 0.2, "%", age_s=900.0),                           # 5 stale: flagged
        ],
        stale_after_s=120.0,
    )
    outcome = validate_frame("plant_readings", frame, suite=readings_suite())
    assert sorted(outcome.invalid.index) == [1, 2, 3]
    assert "plant_readings.LevelPct.range" in rule_ids(outcome, 1)
    assert "plant_readings.ActualKg.unit" in rule_ids(outcome, 2)
    assert "plant_readings.ActualKg.range" in rule_ids(outcome, 3)
    assert sorted(outcome.valid.index) == [0, 4, 5]
    assert {f.rule_id for f in outcome.warnings[4]} == {"plant_readings.quality.not_bad"}
    assert {f.rule_id for f in outcome.warnings[5]} == {"plant_readings.quality.not_stale"}


def batch(seq: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "seq": seq, "batch_id": f"M1-261130-{seq:06d}-001", "product_code": "TILE-ADH-C1", "recipe_code": "R-TA-C1", "mixer": "M1",
        "started_at": "2026-11-30T08:00:00+00:00", "ended_at": "2026-11-30T08:03:10+00:00", "mixing_time_s": 120.0,
        "components": ["Cement", "Sand"], "target_kg": [350.0, 580.0], "actual_kg": [352.0, 577.0], "bad_fields": {},
    }
    record.update(overrides)
    return record


def test_batches_broken_records_are_quarantined_and_dosing_deviations_flagged() -> None:
    frame = map_production_batches(
        [
            batch(1),                                                          # 0 fine
            batch(2, actual_kg=[380.0, 577.0]),                                # 1 cement 8.6 % over: flagged only
            batch(3, actual_kg=[-350.0, 577.0]),                               # 2 negative scale reading
            batch(4, ended_at="2026-11-30T07:59:00+00:00"),                    # 3 ends before it starts
            batch(5, actual_kg=[352.0]),                                       # 4 incomplete record
            batch(6, batch_id=None),                                           # 5 no batch id
            batch(7, mixing_time_s=10.0),                                      # 6 mixed for 10 s: flagged only
        ]
    )
    outcome = validate_frame("production_batches", frame, suite=batches_suite())
    assert sorted(outcome.invalid.index) == [2, 3, 4, 5]
    assert "production_batches.actual_kg.non_negative" in rule_ids(outcome, 2)
    assert "production_batches.ended_after_started" in rule_ids(outcome, 3)
    assert "production_batches.record_complete" in rule_ids(outcome, 4)
    assert "production_batches.batch_id.required" in rule_ids(outcome, 5)
    assert sorted(outcome.valid.index) == [0, 1, 6]
    assert {f.rule_id for f in outcome.warnings[1]} == {"production_batches.dosing_tolerance"}
    assert {f.rule_id for f in outcome.warnings[6]} == {"production_batches.mixing_time"}
