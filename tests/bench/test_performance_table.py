"""bench/performance_table.py at a tiny size: every row of the plan's table is printed, with its figures and flags.

No timing is asserted: the machine running the tests is shared, and the figures belong to `make bench`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPEN_LOOP_ROWS = {
    "razorpay_create_order", "razorpay_verify_payment", "whatsapp_send_message", "microsoft365_upload",
    "google_calendar_event", "plant_read_status", "lab_read_test",
}
FIGURES = ("target_ms", "target_per_s", "p50_ms", "p95_ms", "p99_ms", "per_s")


def run_table(*args: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Run the table runner; (the per-row JSON lines, the last line's object, everything printed)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "performance_table.py"), *args],
        cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    per_row = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    return per_row, last, out.stdout


def check_row(row: dict[str, Any]) -> None:
    for name in FIGURES:
        assert isinstance(row[name], int | float) and row[name] >= 0, (row["row"], name, row[name])
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert isinstance(row["ops"], int) and row["ops"] > 0
    for flag in ("meets", "meets_latency", "meets_throughput"):
        assert isinstance(row[flag], bool), (row["row"], flag)
    # meets is both targets, never one of them.
    assert row["meets"] == (row["meets_latency"] and row["meets_throughput"]) or row["row"] == "sap_sync_customer"


def test_every_open_loop_row_is_printed_with_figures_and_meets_flags(db: str) -> None:
    systems = ("razorpay", "whatsapp", "microsoft365", "google", "plant", "lab")
    per_row, last, printed = run_table("--seconds", "0.3", *(arg for s in systems for arg in ("--only", s)))

    assert {r["row"] for r in per_row} == OPEN_LOOP_ROWS
    assert last["rows"] == per_row  # the last line repeats every row, in the same order
    assert isinstance(last["meets"], bool) and last["meets"] == all(r["meets"] for r in per_row)
    for row in per_row:
        check_row(row)
        assert row["row"] in printed.split("{", 1)[0]  # the table before the JSON names the row
    verify = next(r for r in per_row if r["row"] == "razorpay_verify_payment")
    # End to end through the hub's checkout callback (stored order, signature, payments row), not a bare HMAC;
    # every timed call a first callback of its own order (the write path, not a replay).
    assert "confirm_checkout" in verify["operation"] and verify["extra"]["callbacks"] == verify["ops"]
    upload = next(r for r in per_row if r["row"] == "microsoft365_upload")
    assert upload["latency_unit"] == "ms/MB"


@pytest.mark.deploy
def test_sap_row_comes_from_the_writeback_benchmark(db: str) -> None:
    """Slow (bench/sap_writeback.py starts a temporary Prefect server): run with -m deploy."""
    per_row, last, _ = run_table("--only", "sap", "--sap-creates", "4", "--sap-updates", "2")

    assert [r["row"] for r in per_row] == ["sap_sync_customer"] == [r["row"] for r in last["rows"]]
    check_row(per_row[0])
    assert per_row[0]["ops"] == 6 and per_row[0]["extra"]["failed"] == 0
