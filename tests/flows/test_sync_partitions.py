"""A full SAP customer sync split into key-range partitions run in worker processes (tasks/partitions.py), against the
SAP simulator over real HTTP (worker processes cannot share an in-process transport)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.core.settings import reset_settings_cache
from hub.ledger.loading import read_cursor
from sandbox.core import running_server
from sandbox.sap import SapSandbox

PARTNERS = 3000

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def sap_http(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SapSandbox]:
    sandbox = SapSandbox(partners=PARTNERS, seed=7, max_page_size=500)
    with running_server(sandbox) as base_url:
        monkeypatch.setenv("SAP_BASE_URL", base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        reset_settings_cache()
        yield sandbox
    monkeypatch.undo()
    reset_settings_cache()


def run(**params: Any) -> dict[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    return sync_sap_customers(**params)


def table_counts() -> tuple[int, int]:
    with get_engine().connect() as conn:
        return (conn.execute(select(func.count()).select_from(Customer)).scalar_one(),
                conn.execute(select(func.count()).select_from(QuarantinedRecord)).scalar_one())


def cursor() -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        return read_cursor(conn, "sap", "customers")


def test_partitioned_full_sync_loads_what_one_process_loads(sap_http: SapSandbox) -> None:
    summary = run(page_size=250, partitions=2)
    assert summary["partitions"] == 2
    assert summary["extracted"] == PARTNERS and summary["distinct_read"] == PARTNERS and summary["source_count"] == PARTNERS
    assert summary["valid"] + summary["quarantined"] == PARTNERS and summary["quarantined"] > 0
    assert table_counts() == (summary["valid"], summary["quarantined"])
    partitioned_watermark = cursor()
    assert partitioned_watermark and summary["watermark"] == partitioned_watermark["last_change_date"]

    # One Data Docs report for the run, with the batches validated in both worker processes.
    report = Path(summary["report_path"])
    pages = list(report.parent.rglob("validations/**/*.html"))
    assert len(pages) >= summary["batches"] >= 2, (len(pages), summary["batches"])

    single = run(page_size=250, full_refresh=True)
    assert (single["valid"], single["quarantined"], single["unchanged"]) == (summary["valid"], summary["quarantined"], summary["valid"])
    assert cursor() == partitioned_watermark


def test_a_failed_partition_is_its_own_unit_and_the_watermark_waits_for_its_rerun(sap_http: SapSandbox) -> None:
    from hub.ledger.retry_units import rerun

    # Every request of the second key range (its filter has a lower bound) is refused; the first range loads.
    sap_http.faults.update({"expire_tokens": True, "only_where": "BusinessPartner ge '"})
    with pytest.raises(Exception, match="1 of 2 partitions failed"):
        run(page_size=250, partitions=2)
    assert cursor() is None, "no watermark while a partition is missing"
    loaded_first, _ = table_counts()
    assert 0 < loaded_first < PARTNERS
    with Session(get_engine()) as session:
        rows = list(session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.resolved_at.is_(None))))
    failed = [r for r in rows if (r.unit or {}).get("partition")]
    assert len(failed) == 1, [(r.id, r.error_type, r.unit) for r in rows]
    unit = failed[0].unit
    assert unit["partition"] == 2 and unit["partitions"] == 2
    assert "BusinessPartner ge '" in unit["position"]["url"] or "BusinessPartner%20ge" in unit["position"]["url"]
    assert unit["pending_cursor"]["last_change_date"]

    sap_http.faults.clear()
    outcome = rerun(failed[0].id, by="test", manual=True)
    assert outcome.status == "resolved", outcome
    loaded, quarantined = table_counts()
    assert loaded + quarantined == PARTNERS
    assert cursor() == unit["pending_cursor"], "the last partition's rerun writes the run's watermark"
