"""The local production stack: a small process supervisor for the Prefect server, the worker, the webhook
ingress and (in sandbox mode) the simulator of every registered dataset (hub/datasets.py `simulator`).

`drymix stack up` plans the processes (free ports, environment), starts `drymix stack supervise` detached,
waits for the Prefect server, then registers the work pool, the Secret blocks, the rate limits and the
deployments. The supervisor starts each child in its own process group, restarts one that dies (with a
back-off, a bounded number of times) and, on SIGTERM (`drymix stack down`), stops every group it started.
State lives in var/stack/ (DRYMIX_STACK_DIR): plan.json, state.json, one log per process.

Hand-written rather than supervisord/honcho: those are not dependencies of the hub, and the plan here is
computed (free ports, the sandboxes registered at runtime, their credentials) rather than a static file.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from hub.core.settings import ROOT

log = logging.getLogger(__name__)

SERVER_PORT = 4200
INGRESS_PORT = 8480
RESTART_LIMIT = 5  # restarts of one process within RESTART_WINDOW_S before the supervisor gives up on it
RESTART_WINDOW_S = 120.0
STOP_GRACE_S = 10.0
REGISTERED_FLAG = "registered"


def stack_dir() -> Path:
    return Path(os.environ.get("DRYMIX_STACK_DIR") or ROOT / "var" / "stack")


def bin_path(name: str) -> str:
    """An executable of this virtualenv (drymix, prefect)."""
    return str(Path(sys.executable).parent / name)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pick_port(preferred: int | None, taken: set[int]) -> int:
    """`preferred` when it is free (a stable URL for people), else any free port."""
    if preferred and preferred not in taken and port_free(preferred):
        taken.add(preferred)
        return preferred
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


# -- what each simulator needs wired ---------------------------------------------------------------


@dataclass
class SandboxWiring:
    """How the hub reaches one simulator: worker environment ({url} = its address), Secret blocks, ingress.

    `args` are appended to the simulator's command line (state files, folders, speed); `url` is its address
    with {port} the port the plan picked (an OPC UA server is not reached over http://).
    """

    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    ingress_env: dict[str, str] = field(default_factory=dict)
    webhook_path: str | None = None
    args: list[str] = field(default_factory=list)
    url: str = "http://127.0.0.1:{port}"


def _defaults(cls: type) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def sandbox_wiring(name: str) -> SandboxWiring | None:
    """Wiring of the simulators the hub has connectors for (credentials are the simulator's own defaults).

    A simulator without an entry here still runs under the stack; its URL is given to the worker as
    DRYMIX_SANDBOX_<NAME>_URL and `drymix stack status` says it is not wired yet.
    """
    state = stack_dir()
    if name == "sap":
        from sandbox.sap import SapSandbox

        d = _defaults(SapSandbox)
        return SandboxWiring(
            env={"SAP_BASE_URL": "{url}/sap/opu/odata/sap/API_BUSINESS_PARTNER/", "SAP_USERNAME": d["username"], "SAP_CLIENT_ID": d["client_id"]},
            secrets={"sap-password": d["password"], "sap-client-secret": d["client_secret"]},
        )
    if name == "razorpay":
        from sandbox.razorpay import RazorpaySandbox

        d = _defaults(RazorpaySandbox)
        return SandboxWiring(
            env={"RAZORPAY_BASE_URL": "{url}/v1/", "RAZORPAY_KEY_ID": d["key_id"]},
            secrets={"razorpay-key-secret": d["key_secret"]},
            ingress_env={"RAZORPAY_WEBHOOK_SECRETS": d["webhook_secret"]},
            webhook_path="/webhooks/razorpay",
        )
    if name == "whatsapp":
        from sandbox.whatsapp import WhatsAppSandbox

        d = _defaults(WhatsAppSandbox)
        return SandboxWiring(
            env={"WHATSAPP_BASE_URL": "{url}/v21.0/", "WHATSAPP_PHONE_NUMBER_ID": d["phone_number_id"]},
            secrets={"whatsapp-access-token": d["access_token"]},
            ingress_env={"WHATSAPP_APP_SECRETS": d["app_secret"], "WHATSAPP_VERIFY_TOKEN": "sandbox-verify-token"},
            webhook_path="/webhooks/whatsapp",
        )
    if name == "microsoft365":
        from sandbox.microsoft365 import Microsoft365Sandbox

        d = _defaults(Microsoft365Sandbox)
        return SandboxWiring(
            env={
                "MICROSOFT365_BASE_URL": "{url}/v1.0/",
                "MICROSOFT365_TOKEN_URL": "{url}/{tenant}/oauth2/v2.0/token",  # {tenant}: filled in by the connector
                "MICROSOFT365_TENANT_ID": d["tenant_id"],
                "MICROSOFT365_CLIENT_ID": d["client_id"],
                "MICROSOFT365_DRIVE_ID": d["drive_id"],
                "MICROSOFT365_CALENDAR_USER": d["users"][0],
            },
            secrets={"microsoft365-client-secret": d["client_secret"]},
        )
    if name == "google":
        from sandbox.google_calendar import GoogleCalendarSandbox

        d = _defaults(GoogleCalendarSandbox)
        # The simulator generates a fresh service-account key at each start unless given one: the stack makes
        # the key once (var/stack/, kept across `make up`s), the simulator (also when restarted) verifies with it, and the
        # flows read it from the Secret block.
        key_json = _stack_service_account_key(state / "google-service-account.json")
        return SandboxWiring(
            env={
                "GOOGLE_BASE_URL": "{url}/calendar/v3/",
                "GOOGLE_TOKEN_URL": "{url}/token",
                "GOOGLE_DELEGATED_SUBJECT": d["users"][0],
                "GOOGLE_CALENDAR_ID": d["users"][0],
            },
            secrets={"google-service-account-json": key_json},
            args=["--service-account-file", str(state / "google-service-account.json")],
        )
    if name == "plant":
        from sandbox.plant import ENDPOINT_PATH

        return SandboxWiring(
            # Anonymous sessions (the simulator has no users unless configured), so no password block.
            env={"PLANT_OPCUA_URL": "{url}", "PLANT_OPCUA_BUFFER_DIR": str(state / "plant_buffer")},
            # Restart-safe batch ring in the stack directory; x5: a batch about every 20 s, a few per 1-minute run.
            args=["--state-file", str(state / "plant-sandbox-state.json"), "--speed", "5"],
            url="opc.tcp://127.0.0.1:{port}" + ENDPOINT_PATH,
        )
    if name == "lab":
        drop = state / "lab_drop"
        return SandboxWiring(
            # The tester writes into the folder the worker collects from; a session a minute, a day's worth.
            # The results API (--port) also serves them; the worker reads the folder only (one source, not two).
            env={"LAB_DROP_DIR": str(drop)},
            args=["--drop-dir", str(drop), "--interval-s", "60", "--sessions", "1440"],
        )
    return None


def _stack_service_account_key(path: Path) -> str:
    """A service-account JSON key file for the Google simulator, generated once into `path` (owner-only)."""
    from sandbox.google_calendar import generate_service_account

    if path.exists():
        return path.read_text(encoding="utf-8")
    key_json = generate_service_account().key_file_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key_json)
    return key_json


def registry_simulators() -> dict[str, dict[str, Any]]:
    """The simulator of every registered dataset (hub/datasets.py `simulator`), each once -> its `drymix sandbox`
    option defaults; a simulator no `drymix sandbox` command offers is a KeyError naming the dataset."""
    from hub.datasets import all_datasets

    commands = sandbox_commands()
    simulators: dict[str, dict[str, Any]] = {}
    for dataset in all_datasets():
        name = dataset.simulator
        if name is None or name in simulators:
            continue
        if name not in commands:
            raise KeyError(f"{dataset.name}: simulator {name!r} is no `drymix sandbox` command (there are {', '.join(sorted(commands))})")
        simulators[name] = commands[name]
    return simulators


#: Simulators of a second server shape for an integration the stack already simulates: started on demand
#: (`drymix sandbox plant-vendor`, with the site tag map that fits it, docs/plant.md), never by the stack,
#: which runs one simulator per integration (the registered datasets' `simulator`).
SECOND_SHAPES: dict[str, str] = {"plant-vendor": "plant"}


def sandbox_commands() -> dict[str, dict[str, Any]]:
    """Every `drymix sandbox <name>` command registered at runtime -> its option defaults (aliases once)."""
    from hub.cli.main import sandbox_app

    commands = {}
    seen: set[Any] = set()
    for command in sandbox_app.registered_commands:
        callback = command.callback
        if callback is None or callback in seen:
            continue  # an alias (`graph` of `microsoft365`): one simulator, under its first name
        seen.add(callback)
        name = command.name or callback.__name__.removeprefix("sandbox_").replace("_", "-")
        params = inspect.signature(callback).parameters
        commands[name] = {p: params[p].default for p in params}
    return commands


# -- the plan ----------------------------------------------------------------------------------------


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    note: str = ""
    #: Started only once this flag file exists in the stack directory (workers wait for "registered").
    start_after: str | None = None


@dataclass
class StackPlan:
    api_url: str
    ui_url: str
    sandbox: bool
    processes: list[ProcessSpec]
    secrets: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackPlan:
        data = dict(data)
        data["processes"] = [ProcessSpec(**p) for p in data["processes"]]
        return cls(**data)


def plan_stack(
    *,
    sandbox: bool = True,
    server_port: int | None = SERVER_PORT,
    ingress_port: int | None = INGRESS_PORT,
    workers: int = 1,
    worker_limit: int | None = None,
    fixed_ports: bool = True,
) -> StackPlan:
    """Ports, commands and environment of every process; `fixed_ports=False` takes free ports (tests)."""
    taken: set[int] = set()
    state = stack_dir()
    api_port = pick_port(server_port if fixed_ports else None, taken)
    api_url = f"http://127.0.0.1:{api_port}/api"
    ingress = pick_port(ingress_port if fixed_ports else None, taken)
    ingress_url = f"http://127.0.0.1:{ingress}"
    server_env = {
        # The server's own SQLite lives here unless PREFECT_API_DATABASE_CONNECTION_URL names PostgreSQL.
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api_url,
    }
    processes = [
        ProcessSpec(
            "prefect-server",
            [bin_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(api_port)],
            env=server_env,
            url=api_url.removesuffix("/api"),
        )
    ]
    worker_env: dict[str, str] = {}
    ingress_env: dict[str, str] = {}
    secrets: dict[str, str] = {}
    if sandbox:
        for name, options in registry_simulators().items():
            wiring = sandbox_wiring(name)
            argv = [bin_path("drymix"), "sandbox", name]
            url = None
            if "port" in options:
                port = pick_port(options["port"] if fixed_ports and isinstance(options["port"], int) else None, taken)
                argv += ["--port", str(port)]
                url = (wiring.url if wiring else "http://127.0.0.1:{port}").replace("{port}", str(port))
            if "host" in options:
                argv += ["--host", "127.0.0.1"]
            note = ""
            if wiring is None:
                note = "not wired: add it to sandbox_wiring() in hub/operations/stack.py"
                if url:
                    worker_env[f"DRYMIX_SANDBOX_{name.upper().replace('-', '_')}_URL"] = url
            else:
                if "webhook_url" in options and wiring.webhook_path:
                    argv += ["--webhook-url", ingress_url + wiring.webhook_path]
                argv += wiring.args
                worker_env.update({k: v.replace("{url}", url or "") for k, v in wiring.env.items()})
                secrets.update(wiring.secrets)
                ingress_env.update(wiring.ingress_env)
            processes.append(ProcessSpec(f"sandbox-{name}", argv, url=url, note=note))
    monitor_port = pick_port(None, taken)  # /metrics and /dashboard: never on the webhook port
    processes.append(
        ProcessSpec(
            "webhook-ingress",
            [bin_path("drymix"), "webhooks", "serve", "--host", "127.0.0.1", "--port", str(ingress), "--log-level", "warning",
             "--monitor-host", "127.0.0.1", "--monitor-port", str(monitor_port)],
            env=ingress_env,
            url=ingress_url,
            note=f"monitoring on http://127.0.0.1:{monitor_port}/dashboard",
        )
    )
    worker_env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DRYMIX_HOME": str(ROOT),
        }
    )
    host = socket.gethostname()
    for index in range(1, workers + 1):
        processes.append(
            ProcessSpec(
                f"worker-{index}",
                [bin_path("prefect"), "worker", "start", "--pool", "drymix-process", "--type", "process", "--name", f"{host}-{index}"]
                + (["--limit", str(worker_limit)] if worker_limit else []),
                env=worker_env,
                # Not before the deployments are registered and the runs missed while down are dropped.
                start_after=REGISTERED_FLAG,
            )
        )
    return StackPlan(api_url=api_url, ui_url=api_url.removesuffix("/api"), sandbox=sandbox, processes=processes, secrets=secrets, worker_env=worker_env)


# -- state files -------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def alive(pid: int | None, started: float | None = None) -> bool:
    """The process `pid` runs and (when `started` is given) is the one we started, not a reused pid."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def supervisor_running() -> bool:
    state = read_json(stack_dir() / "state.json") or {}
    return alive(state.get("supervisor_pid"), state.get("supervisor_started"))


# -- the supervisor ----------------------------------------------------------------------------------


@dataclass
class Child:
    spec: ProcessSpec
    proc: psutil.Popen | None = None
    started: float | None = None
    restarts: list[float] = field(default_factory=list)
    status: str = "pending"
    exit_code: int | None = None


class Supervisor:
    """Starts the plan's processes, restarts those that die, stops them all on SIGTERM/SIGINT."""

    def __init__(self, plan: StackPlan, directory: Path) -> None:
        self.plan = plan
        self.dir = directory
        self.children = [Child(spec) for spec in plan.processes]
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        me = psutil.Process()
        self._state_base = {"supervisor_pid": me.pid, "supervisor_started": me.create_time()}
        try:
            self._start_ready()
            while not self._stopping:
                self._check()
                self._start_ready()
                time.sleep(0.5)
        finally:
            self._stop_all()
            self._write_state()
        return 0

    def _start_ready(self) -> None:
        started = False
        for child in self.children:
            if self._stopping:
                break
            if child.status == "pending" and (child.spec.start_after is None or (self.dir / child.spec.start_after).exists()):
                self._start(child)
                started = True
        if started or not hasattr(self, "_state_written"):
            self._state_written = True
            self._write_state()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("supervisor: signal %d, stopping", signum)
        self._stopping = True

    def _start(self, child: Child) -> None:
        spec = child.spec
        logfile = (self.dir / f"{spec.name}.log").open("ab")
        env = {**os.environ, **spec.env}
        child.proc = psutil.Popen(
            spec.argv,
            cwd=ROOT,
            env=env,
            stdin=open(os.devnull, "rb"),  # noqa: SIM115 - handed to the child
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,  # its own process group: stopping it also stops what it spawned
        )
        logfile.close()
        child.started = child.proc.create_time()
        child.status = "running"
        child.exit_code = None
        log.info("supervisor: started %s (pid %d): %s", spec.name, child.proc.pid, " ".join(spec.argv))

    def _check(self) -> None:
        changed = False
        for child in self.children:
            if child.proc is None or child.status != "running":
                continue
            code = child.proc.poll()
            if code is None:
                continue
            changed = True
            child.exit_code = code
            _kill_group(child.proc.pid)  # whatever it left behind
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
            if len(child.restarts) >= RESTART_LIMIT:
                child.status = "failed"
                log.error("supervisor: %s exited with %s %d times in %ds; giving up (see %s.log)", child.spec.name, code, RESTART_LIMIT, RESTART_WINDOW_S, child.spec.name)
                continue
            child.restarts.append(now)
            delay = min(30.0, 2.0 ** len(child.restarts))
            log.warning("supervisor: %s exited with %s; restarting in %.0fs", child.spec.name, code, delay)
            self._sleep_unless_stopping(delay)
            if not self._stopping:
                self._start(child)
        if changed:
            self._write_state()

    def _sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.2)

    def _stop_all(self) -> None:
        running = [c for c in reversed(self.children) if c.proc is not None and c.proc.poll() is None]
        for child in running:
            _signal_group(child.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(psutil.TimeoutExpired):
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for child in self.children:
            if child.proc is not None:
                _kill_group(child.proc.pid)
                child.exit_code = child.proc.poll()
                child.status = "stopped"

    def _write_state(self) -> None:
        write_json(
            self.dir / "state.json",
            {
                **self._state_base,
                "api_url": self.plan.api_url,
                "ui_url": self.plan.ui_url,
                "sandbox": self.plan.sandbox,
                "updated_at": datetime.now(UTC).isoformat(),
                "processes": [
                    {
                        "name": c.spec.name,
                        "pid": c.proc.pid if c.proc else None,
                        "started": c.started,
                        "status": c.status,
                        "restarts": len(c.restarts),
                        "exit_code": c.exit_code,
                        "url": c.spec.url,
                        "note": c.spec.note,
                        "log": str(self.dir / f"{c.spec.name}.log"),
                    }
                    for c in self.children
                ],
            },
        )


def _signal_group(pid: int, sig: int) -> None:
    """Signal the group `pid` leads (start_new_session) and every descendant, even one that left the group."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)


def supervise(directory: Path | None = None) -> int:
    directory = directory or stack_dir()
    plan = StackPlan.from_json(read_json(directory / "plan.json"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return Supervisor(plan, directory).run()


def start_supervisor(plan: StackPlan, env: dict[str, str] | None = None) -> int:
    """Write the plan and start `drymix stack supervise` detached (with `env`, default this process's); returns its pid."""
    directory = stack_dir()
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "plan.json", plan.to_json())
    (directory / "state.json").unlink(missing_ok=True)
    (directory / REGISTERED_FLAG).unlink(missing_ok=True)
    logfile = (directory / "supervisor.log").open("ab")
    proc = psutil.Popen(
        [sys.executable, "-m", "hub.cli.main", "stack", "supervise"],
        cwd=ROOT,
        env={**(os.environ if env is None else env), "DRYMIX_STACK_DIR": str(directory)},
        stdin=open(os.devnull, "rb"),  # noqa: SIM115 - handed to the child
        stdout=logfile,
        stderr=logfile,
        start_new_session=True,  # outlives the `drymix stack up` that started it
    )
    logfile.close()
    # Known at once, so `stack down` (or a failed `stack up`) can stop it before it writes its own state.
    write_json(directory / "state.json", {"supervisor_pid": proc.pid, "supervisor_started": proc.create_time(), "api_url": plan.api_url, "ui_url": plan.ui_url, "sandbox": plan.sandbox, "processes": []})
    return int(proc.pid)


def release_workers() -> None:
    """Let the supervisor start the workers (the deployments are registered)."""
    (stack_dir() / REGISTERED_FLAG).touch()


def drop_missed_runs(client: Any, deployment_names: list[str], grace_s: float = 120.0) -> int:
    """Delete the scheduled runs that fell due while the stack was down (more than `grace_s` ago).

    Syncs read from their watermark, so the next scheduled run catches up; running every missed
    minute of `process-webhooks` one after another would only delay it. Returns how many were dropped.
    """
    from datetime import timedelta

    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    dropped = 0
    while True:
        missed = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=cutoff),
            ),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=deployment_names)),
            limit=200,
        )
        missed = [run for run in missed if run.auto_scheduled and run.run_count == 0]
        if not missed:
            return dropped
        for run in missed:
            client.delete_flow_run(run.id)
        dropped += len(missed)


