"""The stack supervisor (`drymix stack up|down|status`): the plan it runs, restarts, and a clean stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hub.deploy import secret_block_names
from hub.settings import ROOT
from hub.stack import (
    ProcessSpec,
    StackPlan,
    alive,
    plan_stack,
    read_json,
    sandbox_commands,
    stack_status,
    start_supervisor,
    stop_stack,
)

SLEEPER = ProcessSpec(
    "sleeper",
    # Spawns a grandchild, as `prefect server start` and the process worker do.
    [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"],
)


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DRYMIX_STACK_DIR", str(tmp_path))
    return tmp_path


def _wait(predicate, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_plan_runs_every_registered_simulator_and_wires_the_known_ones(stack_dir: Path) -> None:
    plan = plan_stack(sandbox=True, fixed_ports=False)
    names = [p.name for p in plan.processes]
    assert names[0] == "prefect-server" and "webhook-ingress" in names and "worker-1" in names
    assert {f"sandbox-{n}" for n in sandbox_commands()} <= set(names)
    sap = next(p for p in plan.processes if p.name == "sandbox-sap")
    assert plan.worker_env["SAP_BASE_URL"].startswith(sap.url + "/sap/opu/odata/")
    ingress = next(p for p in plan.processes if p.name == "webhook-ingress")
    razorpay = next(p for p in plan.processes if p.name == "sandbox-razorpay")
    assert razorpay.argv[razorpay.argv.index("--webhook-url") + 1] == ingress.url + "/webhooks/razorpay"
    assert ingress.env["RAZORPAY_WEBHOOK_SECRETS"]
    # Credentials reach the flows as Secret blocks, never through the worker's environment.
    assert set(plan.secrets) <= set(secret_block_names().values())
    assert not set(plan.secrets.values()) & set(plan.worker_env.values())
    assert not {f.upper() for f in secret_block_names()} & set(plan.worker_env)
    ports = [p.url for p in plan.processes if p.url]
    assert len(ports) == len(set(ports))


def test_production_plan_runs_no_simulator(stack_dir: Path) -> None:
    plan = plan_stack(sandbox=False, workers=2, fixed_ports=False)
    assert [p.name for p in plan.processes] == ["prefect-server", "webhook-ingress", "worker-1", "worker-2"]
    assert plan.secrets == {}


def test_supervisor_restarts_a_dead_process_and_stop_leaves_nothing_running(stack_dir: Path) -> None:
    plan = StackPlan(api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", sandbox=False, processes=[SLEEPER])
    start_supervisor(plan)
    try:
        _wait(lambda: any(p["status"] == "running" for p in (read_json(stack_dir / "state.json") or {}).get("processes", [])))
        first = read_json(stack_dir / "state.json")["processes"][0]
        _wait(lambda: bool(psutil.Process(first["pid"]).children()))
        grandchild = psutil.Process(first["pid"]).children()[0].pid
        psutil.Process(first["pid"]).kill()
        _wait(lambda: read_json(stack_dir / "state.json")["processes"][0]["restarts"] == 1)
        second = read_json(stack_dir / "state.json")["processes"][0]
        assert second["pid"] != first["pid"] and alive(second["pid"], second["started"])
        assert not alive(grandchild), "what a dead process left behind is stopped with it"
        status = stack_status()
        assert status["running"] and status["processes"][0]["alive"]
        _wait(lambda: bool(psutil.Process(second["pid"]).children()))
        grandchild = psutil.Process(second["pid"]).children()[0].pid
    finally:
        stopped = stop_stack()
    assert "supervisor" in stopped
    state = read_json(stack_dir / "state.json")
    assert not alive(state["supervisor_pid"], state["supervisor_started"])
    assert not alive(second["pid"], second["started"])
    _wait(lambda: not alive(grandchild), 10)
    assert not stack_status()["running"]


def test_status_command_says_not_running_and_exits_non_zero(stack_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "stack", "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False


def test_workers_start_only_once_the_deployments_are_registered(stack_dir: Path) -> None:
    from hub.stack import release_workers

    waiting = ProcessSpec("waiting", [sys.executable, "-c", "import time; time.sleep(600)"], start_after="registered")
    plan = StackPlan(api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", sandbox=False, processes=[SLEEPER, waiting])
    start_supervisor(plan)
    try:
        _wait(lambda: [p["status"] for p in (read_json(stack_dir / "state.json") or {}).get("processes", [])][:1] == ["running"])
        time.sleep(1.5)
        assert read_json(stack_dir / "state.json")["processes"][1]["status"] == "pending"
        release_workers()
        _wait(lambda: read_json(stack_dir / "state.json")["processes"][1]["status"] == "running")
        waited = read_json(stack_dir / "state.json")["processes"][1]
        assert alive(waited["pid"], waited["started"])
    finally:
        stop_stack()
    assert not alive(waited["pid"], waited["started"])
