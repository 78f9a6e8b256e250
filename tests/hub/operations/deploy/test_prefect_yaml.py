"""prefect.yaml: one deployment per flow, schedules from config/integrations.toml, shared definitions, no secrets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.core.settings import ROOT, all_integrations, reset_settings_cache
from hub.operations.deploy import (
    PREFECT_YAML,
    configured_schedules,
    declared_deployments,
    load_prefect_yaml,
    schedule_drift,
    secret_block_names,
    write_schedules,
)
from hub.runtime.rate_limits import declared_rate_limits


def test_prefect_yaml_schedules_equal_the_config() -> None:
    assert schedule_drift() == []
    shared = load_prefect_yaml()["definitions"]["schedules"]
    assert {name: s["cron"] for name, s in shared.items()} == configured_schedules()


def test_every_deployment_runs_on_a_shared_schedule_of_its_integration_and_the_shared_pool() -> None:
    for deployment in declared_deployments():
        assert deployment.schedules, f"{deployment.name} has no schedule"
        assert len(deployment.integrations) == len(deployment.schedules), f"{deployment.name} has an inline schedule"
        assert deployment.work_pool == "drymix-process"
    raw = load_prefect_yaml()
    pool = raw["definitions"]["work_pools"]["process"]
    assert all(item["work_pool"] is pool for item in raw["deployments"]), "every deployment reuses *process"


def test_every_flow_has_a_deployment() -> None:
    flows = {}
    for path in sorted((ROOT / "flows").glob("*.py")):
        for name, func in re.findall(r'@flow\(\s*name="([^"]+)"[^)]*\)\s*\ndef (\w+)', path.read_text(), re.S):
            flows[name] = f"flows/{path.name}:{func}"
    assert flows, "no flows found"
    by_flow = {d.flow_name: d.entrypoint for d in declared_deployments()}
    missing = sorted(set(flows) - set(by_flow))
    assert not missing, f"flows without a deployment in prefect.yaml: {missing}"
    for name, entrypoint in flows.items():
        assert by_flow[name] == entrypoint


def test_schedule_drift_is_reported_and_write_regenerates_prefect_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import get_settings

    config = tmp_path / "integrations.toml"
    config.write_text(get_settings().integrations_file.read_text().replace('schedule_cron = "*/15 * * * *"', 'schedule_cron = "7 * * * *"', 1))
    changed = next(n for n, c in all_integrations().items() if c.schedule_cron == "*/15 * * * *")
    copy = tmp_path / "prefect.yaml"
    shutil.copy(PREFECT_YAML, copy)
    for folder in ("flows",):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.setenv("INTEGRATIONS_FILE", str(config))
    reset_settings_cache()
    try:
        problems = schedule_drift(copy)
        assert any(changed in p for p in problems)
        assert write_schedules(copy) is True
        assert schedule_drift(copy) == []
        assert load_prefect_yaml(copy)["definitions"]["schedules"][changed]["cron"] == "7 * * * *"
        # Everything outside the generated block is untouched.
        assert copy.read_text().split("# BEGIN schedules")[0] == PREFECT_YAML.read_text().split("# BEGIN schedules")[0]
        assert write_schedules(copy) is False
    finally:
        monkeypatch.delenv("INTEGRATIONS_FILE")
        reset_settings_cache()


def test_prefect_yaml_templates_no_secret() -> None:
    text = PREFECT_YAML.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    secret_envs = [field.upper() for field in secret_block_names()]
    for name in secret_envs:
        assert name not in body, f"{name} is templated into prefect.yaml (the Prefect UI would show it)"
    # A Secret block resolved into a deployment would be stored, and shown, in plain text.
    assert "prefect.blocks" not in body
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*:", body)
    import os

    for name in secret_envs:
        value = os.environ.get(name)
        if value:
            assert value not in text


def test_secret_block_names_match_what_the_connectors_load() -> None:
    sources = (ROOT / "hub" / "runtime" / "connections.py").read_text()
    loaded = set(re.findall(r'resolve_secret\([^,]+,\s*"([^"]+)"\)', sources))
    assert loaded and loaded <= set(secret_block_names().values())


def test_rate_limits_follow_the_config_budgets() -> None:
    specs = {s.integration: s for s in declared_rate_limits()}
    assert set(specs) == set(all_integrations())
    for name, config in all_integrations().items():
        assert specs[name].name == f"rate:{name}"
        assert specs[name].per_second == config.rate_budget_per_s
        assert specs[name].limit >= 1


def test_deploy_schedules_command_passes_on_the_shipped_files() -> None:
    done = subprocess.run([sys.executable, "-m", "hub.cli.main", "deploy", "schedules"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_deployments_that_must_not_overlap_run_one_at_a_time() -> None:
    """A flow that keeps a watermark in sync_state (and the SAP customer sync by name) has concurrency_limit 1."""
    from hub.operations.deploy import keeps_a_watermark

    deployments = {d.name: d for d in declared_deployments()}
    assert deployments["sync-sap-customers"].concurrency_limit == 1
    watermarked = [d.name for d in deployments.values() if keeps_a_watermark(d)]
    assert {"sync-sap-customers", "reconcile-razorpay", "sync-microsoft-calendar", "sync-google-calendar"} <= set(watermarked)
    overlapping = [name for name in watermarked if deployments[name].concurrency_limit != 1]
    assert not overlapping, f"deployments that keep a watermark but may overlap: {overlapping}"
