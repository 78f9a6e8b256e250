"""collect-lab-results end to end: the sandbox writes exports into a drop folder, the flow loads them once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from connectors.core.errors import SyncFailed
from connectors.lab.exports import find_archived
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, LabExport, LabResult, ProductionBatch, QuarantinedRecord
from hub.systems.lab import forget_export
from sandbox.lab import LabSandbox, Session
from tests.error_support import FailingRequests, make_due, refused_inserts

pytestmark = pytest.mark.usefixtures("prefect_harness")

BATCHES = ["B-M1-000201", "B-M1-000202"]


@pytest.fixture
def drop(db: str, tmp_path: Path) -> Path:
    folder = tmp_path / "lab_drop"
    folder.mkdir()
    return folder


@pytest.fixture
def machine(drop: Path) -> LabSandbox:
    return LabSandbox(drop_dir=drop, seed=31)


def collect(drop: Path, settle_s: float = 0.0) -> dict[str, Any]:
    from flows.collect_lab_results import collect_lab_results

    return collect_lab_results(drop_dir=str(drop), settle_s=settle_s)


def add_batches(ids: list[str]) -> None:
    now = datetime.now(UTC)
    with get_engine().begin() as conn:
        conn.execute(
            insert(ProductionBatch),
            [
                {"batch_id": b, "batch_seq": i, "product_code": "MM-M10-25KG", "recipe_code": "R-M10", "mixer": "M1",
                 "started_at": now - timedelta(minutes=10), "ended_at": now, "components": [], "row_hash": f"h{i}"}
                for i, b in enumerate(ids)
            ],
        )


def lab_rows() -> dict[str, dict[str, Any]]:
    with get_engine().connect() as conn:
        return {r.specimen_id: r._asdict() for r in conn.execute(select(LabResult))}


def quarantined() -> list[QuarantinedRecord]:
    from sqlalchemy.orm import Session as OrmSession

    with OrmSession(get_engine()) as s:
        return list(s.scalars(select(QuarantinedRecord).where(QuarantinedRecord.integration == "lab").order_by(QuarantinedRecord.id)))


def count(model: Any) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def errors(category: str) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(IntegrationErrorRow).where(IntegrationErrorRow.integration == "lab", IntegrationErrorRow.error_type == category)))


# (variant, rows loaded of 18, lines quarantined, reason found in the quarantine entry)
VARIANTS = [
    ("semicolon", 18, 0, None),
    ("decimal_comma", 18, 0, None),
    ("reordered", 18, 0, None),
    ("preamble", 18, 0, None),
    ("truncated", 17, 1, "truncated last line"),
    ("bad_number", 17, 1, "'12..4' is not a number"),
    ("strength_mismatch", 17, 1, "expect_column_pair_values_a_to_be_greater_than_b"),
]


@pytest.mark.parametrize(("variant", "loaded", "refused", "reason"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_export_variant_loads_its_good_rows_and_quarantines_the_rest(
    drop: Path, machine: LabSandbox, variant: str, loaded: int, refused: int, reason: str | None
) -> None:
    add_batches(BATCHES)
    session = machine.test_session(batch_ids=BATCHES, variants=[variant])
    summary = collect(drop)
    assert (summary["exports_processed"], summary["extracted"], summary["valid"], summary["quarantined"]) == (1, 18, loaded, refused)
    rows = lab_rows()
    assert len(rows) == loaded
    assert all(r["batch_known"] and r["export_file"] == session.file_name for r in rows.values())
    for record in session.records:  # the values survive any delimiter, decimal mark, header order or unit
        stored = rows.get(record["specimen_id"])
        if stored is not None:
            assert stored["peak_load_kn"] == pytest.approx(record["peak_load_kn"])
            assert stored["tested_at"] == record["tested_at"]
    entries = quarantined()
    assert len(entries) == refused
    if reason:
        entry = entries[0]
        assert reason in str(entry.failed_expectations) + str(entry.raw_record)
        assert entry.raw_record["file"] == session.file_name and entry.raw_record["text"]
        assert len(errors("DATA_VALIDATION_FAILED")) == 1
    assert (drop / "processed" / session.file_name).exists() and not (drop / session.file_name).exists()


def test_same_export_dropped_twice_is_processed_once(drop: Path, machine: LabSandbox) -> None:
    session = machine.test_session(batch_ids=BATCHES, variants=["duplicate"])  # two names, same bytes
    first = collect(drop)
    assert (first["exports_processed"], first["duplicates_skipped"], first["valid"]) == (1, 1, 18)
    (drop / "dropped-again.csv").write_bytes(session.content)  # the operator exports it once more
    second = collect(drop)
    assert (second["exports_processed"], second["duplicates_skipped"], second["upserted"]) == (0, 1, 0)
    assert count(LabResult) == 18 and count(LabExport) == 1
    with get_engine().connect() as conn:
        export = conn.execute(select(LabExport)).one()
    assert export.duplicates_seen == 2 and export.last_duplicate_name == "dropped-again.csv"
    assert sorted(p.name for p in (drop / "duplicates").iterdir()) == sorted([session.file_name.replace(".csv", "_copy.csv"), "dropped-again.csv"])


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_file_still_being_written_is_not_processed_until_complete_then_once(drop: Path, machine: LabSandbox) -> None:
    machine.drop_dir = None
    session: Session = machine.test_session(batch_ids=BATCHES)
    path = drop / session.file_name
    half = len(session.content) // 2
    path.write_bytes(session.content[:half])  # the tester is mid-way through the session
    summary = collect(drop, settle_s=5)
    assert (summary["files_ready"], summary["files_settling"], summary["exports_processed"]) == (0, 1, 0)
    assert count(LabResult) == 0 and count(LabExport) == 0 and path.exists()
    with path.open("ab") as fh:
        fh.write(session.content[half:])
    _age(path, 10)  # it has stood still for longer than the settle interval
    done = collect(drop, settle_s=5)
    assert (done["exports_processed"], done["valid"], done["quarantined"]) == (1, 18, 0)
    again = collect(drop, settle_s=5)
    assert again["files_ready"] == 0 and count(LabResult) == 18 and count(LabExport) == 1


def test_export_read_before_the_writer_finished_is_completed_by_its_final_version(drop: Path, machine: LabSandbox) -> None:
    machine.drop_dir = None
    session = machine.test_session(batch_ids=BATCHES)
    cut = session.content.rfind(b"\r\n", 0, len(session.content) - 2) + 20  # mid-way through the last line
    (drop / session.file_name).write_bytes(session.content[:cut])
    early = collect(drop)  # settle 0: read at once, like a writer that paused too long
    assert (early["valid"], early["quarantined"]) == (17, 1)
    (drop / session.file_name).write_bytes(session.content)
    final = collect(drop)
    assert (final["exports_processed"], final["valid"], final["upserted"], final["unchanged"]) == (1, 18, 1, 17)
    assert [e.status for e in quarantined()] == ["replayed"]  # the cut line's specimen loaded from the full file


def test_unknown_batch_is_loaded_flagged_and_unflagged_when_the_batch_arrives(drop: Path, machine: LabSandbox) -> None:
    add_batches(BATCHES[:1])
    machine.test_session(batch_ids=BATCHES)
    summary = collect(drop)
    assert (summary["valid"], summary["quarantined"], summary["batch_unknown"]) == (18, 0, 9)
    flags = {r["batch_id"]: r["batch_known"] for r in lab_rows().values()}
    assert flags == {BATCHES[0]: True, BATCHES[1]: False}
    add_batches(BATCHES[1:])  # the plant's record of the second batch arrives later
    later = collect(drop)
    assert later["batch_flags_set"] == 9
    assert all(r["batch_known"] for r in lab_rows().values())


def test_strength_not_matching_load_is_quarantined_with_its_line_and_an_error_row(drop: Path, machine: LabSandbox) -> None:
    add_batches(BATCHES)
    session = machine.test_session(batch_ids=BATCHES, variants=["strength_mismatch"])
    collect(drop)
    (entry,) = quarantined()
    bad = session.records[len(session.records) // 3]
    assert entry.record_key == bad["specimen_id"]
    assert entry.raw_record["line"] == len(session.records) // 3 + 2
    assert entry.raw_record["text"].startswith(bad["specimen_id"] + ",")
    assert entry.failed_expectations[0]["expectation"] == "expect_column_pair_values_a_to_be_greater_than_b"
    assert entry.mapped_record["strength_deviation_mpa"] > entry.mapped_record["strength_allowed_mpa"]
    assert bad["specimen_id"] not in lab_rows()
    (error,) = errors("DATA_VALIDATION_FAILED")
    assert "1 of 18 lab_results rows failed validation" in error.error_message


def test_rerun_and_replay_change_nothing(drop: Path, machine: LabSandbox) -> None:
    add_batches(BATCHES)
    session = machine.test_session(batch_ids=BATCHES)
    collect(drop)
    before = lab_rows()
    assert collect(drop)["files_ready"] == 0  # nothing new: nothing read
    export = forget_export(get_engine(), session.content and __import__("hashlib").sha256(session.content).hexdigest()[:10])
    archived = find_archived(drop, export.sha256, export.file_name)
    assert archived is not None
    archived.replace(drop / export.file_name)
    replay = collect(drop)
    assert (replay["exports_processed"], replay["valid"], replay["upserted"], replay["unchanged"]) == (1, 18, 0, 18)
    assert lab_rows() == before  # not even synced_at moved
    assert count(LabExport) == 1


def test_unreadable_file_is_rejected_quarantined_and_archived(drop: Path) -> None:
    (drop / "results.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    summary = collect(drop)
    assert (summary["exports_rejected"], summary["quarantined"]) == (1, 1)
    (entry,) = quarantined()
    assert "export the results as CSV" in entry.failed_expectations[0]["value"]
    assert (drop / "rejected" / "results.xlsx").exists()
    (drop / "results-again.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert collect(drop)["duplicates_skipped"] == 1


def test_a_failed_export_leaves_nothing_behind_is_recorded_and_is_retried_next_run(
    drop: Path, machine: LabSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.ledger.loading

    session = machine.test_session(batch_ids=BATCHES, variants=["bad_number"])

    def fail(*_: Any, **__: Any) -> int:
        raise ConnectionError("database connection lost")

    monkeypatch.setattr(hub.ledger.loading, "release_quarantine", fail)  # fails after the rows were written, before the commit
    with pytest.raises(SyncFailed, match="1 lab export"):
        collect(drop)
    assert count(LabResult) == 0 and count(LabExport) == 0 and quarantined() == []  # rows, quarantine, ledger: all or nothing
    (failure,) = [e for e in errors("SERVER_ERROR") + errors("SYNC_FAILED")]
    assert failure.unit["file"] == session.file_name and failure.status == "pending"
    assert (drop / session.file_name).exists()
    monkeypatch.undo()
    retried = collect(drop)
    assert (retried["exports_processed"], retried["valid"], retried["quarantined"]) == (1, 17, 1)
    with get_engine().connect() as conn:
        assert conn.execute(select(IntegrationErrorRow.status).where(IntegrationErrorRow.id == failure.id)).scalar_one() == "resolved"


def test_results_api_pages_load_once_with_their_cursor(drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.core.client import use_transport
    from hub.core.settings import reset_settings_cache
    from hub.ledger.loading import read_cursor
    from sandbox.core import as_transport

    sim = LabSandbox(seed=41)  # no drop folder: the machine is read over HTTP only
    sim.test_session(batch_ids=BATCHES)
    monkeypatch.setenv("LAB_API_URL", "http://lab.sandbox")
    reset_settings_cache()
    try:
        with use_transport("lab", as_transport(sim)):
            first = collect(drop)
            assert (first["api_pages"], first["valid"], first["quarantined"]) == (1, 18, 0)
            assert collect(drop)["api_pages"] == 0  # nothing new after the cursor
            sim.test_session(batch_ids=["B-M1-000203"])
            third = collect(drop)
    finally:
        monkeypatch.delenv("LAB_API_URL")
        reset_settings_cache()
    assert (third["api_pages"], third["valid"]) == (1, 9)
    assert count(LabResult) == 27
    with get_engine().connect() as conn:
        assert read_cursor(conn, "lab", "lab_results") == {"after": 27}


def test_results_api_rows_refused_by_the_suite_are_quarantined_counted_and_reported(drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.core.client import use_transport
    from hub.core.settings import reset_settings_cache
    from hub.ledger.loading import read_cursor
    from sandbox.core import as_transport

    add_batches(BATCHES)
    sim = LabSandbox(seed=45)
    sim.test_session(batch_ids=BATCHES)
    sim.test_session(batch_ids=BATCHES, age_days=14)  # not a planned age: the suite refuses all 18
    monkeypatch.setenv("LAB_API_URL", "http://lab.sandbox")
    reset_settings_cache()
    try:
        with use_transport("lab", as_transport(sim)):
            summary = collect(drop)  # an apply-shaped read: the engine's counts balance with rows quarantined
    finally:
        monkeypatch.delenv("LAB_API_URL")
        reset_settings_cache()
    assert (summary["api_pages"], summary["extracted"], summary["valid"], summary["quarantined"], summary["upserted"]) == (1, 36, 18, 18, 18)
    assert count(LabResult) == 18 and len(quarantined()) == 18
    (error,) = errors("DATA_VALIDATION_FAILED")
    assert "18 of 36 lab_results rows failed validation" in error.error_message
    assert error.response_data["failures_by_expectation"] and error.response_data["sample"]
    assert all(s["file"].startswith("api-results-") for s in error.response_data["sample"])
    with get_engine().connect() as conn:
        assert read_cursor(conn, "lab", "lab_results") == {"after": 36}


def test_a_failed_export_is_queued_and_its_rerun_processes_only_that_file(drop: Path, machine: LabSandbox) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    add_batches(BATCHES)
    broken = machine.test_session(batch_ids=BATCHES)
    fine = machine.test_session(batch_ids=BATCHES, age_days=7)
    with refused_inserts("lab_exports", "lab_exports: tablespace full", when=f"NEW.file_name = '{broken.file_name}'"):
        with pytest.raises(SyncFailed, match="1 lab export"):
            collect(drop)
    (failure,) = errors("SYNC_FAILED")
    assert failure.unit == {"kind": "lab.lab_results.file", "file": broken.file_name, "size": len(broken.content), "drop_dir": str(drop)}
    assert failure.status == "pending" and failure.next_retry_at is not None and failure.max_attempts > 0
    assert {r["export_file"] for r in lab_rows().values()} == {fine.file_name}
    later = machine.test_session(batch_ids=BATCHES, age_days=1)  # dropped after the failure: another unit of work
    for path in drop.glob("*.csv"):
        _age(path, 30)  # settled: the rerun reads with the configured settle time

    make_due(failure.id)
    outcome = rerun(failure.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["exports_processed"] == 1
    assert {r["export_file"] for r in lab_rows().values()} == {fine.file_name, broken.file_name}
    assert count(LabResult) == 36
    with get_engine().connect() as conn:
        assert set(conn.execute(select(LabExport.file_name)).scalars()) == {fine.file_name, broken.file_name}
    assert (drop / later.file_name).exists() and (drop / "processed" / broken.file_name).exists()
    assert get_error(failure.id).status == "resolved" and len(errors("SYNC_FAILED")) == 1
    assert collect(drop)["exports_processed"] == 1  # the later file, on the next scheduled run


def test_a_failed_results_api_read_is_queued_and_its_rerun_reads_only_the_api(drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.core.client import use_transport
    from hub.core.settings import reset_settings_cache
    from hub.ledger.errors import get_error
    from hub.ledger.loading import read_cursor
    from hub.ledger.retry_units import rerun

    sim = LabSandbox(seed=43)
    sim.test_session(batch_ids=BATCHES)
    api = FailingRequests(sim, lambda request: request.url.path.endswith("/api/v1/results"))
    monkeypatch.setenv("LAB_API_URL", "http://lab.sandbox")
    reset_settings_cache()
    try:
        with use_transport("lab", api):
            with pytest.raises(SyncFailed, match="1 lab export") as failed:
                collect(drop)
            (failure,) = errors("SERVER_ERROR")  # the engine's one row: the flow records no other
            assert f"integration_errors [{failure.id}]" in str(failed.value)
            # The engine's unit (tasks/engine.py run_pull): the API read from the first page, nothing committed yet.
            assert {k: failure.unit[k] for k in ("kind", "api", "batch", "cursor")} == {
                "kind": "lab.lab_results.api", "api": "http://lab.sandbox", "batch": 1, "cursor": None}
            assert "after=0" in failure.unit["position"]["url"]
            assert failure.status == "pending" and failure.next_retry_at is not None and api.failed > 1
            dropped = LabSandbox(drop_dir=drop, seed=44).test_session(batch_ids=BATCHES)  # a file arrives meanwhile
            _age(drop / dropped.file_name, 30)
            api.failing = False
            make_due(failure.id)
            outcome = rerun(failure.id, by="flow:retry-failed-units")
    finally:
        monkeypatch.delenv("LAB_API_URL")
        reset_settings_cache()
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["api_pages"] == 1
    assert count(LabResult) == 18 and all(r["export_file"].startswith("api-results-") for r in lab_rows().values())
    assert (drop / dropped.file_name).exists() and count(LabExport) == 1  # the drop folder was not read
    with get_engine().connect() as conn:
        assert read_cursor(conn, "lab", "lab_results") == {"after": 18}
    assert get_error(failure.id).status == "resolved"


@pytest.fixture
def fourteen_day_tests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The 'fix': the lab plan now tests specimens at 14 days too."""
    import expectations.lab as suite
    from expectations import runner

    monkeypatch.setattr(suite, "planned_ages", lambda: [1, 7, 14, 28])
    runner.reset()  # the runner caches suites per process: drop it so the current code is used
    yield
    monkeypatch.undo()
    runner.reset()


