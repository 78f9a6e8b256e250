"""prefect.yaml: rendered from the dataset registry and config/integrations.toml, one deployment per flow, shared
definitions, no secrets."""

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
    prefect_yaml_diff,
    render_prefect_yaml,
    secret_block_names,
    write_prefect_yaml,
)
from hub.runtime.rate_limits import declared_rate_limits


def test_the_committed_prefect_yaml_is_what_the_registry_renders() -> None:
    assert prefect_yaml_diff() == "", "prefect.yaml is out of date: run `drymix deploy render` (`make prefect-yaml`)"
    assert PREFECT_YAML.read_text(encoding="utf-8") == render_prefect_yaml()


def test_every_registered_deployment_runs_its_dataset_flow_on_its_schedule() -> None:
    from hub.datasets import HUB_JOBS, all_datasets

    deployed = {d.name: d for d in declared_deployments()}
    for dataset in all_datasets():
        if dataset.deployment is not None:
            assert deployed[dataset.deployment].entrypoint == dataset.flow
            assert deployed[dataset.deployment].integrations == ([dataset.schedule] if dataset.schedule else [])  # none: queued on demand
            assert deployed[dataset.deployment].concurrency_limit == dataset.concurrency_limit
    for job, key in HUB_JOBS.items():
        assert (deployed[job].entrypoint, deployed[job].integrations) == (f"flows/{key}.py:{key}", [key])
    assert set(deployed) == {d.deployment for d in all_datasets() if d.deployment} | set(HUB_JOBS)


def test_prefect_yaml_schedules_equal_the_config() -> None:
    shared = load_prefect_yaml()["definitions"]["schedules"]
    assert {name: s["cron"] for name, s in shared.items()} == configured_schedules()


def test_every_deployment_runs_on_a_shared_schedule_of_its_integration_and_the_shared_pool() -> None:
    from hub.datasets import all_datasets

    on_demand = {d.deployment for d in all_datasets() if d.deployment and d.schedule is None}  # queued jobs only
    for deployment in declared_deployments():
        assert deployment.schedules or deployment.name in on_demand, f"{deployment.name} has no schedule"
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


def test_a_changed_cron_is_a_diff_and_render_rewrites_prefect_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import get_settings

    config = tmp_path / "integrations.toml"
    config.write_text(get_settings().integrations_file.read_text().replace('schedule_cron = "*/15 * * * *"', 'schedule_cron = "7 * * * *"', 1))
    changed = next(n for n, c in all_integrations().items() if c.schedule_cron == "*/15 * * * *")
    copy = tmp_path / "prefect.yaml"
    shutil.copy(PREFECT_YAML, copy)
    shutil.copytree(ROOT / "flows", tmp_path / "flows")  # flow names are read from the entrypoints' sources
    monkeypatch.setenv("INTEGRATIONS_FILE", str(config))
    reset_settings_cache()
    try:
        diff = prefect_yaml_diff(copy)
        assert '-      cron: "*/15 * * * *"' in diff and '+      cron: "7 * * * *"' in diff
        assert write_prefect_yaml(copy) is True
        assert prefect_yaml_diff(copy) == ""
        assert load_prefect_yaml(copy)["definitions"]["schedules"][changed]["cron"] == "7 * * * *"
        assert write_prefect_yaml(copy) is False
    finally:
        monkeypatch.delenv("INTEGRATIONS_FILE")
        reset_settings_cache()


def test_a_hand_edited_deployment_is_a_diff_that_render_check_reports(tmp_path: Path) -> None:
    copy = tmp_path / "prefect.yaml"
    copy.write_text(
        PREFECT_YAML.read_text(encoding="utf-8")
        .replace("  - name: collect-plant\n", "  - name: collect-plant-v2\n")
        .replace("entrypoint: flows/sync_sap_customers.py:sync_sap_customers", "entrypoint: flows/collect_plant.py:collect_plant"),
        encoding="utf-8",
    )
    diff = prefect_yaml_diff(copy)
    assert "-  - name: collect-plant-v2\n" in diff and "+  - name: collect-plant\n" in diff
    assert "+    entrypoint: flows/sync_sap_customers.py:sync_sap_customers\n" in diff
    checked = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "deploy", "render", "--check", "--path", str(copy)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 1 and checked.stdout == diff
    # Rich wraps the message at the terminal width (a long temporary path moves the break): compare words.
    assert "run `drymix deploy render`" in " ".join(checked.stderr.split())


def test_render_refuses_a_schedule_key_the_config_does_not_have() -> None:
    import dataclasses

    from hub.datasets import by_name, registered

    orphan = dataclasses.replace(by_name("lab.lab_results"), name="lab.orphan", deployment="collect-orphan", schedule="no_such_key")
    with registered(orphan), pytest.raises(ValueError, match="schedule key 'no_such_key' is not in"):
        render_prefect_yaml()


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


def test_deploy_render_check_passes_on_the_shipped_files() -> None:
    for verb in (["render", "--check"], ["schedules"]):  # `deploy schedules`: the older verb
        done = subprocess.run([sys.executable, "-m", "hub.cli.main", "deploy", *verb], cwd=ROOT, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_deployments_that_must_not_overlap_run_one_at_a_time() -> None:
    """A dataset that keeps a watermark in sync_state (cursor_datasets) deploys with concurrency_limit 1."""
    from hub.datasets import all_datasets

    deployments = {d.name: d for d in declared_deployments()}
    watermarked = [d.deployment for d in all_datasets() if d.cursor_datasets and d.deployment]
    assert {"sync-sap-customers", "reconcile-razorpay", "sync-microsoft-calendar", "sync-google-calendar"} <= set(watermarked)
    overlapping = [name for name in watermarked if deployments[name].concurrency_limit != 1]
    assert not overlapping, f"deployments that keep a watermark but may overlap: {overlapping}"
