"""Reading lab exports: every dirty variant, strict where guessing would be wrong, and the drop folder rules."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from connectors.lab.exports import (
    ExportRejected,
    archive,
    checksum,
    find_archived,
    normalise_header,
    parse_export,
    read_settled,
    scan_drop_folder,
)
from sandbox.lab import LabMachine, render_export, write_export

BATCHES = ["B-M1-000101", "B-M1-000102"]


@pytest.fixture
def records() -> list[dict[str, object]]:
    return LabMachine(seed=11).test_batches(BATCHES, age_days=28)


def test_clean_export_reads_every_row_with_its_line_number(records: list[dict[str, object]]) -> None:
    parsed = parse_export(render_export(records), "s.csv")
    assert parsed.dialect.delimiter == ","
    assert parsed.dialect.decimal_comma is False
    assert len(parsed.records) == len(records) == 18
    assert parsed.bad_lines == []
    assert [r["source_line"] for r in parsed.records] == list(range(2, 20))
    assert parsed.records[0]["specimen_id"] == "B-M1-000101-28D-P1"
    assert parsed.sha256 == checksum(render_export(records))


def test_semicolon_export_is_sniffed_by_its_header(records: list[dict[str, object]]) -> None:
    parsed = parse_export(render_export(records, ["semicolon"]), "s.csv")
    assert parsed.dialect.delimiter == ";"
    assert parsed.dialect.decimal_comma is False
    assert len(parsed.records) == 18


def test_decimal_comma_export_in_windows_1252_is_detected(records: list[dict[str, object]]) -> None:
    content = render_export(records, ["decimal_comma"])
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")  # "Prüfer" in cp1252, as a German lab PC writes it
    parsed = parse_export(content, "s.csv")
    assert (parsed.dialect.delimiter, parsed.dialect.decimal_comma, parsed.dialect.encoding) == (";", True, "cp1252")
    assert parsed.dialect.columns["operator"] == "Prüfer"
    assert len(parsed.records) == 18
    assert "," in str(parsed.records[0]["peak_load_kn"])


def test_header_in_another_order_with_aliases_and_units_maps_by_name(records: list[dict[str, object]]) -> None:
    parsed = parse_export(render_export(records, ["reordered"]), "s.csv")
    assert parsed.dialect.load_unit == "N"
    assert parsed.dialect.columns["specimen_id"] == "Specimen No."
    assert parsed.dialect.columns["peak_load_kn"] == "Fmax [N]"
    first = parsed.records[0]
    assert first["specimen_id"] == records[0]["specimen_id"]
    assert first["batch_id"] == records[0]["batch_id"]
    assert float(str(first["peak_load_kn"])) == pytest.approx(float(str(records[0]["peak_load_kn"])) * 1000)


def test_preamble_lines_before_the_header_are_kept_aside(records: list[dict[str, object]]) -> None:
    parsed = parse_export(render_export(records, ["preamble"]), "s.csv")
    assert parsed.dialect.header_line == 2
    assert parsed.dialect.preamble[0].startswith("LIMS Report ID")
    assert len(parsed.records) == 18


def test_truncated_last_line_is_a_bad_line_with_its_text_not_a_row(records: list[dict[str, object]]) -> None:
    content = render_export(records, ["truncated"])
    parsed = parse_export(content, "s.csv")
    assert len(parsed.records) == 17
    assert len(parsed.bad_lines) == 1
    bad = parsed.bad_lines[0]
    assert bad.line == 19
    assert "truncated last line" in bad.reason
    assert content.decode().endswith(bad.text)
    assert parsed.data_lines == 18


def test_last_line_without_line_end_is_suspect_even_with_every_field() -> None:
    content = b"specimen_id,batch_id,test_type,age_days,peak_load_kn,strength_mpa,tested_at,machine_id\nS1,B1,compressive,28,16.0,10.0,2026-11-01T10:00:00+00:00,M1"
    parsed = parse_export(content, "s.csv")
    assert parsed.records == []
    assert "no line end" in parsed.bad_lines[0].reason


def test_row_with_the_wrong_field_count_is_a_bad_line() -> None:
    header = "specimen_id,batch_id,test_type,age_days,peak_load_kn,strength_mpa,tested_at,machine_id"
    content = f"{header}\nS1,B1,compressive,28,16.0,10.0,2026-11-01T10:00:00+00:00,M1\nS2,B1,compressive,28,16.0\n\n".encode()
    parsed = parse_export(content, "s.csv")
    assert [r["specimen_id"] for r in parsed.records] == ["S1"]
    assert parsed.bad_lines[0].line == 3
    assert parsed.bad_lines[0].reason == "5 fields where the header has 8"
    assert parsed.bad_lines[0].values["specimen_id"] == "S2"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"PK\x03\x04binary", "XLSX"),
        (b"\xff\xfes\x00p\x00", "NUL bytes"),
        (b"", "empty file"),
        (b"hello\nworld\n", "no header row"),
        (b"specimen_id,batch_id,test_type,age_days,strength_mpa,tested_at,machine_id\n", "lacks required column(s): peak_load_kn"),
        (b"specimen_id,batch_id,test_type,age_days,Fmax [lbf],strength_mpa,tested_at,machine_id\n", "unsupported unit 'lbf'"),
        (b"specimen_id,batch_id,test_type,age_days,peak_load_kn,load,strength_mpa,tested_at,machine_id\n", "two columns map to peak_load_kn"),
    ],
)
def test_unreadable_files_are_rejected_with_the_reason(content: bytes, reason: str) -> None:
    with pytest.raises(ExportRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_export(content, "bad.csv")


def test_header_normalisation_reads_units_and_umlauts() -> None:
    assert normalise_header("Fmax [kN]") == ("fmax", "kn")
    assert normalise_header("Strength (N/mm²)") == ("strength", "n_mm2")
    assert normalise_header("Prüfkörper") == ("pruefkoerper", None)


def test_a_file_still_being_written_is_not_ready_until_it_stood_still(tmp_path: Path) -> None:
    path = tmp_path / "session.csv"
    path.write_bytes(b"specimen_id,batch_id\n")
    ready, settling = scan_drop_folder(tmp_path, settle_s=30)
    assert ready == [] and [f.name for f in settling] == ["session.csv"]
    past = time.time() - 60
    os.utime(path, (past, past))
    ready, settling = scan_drop_folder(tmp_path, settle_s=30)
    assert [f.name for f in ready] == ["session.csv"] and settling == []


def test_a_file_that_changed_after_the_scan_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "session.csv"
    path.write_bytes(b"a,b\n1,2\n")
    (found,), _ = scan_drop_folder(tmp_path, settle_s=0)
    with path.open("ab") as fh:
        fh.write(b"3,4\n")  # the tester appends the next result
    assert read_settled(found) is None
    (again,), _ = scan_drop_folder(tmp_path, settle_s=0)
    assert read_settled(again) == b"a,b\n1,2\n3,4\n"


def test_partial_names_lock_files_and_folders_are_never_candidates(tmp_path: Path) -> None:
    for name in (".session.csv.part", "session.csv.tmp", "~$session.csv", "locked.csv", "locked.csv.lock", "done.csv"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "processed").mkdir()
    ready, _ = scan_drop_folder(tmp_path, settle_s=0)
    assert [f.name for f in ready] == ["done.csv"]


def test_atomic_write_leaves_no_partial_file_and_slow_write_writes_in_place(tmp_path: Path) -> None:
    write_export(tmp_path, "a.csv", b"x" * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    write_export(tmp_path, "b.csv", b"y" * 100, atomic=False, chunks=4)
    assert (tmp_path / "b.csv").read_bytes() == b"y" * 100


def test_archive_never_overwrites_and_finds_the_copy_by_checksum(tmp_path: Path) -> None:
    for content in (b"one\n", b"two\n"):
        (tmp_path / "s.csv").write_bytes(content)
        archive(tmp_path, tmp_path / "s.csv", "processed", checksum(content))
    names = sorted(p.name for p in (tmp_path / "processed").iterdir())
    assert names[0].endswith("-s.csv") and names[1] == "s.csv"
    assert find_archived(tmp_path, checksum(b"two\n"), "s.csv") == tmp_path / "processed" / names[0]
    assert find_archived(tmp_path, checksum(b"three\n"), "s.csv") is None


def test_the_sandbox_slow_writer_is_seen_as_settling_until_it_finished(tmp_path: Path) -> None:
    import threading

    from sandbox.lab import LabSandbox

    sim = LabSandbox(drop_dir=tmp_path, seed=3, atomic=False, slow_write_s=0.2)
    writer = threading.Thread(target=sim.test_session, kwargs={"batch_ids": BATCHES})
    writer.start()
    deadline = time.monotonic() + 10
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    ready, settling = scan_drop_folder(tmp_path, settle_s=30)  # mid-write: its mtime is seconds old at most
    assert ready == [] and len(settling) == 1
    writer.join()
    (path,) = list(tmp_path.iterdir())
    past = time.time() - 60
    os.utime(path, (past, past))
    (found,), _ = scan_drop_folder(tmp_path, settle_s=30)
    content = read_settled(found)
    assert content == sim.sessions[0].content
    assert parse_export(content, path.name).bad_lines == []
