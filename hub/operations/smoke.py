"""Post-deployment verification (`drymix smoke`): is the deployed hub able to do its job right now?

Checks, in order: the ERP database (reachable, migrations at head), the Prefect server, a worker online
in the work pool, every deployment of prefect.yaml (rendered from the dataset registry) registered with its
schedule active, every rate limit in place, the webhook ingress, `test_connection` of every integration a
registered dataset calls, and one real run of every deployment through the Prefect API (its worker, its
Secret blocks, its rate limits).
Every failed check says why; the whole is green only when all pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hub.core.settings import all_integrations
from hub.operations.deploy import WORK_POOL, declared_deployments


@dataclass
class Check:
    group: str
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    skipped: bool = False
    warning: bool = False  # passed, but a production configuration should not stay like this

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(group: str, name: str, fn: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as exc:  # noqa: BLE001 - a check reports its failure, it does not raise
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return Check(group, name, ok, detail, round(time.perf_counter() - started, 3))


def check_database() -> str:
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    from hub.core.db import alembic_config, get_engine
    from hub.core.settings import get_settings

    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
        if not inspect(conn).has_table("alembic_version"):
            raise RuntimeError("no migrations applied: run `drymix db upgrade`")
        current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    heads = set(ScriptDirectory.from_config(alembic_config(get_settings().database_url)).get_heads())
    if current != heads:
        raise RuntimeError(f"migrations at {sorted(current)}, code expects {sorted(heads)}: run `drymix db upgrade`")
    return f"reachable, at head {', '.join(sorted(heads))}"


def check_http(url: str) -> str:
    import httpx

    response = httpx.get(url, timeout=10.0)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return f"GET {url}: 200"


def connector_builders() -> dict[str, Callable[..., Any] | None]:
    """integration -> a builder of its (synchronous) connector, or None when it has none of that kind.

    By convention `hub.runtime.connections.build_<name>_connector`."""
    from hub.runtime import connections

    return {name: getattr(connections, f"build_{name}_connector", None) for name in sorted(all_integrations())}


def check_connection(builder: Callable[..., Any]) -> str:
    connector = builder()
    try:
        result = connector.test_connection()
    finally:
        connector.close()
    if not result.ok:
        raise RuntimeError(result.detail)
    return f"connected in {result.latency_ms:.0f} ms"


def check_plant() -> str:
    """Open an OPC UA session (endpoint, security, user) and browse the plant's tags."""
    from hub.runtime.connections import build_plant_connector
    from hub.systems.plant import run_async

    async def browse() -> int:
        async with build_plant_connector() as plant:
            return len(await plant.discover())

    started = time.perf_counter()
    tags = run_async(browse())
    if not tags:
        raise RuntimeError("connected, but the plant folder has no tags")
    return f"connected, {tags} tags browsed in {(time.perf_counter() - started) * 1000:.0f} ms"


def check_lab() -> str:
    """The drop folder exists and the worker may read it and move files into its archive (and the API answers, if set)."""
    import os

    from hub.core.settings import lab_config

    config = lab_config()
    folder = config.drop_dir
    if not folder.is_dir():
        raise RuntimeError(f"lab drop folder {folder} does not exist (LAB_DROP_DIR / [lab] base_url)")
    if not os.access(folder, os.R_OK | os.X_OK) or (config.archive and not os.access(folder, os.W_OK)):
        raise RuntimeError(f"lab drop folder {folder} is not readable{' and writable (archive = true)' if config.archive else ''}")
    detail = f"drop folder {folder} readable{' and writable' if config.archive else ''}"
    if config.api_url:
        from hub.runtime.connections import build_lab_api_connector

        detail += f"; results API {check_connection(build_lab_api_connector)}"
    return detail


