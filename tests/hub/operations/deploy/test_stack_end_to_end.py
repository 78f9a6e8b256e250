"""The hub run like production: a real Prefect server and real workers (subprocesses under the stack's
supervisor), deployments registered from prefect.yaml, runs triggered and retried through the Prefect API
and CLI, the SAP sandbox over real HTTP, rows checked in the ERP database.

Slow (a server, two workers, one flow-run process per run): select with `-m deploy`, skip with `-m "not deploy"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from hub.core.settings import all_integrations
from hub.operations.deploy import bootstrap, declared_deployments, set_paused
from hub.operations.stack import (
    alive,
    plan_stack,
    read_json,
    release_workers,
    stack_dir,
    start_supervisor,
    stop_stack,
    wait_for_http,
)
from sandbox.core import SandboxRequest, SandboxResponse, running_server
from sandbox.sap import SapSandbox

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(600)]

PARTNERS = 60
SECRET_ENV = ("SAP_PASSWORD", "SAP_CLIENT_SECRET", "RAZORPAY_KEY_SECRET", "WHATSAPP_ACCESS_TOKEN")


class RecordingSap(SapSandbox):
    """The SAP sandbox, remembering when each API request (not control route) arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[float] = []
        self._calls_lock = threading.Lock()

    def dispatch(self, req: SandboxRequest) -> SandboxResponse:
        if not req.path.startswith("/_sandbox"):
            with self._calls_lock:
                self.calls.append(time.time())
        return super().dispatch(req)


@dataclass
class Stack:
    api_url: str
    sap_url: str
    sandbox: RecordingSap
    directory: Path


@pytest.fixture(scope="module")
def stack(migrated_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    sandbox = RecordingSap(partners=PARTNERS, max_page_size=10, seed=7)
    with running_server(sandbox) as sap_url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRYMIX_STACK_DIR", str(directory))
        # Workers see no secret in their environment: the flows must get them from the Secret blocks.
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and k != "PREFECT_API_DATABASE_CONNECTION_URL"}
        env.update(
            {
                "DRYMIX_STACK_DIR": str(directory),
                "SAP_BASE_URL": sap_url + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/",
                # The lab tester's drop folder, as `drymix stack up` shares it between simulator and worker.
                "LAB_DROP_DIR": str(directory / "lab_drop"),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                # No scheduled runs during the test: only the runs it triggers.
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            }
        )
        plan = plan_stack(sandbox=False, workers=2, worker_limit=1, fixed_ports=False)
        start_supervisor(plan, env=env)
        try:
            assert wait_for_http(plan.api_url + "/health", 240), _logs(directory)
            report = bootstrap(
                plan.api_url,
                secrets={
                    "sap-password": sandbox.password,
                    "sap-client-secret": sandbox.client_secret,
                    "razorpay-key-secret": "sandbox-key-secret",
                    "whatsapp-access-token": "sandbox-whatsapp-token",
                },
            )
            assert sorted(report.deployments) == sorted(d.full_name for d in declared_deployments())
            release_workers()
            _wait_workers(plan.api_url, 2, directory)
            yield Stack(plan.api_url, sap_url, sandbox, directory)
        finally:
            state = read_json(stack_dir() / "state.json") or {}
            stop_stack()
            leftovers = [p["name"] for p in state.get("processes", []) if alive(p.get("pid"), p.get("started"))]
            assert not leftovers, f"still running after stop_stack: {leftovers}"


def _logs(directory: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(directory.glob("*.log")))


def _client(api_url: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self) -> Any:
            self.settings = temporary_settings({PREFECT_API_URL: api_url})
            self.settings.__enter__()
            self.client = get_client(sync_client=True)
            return self.client.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return _Ctx()


