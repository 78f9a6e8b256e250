"""Fault drills on the SAP customer sync (issue 12), each in seconds: SAP changing under a read, a
future-dated partner, an exact duplicate, a day-long Retry-After. The 100k-partner versions are
`bench/drills.py`."""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from connectors.core.paging import ODataV2Paginator
from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.ledger.loading import read_cursor
from sandbox.core import as_transport
from sandbox.sap import SapSandbox, wire_date

PARTNERS = 3000

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Tap(httpx.BaseTransport):
    """The sandbox in-process; `on_page(n, sandbox)` runs before the n-th page request is answered and
    `rewrite(n, body)` may change the n-th page's JSON (a server serving a record twice)."""

    def __init__(
        self,
        sandbox: SapSandbox,
        on_page: Callable[[int, SapSandbox], None] | None = None,
        rewrite: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.sandbox, self.inner = sandbox, as_transport(sandbox)
        self.on_page, self.rewrite = on_page, rewrite
        self.pages = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_page = "/$count" not in request.url.path and "A_BusinessPartner" in request.url.path
        if is_page:
            self.pages += 1
            if self.on_page is not None:
                self.on_page(self.pages, self.sandbox)
        response = self.inner.handle_request(request)
        if is_page and self.rewrite is not None and response.status_code == 200:
            body = self.rewrite(self.pages, json.loads(response.read()))
            return httpx.Response(200, headers={"content-type": "application/json"}, content=json.dumps(body).encode())
        return response


@pytest.fixture
def sap(db: str) -> Iterator[SapSandbox]:
    sandbox = SapSandbox(partners=PARTNERS, seed=7, max_page_size=500)
    yield sandbox


def run(sandbox: SapSandbox, transport: httpx.BaseTransport | None = None, **params: Any) -> dict[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    with use_transport("sap", transport or as_transport(sandbox)):
        return sync_sap_customers(**params)


def loaded_keys() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(Customer.customer_id)).scalars())


def quarantined_keys() -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(QuarantinedRecord.record_key).where(QuarantinedRecord.status == "quarantined")).scalars())


def cursor() -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        return read_cursor(conn, "sap", "customers")


def test_partners_changed_while_a_full_sync_reads_are_all_loaded_exactly_once(sap: SapSandbox) -> None:
    changed: list[str] = []
    tap = Tap(sap, on_page=lambda n, sb: changed.extend(sb.mutate(300, rng_seed=n)) if n in (2, 4) else None)
    summary = run(sap, tap)
    assert len(changed) == 600
    assert summary["source_count"] == PARTNERS == summary["distinct_read"] == summary["extracted"]
    loaded, quarantined = loaded_keys(), quarantined_keys()
    assert len(quarantined) == len(set(quarantined)) and not loaded & set(quarantined)
    assert loaded | set(quarantined) == set(sap.partner_ids())  # lost: 0, duplicated: 0
    assert date.fromisoformat(cursor()["last_change_date"]) <= datetime.now(UTC).date()  # type: ignore[index]
    assert gc.get_freeze_count() == 0  # the run froze its long-lived objects for its life only


def test_offset_paging_under_change_is_caught_as_a_shortfall_and_keeps_the_watermark(
    sap: SapSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader the hub had before (offsets over LastChangeDate order) skips partners that move; the
    run's own count check must catch it: what was read loads, the watermark stays, the error is rerunnable."""
    import flows.sync_sap_customers as module

    offsets = dataclasses.replace(
        module.CUSTOMERS.stream, order_by=("LastChangeDate asc", "BusinessPartner asc"), paginator=ODataV2Paginator()
    )
    monkeypatch.setattr(module, "CUSTOMERS", dataclasses.replace(module.CUSTOMERS, stream=offsets))
    tap = Tap(sap, on_page=lambda n, sb: sb.mutate(300, rng_seed=3) if n == 2 else None)
    with pytest.raises(Exception, match="READ_SHORTFALL"):
        run(sap, tap)
    assert cursor() is None
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_code == "READ_SHORTFALL")).all()
    assert row.error_type == "SYNC_FAILED" and row.next_retry_at is not None
    assert row.unit is not None and row.unit["batch"] == 1 and "$skip" not in row.unit["position"]["url"]
    assert f"counted {PARTNERS}" in row.error_message
    missed = set(sap.partner_ids()) - loaded_keys() - set(quarantined_keys())
    assert missed  # the old reader really lost partners

    # The queued rerun reads the whole window again with today's reader and loses nothing.
    monkeypatch.undo()
    from flows.sync_sap_customers import sync_sap_customers

    with use_transport("sap", as_transport(sap)):
        summary = sync_sap_customers(resume={**row.unit, "error_id": row.id})
    assert summary["distinct_read"] == summary["source_count"] == PARTNERS
    assert loaded_keys() | set(quarantined_keys()) == set(sap.partner_ids())
    assert cursor() is not None


