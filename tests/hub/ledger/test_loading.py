from __future__ import annotations

import pandas as pd
import psycopg
import pytest
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.orm import Session

from data_mappings.customers import flatten_business_partners, map_customers
from hub.core.db import get_engine
from hub.core.models import Customer, QuarantinedRecord, SyncState
from hub.ledger.loading import BatchLoad, QuarantineRow, count_rows, load_batch, read_cursor, record_digest
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



# --- rows the database refuses ------------------------------------------------------------------------


def needs_postgres(db: str) -> None:
    if not db.startswith("postgresql"):
        pytest.skip("SQLite does not enforce VARCHAR lengths or refuse NUL characters: the PostgreSQL path")


def quarantined(dataset: str = "customers") -> dict[str, QuarantinedRecord]:
    with Session(get_engine()) as session:
        rows = session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.dataset == dataset)).all()
        return {r.record_key: r for r in rows}


@pytest.mark.postgres
def test_values_the_database_refuses_quarantine_only_their_rows_named_by_key(db: str) -> None:
    needs_postgres(db)
    records = [partner(i) for i in range(1, 41)]
    rows = frame(*records)
    rows.loc[6, "first_name"] = "A" * 10_000  # 1000000007
    rows.loc[31, "city"] = "Pune " * 2_000  # 1000000032
    with get_engine().begin() as conn:
        result = load_batch(conn, batch(rows, raw_of=lambda label: records[label], cursor={"last_change_date": "2026-01-01"}, flow_run_id="run-1"))
        assert count_rows(conn, Customer.__table__) == 38
        assert read_cursor(conn, "sap", "customers") == {"last_change_date": "2026-01-01"}
    assert (result.upserted, result.refused, result.quarantined, result.unchanged) == (38, 2, 2, 0)
    stored = quarantined()
    assert set(stored) == {"1000000007", "1000000032"}
    first = stored["1000000007"]
    [failure] = first.failed_expectations
    assert (failure["expectation"], failure["column"], failure["kwargs"]["sqlstate"]) == ("database_refused", "first_name", "22001")
    assert "too long" in failure["value"]
    assert first.raw_record["BusinessPartner"] == "1000000007"  # the SAP record, so that a replay can map it again
    assert first.mapped_record["first_name"] == "A" * 10_000
    assert stored["1000000032"].failed_expectations[0]["column"] == "city"


@pytest.mark.postgres
def test_a_nul_character_is_refused_and_quarantined_as_storable_json(db: str) -> None:
    needs_postgres(db)
    rows = frame(partner(1), partner(2))
    rows.loc[1, "street"] = "MG\x00Road"
    with get_engine().begin() as conn:
        result = load_batch(conn, batch(rows))
    assert (result.upserted, result.refused) == (1, 1)
    assert quarantined()["1000000002"].mapped_record["street"] == "MG\ufffdRoad"


def test_a_missing_required_value_is_refused_on_both_databases_and_the_rest_loads(db: str) -> None:
    rows = frame(*(partner(i) for i in range(1, 6)))
    rows.loc[2, "name"] = None
    with get_engine().begin() as conn:
        result = load_batch(conn, batch(rows))
        assert count_rows(conn, Customer.__table__) == 4
    assert (result.upserted, result.refused) == (4, 1)
    [failure] = quarantined()["1000000003"].failed_expectations
    assert (failure["expectation"], failure["column"]) == ("database_refused", "name")


def test_an_error_that_is_not_a_refusal_of_data_still_fails_the_batch(db: str) -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from hub.ledger.loading import _refusal

    assert _refusal(OperationalError("SELECT 1", {}, Exception("server closed the connection"))) is None
    rows = frame(partner(1)).assign(no_such_column="x")
    table = Table("customers", MetaData(), *[Column(c.name, c.type) for c in Customer.__table__.columns], Column("no_such_column", String(8)))
    with pytest.raises((OperationalError, ProgrammingError, psycopg.Error)), get_engine().begin() as conn:
        load_batch(conn, BatchLoad(integration="sap", dataset="customers", table=table, key=["customer_id"], rows=rows))
    with get_engine().connect() as conn:
        assert count_rows(conn, Customer.__table__) == 0


def test_a_record_that_loads_cleanly_closes_its_quarantine_entry_and_its_error(db: str) -> None:
    from hub.ledger.errors import error_events, get_error, link_quarantine, record_validation_failure

    bad = [QuarantineRow("1000000001", {"BusinessPartner": "1000000001"}, None, [{"expectation": "x", "column": "email"}]),
           QuarantineRow("1000000002", {"BusinessPartner": "1000000002"}, None, [{"expectation": "x", "column": "email"}])]
    with get_engine().begin() as conn:
        load_batch(conn, batch(frame(), quarantine=bad, flow_run_id="run-1"))
    error_id = record_validation_failure(
        integration="sap", dataset="customers", flow_run_id="run-1", rows_checked=2, rows_quarantined=2,
        failures_by_expectation={"x(email)": 2}, sample=[], report_path=None,
    )
    assert link_quarantine(error_id, integration="sap", dataset="customers", flow_run_id="run-1") == 2

    with get_engine().begin() as conn:  # SAP fixed partner 1: it loads cleanly
        first = load_batch(conn, batch(frame(partner(1)), flow_run_id="run-2"))
    assert first.released == 1
    stored = quarantined()
    assert stored["1000000001"].status == "replayed" and "run-2" in (stored["1000000001"].resolution_note or "")
    assert stored["1000000002"].status == "quarantined"
    assert get_error(error_id).status == "pending"
    with get_engine().begin() as conn:  # loaded again unchanged: nothing left to close
        assert load_batch(conn, batch(frame(partner(1)), flow_run_id="run-3")).released == 0

    with get_engine().begin() as conn:
        assert load_batch(conn, batch(frame(partner(2)), flow_run_id="run-4")).released == 1
    error = get_error(error_id)
    assert error.status == "resolved" and "loaded" in (error.resolution_note or "")
    assert [e.action for e in error_events(error_id)][-3:] == ["quarantine_replayed", "quarantine_replayed", "resolved"]


def test_an_oversized_record_key_is_kept_with_a_digest(db: str) -> None:
    key = "K" * 500
    with get_engine().begin() as conn:
        load_batch(conn, batch(frame(), quarantine=[QuarantineRow(key, {"k": key}, None, [])]))
    [stored] = quarantined().values()
    assert len(stored.record_key) <= 128 and stored.record_key.startswith("K" * 80) and stored.raw_record == {"k": key}


def test_a_table_refusing_every_insert_fails_the_batch_instead_of_quarantining_it(db: str) -> None:
    from tests.error_support import refused_inserts

    with refused_inserts("customers", "customers is locked by a re-index"), pytest.raises(Exception, match="re-index"):
        with get_engine().begin() as conn:
            load_batch(conn, batch(frame(partner(1), partner(2))))
    with get_engine().connect() as conn:
        assert count_rows(conn, Customer.__table__) == 0 and count_rows(conn, QuarantinedRecord.__table__) == 0


def test_more_refused_rows_than_the_limit_fail_the_batch(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.ledger.loading

    monkeypatch.setattr(hub.ledger.loading, "MAX_REFUSED_ROWS", 3)
    rows = frame(*(partner(i) for i in range(1, 11)))
    rows.loc[0:4, "name"] = None
    with pytest.raises(Exception, match="(?i)null"), get_engine().begin() as conn:
        load_batch(conn, batch(rows))
    with get_engine().connect() as conn:
        assert count_rows(conn, Customer.__table__) == 0
