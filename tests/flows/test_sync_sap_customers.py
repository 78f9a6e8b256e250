"""The SAP customer sync end to end against the SAP sandbox (in-process transport and real HTTP)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.core.settings import reset_settings_cache
from hub.ledger.loading import read_cursor
from sandbox.core import as_transport, running_server
from sandbox.sap import SapSandbox

PARTNERS = 3000

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def sap(db: str) -> Iterator[SapSandbox]:
    sandbox = SapSandbox(partners=PARTNERS, seed=7, max_page_size=500)
    with use_transport("sap", as_transport(sandbox)):
        yield sandbox


def run(**params: Any) -> dict[str, Any]:
    from flows.sync_sap_customers import sync_sap_customers

    return sync_sap_customers(**params)


def counts() -> dict[str, int]:
    with get_engine().connect() as conn:
        return {
            "customers": conn.execute(select(func.count()).select_from(Customer)).scalar_one(),
            "quarantined": conn.execute(select(func.count()).select_from(QuarantinedRecord)).scalar_one(),
            "errors": conn.execute(select(func.count()).select_from(IntegrationErrorRow)).scalar_one(),
        }


def errors(category: str | None = None) -> list[IntegrationErrorRow]:
    query = select(IntegrationErrorRow).order_by(IntegrationErrorRow.id)
    if category:
        query = query.where(IntegrationErrorRow.error_type == category)
    with Session(get_engine()) as session:
        return list(session.scalars(query))


def cursor() -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        return read_cursor(conn, "sap", "customers")


def test_full_sync_loads_valid_partners_and_quarantines_dirty_ones(sap: SapSandbox) -> None:
    summary = run()
    assert summary["mode"] == "full"
    assert summary["extracted"] == PARTNERS
    assert summary["valid"] + summary["quarantined"] == PARTNERS
    assert summary["upserted"] == summary["valid"]
    assert summary["quarantined"] > 0
    c = counts()
    assert c["customers"] == summary["valid"]
    assert c["quarantined"] == summary["quarantined"]

    # The sandbox's dirty partners are refused, with the reason kept next to the raw record.
    with Session(get_engine()) as session:
        quarantined = {r.record_key: r for r in session.scalars(select(QuarantinedRecord))}
    invalid_email = [k for k, why in sap.dirty_ids.items() if "email" in why.lower() and k in quarantined]
    assert invalid_email, "partners with invalid e-mails must be quarantined"
    record = quarantined[invalid_email[0]]
    assert record.raw_record["BusinessPartner"] == invalid_email[0]
    assert any(f["column"] == "email" for f in record.failed_expectations)

    # One DATA_VALIDATION_FAILED row per run and dataset, with counts, a sample and the report.
    [validation] = errors("DATA_VALIDATION_FAILED")
    assert validation.response_data["rows_quarantined"] == summary["quarantined"]
    assert validation.response_data["sample"]
    assert summary["report_path"] and os.path.exists(summary["report_path"])
    assert cursor() == {"last_change_date": summary["watermark"]}


def test_incremental_run_reads_only_changed_partners(sap: SapSandbox) -> None:
    first = run()
    changed = sap.mutate(15)
    second = run()
    assert second["mode"] == "incremental"
    assert second["since"] == first["watermark"]
    # Date-granular cursor with a one-day overlap: what changed today, not the whole data set.
    assert second["extracted"] < 200
    with get_engine().connect() as conn:
        loaded = set(conn.execute(select(Customer.customer_id).where(Customer.customer_id.in_(changed))).scalars())
    clean_changed = [c for c in changed if c not in sap.dirty_ids]
    assert set(clean_changed) <= loaded
    assert second["upserted"] <= len(changed)
    assert second["upserted"] >= 1


def test_running_the_same_sync_twice_changes_nothing(sap: SapSandbox) -> None:
    first = run(full_refresh=True)
    before = counts()
    second = run(full_refresh=True)
    assert second["upserted"] == 0
    assert second["unchanged"] == first["valid"]
    after = counts()
    assert after["customers"] == before["customers"]
    assert after["quarantined"] == before["quarantined"]  # seen again, refreshed, not duplicated


@pytest.mark.parametrize(
    "faults",
    [
        {"rate_limit_next_n": 2, "retry_after_s": 0},
        {"rate_limit_next_n": 1, "retry_after_s": 1},
        {"error_5xx_next_n": 2, "error_5xx_status": 500},
        {"error_5xx_next_n": 1, "error_5xx_status": 503},
        {"timeout_next_n": 1, "timeout_sleep_s": 0.0},
        {"malformed_json_next_n": 2},
        {"drop_connection_next_n": 1},
    ],
    ids=["429-retry-after-0", "429-retry-after-1", "500", "503", "timeout", "malformed-json", "dropped-connection"],
)
def test_transient_faults_are_retried_to_success(sap: SapSandbox, faults: dict[str, Any]) -> None:
    sap.faults.update(faults)
    summary = run()
    assert summary["extracted"] == PARTNERS
    assert summary["retries"] >= 1
    assert not errors("SERVER_ERROR") and not errors("RATE_LIMIT_EXCEEDED") and not errors("TIMEOUT")


def test_expired_credentials_fail_fast_with_an_error_row_and_no_watermark(sap: SapSandbox) -> None:
    sap.faults.update({"expire_tokens": True})
    with pytest.raises(Exception, match="AUTHENTICATION_FAILED"):
        run()
    [row] = errors("AUTHENTICATION_FAILED")
    assert row.retry_count == 0  # never retried
    assert row.severity == "critical"
    assert row.http_status == 401
    assert "credentials" in (row.remedy or "")
    assert "sandbox-secret" not in str(row.request_data) and "Basic " not in str(row.request_data)
    assert cursor() is None
    assert counts()["customers"] == 0


def test_wrong_password_is_authentication_failed(sap: SapSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAP_PASSWORD", "not-the-password")
    reset_settings_cache()
    try:
        with pytest.raises(Exception, match="AUTHENTICATION_FAILED"):
            run()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert [r.error_type for r in errors()] == ["AUTHENTICATION_FAILED"]


def test_persistent_server_errors_exhaust_retries_and_are_recorded(sap: SapSandbox) -> None:
    sap.faults.update({"error_5xx_every_n": 1, "error_5xx_status": 500})
    with pytest.raises(Exception, match="SERVER_ERROR"):
        run()
    [row] = errors("SERVER_ERROR")
    assert row.transient is True
    assert row.http_status == 500
    assert row.unit and row.unit["position"]["url"].startswith("A_BusinessPartner")
    assert cursor() is None


def test_invalid_request_is_not_retried(sap: SapSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.sap.connector import SapConnector

    # A filter literal SAP refuses (the contract's documented 400): classified, recorded, not retried.
    monkeypatch.setattr(SapConnector, "incremental_filter", lambda self, c: "LastChangeDate eq '/Date(1700000000000)/'")
    with pytest.raises(Exception, match="INVALID_REQUEST"):
        run()
    [row] = errors("INVALID_REQUEST")
    assert row.http_status == 400
    assert "Invalid parametertype" in row.error_message
    assert row.retry_count == 0


def test_crash_between_batches_then_rerun_loses_and_duplicates_nothing(sap: SapSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.load as load_module

    real = load_module.load_batch
    calls = {"n": 0}

    def crash_on_third(conn: Any, batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed between batches")
        return real(conn, batch)

    monkeypatch.setattr(load_module, "load_batch", crash_on_third)
    with pytest.raises(Exception, match="worker killed"):
        run(batch_pages=2)  # 500-row pages, 1000-row batches: three batches
    partial = counts()["customers"]
    assert 0 < partial < PARTNERS
    assert cursor() is None  # the watermark never ran ahead of the data
    [row] = errors("SYNC_FAILED")
    assert row.unit and row.unit["batch"] == 3

    monkeypatch.setattr(load_module, "load_batch", real)
    summary = run(batch_pages=2)
    assert summary["mode"] == "full"
    assert counts()["customers"] == summary["valid"]
    assert summary["upserted"] == summary["valid"] - partial
    with get_engine().connect() as conn:
        resolved = conn.execute(select(IntegrationErrorRow.status).where(IntegrationErrorRow.error_type == "SYNC_FAILED")).scalar_one()
    assert resolved == "resolved"


def test_sap_outage_mid_run_is_recorded_with_the_failed_unit(sap: SapSandbox) -> None:
    transport = as_transport(sap)
    seen = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        seen["n"] += 1
        if seen["n"] > 4:
            raise httpx.ConnectError("connection refused", request=request)
        return transport.handle_request(request)

    with use_transport("sap", httpx.MockTransport(flaky)):
        with pytest.raises(Exception, match="SERVER_ERROR"):
            run(batch_pages=2)
    [row] = errors("SERVER_ERROR")
    assert row.error_code == "CONNECT_ERROR"
    # Request 1 is the $count; 500-row pages, 2 pages a batch: requests 2-3 are batch 1, request 4
    # starts batch 2 and the outage hits its second page, so the unit to rerun is batch 2 from its
    # first page: the partners after the 1,000th key.
    assert row.unit and row.unit["batch"] == 2
    assert "BusinessPartner%20gt%20'1000001000'" in row.unit["position"]["url"]
    assert cursor() is None


def test_unreachable_sap_is_recorded(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SAP_BASE_URL", f"http://127.0.0.1:{port}/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
    reset_settings_cache()
    try:
        with pytest.raises(Exception, match="cannot connect"):
            run()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    [row] = errors()
    assert row.error_type == "SERVER_ERROR" and row.error_code == "CONNECT_ERROR"


def test_empty_data_set_is_reported_not_silent(db: str) -> None:
    empty = SapSandbox(partners=0, seed=7)
    with use_transport("sap", as_transport(empty)):
        summary = run()
    assert summary["extracted"] == 0
    [row] = errors()
    assert row.error_code == "EMPTY_DATASET"
    assert counts()["customers"] == 0


def test_unknown_field_type_is_quarantined_with_the_reason(sap: SapSandbox) -> None:
    victim = next(k for k in sap.partner_ids() if k not in sap.dirty_ids)
    sap.set_raw_field(victim, "LastChangeDate", "2024-05-01T00:00:00")  # not the /Date(ms)/ wire format
    summary = run()
    with Session(get_engine()) as session:
        row = session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.record_key == victim)).one()
    assert any("mapping_errors" == f["column"] for f in row.failed_expectations)
    assert "LastChangeDate" in row.mapped_record["mapping_errors"]
    assert summary["quarantined"] >= 1


def test_full_sync_over_real_http(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = SapSandbox(partners=1200, seed=11, max_page_size=400)
    with running_server(sandbox) as base_url:
        monkeypatch.setenv("SAP_BASE_URL", base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        reset_settings_cache()
        try:
            sandbox.faults.update({"drop_connection_next_n": 1, "rate_limit_next_n": 1, "retry_after_s": 0})
            summary = run()
        finally:
            monkeypatch.undo()
            reset_settings_cache()
    assert summary["extracted"] == 1200
    assert summary["retries"] >= 2
    assert counts()["customers"] == summary["valid"]


def test_run_summary_is_published_as_a_prefect_table_artifact(sap: SapSandbox) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary = run()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sap-customers-sync-summary"]))
        )
    mine = [a for a in artifacts if str(a.flow_run_id) == summary["flow_run_id"]]
    assert mine, "the run must publish its summary"
    table = mine[0].data if isinstance(mine[0].data, list) else json.loads(mine[0].data)
    figures = {row["figure"]: row["value"] for row in table}
    assert figures["Extracted"] == str(PARTNERS)
    assert figures["Quarantined"] == str(summary["quarantined"])
    assert figures["Validation report (Data Docs)"] == summary["report_path"]
    assert "sandbox-secret" not in json.dumps(table)