def connection_checks() -> dict[str, Callable[[], str] | None]:
    """integration -> its connection check (test_connection of its connector), None when there is none: one per
    integration a registered dataset calls (hub/datasets.py `monitored_integrations`)."""
    from hub.datasets import monitored_integrations

    builders = connector_builders()
    checks: dict[str, Callable[[], str] | None] = {}
    for name in monitored_integrations():
        builder = builders.get(name)
        if name == "plant_opcua":
            checks[name] = check_plant
        elif name == "lab":
            checks[name] = check_lab
        elif builder is not None:
            checks[name] = lambda b=builder: check_connection(b)  # type: ignore[misc]
        else:
            checks[name] = None
    return checks


def webhook_allowlist_checks() -> list[Check]:
    """One warning per provider whose webhooks are accepted from any address in a production configuration."""
    from hub.core.settings import get_settings
    from hub.ingress.security import allowlist_warnings

    warnings = allowlist_warnings(get_settings())
    if not warnings:
        return [Check("ingress", "ip allowlist", True, "every provider accepting webhooks in production has an allowlist")]
    return [Check("ingress", "ip allowlist", True, warning, warning=True) for warning in warnings]


def run_smoke(
    *,
    api_url: str,
    ingress_url: str | None,
    run_deployments: bool = True,
    run_timeout_s: float = 600.0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[Check]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hub.runtime.secret_blocks import install as install_secret_blocks

    install_secret_blocks(server_only=True)  # the connection checks use the stack's Secret blocks, as its flows do
    checks: list[Check] = []
    progress("database")
    checks.append(_timed("database", "erp", check_database))
    progress("prefect server")
    checks.append(_timed("prefect", "server", lambda: check_http(api_url.rstrip("/") + "/health")))
    if ingress_url:
        checks.append(_timed("ingress", "webhooks", lambda: check_http(ingress_url.rstrip("/") + "/health")))
    checks.extend(webhook_allowlist_checks())
    declared = declared_deployments()
    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:

            def workers_online() -> str:
                workers = client.read_workers_for_work_pool(WORK_POOL)
                online = [w.name for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE"]
                if not online:
                    raise RuntimeError(f"no worker online in work pool {WORK_POOL}: start one with `prefect worker start --pool {WORK_POOL}`")
                return f"{len(online)} online: {', '.join(sorted(online))}"

            checks.append(_timed("prefect", f"work pool {WORK_POOL}", workers_online))
            for deployment in declared:

                def registered(d: Any = deployment) -> str:
                    found = client.read_deployment_by_name(d.full_name)
                    if found.paused:
                        raise RuntimeError("paused (maintenance mode?): `drymix stack resume`")
                    crons = [getattr(s.schedule, "cron", None) for s in found.schedules if s.active]
                    if not d.schedules:
                        return "on demand (no schedule declared: queued jobs, docs/background-jobs.md)"
                    if not crons:
                        raise RuntimeError("no active schedule")
                    return f"schedule {', '.join(str(c) for c in crons)}"

                checks.append(_timed("deployment", deployment.full_name, registered))

            from hub.runtime.rate_limits import declared_rate_limits

            for spec in declared_rate_limits():

                def limit(s: Any = spec) -> str:
                    found = client.read_global_concurrency_limit_by_name(s.name)
                    return f"{found.limit} slots, decay {found.slot_decay_per_second}/s"

                checks.append(_timed("rate limit", spec.name, limit))

        for name, check in connection_checks().items():
            progress(f"test_connection {name}")
            if check is None:
                checks.append(Check("connection", name, True, "no connector in this build", skipped=True))
                continue
            checks.append(_timed("connection", name, check))

        if run_deployments:
            from prefect.deployments import run_deployment

            for deployment in declared:
                progress(f"run {deployment.full_name}")

                def run(d: Any = deployment) -> str:
                    flow_run: Any = run_deployment(d.full_name, timeout=run_timeout_s, tags=["smoke"])
                    state = flow_run.state
                    if state is None or not state.is_completed():
                        name = state.name if state else "unknown"
                        raise RuntimeError(
                            f"flow run {flow_run.name} ({flow_run.id}) ended {name}: {state.message if state else ''} "
                            f"(`prefect flow-run logs {flow_run.id}`)"
                        )
                    return f"flow run {flow_run.name} completed"

                checks.append(_timed("run", deployment.full_name, run))
    return checks
