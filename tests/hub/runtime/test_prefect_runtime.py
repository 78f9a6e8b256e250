"""Nothing orphaned: a CLI run killed mid-flow leaves its temporary Prefect server and a Running flow run behind;
the next CLI flow run stops that server and marks the run Crashed. Real processes, a real kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from sandbox.core import running_server
from sandbox.sap import SapSandbox
from tests.hub.cli.test_cli import ROOT


def cli_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # no server: Prefect starts a temporary one
    return {**env, "PREFECT_HOME": str(prefect_home), "COLUMNS": "240", **extra}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_cli_run_leaves_no_server_behind_and_its_flow_run_is_marked_crashed(db: str, tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    sandbox = SapSandbox(partners=200, seed=3, max_page_size=100)
    reading, release = threading.Event(), threading.Event()
    dispatch = sandbox.dispatch

    def hold_reads(req: Any) -> Any:
        if "A_BusinessPartner" in req.path:
            reading.set()
            release.wait(60)  # the run is mid-flow, waiting for SAP, when it is killed
        return dispatch(req)

    sandbox.dispatch = hold_reads  # type: ignore[method-assign]
    with running_server(sandbox) as base:
        env = cli_env(home, SAP_BASE_URL=f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        first = subprocess.Popen(
            [sys.executable, "-m", "hub.cli.main", "sync", "sap-customers"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert reading.wait(180), "the CLI run never reached SAP"
            record_file = home / "cli-runs" / f"{first.pid}.json"
            record = json.loads(record_file.read_text())
            assert record["server_pid"] and record["tag"].startswith("cli-run-")
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        finally:
            release.set()
            if first.poll() is None:
                first.kill()
    orphan = psutil.Process(record["server_pid"])
    assert orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE, "the killed CLI's temporary server is orphaned"

    second = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "webhooks", "process", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"stopped the temporary Prefect server (pid {record['server_pid']}" in second.stderr
    assert "flow run(s) of the CLI run that died" in second.stderr
    wait_for(lambda: gone(record["server_pid"]), 10, "the orphaned server to exit")
    assert list((home / "cli-runs").glob("*.json")) == []  # the dead run's record reclaimed, the second's removed at exit
    with sqlite3.connect(home / "prefect.db") as conn:
        runs = conn.execute("SELECT state_type, state_name, tags FROM flow_run").fetchall()
    by_tag = {tag: (state_type, state_name) for state_type, state_name, tags in runs for tag in json.loads(tags)}
    assert by_tag[record["tag"]] == ("CRASHED", "Crashed")
    assert [s for s, _, tags in runs if record["tag"] not in json.loads(tags)] == ["COMPLETED"]  # the second run's own
