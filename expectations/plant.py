"""Expectation suites for the plant frames: ``plant_readings`` and ``production_batches``.

Readings (one row per tag value):

* critical: identity columns present; quality is one of good/uncertain/bad/stale; per measurement the
  engineering unit is the expected one and a usable value lies in its physical range (``TAG_SPECS``).
  A bad-quality value carries no number (the mapping drops it), so range rules never refuse it.
* warning (reported, flagged in ``quality_flags``, still loaded): bad or uncertain quality, stale values.

Batches (one row per completed batch):

* critical: batch id present, well formed and unique in the batch; product, recipe, mixer, start and end
  present; end not before start; the record complete (as many actual as target weights, no field with a
  bad status); no negative scale reading; targets positive; total within a mixer's capacity.
* warning (flagged ``dosing_out_of_tolerance`` / ``mixing_time_out_of_range``, still loaded): a component
  dosed further than ``DOSING_TOLERANCE_PCT`` from its target, a mixing time outside the plausible window.
  A batch dosed out of tolerance happened: it must stay traceable to its lab results, so it is loaded
  and flagged, not quarantined.

Importing this module does not import Great Expectations; only the builders do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from data_mappings.columns import PLANT_READING_COLUMNS, PRODUCTION_BATCH_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx

READINGS_DATASET: Final = "plant_readings"
BATCHES_DATASET: Final = "production_batches"

QUALITIES: Final[tuple[str, ...]] = ("good", "uncertain", "bad", "stale")


@dataclass(frozen=True)
class TagSpec:
    """What a measurement must look like: its engineering unit and physical range."""

    unit: str | None
    low: float | None = None
    high: float | None = None


#: Per measurement (the leaf of the tag path). Ranges are physical limits, not process targets.
TAG_SPECS: Final[dict[str, TagSpec]] = {
    "MotorCurrentA": TagSpec("A", 0.0, 400.0),
    "MixingTimeS": TagSpec("s", 0.0, 3600.0),
    "TargetKg": TagSpec("kg", 0.0, 5000.0),
    "ActualKg": TagSpec("kg", 0.0, 5000.0),
    "LevelPct": TagSpec("%", 0.0, 100.0),
    "SandTemperatureC": TagSpec("degC", -30.0, 300.0),
    "ExhaustTemperatureC": TagSpec("degC", -30.0, 300.0),
    "MoistureInPct": TagSpec("%", 0.0, 20.0),
}

DOSING_TOLERANCE_PCT: Final = 3.0
MIXING_TIME_S: Final[tuple[float, float]] = (60.0, 900.0)
MAX_BATCH_KG: Final = 6000.0
BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}\Z"

#: Warning rules whose failures become quality flags on the loaded row.
FLAG_FOR_RULE: Final[dict[str, str]] = {
    "production_batches.dosing_tolerance": "dosing_out_of_tolerance",
    "production_batches.mixing_time": "mixing_time_out_of_range",
}


@lru_cache(maxsize=1)
def readings_suite() -> gx.ExpectationSuite:
    """The ``plant_readings`` suite, built once per process (the runner caches by identity)."""
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.row_conditions import Column

    from expectations.limits import database_limits
    from hub.core.models import PlantReading

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"{READINGS_DATASET}.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(PLANT_READING_COLUMNS), exact_match=True, meta=meta("columns"),
            notes="The mapping and this suite must agree on the reading columns (code drift otherwise).",
        ),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=c, meta=meta(f"{c}.required"), notes=f"Every reading needs its {c}.")
            for c in ("reading_key", "tag", "node_id", "measurement", "status_name", "collected_at")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="quality", value_set=list(QUALITIES), meta=meta("quality.allowed"),
            notes="Quality is derived from the OPC UA StatusCode severity bits, or stale from the source timestamp.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="quality", value_set=["good", "uncertain", "stale"], severity=FailureSeverity.WARNING,
            meta=meta("quality.not_bad"),
            notes="Warning: the server reported a Bad status (e.g. BadSensorFailure); loaded with quality 'bad' and no value.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="quality", value_set=["good", "uncertain", "bad"], severity=FailureSeverity.WARNING,
            meta=meta("quality.not_stale"),
            notes="Warning: a continuously sampled tag whose source timestamp stopped moving (stale_after_s).",
        ),
    ]
    for measurement, spec in sorted(TAG_SPECS.items()):
        if spec.unit is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column="unit", value_set=[spec.unit], row_condition=Column("measurement") == measurement,
                    meta=meta(f"{measurement}.unit"),
                    notes=f"{measurement} must be published in {spec.unit} (EngineeringUnits); another unit means a mis-configured tag.",
                )
            )
        if spec.low is not None or spec.high is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column="value", min_value=spec.low, max_value=spec.high,
                    row_condition=Column("measurement") == measurement,
                    meta=meta(f"{measurement}.range"),
                    notes=f"{measurement} outside {spec.low}..{spec.high} {spec.unit or ''} is physically impossible: a faulty sensor or scaling.",
                )
            )
    expectations += database_limits(PlantReading, PLANT_READING_COLUMNS, expectations, rule_prefix=READINGS_DATASET)
    return gx.ExpectationSuite(
        name=READINGS_DATASET,
        expectations=expectations,
        meta={"notes": "Quality gate for plant OPC UA readings. Critical rules quarantine; bad/stale values are flagged, not refused."},
    )


@lru_cache(maxsize=1)
def batches_suite() -> gx.ExpectationSuite:
    """The ``production_batches`` suite, built once per process."""
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    from expectations.limits import database_limits
    from hub.core.models import ProductionBatch

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"{BATCHES_DATASET}.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(PRODUCTION_BATCH_COLUMNS), exact_match=True, meta=meta("columns"),
            notes="The mapping and this suite must agree on the batch columns (code drift otherwise).",
        ),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=c, meta=meta(f"{c}.required"), notes=f"Every batch record needs its {c}.")
            for c in ("batch_id", "product_code", "recipe_code", "mixer", "started_at", "ended_at")
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="batch_id", regex=BATCH_ID_PATTERN, meta=meta("batch_id.format"),
            notes="Batch ids are 1-64 characters of letters, digits and . _ / - (they are printed on bag labels).",
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="batch_id", meta=meta("batch_id.unique"),
            notes="One record per batch id in a collection; two different records with one id cannot both be right.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_s", min_value=0.0, meta=meta("ended_after_started"),
            notes="A batch cannot end before it started (duration_s = ended_at - started_at).",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="record_complete", value_set=[True], meta=meta("record_complete"),
            notes="Components, target and actual weights must line up one to one, and no field may carry a Bad status.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="min_actual_kg", min_value=0.0, meta=meta("actual_kg.non_negative"),
            notes="A negative scale reading is a load-cell or tare fault: the record cannot be trusted.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="min_target_kg", min_value=0.0, strict_min=True, meta=meta("target_kg.positive"),
            notes="Every dosed component needs a positive target weight.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="total_actual_kg", min_value=0.0, max_value=MAX_BATCH_KG, strict_min=True, meta=meta("total_kg.capacity"),
            notes=f"A batch weighs more than nothing and at most {MAX_BATCH_KG:.0f} kg (mixer capacity).",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="max_deviation_pct", min_value=0.0, max_value=DOSING_TOLERANCE_PCT, severity=FailureSeverity.WARNING,
            meta=meta("dosing_tolerance"),
            notes=f"Warning: a component dosed more than {DOSING_TOLERANCE_PCT} % from its target. Loaded and flagged "
            "dosing_out_of_tolerance so that QA can trace it to its strength results.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="mixing_time_s", min_value=MIXING_TIME_S[0], max_value=MIXING_TIME_S[1], severity=FailureSeverity.WARNING,
            meta=meta("mixing_time"),
            notes=f"Warning: mixing time outside {MIXING_TIME_S[0]:.0f}-{MIXING_TIME_S[1]:.0f} s; loaded and flagged mixing_time_out_of_range.",
        ),
    ]
    expectations += database_limits(ProductionBatch, PRODUCTION_BATCH_COLUMNS, expectations, rule_prefix=BATCHES_DATASET)
    return gx.ExpectationSuite(
        name=BATCHES_DATASET,
        expectations=expectations,
        meta={"notes": "Quality gate for completed plant batches. Critical rules quarantine; dosing and mixing deviations are flagged."},
    )
