"""Deployments as prefect.yaml declares them: schedules from the config, registration, secrets, pausing.

prefect.yaml lists the deployments; everything here iterates over it, and `schedule_drift` holds it to the
dataset registry (hub/datasets.py: each dataset's deployment, entrypoint and schedule; `registry_drift`). Schedules have one source
of truth, config/integrations.toml (`schedule_cron` per integration): the generated `schedules:` block of
prefect.yaml is rewritten from it by `write_schedules` and checked by `schedule_drift`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from hub.core.settings import ROOT, HubSettings, all_integrations, get_settings

PREFECT_YAML = ROOT / "prefect.yaml"
WORK_POOL = "drymix-process"
_BEGIN = "  # BEGIN schedules"
_END = "  # END schedules"


@dataclass(frozen=True)
class DeclaredDeployment:
    """One deployment of prefect.yaml, with the integration whose schedule it runs on."""

    name: str
    flow_name: str
    entrypoint: str
    work_pool: str
    parameters: dict[str, Any]
    schedules: list[dict[str, Any]]
    integrations: list[str]
    concurrency_limit: int | None = None

    @property
    def full_name(self) -> str:
        """`<flow name>/<deployment name>`, as `prefect deployment run` and `run_deployment` take it."""
        return f"{self.flow_name}/{self.name}"


def load_prefect_yaml(path: Path = PREFECT_YAML) -> dict[str, Any]:
    import yaml

    with path.open(encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return loaded


def declared_deployments(path: Path = PREFECT_YAML) -> list[DeclaredDeployment]:
    """Every deployment of prefect.yaml; the flow name comes from the entrypoint's @flow(name=...)."""
    doc = load_prefect_yaml(path)
    shared = (doc.get("definitions") or {}).get("schedules") or {}
    result = []
    for item in doc.get("deployments") or []:
        schedules = list(item.get("schedules") or [])
        # YAML aliases load as the very same object: `is` tells which shared schedule a deployment uses.
        integrations = [name for s in schedules for name, shared_s in shared.items() if s is shared_s]
        result.append(
            DeclaredDeployment(
                name=item["name"],
                flow_name=flow_name_of(item["entrypoint"], path.parent),
                entrypoint=item["entrypoint"],
                work_pool=(item.get("work_pool") or {}).get("name", WORK_POOL),
                parameters=dict(item.get("parameters") or {}),
                schedules=schedules,
                integrations=integrations,
                concurrency_limit=item.get("concurrency_limit"),
            )
        )
    return result


def keeps_a_watermark(deployment: DeclaredDeployment, root: Path = ROOT) -> bool:
    """The deployment's flow reads a cursor from sync_state: two overlapping runs would read the same
    watermark and race to move it, so it must run with `concurrency_limit: 1`."""
    file = deployment.entrypoint.partition(":")[0]
    return "read_cursor(" in (root / file).read_text(encoding="utf-8")


def flow_name_of(entrypoint: str, root: Path = ROOT) -> str:
    """The name in `@flow(name="...")` above the entrypoint's function (read from the source, not imported)."""
    file, _, func = entrypoint.partition(":")
    source = (root / file).read_text(encoding="utf-8")
    match = re.search(r'@flow\(\s*name="([^"]+)"[^)]*\)\s*\ndef ' + re.escape(func) + r"\b", source, re.S)
    return match.group(1) if match else func.replace("_", "-")


# -- schedules: config/integrations.toml -> prefect.yaml ------------------------------------------------


def configured_schedules() -> dict[str, str]:
    """Every schedule the config declares, by anchor name: one per integration (`schedule_cron`), one per
    `<what>_schedule_cron` in an integration's sub-table (`microsoft365.documents` -> microsoft365_documents),
    and one per hub job in `[jobs]`."""
    schedules = {name: config.schedule_cron for name, config in all_integrations().items()}
    with get_settings().integrations_file.open("rb") as fh:
        raw = tomllib.load(fh)
    for name, values in raw.items():
        if name == "jobs":
            schedules.update({job: str(cron) for job, cron in values.items()})
            continue
        for sub, table in values.items():
            if isinstance(table, dict):
                for key, cron in table.items():
                    if key.endswith("schedule_cron"):
                        schedules[f"{name}_{sub}"] = str(cron)
    return schedules


def render_schedules() -> str:
    """The generated `schedules:` block, one anchored entry per configured schedule."""
    lines = [
        f"{_BEGIN}: generated from config/integrations.toml (schedule_cron) by `drymix deploy schedules --write`;",
        "  # `drymix deploy schedules` exits non-zero when this block and the config differ. Do not edit by hand.",
        "  schedules:",
    ]
    for name, cron in sorted(configured_schedules().items()):
        lines += [
            f"    {name}: &{name}_schedule",
            "      <<: *schedule_defaults",
            f'      cron: "{cron}"',
        ]
    lines.append(_END)
    return "\n".join(lines) + "\n"


def _split(text: str) -> tuple[str, str, str]:
    start = text.find(_BEGIN)
    end = text.find(_END, start)
    if start < 0 or end < 0:
        raise ValueError(f"prefect.yaml has no generated block between {_BEGIN.strip()!r} and {_END.strip()!r}")
    end = text.index("\n", end) + 1
    return text[:start], text[start:end], text[end:]