def _wait_workers(api_url: str, count: int, directory: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    with _client(api_url) as client:
        while time.monotonic() < deadline:
            online = [w for w in client.read_workers_for_work_pool("drymix-process") if str(w.status.value).upper() == "ONLINE"]
            if len(online) >= count:
                return
            time.sleep(1)
    raise AssertionError(f"{count} workers did not come online\n{_logs(directory)}")


def _trigger(api_url: str, name: str, parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        return run_deployment(name, parameters=parameters, timeout=0)


def _wait_final(api_url: str, flow_run_id: Any, directory: Path, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    with _client(api_url) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s}s\n{_logs(directory)}")


def _executed(worker_log: str, flow_run_id: str) -> bool:
    """The worker submitted the run and was not the one of two that lost the race to claim it."""
    return (
        f"submitting flow run '{flow_run_id}'" in worker_log
        and f"Aborted submission of flow run '{flow_run_id}'" not in worker_log
    )


def _customers(url: str) -> tuple[int, int, dict[str, str]]:
    from hub.core.db import get_engine

    with get_engine().connect() as conn:
        total, distinct = conn.execute(text("SELECT count(*), count(DISTINCT customer_id) FROM customers")).one()
        runs = dict(conn.execute(text("SELECT customer_id, source_run_id FROM customers")).all())
    return int(total), int(distinct), {str(k): str(v) for k, v in runs.items()}


SAP = "sync-sap-customers/sync-sap-customers"
LAB = "collect-lab-results/collect-lab-results"


def test_registered_deployments_carry_schedules_from_config_and_no_secrets(stack: Stack) -> None:
    from hub.operations.deploy import configured_schedules

    secrets = {stack.sandbox.password, stack.sandbox.client_secret, "sandbox-key-secret", "sandbox-whatsapp-token"}
    configs = configured_schedules()
    with _client(stack.api_url) as client:
        for declared in declared_deployments():
            registered = client.read_deployment_by_name(declared.full_name)
            assert registered.work_pool_name == "drymix-process"
            crons = sorted(s.schedule.cron for s in registered.schedules)
            assert crons == sorted(configs[i] for i in declared.integrations)
            exposed = json.dumps(
                {"job_variables": registered.job_variables, "parameters": registered.parameters, "pull": registered.pull_steps},
                default=str,
            )
            for secret in secrets:
                assert secret not in exposed, f"{declared.full_name} shows a secret in the Prefect UI"
            for env_name in SECRET_ENV:
                assert env_name not in exposed


def test_deployment_runs_through_the_api_load_rows_and_two_workers_share_one_rate_limit(stack: Stack, db: str) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate, GlobalConcurrencyLimitUpdate

    rate = 2.0
    with _client(stack.api_url) as client:
        deployment = client.read_deployment_by_name(SAP)
        # In production two SAP customer syncs never overlap (one run at a time); proving that two workers
        # share one rate budget needs two SAP runs at once, so this test lifts that limit for its two runs.
        assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
        client.update_deployment(deployment.id, DeploymentUpdate(concurrency_limit=2))
        client.update_global_concurrency_limit("rate:sap", GlobalConcurrencyLimitUpdate(limit=int(rate), slot_decay_per_second=rate))
    try:
        # Let any slot taken earlier decay, then two runs at once, triggered through the Prefect API:
        # each worker (--limit 1) executes one, against the sandbox over HTTP.
        time.sleep(2)
        stack.sandbox.calls.clear()
        runs = [_trigger(stack.api_url, SAP, {"full_refresh": True, "page_size": 10, "batch_pages": 1}) for _ in range(2)]
        finished = [_wait_final(stack.api_url, r.id, stack.directory) for r in runs]
    finally:
        with _client(stack.api_url) as client:
            client.update_global_concurrency_limit("rate:sap", GlobalConcurrencyLimitUpdate(limit=20, slot_decay_per_second=20.0))
            client.update_deployment(deployment.id, DeploymentUpdate(concurrency_limit=1))
    for run in finished:
        assert run.state.is_completed(), f"{run.state}\n{_logs(stack.directory)}"

    # The rows are in the ERP database, once each, written by these runs.
    total, distinct, loaded_by = _customers(db)
    assert total == distinct > PARTNERS // 2  # the sandbox's deliberately dirty partners are quarantined
    assert set(loaded_by.values()) <= {str(r.id) for r in finished}

    # Each run was executed by a different worker, at overlapping times.
    logs = {p.name: p.read_text(errors="replace") for p in stack.directory.glob("worker-*.log")}
    executed_by = {str(run.id): [name for name, log in logs.items() if _executed(log, str(run.id))] for run in finished}
    assert sorted(sum(executed_by.values(), [])) == ["worker-1.log", "worker-2.log"], f"{executed_by}\n{_logs(stack.directory)}"
    # Each read its pages in its extract process, whose calls took their slots through the run's process.
    assert all("pages are read and mapped in process" in log for log in logs.values()), _logs(stack.directory)
    (a_start, a_end), (b_start, b_end) = ((r.start_time, r.end_time) for r in finished)
    assert a_start < b_end and b_start < a_end, "the two runs must overlap for the limit to be shared"

    calls = sorted(stack.sandbox.calls)
    assert len(calls) >= 12  # 60 partners in pages of 10, twice
    # A slot-decay limit allows a burst of `limit`, then `rate` per second: in any window of w seconds at
    # most limit + rate * w calls (one call of slack for clock granularity). Each worker alone would allow
    # 20/s (its in-process budget), so two together without the shared limit would exceed this at once.
    for i, start in enumerate(calls):
        for j in range(i, len(calls)):
            window = calls[j] - start
            assert j - i + 1 <= rate + rate * window + 1, f"{j - i + 1} calls in {window:.2f}s exceed {rate}/s"
    assert calls[-1] - calls[0] >= (len(calls) - rate - 1) / rate


def test_failed_run_retried_the_on_call_way_succeeds_without_duplicates(stack: Stack, migrated_db: str) -> None:
    # Runs after the test above (file order) and keeps its rows: the rerun must not duplicate them.
    before, _, _ = _customers(migrated_db)
    changed = httpx.post(f"{stack.sap_url}/_sandbox/sap/mutate", json={"count": 5, "seed": 3}).json()["changed"]
    # SAP fails every request (503): the run fails after its retries and records the error.
    httpx.put(f"{stack.sap_url}/_sandbox/faults", json={"error_5xx_every_n": 1, "error_5xx_status": 503}).raise_for_status()
    try:
        failed = _trigger(stack.api_url, SAP, {"page_size": 10})
        failed = _wait_final(stack.api_url, failed.id, stack.directory)
    finally:
        httpx.delete(f"{stack.sap_url}/_sandbox/faults").raise_for_status()
    assert failed.state.is_failed(), f"{failed.state}\n{_logs(stack.directory)}"
    assert _open_errors(str(failed.id)) >= 1

    # SAP has recovered; on-call retries the failed run with the Prefect CLI and a worker reruns it.
    retry = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "flow-run", "retry", str(failed.id)],
        env={**os.environ, "PREFECT_API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr
    rerun = _wait_final(stack.api_url, failed.id, stack.directory)
    assert rerun.state.is_completed(), f"{rerun.state}\n{_logs(stack.directory)}"
    total, distinct, loaded_by = _customers(migrated_db)
    assert total == distinct, "the rerun must not duplicate rows"
    assert before == 0 or total == before
    loaded_changes = [c for c in changed if c in loaded_by]
    assert loaded_changes and all(loaded_by[c] == str(failed.id) for c in loaded_changes)
    assert _open_errors(str(failed.id)) == 0, "the successful rerun resolves the error it had recorded"


def _open_errors(flow_run_id: str) -> int:
    from hub.core.db import get_engine

    with get_engine().connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM integration_errors WHERE flow_run_id = :r AND status <> 'resolved'"), {"r": flow_run_id}
            ).scalar_one()
        )


