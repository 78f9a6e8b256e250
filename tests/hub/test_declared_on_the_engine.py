"""A dataset declared only in this module runs on the sync engine, and its failed units and quarantined rows
are rerun and replayed by the hub's own machinery, with no edit anywhere else (issue 14, item 7).

The declaration: SAP business partners read again as `sap.partners_copy` (its own watermark, unit kind and
error rows) through the customers mapping and suite into the customers table. The flow below is the whole
flow a new dataset needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect import flow
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, QuarantinedRecord
from hub.datasets import Dataset, Unit, registered
from hub.ledger.loading import read_cursor
from hub.systems.sap import CUSTOMERS
from sandbox.core import as_transport
from sandbox.sap import SapSandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")

KIND = "sap.partners_copy.batch"
COPY = dataclasses.replace(CUSTOMERS, dataset="partners_copy", flow_name="sync-partners-copy", unit_kind=KIND)
DECLARED = Dataset(
    name="sap.partners_copy",
    integration="sap",
    dataset="partners_copy",
    description="A second read of SAP business partners, declared only in a test module.",
    flow="tests/hub/test_declared_on_the_engine.py:sync_partners_copy",
    deployment=None,
    schedule="sap",
    table="customers",
    key=("customer_id",),
    cursor="LastChangeDate",
    cursor_datasets=("partners_copy",),
    error_datasets=("partners_copy",),
    units=(Unit(KIND, "resume the copy's read at the failed batch"),),
    replays=("partners_copy",),
    mapping="customers",
    suite="customers",
    simulator="sap",
    stream="tests.hub.test_declared_on_the_engine:COPY",
)


@flow(name="sync-partners-copy")
def sync_partners_copy(batch_pages: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    from tasks.engine import run_pull

    return run_pull(COPY, batch_pages=batch_pages, resume=resume)


@pytest.fixture
def sap(db: str) -> Iterator[SapSandbox]:
    sandbox = SapSandbox(partners=600, seed=11, max_page_size=100)
    with registered(DECLARED), use_transport("sap", as_transport(sandbox)):
        yield sandbox


def test_a_failed_unit_of_a_dataset_declared_in_a_test_is_rerun_from_where_it_failed(sap: SapSandbox) -> None:
    from hub.ledger.retry_units import registered_kinds, rerun, rerun_spec

    assert KIND in registered_kinds() and rerun_spec({"kind": KIND}) is not None
    transport = as_transport(sap)
    seen = {"n": 0}

    def outage_after_the_first_batch(request: httpx.Request) -> httpx.Response:
        seen["n"] += 1
        if seen["n"] > 3:  # the $count, then batch 1's two pages; batch 2 meets a dead SAP
            raise httpx.ConnectError("connection refused", request=request)
        return transport.handle_request(request)

    with use_transport("sap", httpx.MockTransport(outage_after_the_first_batch)), pytest.raises(Exception, match="SERVER_ERROR"):
        sync_partners_copy(batch_pages=2)
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.dataset == "partners_copy")).all()
    assert row.unit is not None and row.unit["kind"] == KIND and row.unit["batch"] == 2
    with get_engine().connect() as conn:
        assert read_cursor(conn, "sap", "partners_copy") is None  # the watermark never ran ahead

    outcome = rerun(row.id, by="test", manual=True)  # what `drymix errors retry <id>` does
    assert outcome.status == "resolved", outcome
    assert outcome.summary is not None and outcome.summary["mode"] == "resume"
    # The rerun read from batch 2 on: the 200 partners of batch 1 (two pages of 100) are not read again.
    assert outcome.summary["extracted"] == 600 - 200
    with get_engine().connect() as conn:
        assert read_cursor(conn, "sap", "partners_copy") is not None
        assert read_cursor(conn, "sap", "customers") is None  # the product's own dataset was not touched


def test_quarantined_rows_of_a_dataset_declared_in_a_test_replay_through_its_declaration(sap: SapSandbox) -> None:
    from hub.ledger.quarantine import replay, replay_spec

    summary = sync_partners_copy()
    assert summary["quarantined"] > 0 and summary["integration"] == "sap" and summary["dataset"] == "partners_copy"
    spec = replay_spec("sap", "partners_copy")
    assert spec is not None and spec.suite == "customers" and spec.key == ("customer_id",)
    with Session(get_engine()) as session:
        rows = list(session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.dataset == "partners_copy")))
    assert len(rows) == summary["quarantined"]
    result = replay(by="test", integration="sap", dataset="partners_copy")  # `drymix quarantine replay`
    # Nothing was fixed, so every row is refused again, by the same suite, and none is lost.
    assert result.selected == len(rows) and result.still_failing == len(rows) and result.loaded == 0
