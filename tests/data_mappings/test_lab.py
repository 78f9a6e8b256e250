"""Lab export rows -> lab_results frame: decimal marks strictly, units, local times, recomputed strength."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from connectors.lab.exports import parse_export
from data_mappings.columns import LAB_RESULT_COLUMNS
from data_mappings.lab import LabMappingOptions, map_lab_results, records_frame
from sandbox.lab import LabMachine, render_export


def row(**values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "specimen_id": "S1", "batch_id": "B1", "test_type": "compressive", "age_days": "28",
        "peak_load_kn": "19.2", "strength_mpa": "12.0", "tested_at": "2026-11-01T10:00:00+05:30", "machine_id": "M1",
        "source_line": 2,
    }
    base.update(values)
    return base


def mapped(*rows: dict[str, object], options: LabMappingOptions | None = None, known: set[str] | None = None) -> pd.DataFrame:
    return map_lab_results(records_frame(list(rows)), options, known or set())


def test_emits_exactly_the_lab_results_columns() -> None:
    assert list(mapped(row()).columns) == list(LAB_RESULT_COLUMNS)


def test_compressive_strength_is_recomputed_on_the_platen_area() -> None:
    frame = mapped(row())
    assert frame.loc[0, "computed_strength_mpa"] == pytest.approx(12.0)
    assert frame.loc[0, "area_mm2"] == 1600.0
    assert frame.loc[0, "strength_deviation_mpa"] == pytest.approx(0.0)
    assert frame.loc[0, "mapping_errors"] is None or pd.isna(frame.loc[0, "mapping_errors"])


def test_flexural_strength_uses_span_and_measured_section() -> None:
    frame = mapped(row(test_type="Flexure", peak_load_kn="1.28", strength_mpa="3.0", width_mm="40", height_mm="40"))
    assert frame.loc[0, "test_type"] == "flexural"
    assert frame.loc[0, "span_mm"] == 100.0
    assert frame.loc[0, "computed_strength_mpa"] == pytest.approx(3.0)


def test_decimal_comma_values_are_read_and_a_point_in_such_a_file_is_refused() -> None:
    options = LabMappingOptions(decimal_comma=True)
    frame = mapped(row(peak_load_kn="19,2", strength_mpa="12,0"), row(specimen_id="S2", peak_load_kn="1.600"), options=options)
    assert frame.loc[0, "peak_load_kn"] == pytest.approx(19.2)
    assert pd.isna(frame.loc[1, "peak_load_kn"])
    assert "peak_load_kn: '1.600' is not a number (this export writes a decimal comma)" in frame.loc[1, "mapping_errors"]


def test_unreadable_number_age_and_date_are_reasons_not_silent_nulls() -> None:
    frame = mapped(row(peak_load_kn="12..4", age_days="about a month", tested_at="31.02.2026 10:00"))
    errors = frame.loc[0, "mapping_errors"]
    assert "peak_load_kn: '12..4' is not a number" in errors
    assert "age_days: 'about a month' is not a whole number of days" in errors
    assert "tested_at: '31.02.2026 10:00' is not a date" in errors


def test_load_in_newtons_is_converted_to_kilonewtons() -> None:
    frame = mapped(row(peak_load_kn="19200"), options=LabMappingOptions(load_unit="N"))
    assert frame.loc[0, "peak_load_kn"] == pytest.approx(19.2)


def test_times_without_offset_are_read_in_the_lab_time_zone() -> None:
    frame = mapped(row(tested_at="01.11.2026 15:30:00"), options=LabMappingOptions(timezone="Asia/Kolkata"))
    assert frame.loc[0, "tested_at"].to_pydatetime() == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def test_batch_known_comes_from_the_known_set() -> None:
    frame = mapped(row(), row(specimen_id="S2", batch_id="B-LATER"), known={"B1"})
    assert frame["batch_known"].tolist() == [True, False]


def test_the_same_measurement_in_any_dialect_hashes_the_same() -> None:
    records = LabMachine(seed=4).test_batches(["B-1"])
    hashes = []
    for variant in ([], ["semicolon"], ["decimal_comma"], ["reordered"]):
        parsed = parse_export(render_export(records, variant), "s.csv")
        options = LabMappingOptions(decimal_comma=parsed.dialect.decimal_comma, load_unit=parsed.dialect.load_unit, timezone="Asia/Kolkata")
        frame = map_lab_results(records_frame(parsed.records), options, set())
        assert frame["mapping_errors"].isna().all()
        hashes.append(frame["row_hash"].tolist())
    assert hashes[0] == hashes[1] == hashes[2] == hashes[3]
