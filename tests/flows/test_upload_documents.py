"""upload-documents: the outbox drained to the Graph sandbox, bad rows quarantined, failures recorded per
document, an interrupted upload resumed by the next run, and the whole path over real HTTP."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.core.client import use_transport
from connectors.microsoft365.connector import _TOKEN_CACHES
from hub.core.db import get_engine
from hub.core.models import DocumentOutbox, IntegrationErrorRow, QuarantinedRecord
from hub.core.settings import reset_settings_cache
from hub.systems.documents import enqueue_document, requeue
from sandbox.core import as_transport, running_server
from sandbox.microsoft365 import Microsoft365Sandbox, UploadInterrupt
from tests.error_support import FailingRequests, error_rows, make_due, refused_inserts, unit_of

pytestmark = pytest.mark.usefixtures("prefect_harness")
MB = 1024 * 1024


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _rows() -> dict[str, DocumentOutbox]:
    with get_engine().connect() as conn:
        return {r.document_key: r for r in conn.execute(select(DocumentOutbox)).all()}  # type: ignore[misc]


@pytest.fixture
def graph(db: str) -> Iterator[Microsoft365Sandbox]:
    sim = Microsoft365Sandbox(seed=3)
    _TOKEN_CACHES.clear()
    with use_transport("microsoft365", as_transport(sim)):
        yield sim
    _TOKEN_CACHES.clear()


def test_outbox_is_uploaded_small_and_20_mb_with_bad_rows_quarantined(graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    from flows.upload_documents import upload_documents

    big = _file(tmp_path, "TC-2026-0100.pdf", 20 * MB)
    enqueue_document("TC-2026-0100", "ERP/Test Certificates", "TC-2026-0100.pdf", source_path=big, metadata={"batch": "B-77"})
    enqueue_document("INV-2026-000001", "ERP/Invoices", "INV-2026-000001.pdf", content=b"%PDF-1.7 invoice", conflict_policy="fail")
    enqueue_document("INV-2026-000002", "ERP\\Invoices\\", "INV-2026-000002.pdf", content=b"%PDF-1.7 another")  # Windows path typed in the ERP
    enqueue_document("DC-BAD-1", "ERP/Delivery Challans", "DC:17?.pdf", content=b"%PDF")  # forbidden characters
    enqueue_document("DC-BAD-2", "ERP/Typo Folder", "DC-18.pdf", content=b"%PDF")  # unknown folder
    enqueue_document("DC-BAD-3", "ERP/Delivery Challans", "DC-19.pdf", source_path=tmp_path / "missing.pdf")
    enqueue_document("DC-BAD-4", "ERP/Delivery Challans", "empty.pdf", content=b"")

    summary = upload_documents(rows_per_page=3)
    assert (summary["claimed"], summary["uploaded"], summary["failed"], summary["quarantined"]) == (7, 3, 0, 4)
    assert summary["pages"] == 3

    rows = _rows()
    for key in ("TC-2026-0100", "INV-2026-000001", "INV-2026-000002"):
        assert rows[key].status == "uploaded" and rows[key].drive_item_id and rows[key].web_url.startswith("https://drymix.sharepoint.com/")
        assert rows[key].upload_url is None
    assert graph.items[rows["TC-2026-0100"].drive_item_id].content == big.read_bytes()
    assert rows["TC-2026-0100"].bytes_confirmed == 20 * MB
    assert {k for k, r in rows.items() if r.status == "quarantined"} == {"DC-BAD-1", "DC-BAD-2", "DC-BAD-3", "DC-BAD-4"}
    assert "file_name.characters" in rows["DC-BAD-1"].last_error and "folder.known" in rows["DC-BAD-2"].last_error
    with get_engine().connect() as conn:
        quarantined = set(conn.scalars(select(QuarantinedRecord.record_key)).all())
        errors = conn.execute(select(IntegrationErrorRow.error_type, IntegrationErrorRow.dataset)).all()
    assert quarantined == {"DC-BAD-1", "DC-BAD-2", "DC-BAD-3", "DC-BAD-4"}
    assert errors == [("DATA_VALIDATION_FAILED", "documents")]

    again = upload_documents()  # nothing is due: nothing uploaded twice
    assert (again["claimed"], again["uploaded"]) == (0, 0)
    assert graph.stats["simple_uploads"] == 2 and graph.stats["duplicate_ranges"] == 0

    # A person fixes the name and re-queues the document: the next run uploads it.
    assert requeue("DC-BAD-1", file_name="DC-17.pdf")
    fixed = upload_documents()
    assert (fixed["uploaded"], fixed["quarantined"]) == (1, 0)


def test_a_failed_file_is_recorded_on_its_own_and_the_others_are_uploaded(graph: Microsoft365Sandbox) -> None:
    from flows.upload_documents import upload_documents

    graph._commit_file(graph._ensure_folder("ERP/Invoices"), "INV-EXISTS.pdf", b"already there", "fail")
    enqueue_document("INV-EXISTS", "ERP/Invoices", "INV-EXISTS.pdf", content=b"new", conflict_policy="fail")
    enqueue_document("INV-OK", "ERP/Invoices", "INV-OK.pdf", content=b"fine")
    summary = upload_documents()
    assert (summary["uploaded"], summary["failed"]) == (1, 1)
    rows = _rows()
    assert rows["INV-OK"].status == "uploaded"
    failed = rows["INV-EXISTS"]
    assert (failed.status, failed.error_code, failed.attempts, failed.next_attempt_at) == ("failed", "nameAlreadyExists", 1, None)
    with get_engine().connect() as conn:
        (error,) = conn.execute(select(IntegrationErrorRow)).all()
    assert error.error_type == "INVALID_REQUEST" and error.unit["document_key"] == "INV-EXISTS"
    # Not transient: later runs leave it alone until a person decides (here: replace).
    assert upload_documents()["claimed"] == 0
    assert requeue("INV-EXISTS", conflict_policy="replace")
    assert upload_documents()["uploaded"] == 1
    with get_engine().connect() as conn:
        assert conn.scalar(select(IntegrationErrorRow.status)) == "resolved"


def test_upload_interrupted_in_one_run_resumes_in_the_next_without_resending(graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    from flows.upload_documents import upload_documents

    size = 12 * MB + 4321
    path = _file(tmp_path, "DC-2026-BULK.pdf", size)
    enqueue_document("DC-2026-BULK", "ERP/Delivery Challans", "DC-2026-BULK.pdf", source_path=path)
    # After 2 fragments the network to SharePoint goes away for the rest of the run.
    graph.interrupt = UploadInterrupt(after_chunks=2, mode="lose_request", remaining=100)
    first = upload_documents()
    assert (first["uploaded"], first["failed"]) == (0, 1)
    row = _rows()["DC-2026-BULK"]
    assert row.status == "failed" and row.upload_url and row.bytes_confirmed == 2 * 10 * 320 * 1024
    assert row.next_attempt_at is not None  # transient: retried by the next run

    graph.interrupt = None
    time.sleep(max(0.0, (row.next_attempt_at.timestamp() - time.time())) + 0.05)
    second = upload_documents()
    assert second["uploaded"] == 1
    row = _rows()["DC-2026-BULK"]
    assert row.status == "uploaded" and graph.items[row.drive_item_id].content == path.read_bytes()
    (session,) = graph.upload_report()["sessions"]
    ranges = session["ranges"]
    assert ranges[2][0] == 2 * 10 * 320 * 1024  # the second run started where the first stopped
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False)) and ranges[-1][1] == size - 1
    assert graph.stats["duplicate_ranges"] == 0 and graph.stats["uploads_with_authorization"] == 0


def test_documents_upload_end_to_end_over_real_http(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.upload_documents import upload_documents

    sim = Microsoft365Sandbox(seed=5)
    path = _file(tmp_path, "INV-2026-009999.pdf", 6 * MB + 1)
    enqueue_document("INV-2026-009999", "ERP/Invoices", "INV-2026-009999.pdf", source_path=path)
    enqueue_document("TC-2026-0200", "ERP/Test Certificates", "TC-2026-0200.pdf", content=b"%PDF-1.7 certificate")
    _TOKEN_CACHES.clear()
    with running_server(sim) as url:
        monkeypatch.setenv("MICROSOFT365_BASE_URL", f"{url}/v1.0/")
        monkeypatch.setenv("MICROSOFT365_TOKEN_URL", url + "/{tenant}/oauth2/v2.0/token")
        sim.faults.update({"rate_limit_every_n": 4, "retry_after_s": 1})  # throttled every 4th call, over the wire
        reset_settings_cache()
        try:
            summary = upload_documents()
        finally:
            reset_settings_cache()
            _TOKEN_CACHES.clear()
    assert (summary["uploaded"], summary["failed"]) == (2, 0)
    rows = _rows()
    assert sim.items[rows["INV-2026-009999"].drive_item_id].content == path.read_bytes()
    assert sim.stats["uploads_with_authorization"] == 0 and sim.stats["duplicate_ranges"] == 0
    assert sim.token_requests == 1


def test_a_failed_upload_is_queued_and_its_rerun_uploads_only_that_document(graph: Microsoft365Sandbox) -> None:
    from flows.upload_documents import upload_documents
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    enqueue_document("INV-FAIL", "ERP/Invoices", "INV-FAIL.pdf", content=b"%PDF-1.7 the one that fails")
    enqueue_document("INV-OK", "ERP/Invoices", "INV-OK.pdf", content=b"%PDF-1.7 fine")
    sharepoint = FailingRequests(graph, lambda request: request.method == "PUT" and "INV-FAIL.pdf" in request.url.path)
    with use_transport("microsoft365", sharepoint):
        summary = upload_documents()
        assert (summary["uploaded"], summary["failed"]) == (1, 1)
        (error,) = error_rows("microsoft365", "documents")
        unit = unit_of(error)
        assert (unit["kind"], unit["document_key"], unit["attempt"]) == ("microsoft365.documents.document", "INV-FAIL", 1)
        assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
        enqueue_document("INV-LATER", "ERP/Invoices", "INV-LATER.pdf", content=b"%PDF-1.7 queued after the failure")

        sharepoint.failing = False  # SharePoint is back
        make_due(error.id)
        outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None
    assert (outcome.summary["claimed"], outcome.summary["uploaded"]) == (1, 1)
    rows = _rows()
    assert rows["INV-FAIL"].status == "uploaded" and graph.items[rows["INV-FAIL"].drive_item_id].content == b"%PDF-1.7 the one that fails"
    assert rows["INV-LATER"].status == "pending"  # not the failed unit: the next scheduled run uploads it
    resolved = get_error(error.id)
    assert (resolved.status, resolved.resolved_by) == ("resolved", "flow:retry-failed-units")
    assert len(error_rows("microsoft365", "documents")) == 1  # the rerun recorded no row of its own
    assert upload_documents()["uploaded"] == 1 and graph.stats["simple_uploads"] == 3


def test_a_page_that_stopped_the_run_is_queued_and_its_rerun_handles_only_that_page(graph: Microsoft365Sandbox) -> None:
    from connectors.core.errors import IntegrationError
    from flows.upload_documents import upload_documents
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    first = enqueue_document("INV-PAGE-1", "ERP/Invoices", "INV-PAGE-1.pdf", content=b"%PDF-1.7 one")
    bad = enqueue_document("DC-PAGE-BAD", "ERP/Delivery Challans", "DC:17?.pdf", content=b"%PDF")  # refused name
    with refused_inserts("quarantined_records", "quarantined_records: lock timeout"), pytest.raises(IntegrationError):
        upload_documents(rows_per_page=5)
    (error,) = error_rows("microsoft365", "documents")
    assert unit_of(error) == {"kind": "microsoft365.documents.page", "after_document_id": 0, "through_document_id": bad,
                              "rows": 5, "pages_done": 1}
    assert (error.error_type, error.status) == ("SYNC_FAILED", "pending") and error.next_retry_at is not None
    assert {k: r.status for k, r in _rows().items()} == {"INV-PAGE-1": "pending", "DC-PAGE-BAD": "pending"}
    later = enqueue_document("INV-PAGE-2", "ERP/Invoices", "INV-PAGE-2.pdf", content=b"%PDF-1.7 two")
    assert later > bad > first

    make_due(error.id)
    outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None
    assert (outcome.summary["claimed"], outcome.summary["uploaded"], outcome.summary["quarantined"]) == (2, 1, 1)
    assert {k: r.status for k, r in _rows().items()} == {"INV-PAGE-1": "uploaded", "DC-PAGE-BAD": "quarantined", "INV-PAGE-2": "pending"}
    assert get_error(error.id).status == "resolved"
    assert [e.error_type for e in error_rows("microsoft365", "documents")] == ["SYNC_FAILED", "DATA_VALIDATION_FAILED"]
