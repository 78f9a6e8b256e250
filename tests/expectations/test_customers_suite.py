"""The ``customers`` suite: each rule quarantines exactly the rows that break it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pandas as pd
import pytest

from expectations import customers
from expectations.runner import ValidationOutcome, validate_frame
from tests.expectations.conftest import make_customer_frame

Mutation = Callable[[pd.DataFrame], None]


def _set(column: str, rows: dict[int, object]) -> Mutation:
    def mutate(frame: pd.DataFrame) -> None:
        if any(value is None for value in rows.values()) and frame[column].dtype == bool:
            frame[column] = frame[column].astype(object)
        for row, value in rows.items():
            frame.loc[row, column] = value

    return mutate


def _validate(mutation: Mutation | None = None, n: int = 40) -> ValidationOutcome:
    frame = make_customer_frame(n)
    if mutation is not None:
        mutation(frame)
    return validate_frame("customers", frame)


def _failed(outcome: ValidationOutcome, row: object) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in outcome.failures.get(row, [])}


def test_suite_is_named_customers_and_documents_every_rule() -> None:
    suite = customers.build_suite()

    assert suite.name == "customers"
    assert customers.CUSTOMER_SUITE_DESCRIPTION in json.dumps(suite.meta)
    rule_ids = [(e.meta or {})["rule_id"] for e in suite.expectations]
    assert len(rule_ids) == len(set(rule_ids))
    for expectation in suite.expectations:
        assert expectation.notes, expectation.expectation_type
        assert (expectation.meta or {})["rule_id"].startswith("customers.")


def test_iso_country_list_is_the_full_alpha2_set() -> None:
    codes = customers.ISO_3166_ALPHA2

    assert len(codes) == 249
    assert {"IN", "DE", "US", "GB", "AX", "SS", "BQ"} <= codes
    assert all(len(code) == 2 and code.isupper() for code in codes)
    assert "XK" not in codes and "UK" not in codes


def test_importing_the_suite_module_does_not_need_gx_until_build() -> None:
    assert customers.SUITE_NAME == "customers"
    assert "max_sap_changed_at" in customers.suite_parameters(dt.datetime.now(dt.UTC))


def test_valid_frame_passes_completely() -> None:
    frame = make_customer_frame(60)

    outcome = validate_frame("customers", frame)

    assert outcome.success
    assert outcome.invalid.empty
    assert outcome.failures == {}
    pd.testing.assert_frame_equal(outcome.valid, frame)
    assert outcome.statistics["invalid_rows"] == 0
    assert outcome.statistics["successful_expectations"] == len(customers.build_suite().expectations)


# (case id, mutation, rows expected in quarantine, expected (expectation, column) on those rows)
RULE_CASES: list[tuple[str, Mutation, list[int], tuple[str, str]]] = [
    (
        "bad-email",
        _set("email", {3: "not-an-email", 8: "a@b", 9: "x y@example.com"}),
        [3, 8, 9],
        ("expect_column_values_to_match_regex", "email"),
    ),
    (
        "email-trailing-newline",
        _set("email", {4: "customer4@example.com\n"}),
        [4],
        ("expect_column_values_to_match_regex", "email"),
    ),
    (
        "bad-phone",
        _set("phone", {1: "+49 30 1234567", 2: "00493012345678", 6: "+0123456789", 7: "+1234567"}),
        [1, 2, 6, 7],
        ("expect_column_values_to_match_regex", "phone"),
    ),
    (
        "bad-mobile",
        _set("mobile", {5: "98765 43210"}),
        [5],
        ("expect_column_values_to_match_regex", "mobile"),
    ),
    (
        "unknown-country",
        _set("country", {2: "XX", 11: "de", 12: "UK"}),
        [2, 11, 12],
        ("expect_column_values_to_be_in_set", "country"),
    ),
    (
        "missing-country",
        _set("country", {6: None}),
        [6],
        ("expect_column_values_to_not_be_null", "country"),
    ),
    (
        "missing-name",
        _set("name", {0: None, 13: None}),
        [0, 13],
        ("expect_column_values_to_not_be_null", "name"),
    ),
    (
        "blank-name",
        _set("name", {14: "   ", 15: ""}),
        [14, 15],
        ("expect_column_values_to_match_regex", "name"),
    ),
    (
        "name-too-long",
        _set("name", {16: "N" * 82}),
        [16],
        ("expect_column_value_lengths_to_be_between", "name"),
    ),
    (
        "null-customer-id",
        _set("customer_id", {7: None}),
        [7],
        ("expect_column_values_to_not_be_null", "customer_id"),
    ),
    (
        "malformed-customer-id",
        _set("customer_id", {8: "ABC123", 9: "12345678901", 10: " 1000010"}),
        [8, 9, 10],
        ("expect_column_values_to_match_regex", "customer_id"),
    ),
    (
        "duplicated-customer-id",
        _set("customer_id", {9: "1000004"}),
        [4, 9],
        ("expect_column_values_to_be_unique", "customer_id"),
    ),
    (
        "bad-category",
        _set("category", {3: "company"}),
        [3],
        ("expect_column_values_to_be_in_set", "category"),
    ),
    (
        "bad-language",
        _set("language", {4: "ENG"}),
        [4],
        ("expect_column_values_to_match_regex", "language"),
    ),
    (
        "bad-gstin",
        _set("gstin", {0: "27ABCDE1234F1Z", 3: "27abcde1234f1z5"}),
        [0, 3],
        ("expect_column_values_to_match_regex", "gstin"),
    ),
    (
        "mapping-errors-set",
        _set("mapping_errors", {17: "phone: cannot normalise '12-34'"}),
        [17],
        ("expect_column_values_to_be_null", "mapping_errors"),
    ),
    (
        "null-flag",
        _set("deletion_flag", {18: None}),
        [18],
        ("expect_column_values_to_not_be_null", "deletion_flag"),
    ),
    (
        "null-sap-changed-at",
        _set("sap_changed_at", {19: pd.NaT}),
        [19],
        ("expect_column_values_to_not_be_null", "sap_changed_at"),
    ),
]


@pytest.mark.parametrize(
    ("mutation", "rows", "rule"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_each_rule_quarantines_exactly_the_failing_rows(
    mutation: Mutation, rows: list[int], rule: tuple[str, str]
) -> None:
    outcome = _validate(mutation)

    assert sorted(outcome.invalid.index) == rows
    assert sorted(outcome.failures) == rows
    for row in rows:
        assert rule in _failed(outcome, row)
    assert len(outcome.valid) == 40 - len(rows)
    assert not outcome.success


def test_future_sap_changed_at_is_quarantined_but_clock_skew_is_tolerated() -> None:
    now = pd.Timestamp.now(tz="UTC")

    outcome = _validate(
        _set(
            "sap_changed_at",
            {2: now + pd.Timedelta(days=1), 5: now + pd.Timedelta(minutes=1), 6: now},
        )
    )

    assert list(outcome.invalid.index) == [2]
    (failure,) = outcome.failures[2]
    assert (failure.expectation, failure.column) == (
        "expect_column_values_to_be_between",
        "sap_changed_at",
    )
    assert failure.value == (now + pd.Timedelta(days=1)).isoformat()
    # The bound is evaluated at validation time (suite parameter), not at suite build.
    assert dt.datetime.fromisoformat(failure.kwargs["max_value"]) > now.to_pydatetime()


def test_indian_postal_codes_must_be_six_digit_pins_foreign_ones_are_free() -> None:
    frame = make_customer_frame(40)
    india = frame.index[frame["country"] == "IN"]
    foreign = frame.index[frame["country"] != "IN"]
    frame.loc[india[0], "postal_code"] = "12345"
    frame.loc[india[1], "postal_code"] = "012345"
    frame.loc[india[2], "postal_code"] = "ABC123"
    frame.loc[india[3], "postal_code"] = None  # optional field
    frame.loc[foreign[0], "postal_code"] = "12345"
    frame.loc[foreign[1], "postal_code"] = "SW1A 1AA"
    frame.loc[foreign[2], "postal_code"] = "0123"

    outcome = validate_frame("customers", frame)

    assert list(outcome.invalid.index) == list(india[:3])
    for row in india[:3]:
        (failure,) = outcome.failures[row]
        assert failure.expectation == "expect_column_values_to_match_regex"
        assert failure.column == "postal_code"
        assert failure.rule_id == "customers.postal_code.india_pin"
    assert outcome.failures[india[0]][0].value == "12345"
    result = next(r for r in outcome.expectation_results if r["column"] == "postal_code")
    assert result["element_count"] == len(india)  # the row_condition restricted the domain


def test_duplicate_gstin_is_reported_as_warning_without_quarantine() -> None:
    frame = make_customer_frame(40)
    india = frame.index[frame["country"] == "IN"]
    frame.loc[india[4], "gstin"] = frame.loc[india[1], "gstin"]

    outcome = validate_frame("customers", frame)

    assert outcome.invalid.empty
    assert outcome.success
    assert len(outcome.valid) == 40
    assert sorted(outcome.warnings) == sorted([india[1], india[4]])
    for row in (india[1], india[4]):
        (failure,) = outcome.failures[row]
        assert failure.expectation == "expect_column_values_to_be_unique"
        assert failure.column == "gstin"
        assert failure.severity == "warning"
        assert failure.value == frame.loc[india[1], "gstin"]
    gstin_unique = next(r for r in outcome.expectation_results if r["rule_id"] == "customers.gstin.unique")
    assert gstin_unique["success"] is False
    assert gstin_unique["severity"] == "warning"
    assert gstin_unique["unexpected_count"] == 2
    assert outcome.statistics["warning_rows"] == 2


def test_several_rules_on_one_row_are_all_reported() -> None:
    def break_row_five(frame: pd.DataFrame) -> None:
        _set("email", {5: "nope"})(frame)
        _set("country", {5: "ZZ"})(frame)
        _set("mapping_errors", {5: "street: too long"})(frame)

    outcome = _validate(break_row_five)

    assert list(outcome.invalid.index) == [5]
    assert {f.column for f in outcome.failures[5]} == {"email", "country", "mapping_errors"}
    assert {f.value for f in outcome.failures[5]} == {"nope", "ZZ", "street: too long"}


def test_unexpected_column_is_a_table_level_failure_without_quarantine() -> None:
    frame = make_customer_frame(10)
    frame["legacy_kunnr"] = "X"

    outcome = validate_frame("customers", frame)

    assert outcome.invalid.empty
    assert len(outcome.valid) == 10
    assert not outcome.success
    (table_failure,) = outcome.failed_table_expectations
    assert table_failure["type"] == "expect_table_columns_to_match_set"
    assert table_failure["row_level"] is False


def test_frames_from_the_sap_mapping_satisfy_the_suite_contract() -> None:
    from data_mappings.customers import flatten_business_partners, map_customers
    from tests.factories import partner

    records = [partner(i) for i in range(1, 21)]
    records.append(partner(99, LastChangeDate="2024-01-01"))  # unparsable -> mapping_errors
    frame = map_customers(flatten_business_partners(records))

    outcome = validate_frame("customers", frame)

    assert outcome.failed_table_expectations == []  # same columns as the mapping emits
    assert list(outcome.invalid.index) == [20]
    assert ("expect_column_values_to_be_null", "mapping_errors") in _failed(outcome, 20)
    assert len(outcome.valid) == 20
