"""The lab suite: what is quarantined (and why) and what is only flagged."""

from __future__ import annotations

import pandas as pd

from data_mappings.lab import LabMappingOptions, map_lab_results, records_frame
from expectations.runner import validate_frame
from sandbox.lab import LabMachine

BATCH = "B-M1-000500"


def frame_of(records: list[dict[str, object]], known: set[str] | None = None) -> pd.DataFrame:
    rows = [{k: (v.isoformat() if hasattr(v, "isoformat") else ("" if v is None else str(v))) for k, v in r.items()} for r in records]
    for i, r in enumerate(rows):
        r["source_line"] = i + 2  # type: ignore[assignment]
    return map_lab_results(records_frame(rows), LabMappingOptions(), {BATCH} if known is None else known)


def results() -> list[dict[str, object]]:
    return LabMachine(seed=21).test_batches([BATCH], age_days=28)


def critical(outcome: object, label: int) -> set[str]:
    return {f"{f.expectation}:{f.column}" for f in outcome.failures.get(label, []) if f.severity == "critical"}  # type: ignore[attr-defined]


def test_machine_results_of_a_known_batch_all_pass() -> None:
    outcome = validate_frame("lab", frame_of(results()))
    assert len(outcome.valid) == 9 and outcome.invalid.empty
    assert outcome.failures == {}


def test_strength_not_matching_load_over_area_is_quarantined() -> None:
    records = results()
    records[1]["strength_mpa"] = float(records[1]["strength_mpa"]) * 1.25  # type: ignore[arg-type]
    outcome = validate_frame("lab", frame_of(records))
    assert list(outcome.invalid.index) == [1]
    assert critical(outcome, 1) == {"expect_column_pair_values_a_to_be_greater_than_b:None"}


def test_age_outside_the_plan_is_quarantined() -> None:
    records = results()
    records[0]["age_days"] = 14
    outcome = validate_frame("lab", frame_of(records))
    assert list(outcome.invalid.index) == [0]
    assert critical(outcome, 0) == {"expect_column_values_to_be_in_set:age_days"}


def test_implausible_strength_is_quarantined_even_when_consistent_with_its_load() -> None:
    records = results()
    records[1].update(peak_load_kn=240.0, strength_mpa=150.0)  # 240 kN / 1600 mm2 = 150 MPa: not a mortar
    outcome = validate_frame("lab", frame_of(records))
    assert list(outcome.invalid.index) == [1]
    (failure,) = [f for f in outcome.failures[1] if f.severity == "critical"]
    assert failure.expectation == "expect_column_pair_values_a_to_be_greater_than_b"
    assert failure.rule_id == "lab.strength.plausible_max"


def test_missing_required_value_is_quarantined_with_its_name() -> None:
    records = results()
    records[3]["machine_id"] = None
    records[4]["test_type"] = ""
    outcome = validate_frame("lab", frame_of(records))
    assert sorted(outcome.invalid.index) == [3, 4]
    assert outcome.failures[3][0].value == "machine_id: missing"
    assert outcome.failures[4][0].value == "test_type: missing"


def test_two_rows_with_one_specimen_id_are_both_quarantined() -> None:
    records = results()
    records[2]["specimen_id"] = records[1]["specimen_id"]
    outcome = validate_frame("lab", frame_of(records))
    assert sorted(outcome.invalid.index) == [1, 2]


def test_unknown_batch_is_flagged_as_a_warning_not_quarantined() -> None:
    outcome = validate_frame("lab", frame_of(results(), known=set()))
    assert len(outcome.valid) == 9 and outcome.invalid.empty
    assert set(outcome.warnings) == set(range(9))
    assert {f.column for fs in outcome.warnings.values() for f in fs} == {"batch_known"}
