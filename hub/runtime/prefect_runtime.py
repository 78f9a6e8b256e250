"""Run flows from the CLI the clean way: a project-local Prefect home, no telemetry, no shutdown noise,
and nothing orphaned when a CLI run dies.

Import this module before Prefect: it sets Prefect's environment defaults (a user's own settings win).

Without PREFECT_API_URL, Prefect starts a temporary server (`SubprocessASGIServer`, a uvicorn child of
about 200 MB) and stops it at exit; a CLI run that is killed (kill -9, OOM, a closed SSH session) leaves
it running and its flow runs "Running" forever. So every CLI flow run keeps a record under
PREFECT_HOME/cli-runs/<pid>.json (its tag, the API it used, the temporary server's pid written the moment
that server is spawned), removed at a clean exit. The next CLI flow run reclaims what a dead one left:
it stops that server and marks that run's unfinished flow and task runs Crashed (found by the run's tag).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hub.core.settings import ROOT

log = logging.getLogger(__name__)

_DEFAULTS = {
    # Without a server Prefect starts a temporary one backed by PREFECT_HOME; keep it in the project.
    "PREFECT_HOME": str(ROOT / "var" / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GX_ANALYTICS_ENABLED": "false",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
# Prefect creates its home without parents: on a fresh clone (no var/ yet) its temporary server could
# not open its database and timed out.
Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


class _DropShutdownCancellation(logging.Filter):
    """The temporary server cancels its tasks at exit; those CancelledError tracebacks are not failures."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)


def install_log_filters() -> None:
    """Mask secrets in every log line and drop the temporary server's shutdown noise."""
    from connectors.core.redact import RedactingFilter

    filters: list[logging.Filter] = [_DropShutdownCancellation(), RedactingFilter()]
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "uvicorn.error", "asyncio", "prefect.server"):
        logger = logging.getLogger(name)
        for flt in filters:
            logger.addFilter(flt)
            for handler in logger.handlers:
                handler.addFilter(flt)


def run_flow_quietly(flow: Callable[..., Any], **parameters: Any) -> Any:
    """Call a flow in this process and return its result; the flow's own errors propagate.

    First reclaims what dead CLI runs left behind (their temporary server, their flow runs left Running)
    and writes failures spooled while the database was down; the run carries this process's tag.
    """
    from prefect import tags

    from hub.ledger.spool import drain_spool_quietly

    install_log_filters()
    record = _this_process_record()
    try:
        reclaim_dead_cli_runs()
    except Exception:  # noqa: BLE001 - what a dead run left is reclaimed by a later run; this one goes ahead
        log.exception("could not reclaim what a dead CLI run left behind (its record stays for the next run)")
    drain_spool_quietly()
    with tags(record.tag):
        return flow(**parameters)


# --- nothing orphaned: a record per CLI process, reclaimed by the next one --------------------------------


