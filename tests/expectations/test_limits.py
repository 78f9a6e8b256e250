"""Column limits of the ERP tables are validation rules generated from the models (expectations/limits.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Integer, Numeric, String, Table
from sqlalchemy.orm import Session

from data_mappings.columns import (
    CUSTOMER_COLUMNS,
    LAB_RESULT_COLUMNS,
    PLANT_READING_COLUMNS,
    PRODUCTION_BATCH_COLUMNS,
)
from data_mappings.documents import DOCUMENT_COLUMNS
from data_mappings.schedules import FRAME_COLUMNS
from expectations import customers, documents, lab, plant, schedules
from expectations.limits import ColumnLimit, column_limits, covered, regex_max_length
from hub.core.models import Customer, DocumentOutbox, LabResult, PlantReading, ProductionBatch, Schedule
from tests.expectations.conftest import make_customer_frame

# Every suite, the ERP table its rows are written to, and the frame columns it validates.
SUITES: list[tuple[Callable[[], Any], type[Any], tuple[str, ...]]] = [
    (customers.build_suite, Customer, tuple(CUSTOMER_COLUMNS)),
    (lab.build_suite, LabResult, tuple(LAB_RESULT_COLUMNS)),
    (plant.readings_suite, PlantReading, tuple(PLANT_READING_COLUMNS)),
    (plant.batches_suite, ProductionBatch, tuple(PRODUCTION_BATCH_COLUMNS)),
    (schedules.build_suite, Schedule, tuple(FRAME_COLUMNS)),
    (documents.build_suite, DocumentOutbox, tuple(DOCUMENT_COLUMNS)),
]
# Columns of the tables load_batch writes that the hub stamps after validation (never source data).
STAMPED_BY_HUB = {
    "customers": {"source_run_id", "synced_at", "erp_ref"},  # erp_ref: written by the customer push, never by the SAP sync
    "lab_results": {"export_sha256", "export_file", "source_run_id", "synced_at"},
    "plant_readings": {"id", "loaded_at"},
    "production_batches": {"id", "source_run_id", "loaded_at"},
}


def table_of(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def unconditional(suite: Any, column: str) -> list[Any]:
    return [e for e in suite.expectations if getattr(e, "column", None) == column and covered_by_rule(e)]


def covered_by_rule(rule: Any) -> bool:
    return str(getattr(rule.severity, "value", rule.severity)).lower() == "critical" and not rule.row_condition and rule.mostly in (None, 1, 1.0)


@pytest.mark.parametrize(("build", "model", "columns"), SUITES, ids=[m.__tablename__ for _, m, _ in SUITES])
def test_every_column_limit_of_the_erp_table_is_a_rule_of_its_suite(build: Callable[[], Any], model: type[Any], columns: tuple[str, ...]) -> None:
    suite = build()
    table = table_of(model)
    for column in table.columns:
        if column.name not in columns:
            continue
        rules = unconditional(suite, column.name)
        if isinstance(column.type, String) and column.type.length:
            limit = ColumnLimit(column.name, "max_length", "", max_length=column.type.length)
            assert covered(limit, rules), f"{table.name}.{column.name} VARCHAR({column.type.length}) has no length rule"
        if not column.nullable and table.autoincrement_column is not column and not (table.name == "schedules" and column.name == "status"):
            assert covered(ColumnLimit(column.name, "not_null", ""), rules), f"{table.name}.{column.name} NOT NULL has no rule"
        if isinstance(column.type, Integer) and table.autoincrement_column is not column:
            assert any(type(r).__name__ in ("ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeInSet") for r in rules), f"{table.name}.{column.name} range"


@pytest.mark.parametrize("table_name", sorted(STAMPED_BY_HUB))
def test_every_string_column_of_a_loaded_table_is_validated_or_stamped_by_the_hub(table_name: str) -> None:
    """A String column the mapping fills is in the suite's frame (so it gets its rule above): adding one to
    the model without the mapping and the suite knowing it fails here."""
    build, model, columns = next(s for s in SUITES if s[1].__tablename__ == table_name)
    outside = {c.name for c in table_of(model).columns if c.name not in columns}
    assert outside == STAMPED_BY_HUB[table_name]


def test_a_model_change_changes_the_rule() -> None:
    from sqlalchemy import Column, MetaData

    wider = Table("customers", MetaData(), Column("first_name", String(80)), Column("credit", Numeric(6, 2), nullable=False), Column("tries", Integer))
    limits = {(limit.column, limit.kind): limit for limit in column_limits(wider, ["first_name", "credit", "tries"])}
    assert limits[("first_name", "max_length")].max_length == 80
    assert limits[("credit", "range")].max_value == pytest.approx(9999.995) and limits[("credit", "range")].strict
    assert ("credit", "not_null") in limits
    assert (limits[("tries", "range")].min_value, limits[("tries", "range")].max_value) == (-(2**31), 2**31 - 1)


def test_a_rule_is_not_repeated_where_the_suite_already_has_one_as_strict() -> None:
    suite = customers.build_suite()
    generated = {e.meta["rule_id"] for e in suite.expectations if "generated_from" in (e.meta or {})}
    # customer_id (1-10 digits), phone (E.164), gstin (15 characters), country (ISO codes), name (81): hand rules suffice.
    for column in ("customer_id", "phone", "mobile", "gstin", "country", "language", "name", "category"):
        assert f"customers.{column}.db_max_length" not in generated
    # The postal code rule applies to India only, and the e-mail pattern has no upper bound: both get one.
    assert {"customers.postal_code.db_max_length", "customers.email.db_max_length", "customers.first_name.db_max_length"} <= generated


@pytest.mark.parametrize(
    ("pattern", "longest"),
    [(r"^[0-9]{1,10}\Z", 10), (r"\A[A-Z]{2}\Z", 2), (r"^ab$", 3), (r"\S", None), (r"^a+\Z", None), (r"^a\Z|^bbb\Z", None), (r"(?m)^a\Z", None)],
)
def test_regex_length_bound(pattern: str, longest: int | None) -> None:
    assert regex_max_length(pattern) == longest


def test_a_10000_character_value_in_any_text_column_of_customers_is_quarantined_by_key_and_the_rest_loads(db: str) -> None:
    from sqlalchemy import select

    from expectations.runner import validate_frame
    from hub.core.db import get_engine
    from hub.core.models import QuarantinedRecord
    from hub.ledger.loading import BatchLoad, QuarantineRow, count_rows, load_batch

    text_columns = [c.name for c in table_of(Customer).columns if isinstance(c.type, String) and c.name in CUSTOMER_COLUMNS]
    frame = make_customer_frame(len(text_columns) + 50)
    for row, column in enumerate(text_columns):  # row i carries the oversized value in text column i
        frame.loc[row, column] = "A" * 10_000
    outcome = validate_frame("customers", frame)
    assert list(outcome.invalid.index) == list(range(len(text_columns)))
    for row, column in enumerate(text_columns):
        assert column in {f.column for f in outcome.failures[row]}, column
    quarantine = [
        QuarantineRow(str(frame.at[label, "customer_id"]), {"row": int(label)}, None, [{"column": f.column} for f in outcome.failures[label]])
        for label in outcome.invalid.index
    ]
    with get_engine().begin() as conn:
        result = load_batch(conn, BatchLoad(integration="sap", dataset="customers", table=table_of(Customer), key=["customer_id"],
                                            rows=outcome.valid.drop(columns=["mapping_errors"]), quarantine=quarantine))
        assert count_rows(conn, table_of(Customer)) == 50
    assert (result.upserted, result.refused) == (50, 0)
    with Session(get_engine()) as session:
        keys = set(session.scalars(select(QuarantinedRecord.record_key)))
    assert len(keys) == len(text_columns)  # customer_id itself oversized is still named by its (long) key