def test_quarantined_lab_lines_replay_through_the_current_mapping_and_suite(
    drop: Path, machine: LabSandbox, request: pytest.FixtureRequest
) -> None:
    import hashlib

    from hub.ledger.errors import get_error
    from hub.ledger.quarantine import discard, replay

    add_batches(BATCHES)
    session = machine.test_session(batch_ids=BATCHES, age_days=14, variants=["bad_number", "truncated"])
    summary = collect(drop)
    assert (summary["valid"], summary["quarantined"]) == (0, 18)  # 14 days is not in the plan yet
    (error,) = errors("DATA_VALIDATION_FAILED")

    request.getfixturevalue("fourteen_day_tests")
    result = replay(error_id=error.id, by="lab.qa", reason="14-day tests added to the lab plan (QA-7)")
    assert (result.selected, result.loaded, result.still_failing, result.superseded) == (18, 16, 2, 0)
    rows = lab_rows()
    assert len(rows) == 16
    sha = hashlib.sha256(session.content).hexdigest()
    assert all((r["age_days"], r["export_file"], r["export_sha256"], r["source_run_id"], r["batch_known"])
               == (14, session.file_name, sha, "quarantine-replay:lab.qa", True) for r in rows.values())
    for record in session.records:  # mapped again from the parsed values: they survive unchanged
        stored = rows.get(record["specimen_id"])
        if stored is not None:
            assert stored["peak_load_kn"] == pytest.approx(record["peak_load_kn"]) and stored["tested_at"] == record["tested_at"]
    still = [e for e in quarantined() if e.status == "quarantined"]
    reasons = " ".join(str(e.failed_expectations) for e in still)
    assert len(still) == 2 and "'12..4' is not a number" in reasons and "unreadable line" in reasons  # today's reasons
    assert get_error(error.id).status == "pending"

    outcome = discard(error_id=error.id, by="lab.qa", reason="specimens re-tested in session 9")
    assert outcome.errors_resolved == [error.id] and get_error(error.id).status == "resolved"


