"""The lab testing-machine simulator: EN 1015-11 arithmetic, realistic values, exports and the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.lab import (
    PLATEN_AREA_MM2,
    PRODUCTS,
    SPAN_MM,
    LabMachine,
    LabSandbox,
    compressive_strength,
    flexural_strength,
    render_export,
)


def test_flexural_and_compressive_strength_follow_en_1015_11() -> None:
    # 1.5 F l / (b d^2): 1.28 kN on a 100 mm span, 40 x 40 mm section -> 3.0 MPa
    assert flexural_strength(1.28, 100.0, 40.0, 40.0) == pytest.approx(3.0)
    # F / 1600 mm2: 19.2 kN -> 12.0 MPa
    assert compressive_strength(19.2) == pytest.approx(12.0)


def test_a_batch_gives_three_flexural_and_six_compressive_results_that_agree_with_their_loads() -> None:
    records = LabMachine(seed=3).test_batches(["B-M1-000001"], age_days=28)
    kinds = [r["test_type"] for r in records]
    assert kinds.count("flexural") == 3 and kinds.count("compressive") == 6
    assert len({r["specimen_id"] for r in records}) == 9
    for r in records:
        if r["test_type"] == "compressive":
            expected = compressive_strength(r["peak_load_kn"], PLATEN_AREA_MM2)
            assert 0.3 < r["strength_mpa"] < 50
        else:
            expected = flexural_strength(r["peak_load_kn"], SPAN_MM, r["width_mm"], r["height_mm"])
            assert 0.1 < r["strength_mpa"] < 12
        assert abs(r["strength_mpa"] - expected) <= 0.03  # reported to 0.05 MPa
        assert round(r["strength_mpa"] / 0.05, 6).is_integer()


def test_strength_grows_with_age_and_product_class() -> None:
    machine = LabMachine(seed=5)
    products = {"B-1": "MM-M5-25KG", "B-2": "SC-C25F5-40KG"}

    def mean(age: int, batch: str) -> float:
        values = [r["strength_mpa"] for r in machine.test_batches([batch], age_days=age, products=products) if r["test_type"] == "compressive"]
        return sum(values) / len(values)

    assert mean(1, "B-1") < mean(7, "B-1") < mean(28, "B-1")
    assert mean(28, "B-1") < mean(28, "B-2")
    assert abs(mean(28, "B-2") - PRODUCTS["SC-C25F5-40KG"][0]) < 4


def test_same_seed_same_results_and_no_test_in_the_future() -> None:
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    first = LabMachine(seed=9).test_batches(["B-9"], tested_at=at)
    second = LabMachine(seed=9).test_batches(["B-9"], tested_at=at)
    assert first == second
    assert max(r["tested_at"] for r in first) == at


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown export variant"):
        render_export([], ["sideways"])


def test_sessions_are_written_to_the_drop_folder_and_duplicates_twice(tmp_path: Path) -> None:
    sim = LabSandbox(drop_dir=tmp_path, seed=1)
    session = sim.test_session(batch_ids=["B-M1-000001"], variants=["duplicate"])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([session.file_name, session.file_name.replace(".csv", "_copy.csv")])
    assert {(tmp_path / f).read_bytes() for f in files} == {session.content}


def test_results_api_pages_in_arrival_order_in_process() -> None:
    sim = LabSandbox(seed=2)
    sim.test_session(batch_ids=["B-A", "B-B"])
    with httpx.Client(transport=as_transport(sim), base_url="http://lab.sandbox") as client:
        first = client.get("/api/v1/results", params={"limit": 10}).json()
        second = client.get("/api/v1/results", params={"after": first["next_after"], "limit": 10}).json()
        assert client.get("/api/v1/results", params={"limit": 0}).status_code == 400
    assert [r["seq"] for r in first["results"]] == list(range(1, 11))
    assert [r["seq"] for r in second["results"]] == list(range(11, 19))
    assert second["next_after"] == 18
    assert first["results"][0]["specimen_id"] == "B-A-28D-P1"


def test_results_api_over_real_http_serves_sessions_and_their_exact_export(tmp_path: Path) -> None:
    sim = LabSandbox(drop_dir=tmp_path, seed=4)
    with running_server(sim) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post("/_sandbox/lab/sessions", json={"batch_ids": ["B-X"], "age_days": 7, "variants": ["semicolon"]})
        assert created.status_code == 201
        summary = created.json()
        assert summary["records"] == 9 and summary["variants"] == ["semicolon"]
        sessions = client.get("/api/v1/sessions").json()["sessions"]
        assert [s["file_name"] for s in sessions] == [summary["file_name"]]
        export = client.get(f"/api/v1/sessions/{summary['session_id']}/export")
        assert export.content == (tmp_path / summary["file_name"]).read_bytes()
        assert client.get("/api/v1/sessions/99/export").status_code == 404
        bad = client.post("/_sandbox/lab/sessions", json={"variants": ["sideways"]})
        assert bad.status_code == 400


def test_the_compression_format_writes_a_metadata_block_decimal_commas_and_kn() -> None:
    from sandbox.lab import records_for_format, render_compression_semicolon

    records = records_for_format(LabMachine(seed=6, machine_id="CONTROLS-AX7").test_batches(["B-C"]), "compression-semicolon")
    lines = render_compression_semicolon(records).decode("cp1252").split("\r\n")
    assert lines[:4] == ["Machine;CONTROLS-AX7", "Serial no.;50-C56Z02/1183", f"Operator;{records[0]['operator']}", "Standard;EN 1015-11"]
    assert lines[7] == "Specimen;Batch;Product;Age [d];Width [mm];Depth [mm];Area [mm²];Fmax [kN];Rc [N/mm²];Date"
    first = lines[8].split(";")
    assert first[0] == records[0]["specimen_id"] and first[6] == "1.600,0"
    assert first[7] == f"{records[0]['peak_load_kn']:.2f}".replace(".", ",")


def test_the_flexural_format_writes_one_file_per_specimen_whose_curve_peaks_at_the_load(tmp_path: Path) -> None:
    sim = LabSandbox(drop_dir=tmp_path, seed=6, fmt="flexural-per-specimen")
    session = sim.test_session(batch_ids=["B-F"])
    assert [r["test_type"] for r in session.records] == ["flexural"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, _c in session.files)
    for record, (_name, content) in zip(session.records, session.files, strict=True):
        text = content.decode("utf-8")
        assert f"Specimen ID;{record['specimen_id']}" in text and f"Batch;{record['batch_id']}" in text
        curve = text.split("Standard force [N]\r\n", 1)[1].split()
        assert max(float(line.split(";")[2].replace(",", ".")) for line in curve) == pytest.approx(record["peak_load_kn"] * 1000)


def test_sessions_in_another_format_over_real_http(tmp_path: Path) -> None:
    sim = LabSandbox(drop_dir=tmp_path, seed=4)
    with running_server(sim) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post("/_sandbox/lab/sessions", json={"batch_ids": ["B-X"], "format": "flexural-per-specimen"}).json()
        assert created["format"] == "flexural-per-specimen" and created["records"] == 3 and len(created["files"]) == 3
        assert client.get(f"/api/v1/sessions/{created['session_id']}/export").content == (tmp_path / created["files"][0]).read_bytes()
        refused = client.post("/_sandbox/lab/sessions", json={"format": "compression-semicolon", "variants": ["decimal_comma"]})
        assert refused.status_code == 400 and "drymix-simulator format only" in refused.json()["error"]