def stop_stack(timeout_s: float = 60.0) -> list[str]:
    """SIGTERM the supervisor and wait; then SIGKILL any recorded process group still alive. Returns what was stopped."""
    directory = stack_dir()
    state = read_json(directory / "state.json") or {}
    stopped = []
    pid, started = state.get("supervisor_pid"), state.get("supervisor_started")
    if pid and alive(pid, started):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid, started):
            os.kill(pid, signal.SIGKILL)
        stopped.append("supervisor")
    for proc in (read_json(directory / "state.json") or state).get("processes", []):
        if alive(proc.get("pid"), proc.get("started")):
            _kill_group(proc["pid"])
            stopped.append(proc["name"])
    return stopped


def stack_status() -> dict[str, Any]:
    """The supervisor and each process: alive or not, pid, URL, restarts, log."""
    state = read_json(stack_dir() / "state.json") or {}
    running = alive(state.get("supervisor_pid"), state.get("supervisor_started"))
    processes = []
    for proc in state.get("processes", []):
        up = running and alive(proc.get("pid"), proc.get("started"))
        processes.append({**proc, "alive": up, "status": proc.get("status") if running else "stopped"})
    return {
        "running": running,
        "supervisor_pid": state.get("supervisor_pid") if running else None,
        "api_url": state.get("api_url"),
        "ui_url": state.get("ui_url"),
        "sandbox": state.get("sandbox"),
        "processes": processes,
        "state_dir": str(stack_dir()),
        "warnings": production_warnings(state.get("sandbox")),
    }


def production_warnings(sandbox: bool | None) -> list[str]:
    """Configuration a production stack should not run with (an empty webhook IP allowlist)."""
    if sandbox is not False:
        return []
    from hub.core.settings import get_settings
    from hub.ingress.security import allowlist_warnings

    return allowlist_warnings(get_settings())


def wait_for_http(url: str, timeout_s: float, *, is_alive: Any = None) -> bool:
    """GET `url` until it answers 200 (or `is_alive()` turns false, or the time is up)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        if is_alive is not None and not is_alive():
            return False
        time.sleep(0.5)
    return False
