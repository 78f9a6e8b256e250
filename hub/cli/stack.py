"""`drymix stack`, `drymix deploy` and `drymix smoke`: run the hub like production (docs/deployment.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

stack_app = typer.Typer(
    help="The local production stack: Prefect server, work pool and worker, webhook ingress, simulators (`make up` / `make down`).",
    no_args_is_help=True,
)
deploy_app = typer.Typer(help="Deployments of prefect.yaml: rendered from the dataset registry and the config, registration, Secret blocks.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_FAILED = 0, 1


def _api_url(explicit: str | None) -> str:
    """--api-url, else PREFECT_API_URL, else the running local stack's server."""
    from hub.operations.stack import stack_status

    url = explicit or os.environ.get("PREFECT_API_URL") or stack_status().get("api_url")
    if not url:
        err_console.print("[red]no Prefect server:[/red] start one with `make up`, or set PREFECT_API_URL / --api-url")
        raise typer.Exit(EXIT_FAILED)
    return str(url)


@stack_app.command("up")
def stack_up(
    sandbox: Annotated[bool, typer.Option("--sandbox/--no-sandbox", help="run every simulator and wire the hub to them")] = True,
    workers: Annotated[int, typer.Option(help="workers in the process work pool", min=1)] = 1,
    fixed_ports: Annotated[bool, typer.Option("--fixed-ports/--free-ports", help="4200, 8480, 8401.. when free (else any free port)")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the server and the worker")] = 300.0,
) -> None:
    """Start the stack in the background and register the deployments; `drymix stack down` stops it."""
    from hub.core.db import upgrade
    from hub.core.settings import get_settings
    from hub.operations.deploy import bootstrap, secrets_from_environment
    from hub.operations.stack import (
        plan_stack,
        release_workers,
        stack_dir,
        stack_status,
        start_supervisor,
        supervisor_running,
        wait_for_http,
    )

    if supervisor_running():
        console.print("[yellow]the stack is already running[/yellow]")
        _print_status(stack_status())
        return
    with console.status("applying database migrations..."):
        upgrade()
    plan = plan_stack(sandbox=sandbox, workers=workers, fixed_ports=fixed_ports)
    pid = start_supervisor(plan)
    console.print(f"supervisor started (pid {pid}); state and logs in {stack_dir()}")
    with console.status(f"waiting for the Prefect server at {plan.ui_url}..."):
        if not wait_for_http(plan.api_url + "/health", timeout, is_alive=lambda: _process_up("prefect-server")):
            _fail_up(f"the Prefect server did not answer at {plan.api_url}/health within {timeout:.0f}s", "prefect-server")
    # Sandbox credentials become Secret blocks; in production, the secrets present in this environment do.
    secrets = plan.secrets if sandbox else secrets_from_environment(get_settings())
    with console.status("registering the work pool, rate limits, Secret blocks and deployments..."):
        try:
            report = bootstrap(plan.api_url, secrets=secrets)
        except Exception as exc:  # noqa: BLE001 - say what failed, leave nothing running
            _fail_up(f"registration failed: {exc}", "supervisor")
    console.print(
        f"[green]✓[/green] work pool {report.work_pool}; rate limits {', '.join(report.rate_limits)}; "
        f"Secret blocks {', '.join(report.secret_blocks) or '(none)'}; deployments {', '.join(report.deployments)}"
        + (f"; automations {', '.join(report.automations)}" if report.automations else "")
    )
    dropped = _drop_missed_runs(plan.api_url)
    if dropped:
        console.print(f"dropped {dropped} scheduled run(s) missed while the stack was down (the next runs catch up from their watermarks)")
    release_workers()
    with console.status("waiting for the worker to come online..."):
        if not _wait_worker_online(plan.api_url, timeout):
            _fail_up(f"no worker came online in {timeout:.0f}s", "worker-1")
    _print_status(stack_status())
    console.print(f"Prefect UI: [bold]{plan.ui_url}[/bold]  ·  `drymix smoke` verifies it  ·  `make down` stops it")


def _drop_missed_runs(api_url: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hub.operations.deploy import declared_deployments
    from hub.operations.stack import drop_missed_runs

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return drop_missed_runs(client, [d.name for d in declared_deployments()])


def _wait_worker_online(api_url: str, timeout: float) -> bool:
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hub.operations.deploy import WORK_POOL
    from hub.operations.stack import supervisor_running

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline and supervisor_running():
            workers = client.read_workers_for_work_pool(WORK_POOL)
            if any(str(getattr(w.status, "value", w.status)).upper() == "ONLINE" for w in workers):
                return True
            time.sleep(1.0)
    return False


def _process_up(name: str) -> bool:
    """The supervisor runs and has not given up on process `name` (it restarts it a few times first)."""
    from hub.operations.stack import stack_status

    status = stack_status()
    return bool(status["running"]) and all(p["status"] != "failed" for p in status["processes"] if p["name"] == name)


def _fail_up(reason: str, log_name: str) -> None:
    from hub.operations.stack import stack_dir, stop_stack

    err_console.print(f"[red]stack up failed:[/red] {reason}")
    logfile = stack_dir() / f"{log_name}.log"
    if logfile.exists():
        tail = logfile.read_text(errors="replace").splitlines()[-15:]
        err_console.print(f"last lines of {logfile}:\n" + "\n".join(tail))
    stop_stack()
    raise typer.Exit(EXIT_FAILED)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the supervisor and every process it started (worker flow runs included)."""
    from hub.operations.stack import stop_stack

    stopped = stop_stack()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "the stack was not running")


@stack_app.command("status")
def stack_status_cmd(as_json: Annotated[bool, typer.Option("--json", help="one JSON object for machines")] = False) -> None:
    """Each process of the stack (pid, alive, restarts, URL, log) and the Prefect server URL; exit 1 unless all run."""
    from hub.operations.stack import stack_status

    status = stack_status()
    if as_json:
        print(json.dumps(status, default=str))
    else:
        _print_status(status)
    if not status["running"] or not all(p["alive"] for p in status["processes"]):
        raise typer.Exit(EXIT_FAILED)


def _print_status(status: dict[str, Any]) -> None:
    if not status["running"]:
        console.print(f"[yellow]the stack is not running[/yellow] (state in {status['state_dir']}); start it with `make up`")
        return
    table = Table(title=f"DryMix stack ({'sandbox' if status['sandbox'] else 'production'} mode), supervisor pid {status['supervisor_pid']}")
    for col in ("process", "pid", "state", "restarts", "url", "note"):
        table.add_column(col, overflow="fold")
    for p in status["processes"]:
        state = "[green]running[/green]" if p["alive"] else f"[red]{p['status']}[/red] (exit {p.get('exit_code')})"
        table.add_row(p["name"], str(p["pid"] or ""), state, str(p["restarts"]), p.get("url") or "", p.get("note") or "")
    console.print(table)
    console.print(f"Prefect server: [bold]{status['ui_url']}[/bold] (API {status['api_url']}); logs in {status['state_dir']}")
    for warning in status.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")


@stack_app.command("supervise", hidden=True)
def stack_supervise() -> None:
    """Run the supervisor in the foreground (started detached by `drymix stack up`)."""
    from hub.operations.stack import supervise

    raise typer.Exit(supervise())


def _set_paused(paused: bool, names: list[str] | None, api_url: str | None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hub.operations.deploy import set_paused

    url = _api_url(api_url)
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        changed = set_paused(client, paused, names)
    verb = "paused" if paused else "resumed"
    console.print(f"{verb}: {', '.join(changed) or '(nothing)'}")


@stack_app.command("pause")
def stack_pause(
    deployments: Annotated[list[str] | None, typer.Argument(help="deployment names (default: all of prefect.yaml)")] = None,
    api_url: Annotated[str | None, typer.Option(help="Prefect API (default: PREFECT_API_URL or the local stack)")] = None,
) -> None:
    """Maintenance mode: pause the deployments' schedules (runs already started finish; webhooks keep being stored)."""
    _set_paused(True, deployments, api_url)
    console.print("Drain the webhook inbox with `drymix webhooks process` until it claims 0; `drymix stack resume` ends maintenance.")


@stack_app.command("resume")
def stack_resume(
    deployments: Annotated[list[str] | None, typer.Argument(help="deployment names (default: all of prefect.yaml)")] = None,
    api_url: Annotated[str | None, typer.Option(help="Prefect API (default: PREFECT_API_URL or the local stack)")] = None,
) -> None:
    """End maintenance: resume the deployments' schedules."""
    _set_paused(False, deployments, api_url)


@deploy_app.command("render")
def deploy_render(
    check: Annotated[bool, typer.Option("--check", help="write nothing: exit 1 and print the difference when the file is not what renders")] = False,
    path: Annotated[Path | None, typer.Option(help="the file (default: the project's prefect.yaml)")] = None,
) -> None:
    """Write prefect.yaml from the dataset registry (hub/datasets.py) and the schedules of config/integrations.toml."""
    from hub.operations.deploy import PREFECT_YAML, prefect_yaml_diff, write_prefect_yaml

    target = path or PREFECT_YAML
    shown = path or "prefect.yaml"
    if check:
        diff = prefect_yaml_diff(target)
        if diff:
            typer.echo(diff, nl=False)
            err_console.print(f"[red]✗[/red] {shown} is not what hub/datasets.py and the config render: run `drymix deploy render` (`make prefect-yaml`)")
            raise typer.Exit(EXIT_FAILED)
        console.print(f"[green]✓[/green] {shown} is what hub/datasets.py and config/integrations.toml render")
        return
    if write_prefect_yaml(target):
        console.print(f"[green]✓[/green] wrote {shown} from hub/datasets.py and config/integrations.toml")
    else:
        console.print(f"[green]✓[/green] {shown} was already up to date")


@deploy_app.command("schedules", hidden=True)
def deploy_schedules(write: Annotated[bool, typer.Option("--write", help="rewrite prefect.yaml")] = False) -> None:
    """The older verb: `deploy render --check` (with --write, `deploy render`)."""
    deploy_render(check=not write, path=None)


@deploy_app.command("apply")
def deploy_apply(
    api_url: Annotated[str | None, typer.Option(help="Prefect API (default: PREFECT_API_URL or the local stack)")] = None,
    secrets: Annotated[bool, typer.Option("--secrets/--no-secrets", help="store the secrets set in this environment as Prefect Secret blocks")] = False,
) -> None:
    """Register the work pool, rate limits and every deployment of prefect.yaml on a Prefect server."""
    from hub.core.settings import get_settings
    from hub.operations.deploy import bootstrap, prefect_yaml_diff, secrets_from_environment

    if prefect_yaml_diff():
        err_console.print("[red]prefect.yaml is not what hub/datasets.py and the config render:[/red] `drymix deploy render --check` shows how; `drymix deploy render` rewrites it")
        raise typer.Exit(EXIT_FAILED)
    url = _api_url(api_url)
    values = secrets_from_environment(get_settings()) if secrets else {}
    with console.status(f"registering on {url}..."):
        report = bootstrap(url, secrets=values)
    console.print(f"[green]✓[/green] work pool {report.work_pool}; rate limits {', '.join(report.rate_limits)}")
    if report.secret_blocks:
        console.print(f"[green]✓[/green] Secret blocks {', '.join(report.secret_blocks)}")
    console.print(f"[green]✓[/green] deployments {', '.join(report.deployments)}")
    if report.automations:
        console.print(f"[green]✓[/green] automations {', '.join(report.automations)}")


def smoke(
    api_url: Annotated[str | None, typer.Option(help="Prefect API (default: PREFECT_API_URL or the local stack)")] = None,
    ingress_url: Annotated[str | None, typer.Option(help="webhook ingress base URL (default: the local stack's)")] = None,
    runs: Annotated[bool, typer.Option("--runs/--no-runs", help="run every deployment once through the Prefect API")] = True,
    run_timeout: Annotated[float, typer.Option(help="seconds each deployment run may take")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object for machines")] = False,
) -> None:
    """Post-deployment verification: database, server, worker, deployments, rate limits, connections, one run each."""
    from hub.core.settings import reset_settings_cache
    from hub.operations.smoke import run_smoke
    from hub.operations.stack import read_json, stack_dir, stack_status

    url = _api_url(api_url)
    status = stack_status()
    if status["running"] and status["api_url"] == url:
        ingress_url = ingress_url or next((p["url"] for p in status["processes"] if p["name"] == "webhook-ingress"), None)
        # Reach the integrations the way the stack's worker does (its sandboxes, its Secret blocks).
        plan = read_json(stack_dir() / "plan.json") or {}
        for key, value in (plan.get("worker_env") or {}).items():
            if not key.startswith("PREFECT_"):
                os.environ.setdefault(key, value)
        reset_settings_cache()
    progress = (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]… {msg}[/dim]"))
    checks = run_smoke(api_url=url, ingress_url=ingress_url, run_deployments=runs, run_timeout_s=run_timeout, progress=progress)
    failed = [c for c in checks if not c.ok]
    if as_json:
        print(json.dumps({"ok": not failed, "api_url": url, "checks": [c.as_dict() for c in checks]}, default=str))
    else:
        table = Table(title=f"drymix smoke against {url}")
        for col in ("", "group", "check", "detail", "s"):
            table.add_column(col, overflow="fold")
        for c in checks:
            mark = "[dim]–[/dim]" if c.skipped else ("[red]✗[/red]" if not c.ok else "[yellow]![/yellow]" if c.warning else "[green]✓[/green]")
            table.add_row(mark, c.group, c.name, c.detail, f"{c.seconds:.1f}")
        console.print(table)
        for c in checks:
            if c.warning:
                err_console.print(f"[yellow]warning:[/yellow] {c.group} {c.name}: {c.detail}")
        if failed:
            err_console.print(f"[red]{len(failed)} check(s) failed:[/red] " + "; ".join(f"{c.group} {c.name}: {c.detail}" for c in failed))
        else:
            console.print("[green]all checks passed[/green]")
    if failed:
        raise typer.Exit(EXIT_FAILED)
