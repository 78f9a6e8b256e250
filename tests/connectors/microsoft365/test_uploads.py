"""Uploads through the Graph connector: simple and session uploads, resume without resending, conflicts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from connectors.core.errors import InvalidRequest
from connectors.microsoft365 import CHUNK_UNIT, Microsoft365Connector, UploadProgress
from sandbox.microsoft365 import Microsoft365Sandbox, UploadInterrupt

MB = 1024 * 1024


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    with path.open("wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, MB))
            fh.write(block)
            remaining -= len(block)
    return path


def _stored(graph: Microsoft365Sandbox, item_id: str) -> bytes:
    return graph.items[item_id].content


def _assert_no_range_twice(graph: Microsoft365Sandbox, total: int) -> None:
    """The sandbox's record of every stored fragment: contiguous, each byte exactly once."""
    (session,) = [s for s in graph.upload_report()["sessions"] if s["total"] == total]
    ranges = session["ranges"]
    assert ranges[0][0] == 0 and ranges[-1][1] == total - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))
    assert graph.stats["duplicate_ranges"] == 0


def test_small_file_goes_by_one_simple_upload(connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    path = _file(tmp_path, "TC-2026-0042.pdf", 200_000)
    item = connector.upload(path, "ERP/Test Certificates", "TC-2026-0042.pdf")
    assert item.method == "simple" and item.created
    assert item.web_url.endswith("/ERP/Test%20Certificates/TC-2026-0042.pdf")
    assert _stored(graph, item.id) == path.read_bytes()
    assert graph.stats["simple_uploads"] == 1 and graph.stats["chunk_puts"] == 0


def test_20_mb_file_is_streamed_in_320_kib_multiples_without_authorization(
    connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path
) -> None:
    size = 20 * MB
    path = _file(tmp_path, "DC-batch-export.pdf", size)
    progress: list[UploadProgress] = []
    item = connector.upload(path, "ERP/Delivery Challans", "DC-batch-export.pdf", on_progress=progress.append)
    assert item.method == "session" and item.size == size and item.id and item.web_url
    assert hashlib.sha256(_stored(graph, item.id)).digest() == hashlib.sha256(path.read_bytes()).digest()
    (session,) = graph.upload_report()["sessions"]
    chunk = connector.documents.chunk_bytes
    assert chunk % CHUNK_UNIT == 0
    assert session["chunk_puts"] == -(-size // chunk) == connector.chunks_sent
    assert all((end - start + 1) % CHUNK_UNIT == 0 for start, end in session["ranges"][:-1])
    assert graph.stats["uploads_with_authorization"] == 0
    _assert_no_range_twice(graph, size)
    # The caller saw every confirmed offset, so a crash could resume from the last one.
    assert [p.confirmed for p in progress] == [i * chunk for i in range(session["chunk_puts"])]


def test_lost_answer_mid_upload_continues_without_resending_the_chunk(
    connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path
) -> None:
    size = 9 * MB + 12345
    path = _file(tmp_path, "INV-2026-000777.pdf", size)
    graph.interrupt = UploadInterrupt(after_chunks=1, mode="lose_response")  # chunk 2 stored, answer lost
    item = connector.upload(path, "ERP/Invoices", "INV-2026-000777.pdf")
    assert _stored(graph, item.id) == path.read_bytes()
    _assert_no_range_twice(graph, size)
    (session,) = graph.upload_report()["sessions"]
    assert connector.chunks_sent == session["chunk_puts"]  # nothing was sent twice


def test_lost_request_is_sent_again_once(connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    size = 8 * MB
    path = _file(tmp_path, "INV-2026-000778.pdf", size)
    graph.interrupt = UploadInterrupt(after_chunks=2, mode="lose_request")  # chunk 3 never arrives
    item = connector.upload(path, "ERP/Invoices", "INV-2026-000778.pdf")
    assert _stored(graph, item.id) == path.read_bytes()
    _assert_no_range_twice(graph, size)
    (session,) = graph.upload_report()["sessions"]
    assert connector.chunks_sent == session["chunk_puts"] + 1


class Crash(Exception):
    """The worker died mid-upload."""


def test_interrupted_upload_resumes_in_a_new_run_from_next_expected_ranges(
    connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path
) -> None:
    size = 20 * MB
    path = _file(tmp_path, "TC-bulk.pdf", size)
    saved: list[UploadProgress] = []

    def crash_after_three(progress: UploadProgress) -> None:
        saved.append(progress)
        if progress.confirmed >= 3 * connector.documents.chunk_bytes:
            raise Crash()

    with pytest.raises(Crash):
        connector.upload(path, "ERP/Test Certificates", "TC-bulk.pdf", on_progress=crash_after_three)
    sent_before = connector.chunks_sent
    last = saved[-1]
    assert last.confirmed == 3 * connector.documents.chunk_bytes

    item = connector.upload(path, "ERP/Test Certificates", "TC-bulk.pdf", resume_url=last.upload_url)
    assert _stored(graph, item.id) == path.read_bytes()
    _assert_no_range_twice(graph, size)
    (session,) = graph.upload_report()["sessions"]
    assert session["ranges"][sent_before][0] == last.confirmed  # the resumed run started where the server stood
    assert connector.chunks_sent == session["chunk_puts"]  # no restart from zero, no chunk twice


@pytest.mark.parametrize("size", [1000, 5 * MB])
def test_conflict_policies_replace_rename_fail(connector: Microsoft365Connector, graph: Microsoft365Sandbox, size: int) -> None:
    first = connector.upload(os.urandom(size), "ERP/Invoices", "INV-1.pdf")
    replaced = connector.upload(os.urandom(size), "ERP/Invoices", "INV-1.pdf", conflict="replace")
    assert replaced.id == first.id and not replaced.created
    renamed = connector.upload(os.urandom(size), "ERP/Invoices", "INV-1.pdf", conflict="rename")
    assert renamed.name == "INV-1 1.pdf" and renamed.id != first.id
    with pytest.raises(InvalidRequest) as refused:
        connector.upload(os.urandom(size), "ERP/Invoices", "INV-1.pdf", conflict="fail")
    assert refused.value.code == "nameAlreadyExists" and refused.value.status_code == 409


def test_invalid_name_is_refused_by_graph_with_its_code(connector: Microsoft365Connector) -> None:
    with pytest.raises(InvalidRequest) as refused:
        connector.upload(b"x", "ERP/Invoices", "INV:2026?.pdf")
    assert refused.value.code == "invalidRequest" and "not allowed" in refused.value.message


def test_upload_url_credential_never_reaches_error_rows(connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    from connectors.core.errors import IntegrationError

    path = _file(tmp_path, "INV-2026-000779.pdf", 6 * MB)
    graph.interrupt = UploadInterrupt(after_chunks=0, mode="lose_request", remaining=10)  # SharePoint unreachable
    with pytest.raises(IntegrationError) as failed:
        connector.upload(path, "ERP/Invoices", "INV-2026-000779.pdf")
    url = failed.value.request_data["url"]
    assert "_upload/" in url and url.split("tempauth=")[1] in ("***", "%2A%2A%2A")  # masked


def test_throttling_storm_during_a_20_mb_upload_is_survived_without_duplicates(
    connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path, sleeps: list[float]
) -> None:
    size = 20 * MB
    path = _file(tmp_path, "TC-storm.pdf", size)
    # Every 3rd request throttled (429) and every 5th unavailable (503): nearly half of all calls fail.
    graph.faults.update({"rate_limit_every_n": 3, "retry_after_s": 2, "error_5xx_every_n": 5, "error_5xx_retry_after_s": 3})
    item = connector.upload(path, "ERP/Test Certificates", "TC-storm.pdf")
    fired = graph.faults.snapshot()["stats"]["fired"]
    assert fired["rate_limit"] >= 3 and fired["error_5xx"] >= 1
    assert _stored(graph, item.id) == path.read_bytes()
    _assert_no_range_twice(graph, size)
    assert min(s for s in sleeps if s >= 0.1) >= 2.0  # every wait honoured Retry-After


def test_an_expired_session_is_replaced_once_by_a_new_one(connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    size = 7 * MB
    path = _file(tmp_path, "INV-2026-000780.pdf", size)
    saved: list[UploadProgress] = []

    def crash_after_one(progress: UploadProgress) -> None:
        saved.append(progress)
        if progress.confirmed > 0:
            raise Crash()

    with pytest.raises(Crash):
        connector.upload(path, "ERP/Invoices", "INV-2026-000780.pdf", on_progress=crash_after_one)
    graph.sessions.clear()  # the session expired while the worker was down
    item = connector.upload(path, "ERP/Invoices", "INV-2026-000780.pdf", resume_url=saved[-1].upload_url)
    assert _stored(graph, item.id) == path.read_bytes()


def test_a_session_that_expires_mid_upload_is_restarted_once(connector: Microsoft365Connector, graph: Microsoft365Sandbox, tmp_path: Path) -> None:
    size = 7 * MB
    path = _file(tmp_path, "INV-2026-000781.pdf", size)
    expired: list[str] = []

    def expire_once(progress: UploadProgress) -> None:
        if progress.confirmed > 0 and not expired:
            expired.append(progress.upload_url)
            graph.sessions.clear()

    item = connector.upload(path, "ERP/Invoices", "INV-2026-000781.pdf", on_progress=expire_once)
    assert _stored(graph, item.id) == path.read_bytes() and expired
