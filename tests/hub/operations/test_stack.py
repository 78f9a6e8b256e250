"""The stack supervisor (`drymix stack up|down|status`): the plan it runs, restarts, and a clean stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hub.core.settings import ROOT
from hub.operations.deploy import secret_block_names
from hub.operations.stack import (
    SECOND_SHAPES,
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
    assert {f"sandbox-{n}" for n in sandbox_commands() if n not in SECOND_SHAPES} <= set(names)
    assert not {f"sandbox-{n}" for n in SECOND_SHAPES} & set(names), "a second server shape runs on demand only"
    assert set(SECOND_SHAPES.values()) <= set(sandbox_commands()), "a second shape names a simulator the stack runs"
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
        [sys.executable, "-m", "hub.cli.main", "stack", "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False


def test_workers_start_only_once_the_deployments_are_registered(stack_dir: Path) -> None:
    from hub.operations.stack import release_workers

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


def _canonical_simulators() -> dict[str, str]:
    """Every name `drymix sandbox --help` lists (aliases included) -> the simulator it starts."""
    from hub.cli.main import sandbox_app

    first: dict[object, str] = {}
    names = {}
    for command in sandbox_app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.removeprefix("sandbox_").replace("_", "-")
        names[name] = first.setdefault(command.callback, name)
    return names


def test_every_simulator_drymix_sandbox_lists_is_wired_and_an_alias_starts_once(stack_dir: Path) -> None:
    from typer.testing import CliRunner

    from hub.cli.main import app
    from hub.operations.stack import sandbox_wiring

    listed = {name: simulator for name, simulator in _canonical_simulators().items() if name not in SECOND_SHAPES}
    help_text = CliRunner().invoke(app, ["sandbox", "--help"], terminal_width=200).output
    assert all(name in help_text for name in listed), help_text
    assert listed["graph"] == "microsoft365", "graph is an alias of microsoft365"

    plan = plan_stack(sandbox=True, fixed_ports=False)
    simulators = [p for p in plan.processes if p.name.startswith("sandbox-")]
    # One process per simulator: an alias does not start a second copy.
    assert sorted(p.name for p in simulators) == sorted(f"sandbox-{n}" for n in set(listed.values()))
    for name, simulator in sorted(listed.items()):
        # A new `drymix sandbox <name>` fails here until sandbox_wiring() in hub/operations/stack.py wires it.
        assert sandbox_wiring(simulator) is not None, f"`drymix sandbox {name}` is not wired in sandbox_wiring()"
    assert not [p.name for p in simulators if p.note], "every simulator is wired"
    assert not [k for k in plan.worker_env if k.startswith("DRYMIX_SANDBOX_")]
    assert set(plan.secrets) == {b for n in set(listed.values()) for b in sandbox_wiring(n).secrets}  # type: ignore[union-attr]


def _arg(spec: ProcessSpec, option: str) -> str:
    return spec.argv[spec.argv.index(option) + 1]


def test_new_simulators_are_reached_at_their_addresses_with_state_under_the_stack_directory(stack_dir: Path) -> None:
    from sandbox.microsoft365 import Microsoft365Sandbox

    plan = plan_stack(sandbox=True, fixed_ports=False)
    process = {p.name: p for p in plan.processes}
    env = plan.worker_env

    graph = process["sandbox-microsoft365"]
    assert env["MICROSOFT365_BASE_URL"] == f"{graph.url}/v1.0/"
    assert env["MICROSOFT365_TOKEN_URL"] == f"{graph.url}/{{tenant}}/oauth2/v2.0/token"
    m365 = Microsoft365Sandbox()
    assert (env["MICROSOFT365_TENANT_ID"], env["MICROSOFT365_CLIENT_ID"], env["MICROSOFT365_DRIVE_ID"]) == (m365.tenant_id, m365.client_id, m365.drive_id)
    assert env["MICROSOFT365_CALENDAR_USER"] in m365.users
    assert plan.secrets["microsoft365-client-secret"] == m365.client_secret

    google = process["sandbox-google"]
    assert (env["GOOGLE_BASE_URL"], env["GOOGLE_TOKEN_URL"]) == (f"{google.url}/calendar/v3/", f"{google.url}/token")
    key_file = Path(_arg(google, "--service-account-file"))
    assert key_file.parent == stack_dir and key_file.stat().st_mode & 0o077 == 0, "the key file is the owner's only"
    assert json.loads(plan.secrets["google-service-account-json"])["type"] == "service_account"
    assert key_file.read_text() == plan.secrets["google-service-account-json"]

    plant = process["sandbox-plant"]
    assert plant.url is not None and plant.url.startswith("opc.tcp://127.0.0.1:") and plant.url.endswith("/drymix/plant/")
    assert env["PLANT_OPCUA_URL"] == plant.url and _arg(plant, "--port") in plant.url
    assert Path(_arg(plant, "--state-file")).parent == stack_dir
    assert Path(env["PLANT_OPCUA_BUFFER_DIR"]).parent == stack_dir

    lab = process["sandbox-lab"]
    # The tester writes where the worker collects; with --port it keeps running (and serving its API).
    assert _arg(lab, "--drop-dir") == env["LAB_DROP_DIR"] and Path(env["LAB_DROP_DIR"]).parent == stack_dir
    assert "--port" in lab.argv and float(_arg(lab, "--interval-s")) > 0

    # A second plan (the next `make up`) keeps the key the Secret block holds.
    assert plan_stack(sandbox=True, fixed_ports=False).secrets["google-service-account-json"] == plan.secrets["google-service-account-json"]


def test_google_simulator_started_with_the_stack_key_accepts_the_connector_using_it(stack_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import reset_settings_cache
    from hub.runtime.connections import build_google_workspace_connector
    from sandbox.core import as_transport
    from sandbox.google_calendar import GoogleCalendarSandbox, load_service_account

    plan = plan_stack(sandbox=True, fixed_ports=False)
    key_json = plan.secrets["google-service-account-json"]
    google = next(p for p in plan.processes if p.name == "sandbox-google")
    # What `drymix sandbox google --service-account-file` does with the file.
    sandbox = GoogleCalendarSandbox(service_account=load_service_account(Path(_arg(google, "--service-account-file")).read_text()))
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT_JSON", key_json)
    monkeypatch.delenv("GOOGLE_SERVICE_ACCOUNT_FILE", raising=False)
    monkeypatch.setenv("GOOGLE_DELEGATED_SUBJECT", plan.worker_env["GOOGLE_DELEGATED_SUBJECT"])
    monkeypatch.setenv("GOOGLE_CALENDAR_ID", plan.worker_env["GOOGLE_CALENDAR_ID"])
    reset_settings_cache()
    try:
        with build_google_workspace_connector(transport=as_transport(sandbox)) as connector:
            result = connector.test_connection()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert result.ok, result.detail
    assert sandbox.token_requests == 1


def test_smoke_checks_the_connection_of_every_configured_integration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import all_integrations, reset_settings_cache
    from hub.operations.smoke import check_lab, connection_checks

    checks = connection_checks()
    assert set(checks) == set(all_integrations())
    assert not [name for name, check in checks.items() if check is None], "smoke must test every integration's connection"

    monkeypatch.setenv("LAB_DROP_DIR", str(tmp_path / "missing"))
    reset_settings_cache()
    try:
        with pytest.raises(RuntimeError, match="does not exist"):
            check_lab()
        (tmp_path / "missing").mkdir()
        assert "readable and writable" in check_lab()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
