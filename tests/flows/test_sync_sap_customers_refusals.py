"""Drills of issue 3 and 6: one oversized or unstorable field never holds the SAP batch hostage, runs refusing
the same partners share one DATA_VALIDATION_FAILED row, and a partner that later loads closes its quarantine entry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.ledger.errors import error_events
from sandbox.core import as_transport
from sandbox.sap import SapSandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")

PARTNERS = 400


class Tampered(httpx.BaseTransport):
    """SAP as the sandbox serves it, except that `edit` changes one clean partner's record on the way."""

    def __init__(self, sandbox: SapSandbox, edit: Callable[[dict[str, Any]], None]) -> None:
        self.inner = as_transport(sandbox)
        self.sandbox = sandbox
        self.edit = edit
        self.victim: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "A_BusinessPartner" not in request.url.path or "json" not in response.headers.get("content-type", ""):
            return response
        payload = json.loads(response.read())
        for record in (payload.get("d") or {}).get("results") or []:
            key = record.get("BusinessPartner")
            if self.victim is None and key not in self.sandbox.dirty_ids:
                self.victim = key
            if key == self.victim:
                self.edit(record)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
        return httpx.Response(response.status_code, headers=headers, content=json.dumps(payload).encode(), request=request)


@pytest.fixture
def sandbox(db: str) -> SapSandbox:
    return SapSandbox(partners=PARTNERS, seed=11, max_page_size=200)


def run(transport: httpx.BaseTransport, **params: Any) -> dict[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    with use_transport("sap", transport):
        return sync_sap_customers(**params)


def loaded_ids() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(Customer.customer_id)).scalars())


def quarantine() -> dict[str, QuarantinedRecord]:
    with Session(get_engine()) as session:
        return {r.record_key: r for r in session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.status == "quarantined"))}


def validation_errors() -> list[IntegrationErrorRow]:
    with Session(get_engine()) as session:
        return list(session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_type == "DATA_VALIDATION_FAILED")))


def long_first_name(record: dict[str, Any]) -> None:
    record["FirstName"] = "A" * 10_000


@pytest.fixture
def oversized(sandbox: SapSandbox) -> Iterator[Tampered]:
    yield Tampered(sandbox, long_first_name)


def test_a_10000_character_first_name_is_quarantined_by_key_and_the_rest_of_the_read_loads(oversized: Tampered) -> None:
    summary = run(oversized)
    assert oversized.victim is not None
    assert summary["extracted"] == PARTNERS and summary["valid"] + summary["quarantined"] == PARTNERS
    assert summary["upserted"] == summary["valid"] == len(loaded_ids())
    entry = quarantine()[oversized.victim]  # named by its BusinessPartner, with the rule it broke
    assert {"column": "first_name", "expectation": "expect_column_value_lengths_to_be_between"}.items() <= entry.failed_expectations[0].items()
    assert entry.raw_record["FirstName"] == "A" * 10_000
    assert oversized.victim not in loaded_ids()
    assert not [e for e in validation_errors() if e.error_code != "EXPECTATIONS_FAILED"]  # no SYNC_FAILED

    again = run(oversized, full_refresh=True)  # the rerun does not fail either
    assert again["upserted"] == 0 and again["quarantined"] == summary["quarantined"]


def test_a_value_only_the_database_refuses_splits_the_batch_to_quarantine_that_partner(sandbox: SapSandbox, db: str) -> None:
    if not db.startswith("postgresql"):
        pytest.skip("SQLite stores a NUL character: the PostgreSQL path")

    def nul_in_street(record: dict[str, Any]) -> None:
        record["to_BusinessPartnerAddress"]["results"][0]["StreetName"] = "MG\x00Road"

    transport = Tampered(sandbox, nul_in_street)
    summary = run(transport)
    assert transport.victim is not None
    assert summary["refused"] == 1
    assert summary["valid"] + summary["quarantined"] == PARTNERS
    assert summary["upserted"] == summary["valid"] == len(loaded_ids())
    entry = quarantine()[transport.victim]
    assert entry.failed_expectations[0]["expectation"] == "database_refused"
    assert entry.raw_record["BusinessPartner"] == transport.victim  # the SAP record: a replay maps it again
    [error] = validation_errors()
    assert error.response_data is not None and error.response_data["failures_by_expectation"]["database_refused(street)"] == 1


def test_runs_refusing_the_same_partners_update_one_open_validation_error(sandbox: SapSandbox) -> None:
    first = run(as_transport(sandbox))
    for _ in range(2):
        run(as_transport(sandbox), full_refresh=True)
    [error] = validation_errors()
    assert error.status == "pending" and error.response_data is not None
    assert error.response_data["runs"] == 3 and error.response_data["rows_quarantined"] == first["quarantined"]
    assert [e.action for e in error_events(error.id)].count("recurred") == 2
    assert {r.error_id for r in quarantine().values()} == {error.id}
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(QuarantinedRecord)).scalar_one() == first["quarantined"]


def test_a_quarantined_partner_that_later_loads_cleanly_closes_its_entry(sandbox: SapSandbox, oversized: Tampered) -> None:
    run(oversized)
    victim = oversized.victim
    assert victim is not None and victim in quarantine()

    summary = run(as_transport(sandbox), full_refresh=True)  # SAP fixed the name
    assert victim in loaded_ids() and victim not in quarantine()
    with Session(get_engine()) as session:
        closed = session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.record_key == victim)).one()
    assert closed.status == "replayed" and summary["flow_run_id"] in (closed.resolution_note or "")
    [error] = validation_errors()  # the sandbox's dirty partners are still refused: the error stays open
    assert error.status == "pending"
    assert "quarantine_replayed" in [e.action for e in error_events(error.id)]