def test_a_queued_rerun_of_a_file_a_later_run_already_processed_does_nothing_twice(drop: Path, machine: LabSandbox) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    add_batches(BATCHES)
    first = machine.test_session(batch_ids=BATCHES)
    with refused_inserts("lab_exports", "lab_exports: tablespace full", when=f"NEW.file_name = '{first.file_name}'"):
        with pytest.raises(SyncFailed):
            collect(drop)
    (failure,) = errors("SYNC_FAILED")
    # The next scheduled run loads the file, but another file fails in it: the first error stays open.
    second = machine.test_session(batch_ids=BATCHES, age_days=7)
    with refused_inserts("lab_exports", "lab_exports: tablespace full", when=f"NEW.file_name = '{second.file_name}'"):
        with pytest.raises(SyncFailed):
            collect(drop)
    assert get_error(failure.id).status == "pending" and not (drop / first.file_name).exists()

    make_due(failure.id)
    outcome = rerun(failure.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None
    assert (outcome.summary["exports_processed"], outcome.summary["duplicates_skipped"]) == (0, 0)
    assert count(LabResult) == 18 and count(LabExport) == 1  # nothing loaded twice, the other file untouched
    assert (drop / second.file_name).exists()


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lab"


def test_a_drop_folder_of_three_machines_and_an_unknown_file_loads_by_profile_and_quarantines_what_fits_none_whole(drop: Path) -> None:
    import shutil

    add_batches(["B-M1-000301", "B-M1-000302", "B-M1-000303", "B-M1-000401", "B-M1-000402", "B-M1-000403", "B-M1-000501", "B-M1-000502"])
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
    for path in files:
        shutil.copy(path, drop / path.name)
    summary = collect(drop)
    assert summary["files_by_profile"] == {"drymix-simulator": 4, "compression-semicolon": 3, "flexural-per-specimen": 5}
    # a compression report without its Fmax column, a specimen file without its batch line, a Humboldt LIMS report
    assert (summary["files_unmatched"], summary["exports_rejected"], summary["exports_processed"]) == (3, 3, 12)
    # drymix 18 + 18 + 18 + 8, compression 12 + 11 + 11, flexural 3 specimens; a cut line, a bad number,
    # a cut compression line, a cut and an unreadable curve, and the three files no profile fits are quarantined
    assert (summary["valid"], summary["quarantined"]) == (62 + 34 + 3, 1 + 2 + 2 + 3)
    rows = lab_rows()
    assert len(rows) == 99 and not any(r["batch_id"] == "B-M1-000403" for r in rows.values())  # never half-loaded

    press = rows["B-M1-000401-28D-P1A"]  # ...;1.600,0;48,23;30,15;12.11.2026 14:35 (kN, N/mm², the lab's zone)
    assert (press["peak_load_kn"], press["strength_mpa"], press["area_mm2"], press["machine_id"], press["test_type"]) == (
        pytest.approx(48.23), pytest.approx(30.15), pytest.approx(1600.0), "CONTROLS-AX7", "compressive")
    assert press["tested_at"] == datetime(2026, 11, 12, 9, 5, tzinfo=UTC)
    specimen = rows["B-M1-000501-28D-P1"]
    text = (FIXTURES / "flexural-per-specimen" / "ZWICK-Z050_20261112_151000_B-M1-000501-28D-P1.txt").read_text(encoding="utf-8")
    curve = text.split("Standard force [N]", 1)[1].split()
    assert specimen["peak_load_kn"] == pytest.approx(max(float(line.split(";")[2].replace(",", ".")) for line in curve) / 1000)
    assert (specimen["test_type"], specimen["span_mm"], specimen["machine_id"]) == ("flexural", pytest.approx(100.0), "ZWICK-Z050")

    unknown = [e for e in quarantined() if e.raw_record.get("file") == "HUMBOLDT_LIMS_0042.csv"]
    assert len(unknown) == 1 and unknown[0].record_key.startswith("export:")
    assert [t["profile"] for t in unknown[0].raw_record["profiles_tried"]] == ["compression-semicolon", "flexural-per-specimen", "drymix-simulator"]
    assert unknown[0].failed_expectations[0]["value"].startswith("no instrument profile fits HUMBOLDT_LIMS_0042.csv: compression-semicolon:")
    assert unknown[0].raw_record["head"].startswith("LIMS Report ID,00042")
    assert sorted(p.name for p in (drop / "rejected").iterdir()) == [
        "CONTROLS-AX7_20261113_090500_S0004.csv", "HUMBOLDT_LIMS_0042.csv", "ZWICK-Z050_20261112_151000_B-M1-000502-28D-P3.txt"]
    assert len(list((drop / "processed").iterdir())) == 12 and not any(p.is_file() for p in drop.iterdir())  # nothing lost
    with get_engine().connect() as conn:
        notes = dict(conn.execute(select(LabExport.file_name, LabExport.note).where(LabExport.status == "processed")).all())
    assert notes["CONTROLS-AX7_20261112_150500_S0001.csv"] == "profile compression-semicolon"


def test_lines_a_profile_read_replay_with_that_profiles_decimal_comma_thousands_units_and_times(
    drop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import expectations.lab as suite
    from expectations import runner
    from hub.ledger.quarantine import replay

    add_batches(["B-M1-000401", "B-M1-000402"])
    shutil.copy(FIXTURES / "compression-semicolon" / "CONTROLS-AX7_20261112_150500_S0001.csv", drop)
    monkeypatch.setattr(suite, "planned_ages", lambda: [1, 7])  # 28-day tests not in the plan yet: every row refused
    runner.reset()
    try:
        summary = collect(drop)
        assert (summary["files_by_profile"], summary["valid"], summary["quarantined"]) == ({"compression-semicolon": 1}, 0, 12)
        (error,) = errors("DATA_VALIDATION_FAILED")
        assert quarantined()[0].raw_record["dialect"]["profile"] == "compression-semicolon"
        monkeypatch.setattr(suite, "planned_ages", lambda: [1, 7, 28])
        runner.reset()
        result = replay(error_id=error.id, by="lab.qa", reason="28-day tests added to the plan")
    finally:
        monkeypatch.undo()
        runner.reset()
    assert (result.selected, result.loaded) == (12, 12)
    row = lab_rows()["B-M1-000401-28D-P1A"]  # ...;1.600,0;48,23;30,15;12.11.2026 14:35, read again as the profile says
    assert (row["peak_load_kn"], row["strength_mpa"], row["area_mm2"]) == (pytest.approx(48.23), pytest.approx(30.15), pytest.approx(1600.0))
    assert row["tested_at"] == datetime(2026, 11, 12, 9, 5, tzinfo=UTC) and row["machine_id"] == "CONTROLS-AX7"


def test_an_invalid_profile_stops_the_run_before_any_file_is_read(drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.collect_lab_results as flow_module
    from hub.core.settings import lab_config

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "site-press.toml").write_text('files = ["*.csv"]\ndelimiter = ";"\ndecimal = "komma"\naliases = true\n', encoding="utf-8")
    monkeypatch.setattr(flow_module, "lab_config", lambda: lab_config().model_copy(update={"profiles_dir": profiles}))
    session = LabSandbox(drop_dir=drop, seed=61).test_session(batch_ids=BATCHES)
    with pytest.raises(Exception, match=r"site-press.toml line 3 \(decimal\)"):
        collect(drop)
    assert (drop / session.file_name).exists() and count(LabExport) == 0 and count(LabResult) == 0
    (error,) = errors("INVALID_REQUEST")  # a configuration error: not retried until someone fixes the profile
    assert error.error_code == "LAB_PROFILES_INVALID" and "site-press.toml line 3" in error.error_message