def test_lab_exports_the_tester_drops_are_collected_by_a_deployment_run_on_a_worker(stack: Stack, db: str) -> None:
    from sandbox.lab import LabSandbox

    drop = stack.directory / "lab_drop"
    session = LabSandbox(drop_dir=drop, seed=11).test_session()
    run = _trigger(stack.api_url, LAB, {"settle_s": 0})
    run = _wait_final(stack.api_url, run.id, stack.directory)
    assert run.state.is_completed(), f"{run.state}\n{_logs(stack.directory)}"

    from hub.core.db import get_engine

    with get_engine().connect() as conn:
        loaded = conn.execute(text("SELECT count(*) FROM lab_results")).scalar_one()
        status = conn.execute(text("SELECT status, flow_run_id FROM lab_exports WHERE file_name = :f"), {"f": session.file_name}).one()
    assert loaded == len(session.records)
    assert tuple(status) == ("processed", str(run.id))
    # The export left the drop folder for the archive: the next run does not read it again.
    assert not (drop / session.file_name).exists() and (drop / "processed").is_dir()


def test_pause_and_resume_all_declared_deployments(stack: Stack) -> None:
    with _client(stack.api_url) as client:
        paused = set_paused(client, True)
        assert sorted(paused) == sorted(d.full_name for d in declared_deployments())
        assert all(client.read_deployment_by_name(name).paused for name in paused)
        set_paused(client, False)
        assert not any(client.read_deployment_by_name(name).paused for name in paused)