@dataclass
class CliRunRecord:
    """What a CLI process that runs flows leaves under PREFECT_HOME/cli-runs while it lives."""

    pid: int
    started: float  # the process's start time: a reused pid is another process
    tag: str  # every flow run of this process carries it
    api_url: str  # "" = the temporary server of this PREFECT_HOME
    server_pid: int | None = None
    server_started: float | None = None
    server_port: int | None = None

    @property
    def path(self) -> Path:
        return runs_dir() / f"{self.pid}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(asdict(self)))
        os.replace(partial, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def runs_dir() -> Path:
    return Path(os.environ["PREFECT_HOME"]).expanduser() / "cli-runs"


def _started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(pid: int | None, started: float | None) -> bool:
    if pid is None or started is None:
        return False
    now = _started(pid)
    return now is not None and abs(now - started) < 0.5


_record: CliRunRecord | None = None
_record_lock = threading.Lock()


def _this_process_record() -> CliRunRecord:
    """This process's record (written once, removed at exit after Prefect has stopped its server)."""
    global _record
    with _record_lock:
        if _record is None:
            from prefect.settings import PREFECT_API_URL

            pid = os.getpid()
            _record = CliRunRecord(pid=pid, started=_started(pid) or 0.0, tag=f"cli-run-{uuid.uuid4().hex[:12]}", api_url=PREFECT_API_URL.value() or "")
            _record.save()
            # Registered before Prefect registers its server's stop: atexit runs it after that stop.
            atexit.register(_record.remove)
            if not _record.api_url:
                _install_recorded_server()
        return _record


def _install_recorded_server() -> None:
    """Make Prefect's temporary server write its pid into this process's record the moment it is spawned.

    `SubprocessASGIServer()` returns the one instance registered for its port (None: any free port);
    registering ours first makes Prefect's own `get_client()` start this one.
    """
    from prefect.server.api.server import SubprocessASGIServer

    class RecordedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> Any:
            process = super()._run_uvicorn_command()
            if _record is not None:
                _record.server_pid, _record.server_started, _record.server_port = process.pid, _started(process.pid), self.port
                _record.save()
            return process

    if None not in SubprocessASGIServer._instances:
        RecordedServer()


def _stop_process(pid: int, started: float | None) -> bool:
    """Stop a process that is still the one recorded (SIGTERM, then SIGKILL after 5 s); True when it was running."""
    import psutil

    if not _alive(pid, started):
        return False
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    except psutil.NoSuchProcess:
        pass
    return True


def dead_cli_runs() -> list[CliRunRecord]:
    """Records of CLI processes that are gone (killed, or exited without their clean-up)."""
    found = []
    for path in sorted(runs_dir().glob("*.json")):
        try:
            record = CliRunRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # being written, or not ours
        if record.pid != os.getpid() and not _alive(record.pid, record.started):
            found.append(record)
    return found


def reclaim_dead_cli_runs() -> list[CliRunRecord]:
    """Stop the temporary servers dead CLI runs left running and mark their unfinished runs Crashed.

    A record is removed once both are done; one whose runs live on another API than this process's
    waits for a CLI run that uses that API (its server is stopped now either way).
    """
    dead = dead_cli_runs()
    if not dead:
        return []
    from prefect.settings import PREFECT_API_URL

    current_api = PREFECT_API_URL.value() or ""
    reclaimed = []
    for record in dead:
        if record.server_pid is not None:
            if _stop_process(record.server_pid, record.server_started):
                log.warning(
                    "stopped the temporary Prefect server (pid %d, port %s) left running by a CLI run that died (pid %d)",
                    record.server_pid, record.server_port, record.pid,
                )
            record.server_pid = record.server_started = None
            record.save()
        if record.api_url != current_api:
            continue
        crashed = mark_runs_crashed(record.tag, f"the drymix CLI process (pid {record.pid}) running it died; reclaimed by pid {os.getpid()}")
        if crashed:
            log.warning("marked %d flow run(s) of the CLI run that died (pid %d, tag %s) Crashed", crashed, record.pid, record.tag)
        record.remove()
        reclaimed.append(record)
    return reclaimed


def mark_runs_crashed(tag: str, message: str) -> int:
    """Force every unfinished flow run tagged `tag`, and its unfinished task runs, to Crashed; returns the flow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED, StateType.PAUSED, StateType.CANCELLING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[tag]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))
            )
        )
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        if runs:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in runs])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))),
            )
            for task_run in tasks:
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    return len(runs)


def stop_heartbeats_promptly() -> bool:
    """Make a flow run end when its work ends, not up to a second later; whether it was installed.

    Prefect 3.9 sends a flow run's heartbeats (180 s apart by default since 3.9: zombie-run detection) from a
    thread that sleeps in whole seconds, and the run's end joins that thread: every flow run of the hub ended
    0-1 s late, 0.5 s on average (measured: ~4 % of a 100k-partner SAP sync, and most of a short scheduled run's
    end). The same heartbeats here, from a loop that waits on its stop event: the join returns at once.
    Written by hand because Prefect has no setting for it (its loop is `time.sleep(1)` in `_send_heartbeats`);
    another Prefect whose engine lacks what this uses keeps its own.
    """
    import contextvars
    from collections.abc import Iterator
    from contextlib import contextmanager

    from prefect import flow_engine

    original = getattr(flow_engine, "_send_heartbeats", None)
    needed = ("heartbeat_seconds", "_build_heartbeat_event_template", "_emit_flow_run_heartbeat")
    if original is None or getattr(original, "_prompt_stop", False):
        return original is not None
    if not all(hasattr(flow_engine.BaseFlowRunEngine, name) for name in needed):
        return False

    @contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        seconds = engine.heartbeat_seconds
        if seconds is None:
            yield
            return
        seconds = max(seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
        resource, related = engine._build_heartbeat_event_template()
        stop = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                state = engine.flow_run.state if engine.flow_run else None
                if state is not None and state.is_final():
                    return
                try:
                    engine._emit_flow_run_heartbeat(resource, related)
                except Exception:
                    engine.logger.debug("Failed to emit heartbeat", exc_info=True)
                stop.wait(seconds)

        # The caller's context, as Prefect's own does: the thread sees the run's settings (its API URL).
        thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True, name="flow-heartbeat")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            if join_on_exit:
                thread.join(timeout=2)

    send_heartbeats._prompt_stop = True  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats
    return True