def schedule_drift(path: Path = PREFECT_YAML) -> list[str]:
    """What differs between prefect.yaml's schedules and the config (empty when they agree)."""
    problems: list[str] = []
    _, block, _ = _split(path.read_text(encoding="utf-8"))
    if block != render_schedules():
        problems.append("the generated schedules block is out of date: run `drymix deploy schedules --write`")
    shared = ((load_prefect_yaml(path).get("definitions") or {}).get("schedules")) or {}
    for name, expected in sorted(configured_schedules().items()):
        cron = (shared.get(name) or {}).get("cron")
        if cron != expected:
            problems.append(f"{name}: prefect.yaml cron {cron!r} != config {expected!r}")
    for deployment in declared_deployments(path):
        if len(deployment.integrations) != len(deployment.schedules):
            problems.append(
                f"{deployment.name}: every schedule must be an alias of definitions.schedules (*<integration>_schedule), "
                "so that it follows config/integrations.toml"
            )
    return problems + registry_drift(path)


def registry_drift(path: Path = PREFECT_YAML) -> list[str]:
    """What differs between prefect.yaml's deployments and the dataset registry (hub/datasets.py): each
    registered dataset with a deployment has it, running its flow on its schedule, and every deployment is
    a registered dataset or a hub job (empty when they agree)."""
    from hub.datasets import DATASETS, HUB_JOBS

    problems: list[str] = []
    deployed = {d.name: d for d in declared_deployments(path)}
    expected: dict[str, tuple[str | None, str | None]] = {
        d.deployment: (d.flow, d.schedule) for d in DATASETS if d.deployment is not None
    }
    for name, entrypoint, schedule in (
        *((n, flow, sched) for n, (flow, sched) in expected.items()),
        *((job, f"flows/{schedule}.py:{schedule}", schedule) for job, schedule in HUB_JOBS.items()),
    ):
        found = deployed.get(name)
        if found is None:
            problems.append(f"{name}: registered in hub/datasets.py but prefect.yaml has no such deployment")
            continue
        if found.entrypoint != entrypoint:
            problems.append(f"{name}: prefect.yaml runs {found.entrypoint}, the registry says {entrypoint}")
        if found.integrations != [schedule]:
            problems.append(f"{name}: prefect.yaml schedules {found.integrations}, the registry says [{schedule!r}]")
    for name in sorted(set(deployed) - set(expected) - set(HUB_JOBS)):
        problems.append(f"{name}: a deployment of no registered dataset: declare it in hub/datasets.py (or HUB_JOBS)")
    return problems


def write_schedules(path: Path = PREFECT_YAML) -> bool:
    """Rewrite the generated block from the config; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    head, block, tail = _split(text)
    fresh = render_schedules()
    if block == fresh:
        return False
    path.write_text(head + fresh + tail, encoding="utf-8")
    return True


# -- secrets: which Prefect Secret blocks the hub reads ----------------------------------------------


def secret_block_names() -> dict[str, str]:
    """Settings field -> Secret block name (`sap_password` -> `sap-password`), for every secret setting."""
    return {
        name: name.replace("_", "-")
        for name, field in HubSettings.model_fields.items()
        if field.annotation is SecretStr
    }


def secrets_from_environment(settings: HubSettings) -> dict[str, str]:
    """Block name -> value for every secret setting that is set in this environment (or .env)."""
    values = {}
    for field, block in secret_block_names().items():
        value = getattr(settings, field).get_secret_value()
        if value:
            values[block] = value
    return values


def save_secret_blocks(values: dict[str, str]) -> list[str]:
    """Store each value as a Prefect Secret block (overwriting); returns the block names."""
    from prefect.blocks.system import Secret

    for name, value in values.items():
        Secret(value=SecretStr(value)).save(name, overwrite=True, _sync=True)  # type: ignore[call-arg]
    return sorted(values)


# -- registration -------------------------------------------------------------------------------------


def ensure_work_pool(client: Any, name: str = WORK_POOL) -> None:
    """A process work pool named `name` (created when missing)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        client.read_work_pool(name)
    except ObjectNotFound:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass  # a starting worker (`prefect worker start --type process`) created it meanwhile


def register_deployments(api_url: str, *, env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """`prefect deploy --all` against `api_url` from the project root; returns its output, raises on failure."""
    run_env = {**os.environ, **(env or {}), "PREFECT_API_URL": api_url, "DRYMIX_HOME": str(ROOT)}
    run_env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed (exit {completed.returncode}):\n{output[-4000:]}")
    return output


def set_paused(client: Any, paused: bool, names: list[str] | None = None) -> list[str]:
    """Pause (or resume) the schedules of the declared deployments; returns the full names changed."""
    changed = []
    for deployment in declared_deployments():
        if names and deployment.name not in names:
            continue
        registered = client.read_deployment_by_name(deployment.full_name)
        if paused:
            client.pause_deployment(registered.id)  # the server also drops its scheduled runs
        else:
            client.resume_deployment(registered.id)
        changed.append(deployment.full_name)
    return changed


@dataclass
class BootstrapReport:
    api_url: str
    work_pool: str
    rate_limits: list[str]
    secret_blocks: list[str]
    deployments: list[str]


def bootstrap(api_url: str, *, secrets: dict[str, str] | None = None, deploy: bool = True) -> BootstrapReport:
    """Everything a Prefect server needs to run the hub: the work pool, the rate limits, the Secret blocks
    (`secrets`: block name -> value), and the deployments of prefect.yaml."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hub.runtime.rate_limits import ensure_rate_limits

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            ensure_work_pool(client)
            limits = ensure_rate_limits(client)
        blocks = save_secret_blocks(secrets or {})
    deployed = []
    if deploy:
        register_deployments(api_url)
        deployed = [d.full_name for d in declared_deployments()]
    return BootstrapReport(api_url, WORK_POOL, [spec.name for spec in limits], blocks, deployed)