def test_a_partner_dated_2100_is_quarantined_and_does_not_freeze_later_incremental_runs(sap: SapSandbox) -> None:
    future = sap.partner_ids()[10]
    sap.set_raw_field(future, "LastChangeDate", wire_date(date(2100, 1, 1)))
    summary = run(sap)
    assert future in quarantined_keys() and future not in loaded_keys()
    mark = date.fromisoformat(summary["watermark"])
    assert mark <= datetime.now(UTC).date() and cursor() == {"last_change_date": summary["watermark"]}

    changed = set(sap.mutate(5, rng_seed=21))
    second = run(sap)
    assert second["mode"] == "incremental"
    assert changed <= loaded_keys() | set(quarantined_keys())
    assert second["extracted"] >= 5


def test_the_watermark_never_stands_after_the_day_the_read_started() -> None:
    from hub.systems.sap import next_cursor

    started = datetime(2026, 12, 2, 23, 59, tzinfo=UTC)
    assert next_cursor(date(2026, 12, 3), None, started) == {"last_change_date": "2026-12-02"}
    assert next_cursor(date(2026, 11, 30), None, started) == {"last_change_date": "2026-11-30"}
    assert next_cursor(None, "2100-01-01", started) == {"last_change_date": "2026-12-02"}
    assert next_cursor(None, None, started) == {}


def test_a_record_served_twice_to_the_letter_loads_once_and_is_not_quarantined(sap: SapSandbox) -> None:
    served: list[str] = []

    def repeat_a_clean_one(n: int, body: dict[str, Any]) -> dict[str, Any]:
        if n == 1:
            results = body["d"]["results"]
            at, first_clean = next((i, r) for i, r in enumerate(results) if r["BusinessPartner"] not in sap.dirty_ids)
            served.append(first_clean["BusinessPartner"])
            results.insert(at + 1, dict(first_clean))
        return body

    summary = run(sap, Tap(sap, rewrite=repeat_a_clean_one))
    [twice] = served
    assert summary["duplicates"] == 1 and summary["extracted"] == PARTNERS + 1
    assert summary["distinct_read"] == PARTNERS == summary["mapped"]
    assert twice in loaded_keys() and twice not in quarantined_keys()


def test_a_retry_after_of_a_day_becomes_a_queued_unit_not_a_sleeping_worker(sap: SapSandbox) -> None:
    sap.faults.update({"rate_limit_next_n": 1000, "retry_after_s": 86_400})
    started = time.monotonic()
    with pytest.raises(Exception, match="RATE_LIMIT_EXCEEDED"):
        run(sap)
    assert time.monotonic() - started < 60
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_type == "RATE_LIMIT_EXCEEDED")).all()
    assert row.unit is not None and row.unit["kind"] == "sap.customers.batch"
    assert row.next_retry_at is not None
    due = row.next_retry_at if row.next_retry_at.tzinfo else row.next_retry_at.replace(tzinfo=UTC)
    assert due >= datetime.now(UTC) + timedelta(hours=23)
    assert "deferred" in row.error_message
    assert cursor() is None


@pytest.mark.postgres
def test_a_database_down_before_the_watermark_is_read_is_still_on_the_books(
    sap: SapSandbox, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing was read, so there is no unit to rerun; but the failure is spooled and reaches the ledger."""
    from hub.ledger.errors import ErrorSpooled
    from hub.ledger.spool import drain_spool, waiting
    from tests.db_outage import database_outage

    if not db.startswith("postgresql"):
        pytest.skip("SQLite's outage is a held write lock, which does not stop this read: the PostgreSQL path")
    with database_outage(db, monkeypatch) as outage:
        outage.down("refuse")
        with pytest.raises(ErrorSpooled) as spooled:
            run(sap)
        assert spooled.value.code == "DATABASE_UNAVAILABLE" and waiting() == 1
        assert gc.get_freeze_count() == 0  # a failed run unfreezes what it froze as well
        outage.up()
        drain_spool()
        with Session(get_engine()) as session:
            [row] = session.scalars(select(IntegrationErrorRow)).all()
        assert (row.integration, row.dataset, row.error_code, row.operation) == ("sap", "customers", "DATABASE_UNAVAILABLE", "read_watermark")
        assert waiting() == 0
