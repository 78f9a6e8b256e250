"""The one quarantine-row builder: every integration's refused rows carry the same failure shape, rule id included."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from expectations.runner import ValidationOutcome, validate_frame
from hub.ledger.loading import (
    FAILURE_VALUE_MAX_CHARS,
    QuarantineRow,
    count_failures,
    failure_entry,
    quarantine_rows,
    record_digest,
)

FAILURE_KEYS = {"expectation", "column", "rule_id", "kwargs", "value"}


def _suite() -> Any:
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    gxe = gx.expectations
    return gx.ExpectationSuite(
        name="quarantine_rows_test",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="code"),  # no rule id
            gxe.ExpectColumnValuesToMatchRegex(column="code", regex=r"^[A-Z]{3}\Z", meta={"rule_id": "test.code.format"}),
            gxe.ExpectColumnValuesToBeBetween(column="qty", max_value=100, severity=FailureSeverity.WARNING,
                                              meta={"rule_id": "test.qty.usual"}),
        ],
    )


@pytest.fixture(scope="module")
def refused() -> tuple[pd.DataFrame, ValidationOutcome, dict[int, dict[str, Any]]]:
    """A validated frame with caller labels: 10 passes, 11 breaks the format and a warning, 12 has no code."""
    frame = pd.DataFrame(
        {
            "code": ["ABC", "abc", None],
            "qty": [1, 500, 2],
            "at": pd.to_datetime(["2024-05-01T08:00:00Z"] * 3, utc=True),
            "row_hash": ["h10", "h11", "h12"],
        },
        index=[10, 11, 12],
    )
    raw = {10: {"Code": "ABC"}, 11: {"Code": "abc", "Qty": "500"}, 12: {"Code": None}}
    return frame, validate_frame("quarantine_rows_test", frame, suite=_suite()), raw


def test_every_failure_has_the_same_five_keys_and_json_safe_values() -> None:
    bare = failure_entry("readable_line", value="cut off")
    assert bare == {"expectation": "readable_line", "column": None, "rule_id": None, "kwargs": {}, "value": "cut off"}
    full = failure_entry("expect_x", column="at", rule_id="r.1", kwargs={"when": pd.Timestamp("2024-05-01", tz="UTC")}, value=float("nan"))
    assert set(full) == FAILURE_KEYS
    assert full["kwargs"] == {"when": "2024-05-01T00:00:00+00:00"} and full["value"] is None


def test_a_long_value_is_cut_to_a_bounded_length() -> None:
    assert len(failure_entry("database_refused", value="x" * 10_000)["value"]) == FAILURE_VALUE_MAX_CHARS
    many = failure_entry("expect_pair", value={"a": "y" * 10_000, "b": 1})["value"]
    assert isinstance(many, str) and len(many) == FAILURE_VALUE_MAX_CHARS
    assert failure_entry("expect_pair", value={"a": 1, "b": 2})["value"] == {"a": 1, "b": 2}  # a small dict stays a dict


def test_rows_carry_raw_and_mapped_records_and_only_critical_failures_with_their_rule_id(refused: Any) -> None:
    frame, outcome, raw = refused
    rows = quarantine_rows(outcome, frame, raw_of=raw.__getitem__, key_of=lambda label: frame.at[label, "code"])
    assert [r.record_key for r in rows] == ["abc", record_digest(raw[12])]  # no code: keyed by its source record
    bad_format, no_code = rows
    assert bad_format.raw_record == raw[11]
    assert bad_format.mapped_record == {"code": "abc", "qty": 500, "at": "2024-05-01T08:00:00+00:00"}  # no row_hash
    assert all(set(f) == FAILURE_KEYS for r in rows for f in r.failed_expectations)
    assert [(f["rule_id"], f["column"], f["value"]) for f in bad_format.failed_expectations] == [("test.code.format", "code", "abc")]
    assert [f["expectation"] for f in no_code.failed_expectations] == ["expect_column_values_to_not_be_null"]
    assert no_code.failed_expectations[0]["rule_id"] is None

    with_warnings = quarantine_rows(outcome, frame, raw_of=raw.__getitem__, critical_only=False)
    assert {f["rule_id"] for f in with_warnings[0].failed_expectations} == {"test.code.format", "test.qty.usual"}


def test_without_key_of_every_row_is_keyed_by_its_source_record(refused: Any) -> None:
    frame, outcome, raw = refused
    rows = quarantine_rows(outcome, frame, raw_of=raw.__getitem__)
    assert [r.record_key for r in rows] == [record_digest(raw[11]), record_digest(raw[12])]


def test_nothing_refused_builds_no_rows(refused: Any) -> None:
    frame, outcome, raw = refused
    passing = validate_frame("quarantine_rows_test", frame.loc[[10]], suite=_suite())
    assert quarantine_rows(passing, frame.loc[[10]], raw_of=raw.__getitem__) == []


def test_failures_are_counted_by_rule_id_else_expectation_and_column() -> None:
    rows = [
        QuarantineRow("a", {}, None, [failure_entry("expect_x", column="code", rule_id="test.code.format"),
                                      failure_entry("database_refused", column="street")]),
        QuarantineRow("b", {}, None, [failure_entry("expect_x", column="code", rule_id="test.code.format"),
                                      failure_entry("readable_line")]),
    ]
    assert count_failures(rows) == {"test.code.format": 2, "database_refused(street)": 1, "readable_line": 1}
