"""Expectation suite for schedules and calendar events (``schedules``), before they are loaded anywhere.

Validated twice per calendar sync (data_mappings/schedules.py FRAME_COLUMNS): ERP schedules before they are
pushed to a calendar, and live remote events (moved by people) before the move is written into the ERP. A row
failing a critical rule is quarantined (DATA_VALIDATION_FAILED) and not applied; the rest of the batch goes on.

Importing this module does not import Great Expectations; only :func:`build_suite` does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from data_mappings.schedules import FRAME_COLUMNS, KINDS, MAX_DURATION

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME: Final = "schedules"
MIN_DURATION_MINUTES: Final = 1.0
MAX_DURATION_MINUTES: Final = MAX_DURATION.total_seconds() / 60.0
#: Schedules are planned work: nothing older than this, nothing further ahead than that.
PAST_HORIZON: Final = timedelta(days=2 * 365)
FUTURE_HORIZON: Final = timedelta(days=3 * 365)
REF_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}\Z"
NOT_BLANK: Final = r"\S"


def suite_parameters(now: datetime) -> dict[str, Any]:
    """Plausible window of start times, relative to the validation time."""
    return {"min_starts_at": now - PAST_HORIZON, "max_starts_at": now + FUTURE_HORIZON}


def build_suite() -> gx.ExpectationSuite:
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    from expectations.limits import database_limits
    from hub.core.models import Schedule

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"schedules.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(FRAME_COLUMNS), exact_match=True, meta=meta("columns"),
            notes="The calendar mappings must emit exactly the schedule frame columns (code drift otherwise).",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="schedule_ref", meta=meta("schedule_ref.required"),
            notes="Every schedule and every event of ours carries the ERP key.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="schedule_ref", regex=REF_PATTERN, meta=meta("schedule_ref.format"),
            notes="ERP keys are 1-64 letters, digits, dot, underscore, slash or dash.",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="kind", meta=meta("kind.required"), notes="The kind of work must be known.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="kind", value_set=list(KINDS), meta=meta("kind.allowed"),
            notes="delivery, site_visit or maintenance.",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="title", meta=meta("title.required"), notes="A calendar entry needs a title people can read.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="title", regex=NOT_BLANK, meta=meta("title.not_blank"), notes="The title is not only blanks.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="title", min_value=1, max_value=255, meta=meta("title.length"),
            notes="schedules.title holds at most 255 characters.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="location", min_value=0, max_value=512, meta=meta("location.length"),
            notes="schedules.location holds at most 512 characters.",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="starts_at", meta=meta("starts_at.required"), notes="A schedule has a start time.",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="ends_at", meta=meta("ends_at.required"), notes="A schedule has an end time.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_minutes", min_value=MIN_DURATION_MINUTES, meta=meta("ends_after_starts"),
            notes="The end comes after the start (at least one minute).",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_minutes", max_value=MAX_DURATION_MINUTES, meta=meta("duration.plausible"),
            notes=f"No delivery, visit or maintenance lasts longer than {MAX_DURATION.days} days: a typo in a date.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="starts_at",
            min_value={"$PARAMETER": "min_starts_at"},
            max_value={"$PARAMETER": "max_starts_at"},
            meta=meta("starts_at.plausible"),
            severity=FailureSeverity.WARNING,
            notes="Start within two years back and three years ahead; outside is reported, not quarantined.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="status", value_set=["confirmed", "tentative", "cancelled"], meta=meta("status.allowed"),
            notes="Normalised calendar status.",
        ),
    ]
    # The ERP schedules table's limits (a moved event's fields are written into it), from the model. The
    # frame's status is the calendar's (confirmed/tentative/cancelled), translated before it is stored.
    stored = [c for c in FRAME_COLUMNS if c != "status"]
    expectations += database_limits(Schedule, stored, expectations, rule_prefix=SUITE_NAME)
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations, meta={"dataset": "schedules"})
