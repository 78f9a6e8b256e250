"""Debug mode for the lab: every export the collection picks up is logged (path, size, the profile that read it, or
why none did); with the lab out of debug mode nothing is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.core.settings import reset_settings_cache
from sandbox.lab import LabSandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def drop(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "lab_drop"
    folder.mkdir()
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    for name in ("INTEGRATION_DEBUG", "DEBUG_INTEGRATIONS", "LAB_DEBUG", "SAP_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    reset_settings_cache()
    yield folder
    monkeypatch.undo()
    reset_settings_cache()


def collect(drop: Path) -> dict[str, Any]:
    from flows.collect_lab_results import collect_lab_results

    return collect_lab_results(drop_dir=str(drop), settle_s=0.0)


def pickups(drop: Path) -> list[dict[str, Any]]:
    path = drop.parent / "logs" / "integration_debug.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_lab_file_pickups_are_logged_only_in_the_labs_debug_mode(drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = LabSandbox(drop_dir=drop, seed=7)
    machine.test_session(batch_ids=["B-M1-000301"])
    monkeypatch.setenv("SAP_DEBUG", "1")  # another integration in debug mode: the lab stays quiet
    reset_settings_cache()
    assert collect(drop)["exports_processed"] == 1
    assert pickups(drop) == []

    session = machine.test_session(batch_ids=["B-M1-000302"])
    (drop / "results.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # no profile reads this
    sizes = {p.name: p.stat().st_size for p in drop.iterdir() if p.is_file()}
    monkeypatch.setenv("LAB_DEBUG", "1")
    reset_settings_cache()
    collect(drop)
    logged = {Path(e["path"]).name: e for e in pickups(drop)}
    assert set(logged) == {session.file_name, "results.xlsx"}
    good, unreadable = logged[session.file_name], logged["results.xlsx"]
    assert (good["integration"], good["kind"], good["status"], good["size"]) == ("lab", "lab_file", "processed", sizes[session.file_name])
    assert good["profile"] and not good["unmatched"] and good["rows"] == len(session.records) and len(good["sha256"]) == 64
    assert (unreadable["status"], unreadable["size"], unreadable["profile"]) == ("rejected", 68, None)
    assert unreadable["reason"]
