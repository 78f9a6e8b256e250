from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from data_mappings.customers import flatten_business_partners, map_customers
from hub.db import get_engine
from hub.loading import BatchLoad, QuarantineRow, count_rows, load_batch, read_cursor, record_digest
from hub.models import Customer, QuarantinedRecord, SyncState
from tests.factories import address, partner


def frame(*records: dict) -> pd.DataFrame:
    return map_customers(flatten_business_partners(list(records))).drop(columns=["mapping_errors"])


def batch(rows: pd.DataFrame, **kw) -> BatchLoad:
    return BatchLoad(integration="sap", dataset="customers", table=Customer.__table__, key=["customer_id"], rows=rows, **kw)


def test_upsert_is_idempotent_and_rewrites_only_changed_rows(db: str) -> None:
    rows = frame(*(partner(i) for i in range(1, 51)))
    with get_engine().begin() as conn:
        first = load_batch(conn, batch(rows))
    with get_engine().begin() as conn:
        second = load_batch(conn, batch(rows))
    assert (first.upserted, second.upserted, second.unchanged) == (50, 0, 50)

    changed = partner(7)
    address(changed)["CityName"] = "Nashik"
    with get_engine().begin() as conn:
        third = load_batch(conn, batch(frame(changed, partner(8))))
        assert count_rows(conn, Customer.__table__) == 50
        city = conn.execute(select(Customer.city).where(Customer.customer_id == "1000000007")).scalar_one()
    assert third.upserted == 1 and city == "Nashik"


def test_duplicate_keys_in_one_batch_keep_the_last_version(db: str) -> None:
    late = partner(1)
    address(late)["CityName"] = "Thane"
    with get_engine().begin() as conn:
        load_batch(conn, batch(frame(partner(1), late)))
        assert conn.execute(select(Customer.city)).scalar_one() == "Thane"


def test_cursor_rows_and_quarantine_commit_together_or_not_at_all(db: str) -> None:
    q = [QuarantineRow("1000000099", {"BusinessPartner": "1000000099"}, None, [{"expectation": "x"}])]
    with pytest.raises(RuntimeError), get_engine().begin() as conn:
        load_batch(conn, batch(frame(partner(1)), quarantine=q, cursor={"last_change_date": "2026-01-01"}))
        raise RuntimeError("crash after the load, before commit")
    with get_engine().connect() as conn:
        assert count_rows(conn, Customer.__table__) == 0
        assert count_rows(conn, QuarantinedRecord.__table__) == 0
        assert read_cursor(conn, "sap", "customers") is None

    with get_engine().begin() as conn:
        load_batch(conn, batch(frame(partner(1)), quarantine=q, cursor={"last_change_date": "2026-01-01"}))
    with get_engine().connect() as conn:
        assert read_cursor(conn, "sap", "customers") == {"last_change_date": "2026-01-01"}
        assert conn.execute(select(SyncState.rows_total)).scalar_one() == 1


def test_seeing_a_quarantined_record_again_refreshes_it_instead_of_duplicating(db: str) -> None:
    first = [QuarantineRow("1000000099", {"v": 1}, None, [{"expectation": "a"}])]
    again = [QuarantineRow("1000000099", {"v": 2}, None, [{"expectation": "b"}])]
    for rows in (first, again):
        with get_engine().begin() as conn:
            load_batch(conn, batch(frame(), quarantine=rows, flow_run_id="run"))
    with get_engine().connect() as conn:
        stored = conn.execute(select(QuarantinedRecord)).one()
    assert stored.raw_record == {"v": 2}
    assert stored.seen_count == 2
    assert stored.failed_expectations == [{"expectation": "b"}]


def test_record_without_key_gets_a_stable_digest() -> None:
    assert record_digest({"a": None}) == record_digest({"a": None})
    assert record_digest({"a": None}).startswith("digest:")
    assert record_digest({"a": 1}) != record_digest({"a": 2})
