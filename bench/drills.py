"""Fault drills on the SAP customer sync at full size (issue 12): does anything get lost, duplicated or left behind?

Run: DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/drills.py

The SAP sandbox serves 100,000 partners (1,000 a page) over real HTTP from its own process; each drill
runs the real CLI (`drymix sync sap-customers`) in a fresh process, as on-call would.

1. change: a full sync while 200 partners change in SAP mid-read (through the sandbox's control API,
   once the read is under way), plus one partner dated 2100 and one with a 10,000-character FirstName.
   Then the partners changed after it, read by an incremental sync.
2. kill: an incremental sync killed with SIGKILL mid-read, then run again to the end.

Figures (all expected 0):
- lost: partners SAP serves that are neither a customer nor an open quarantine entry;
- duplicated: partners that are both, or that have more than one open quarantine entry;
- watermark_ahead: 1 if the watermark stands after the day a read started, or after the latest
  change date of a loaded customer (it must come only from rows that loaded);
- orphans: Prefect temporary servers of killed runs still alive after the next run, plus flow runs
  still "Running" after it.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sap_sync import reset_tables, start_sandbox  # noqa: E402 - bench/ is this script's folder

BIN = Path(sys.executable).parent


def cli_env(base: str, prefect_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAP_BASE_URL=f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/",
        SAP_USERNAME="DRYMIX_INT",
        SAP_PASSWORD="sandbox-secret",
        PREFECT_HOME=str(prefect_home),
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.pop("PREFECT_API_URL", None)  # each run starts (and must clean up) its own temporary server
    return env


def api_requests(base: str) -> int:
    import httpx

    return int(httpx.get(f"{base}/_sandbox/faults", timeout=5).json()["stats"]["api_requests"])


def control(base: str, action: str, body: dict[str, Any]) -> Any:
    import httpx

    response = httpx.post(f"{base}/_sandbox/sap/{action}", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def when_requests(base: str, at_least: int, action: Any, timeout_s: float = 300) -> threading.Thread:
    """Run `action()` once the sandbox has answered `at_least` API requests (the read is under way)."""

    def wait() -> None:
        start = api_requests(base)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if api_requests(base) - start >= at_least:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "drymix"), "sync", "sap-customers", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def ledger(partners: int) -> dict[str, int]:
    """lost / duplicated / watermark figures from the ERP tables against what SAP serves."""
    from sqlalchemy import func, select

    from hub.core.db import get_engine
    from hub.core.models import Customer, QuarantinedRecord
    from hub.ledger.loading import read_cursor
    from sandbox.sap import partner_id

    with get_engine().connect() as conn:
        loaded = set(conn.execute(select(Customer.customer_id)).scalars())
        open_rows = list(
            conn.execute(
                select(QuarantinedRecord.record_key).where(
                    QuarantinedRecord.integration == "sap",
                    QuarantinedRecord.dataset == "customers",
                    QuarantinedRecord.status == "quarantined",
                )
            ).scalars()
        )
        newest_loaded = conn.execute(select(func.max(Customer.sap_changed_at))).scalar_one()
        cursor = read_cursor(conn, "sap", "customers") or {}
    served = {partner_id(i) for i in range(partners)}
    quarantined = set(open_rows)
    mark = cursor.get("last_change_date")
    ahead = 0
    if mark:
        mark_day = date.fromisoformat(mark)
        newest_day = newest_loaded.date() if newest_loaded is not None else None
        ahead = int(mark_day > datetime.now(UTC).date() or (newest_day is not None and mark_day > newest_day))
    return {
        "lost": len(served - loaded - quarantined),
        "duplicated": len(loaded & quarantined) + (len(open_rows) - len(quarantined)) + len(loaded - served),
        "watermark_ahead": ahead,
        "loaded": len(loaded),
        "quarantined": len(quarantined),
    }


def running_flow_runs(prefect_home: Path) -> int:
    import sqlite3

    db = prefect_home / "prefect.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM flow_run WHERE state_type = 'RUNNING'").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partners", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=200, help="partners changed in SAP while the full sync reads")
    args = parser.parse_args()

    import tempfile

    import psutil

    from sandbox.sap import partner_id, wire_date

    prefect_home = Path(tempfile.mkdtemp(prefix="drymix-drills-prefect-"))
    proc, base = start_sandbox(args.partners, args.page_size)
    figures: dict[str, Any] = {"partners": args.partners}
    try:
        reset_tables()
        env = cli_env(base, prefect_home)

        # 1. change: dirty partners, then 200 changes once the full read is under way.
        control(base, "set-field", {"partner": partner_id(17), "field": "LastChangeDate", "value": wire_date(date(2100, 1, 1))})
        control(base, "set-field", {"partner": partner_id(23), "field": "FirstName", "value": "X" * 10_000})
        changed: list[str] = []
        mutator = when_requests(base, 10, lambda: changed.extend(control(base, "mutate", {"count": args.changes, "seed": 5})["changed"]))
        started = time.perf_counter()
        first = sync(env, "--full-refresh")
        figures["full_sync_s"] = round(time.perf_counter() - started, 1)
        mutator.join(timeout=5)
        figures["changed_mid_read"] = len(changed)
        figures["full_sync_exit"] = first.returncode
        after_full = ledger(args.partners)
        control(base, "mutate", {"count": 50, "seed": 6})
        incremental = sync(env)
        figures["incremental_exit"] = incremental.returncode
        after_incremental = ledger(args.partners)

        # 2. kill: an incremental sync killed mid-read (after its temporary server started), then rerun.
        control(base, "mutate", {"count": 2000, "seed": 7})
        victim = subprocess.Popen(
            [str(BIN / "drymix"), "sync", "sap-customers"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        reading = api_requests(base)
        deadline = time.monotonic() + 180
        while api_requests(base) - reading < 2 and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.05)
        descendants = [p.pid for p in psutil.Process(victim.pid).children(recursive=True)] if victim.poll() is None else []
        figures["killed_mid_read"] = victim.poll() is None and api_requests(base) - reading >= 2
        figures["killed_run_processes"] = len(descendants)  # its temporary Prefect server among them
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        rerun = sync(env)
        figures["rerun_exit"] = rerun.returncode
        left = [pid for pid in descendants if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        orphans = len(left) + running_flow_runs(prefect_home)
        after_kill = ledger(args.partners)
        for pid in left:  # do not leave them behind on the benchmark machine either
            psutil.Process(pid).kill()

        for name, output in (("full", first), ("incremental", incremental), ("rerun", rerun)):
            if output.returncode != 0:
                sys.stderr.write(f"--- {name} sync (exit {output.returncode})\n{output.stdout[-2000:]}\n{output.stderr[-2000:]}\n")
        print(f"after the full sync with {len(changed)} changes mid-read: {after_full}")
        print(f"after the incremental sync: {after_incremental}")
        print(f"after a killed run and its rerun: {after_kill}; orphans {orphans}")
        figures.update(
            lost=max(after_full["lost"], after_incremental["lost"], after_kill["lost"]),
            duplicated=max(after_full["duplicated"], after_incremental["duplicated"], after_kill["duplicated"]),
            watermark_ahead=max(after_full["watermark_ahead"], after_incremental["watermark_ahead"], after_kill["watermark_ahead"]),
            orphans=orphans,
            loaded=after_kill["loaded"],
            quarantined=after_kill["quarantined"],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
