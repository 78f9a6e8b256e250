"""Expectation suite for lab testing-machine results (the `lab_results` frame of `data_mappings.lab`).

Critical row rules quarantine the row (it is not loaded; `quarantined_records` keeps its line and the
reasons): unreadable values, a strength that does not agree with load / area, values outside what a
dry-mix mortar prism can give, an age outside the lab plan, a duplicated specimen id in one export.

`batch_known` is a WARNING, not a quarantine: a lab result is a valid measurement even when the
plant's batch record has not reached the ERP yet (the plant collects on its own schedule and buffers
through outages). The row is loaded with `batch_known = false` and re-checked on every collection
run; `SELECT ... FROM lab_results WHERE NOT batch_known` lists results waiting for their batch.

Importing this module does not import Great Expectations; only `build_suite` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from data_mappings.columns import LAB_RESULT_COLUMNS
from data_mappings.lab import PLAUSIBLE_STRENGTH_MPA

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME: Final = "lab"
TEST_TYPES: Final = ("compressive", "flexural")
CLOCK_SKEW_TOLERANCE: Final = timedelta(minutes=10)
EARLIEST_TEST: Final = datetime(2000, 1, 1, tzinfo=UTC)

# Plausible geometry of EN 1015-11 prisms; strength limits per test type live in the mapping
# (data_mappings.lab.PLAUSIBLE_STRENGTH_MPA) as per-row columns. No row conditions: see the mapping.
SIDE_MM: Final = (38.0, 42.0)
LENGTH_MM: Final = (60.0, 165.0)  # a prism (160) or a broken half (about 80)
SPAN_MM: Final = (95.0, 105.0)  # flexural rows only (null on compressive rows, and nulls are not checked)
AREA_MM2: Final = (1500.0, 1700.0)  # compressive rows only

DESCRIPTION: Final = (
    "Quality gate for lab strength results (EN 1015-11 prisms). Rows failing a critical rule are "
    "quarantined with their export line; batch_known is a warning: results of batches the plant has "
    "not reported yet are loaded and flagged."
)


def suite_parameters(now: datetime) -> dict[str, Any]:
    return {"max_tested_at": now + CLOCK_SKEW_TOLERANCE}


def planned_ages() -> list[int]:
    from hub.core.settings import lab_config

    return sorted(set(lab_config().planned_ages))


def build_suite() -> gx.ExpectationSuite:
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    from expectations.limits import database_limits
    from hub.core.models import LabResult

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"lab.{rule_id}"}

    ages = planned_ages()
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(LAB_RESULT_COLUMNS), exact_match=True, meta=meta("columns"),
            notes="The mapping must emit exactly the lab_results frame columns (code drift otherwise).",
        ),
        gxe.ExpectColumnValuesToBeNull(
            column="mapping_errors", meta=meta("mapping_errors.none"),
            notes="A required value missing, or a value that could not be read (number, date, age); the value says which and why.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(column="specimen_id", min_value=1, max_value=64, meta=meta("specimen_id.length"), notes="Specimen ids are at most 64 characters."),
        gxe.ExpectColumnValuesToBeUnique(
            column="specimen_id", meta=meta("specimen_id.unique"),
            notes="A specimen is tested once; two rows with one id in an export cannot both be right, so both are quarantined.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(column="batch_id", min_value=1, max_value=64, meta=meta("batch_id.length"), notes="Batch ids are at most 64 characters."),
        gxe.ExpectColumnValuesToBeInSet(column="test_type", value_set=list(TEST_TYPES), meta=meta("test_type.allowed"), notes="EN 1015-11 tests: compressive or flexural."),
        gxe.ExpectColumnValuesToBeInSet(
            column="age_days", value_set=ages, meta=meta("age_days.planned"),
            notes=f"Specimens are tested at the planned ages {ages} days ([lab] planned_ages).",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="strength_allowed_mpa", column_B="strength_deviation_mpa", or_equal=True, ignore_row_if="either_value_is_missing",
            meta=meta("strength.matches_load"),
            notes=(
                "The reported strength must agree with the load and geometry: F/1600 mm2 (compressive) or "
                "1.5 F l / (b d^2) (flexural), within max(0.05 MPa, 2 %) by default. A mismatch means a wrong "
                "unit, area or specimen entry on the machine."
            ),
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="strength_mpa", column_B="strength_min_mpa", or_equal=True, ignore_row_if="either_value_is_missing", meta=meta("strength.plausible_min"),
            notes=f"Strength at least the plausible minimum of its test type {PLAUSIBLE_STRENGTH_MPA} MPa.",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="strength_max_mpa", column_B="strength_mpa", or_equal=True, ignore_row_if="either_value_is_missing", meta=meta("strength.plausible_max"),
            notes=f"Strength at most the plausible maximum of its test type {PLAUSIBLE_STRENGTH_MPA} MPa (with the load check, this bounds the load too).",
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=name, min_value=SIDE_MM[0], max_value=SIDE_MM[1], meta=meta(f"{name}.range"), notes=f"Prism side {SIDE_MM} mm (nominal 40).")
            for name in ("width_mm", "height_mm")
        ),
        gxe.ExpectColumnValuesToBeBetween(column="length_mm", min_value=LENGTH_MM[0], max_value=LENGTH_MM[1], meta=meta("length_mm.range"), notes=f"Prism or half length {LENGTH_MM} mm."),
        gxe.ExpectColumnValuesToBeBetween(column="span_mm", min_value=SPAN_MM[0], max_value=SPAN_MM[1], meta=meta("span_mm.range"), notes="EN 1015-11 flexural span is 100 mm."),
        gxe.ExpectColumnValuesToBeBetween(column="area_mm2", min_value=AREA_MM2[0], max_value=AREA_MM2[1], meta=meta("area_mm2.range"), notes="40 x 40 mm platens: 1600 mm2."),
        gxe.ExpectColumnValuesToBeBetween(
            column="tested_at", min_value=EARLIEST_TEST, max_value={"$PARAMETER": "max_tested_at"}, meta=meta("tested_at.range"),
            notes="Test time after 2000 and not in the future (10 minutes of clock skew tolerated).",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="batch_known", value_set=[True], severity=FailureSeverity.WARNING, meta=meta("batch_id.known"),
            notes="Warning only: the batch is not in production_batches yet. The row is loaded with batch_known = false and re-checked each run.",
        ),
    ]
    expectations += database_limits(LabResult, LAB_RESULT_COLUMNS, expectations, rule_prefix=SUITE_NAME)
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={"notes": {"format": "markdown", "content": [DESCRIPTION]}, "dataset": "lab_results"},
    )