def _plant_simulator(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`drymix sandbox plant` on a free port, as the stack runs it (its own process, asyncua server)."""
    from hub.operations.stack import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "sandbox", "plant", "--port", str(port), "--state-file", str(directory / "plant-state.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc, port
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the plant simulator did not listen in time")


def test_smoke_is_green_on_a_healthy_deployment_and_names_what_fails(stack: Stack, tmp_path: Path) -> None:
    from sandbox.google_calendar import GoogleCalendarSandbox, generate_service_account
    from sandbox.microsoft365 import Microsoft365Sandbox
    from sandbox.razorpay import RazorpaySandbox
    from sandbox.whatsapp import WhatsAppSandbox

    account = generate_service_account()
    key_file = tmp_path / "google-key.json"
    key_file.write_text(account.key_file_json(), encoding="utf-8")
    (tmp_path / "lab_drop").mkdir()
    razorpay, whatsapp, graph, google = RazorpaySandbox(), WhatsAppSandbox(), Microsoft365Sandbox(), GoogleCalendarSandbox(service_account=account)
    plant, plant_port = _plant_simulator(tmp_path)
    try:
        with (
            running_server(razorpay) as razorpay_url,
            running_server(whatsapp) as whatsapp_url,
            running_server(graph) as graph_url,
            running_server(google) as google_url,
        ):
            env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
            env.update(
                {
                    "SAP_BASE_URL": stack.sap_url + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/",
                    "RAZORPAY_BASE_URL": razorpay_url + "/v1/",
                    "WHATSAPP_BASE_URL": whatsapp_url + "/v21.0/",
                    "MICROSOFT365_BASE_URL": graph_url + "/v1.0/",
                    "MICROSOFT365_TOKEN_URL": graph_url + "/{tenant}/oauth2/v2.0/token",
                    "GOOGLE_BASE_URL": google_url + "/calendar/v3/",
                    "GOOGLE_TOKEN_URL": google_url + "/token",
                    "GOOGLE_SERVICE_ACCOUNT_FILE": str(key_file),
                    "PLANT_OPCUA_URL": f"opc.tcp://127.0.0.1:{plant_port}/drymix/plant/",
                    "LAB_DROP_DIR": str(tmp_path / "lab_drop"),
                }
            )

            def smoke() -> tuple[int, dict[str, Any]]:
                done = subprocess.run(
                    [sys.executable, "-m", "hub.cli.main", "smoke", "--api-url", stack.api_url, "--no-runs", "--json"],
                    env=env, capture_output=True, text=True, timeout=180, check=False,
                )
                return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])

            code, report = smoke()
            failed = [c for c in report["checks"] if not c["ok"]]
            assert code == 0 and report["ok"], failed
            groups = {c["group"] for c in report["checks"]}
            assert {"database", "prefect", "deployment", "rate limit", "connection"} <= groups
            connected = {c["name"] for c in report["checks"] if c["group"] == "connection" and not c["skipped"]}
            assert connected == set(all_integrations()), "smoke tests the connection of every integration"

            # Maintenance left on and a wrong credential: red, with the reasons.
            with _client(stack.api_url) as client:
                set_paused(client, True, ["reconcile-razorpay"])
            env["RAZORPAY_KEY_SECRET"] = "not-the-key"
            try:
                code, report = smoke()
            finally:
                with _client(stack.api_url) as client:
                    set_paused(client, False, ["reconcile-razorpay"])
            failed = {(c["group"], c["name"]): c["detail"] for c in report["checks"] if not c["ok"]}
            assert code == 1 and not report["ok"]
            assert set(failed) == {("deployment", "reconcile-razorpay/reconcile-razorpay"), ("connection", "razorpay")}
            assert "paused" in failed[("deployment", "reconcile-razorpay/reconcile-razorpay")]
            assert "not-the-key" not in json.dumps(report)
    finally:
        plant.terminate()
        plant.wait(timeout=30)
        razorpay.close()  # their webhook delivery threads
        whatsapp.close()
