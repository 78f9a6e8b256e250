"""Post-deployment verification (`drymix smoke`): is the deployed hub able to do its job right now?

Checks, in order: the ERP database (reachable, migrations at head), the Prefect server, a worker online
in the work pool, every deployment of prefect.yaml registered with its schedule active, every rate
limit in place, the webhook ingress, `test_connection` of every integration that has a connector, and one
real run of every deployment through the Prefect API (its worker, its Secret blocks, its rate limits).
Every failed check says why; the whole is green only when all pass.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hub.deploy import WORK_POOL, declared_deployments
from hub.settings import all_integrations


@dataclass
class Check:
    group: str
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    skipped: bool = False

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

    from hub.db import alembic_config, get_engine
    from hub.settings import get_settings

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
    """integration -> `connectors.<name>.build_<name>_connector`, or None when it has no connector yet."""
    builders: dict[str, Callable[..., Any] | None] = {}
    for name in sorted(all_integrations()):
        try:
            module = importlib.import_module(f"connectors.{name}")
        except ModuleNotFoundError:
            builders[name] = None
            continue
        builders[name] = getattr(module, f"build_{name}_connector", None)
    return builders


def check_connection(builder: Callable[..., Any]) -> str:
    connector = builder()
    try:
        result = connector.test_connection()
    finally:
        connector.close()
    if not result.ok:
        raise RuntimeError(result.detail)
    return f"connected in {result.latency_ms:.0f} ms"


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

    checks: list[Check] = []
    progress("database")
    checks.append(_timed("database", "erp", check_database))
    progress("prefect server")
    checks.append(_timed("prefect", "server", lambda: check_http(api_url.rstrip("/") + "/health")))
    if ingress_url:
        checks.append(_timed("ingress", "webhooks", lambda: check_http(ingress_url.rstrip("/") + "/health")))
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
                    if not crons:
                        raise RuntimeError("no active schedule")
                    return f"schedule {', '.join(str(c) for c in crons)}"

                checks.append(_timed("deployment", deployment.full_name, registered))

            from hub.rate_limits import declared_rate_limits

            for spec in declared_rate_limits():

                def limit(s: Any = spec) -> str:
                    found = client.read_global_concurrency_limit_by_name(s.name)
                    return f"{found.limit} slots, decay {found.slot_decay_per_second}/s"

                checks.append(_timed("rate limit", spec.name, limit))

        for name, builder in connector_builders().items():
            progress(f"test_connection {name}")
            if builder is None:
                checks.append(Check("connection", name, True, "no connector in this build", skipped=True))
                continue
            checks.append(_timed("connection", name, lambda b=builder: check_connection(b)))  # type: ignore[misc]

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
