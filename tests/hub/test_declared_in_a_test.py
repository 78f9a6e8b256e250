"""A dataset declared only in this test module reaches every registry-driven surface of the hub with no edit
elsewhere: `drymix datasets`, `drymix sync <dataset>`, monitoring's integration list (`drymix health`) and the
prefect.yaml renderer (`drymix deploy render`).

In this process it is registered for a `with registered(WIDGETS):` block; a `drymix` subprocess loads it as
a plug-in (DRYMIX_DATASETS=<this module>:WIDGETS), as a worker would load a system package. Its schedule key
comes from a copy of the integrations file with one more table, as a new integration's would.

Reruns of its failed units and quarantine replay are not here yet: they join when the sync engine runs
declared datasets (issue 14, item 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import flow

from hub.datasets import PLUGINS_ENV, Dataset, all_datasets, by_name, registered
from tests.hub.cli.test_cli import drymix

CRON = "*/30 * * * *"


@flow(name="sync-erp-demo-widgets")
def sync_widgets() -> dict[str, Any]:
    """The new dataset's flow: three widgets read and loaded, the watermark moved (no system to call)."""
    from prefect.runtime import flow_run

    from hub.core.db import get_engine
    from hub.ledger.loading import write_cursor

    with get_engine().begin() as conn:
        write_cursor(conn, "erp_demo", "widgets", {"last_widget_id": 3}, flow_run_id=str(flow_run.id), rows_added=3)
    return {"integration": "erp_demo", "dataset": "widgets", "mode": "incremental", "extracted": 3, "loaded": 3}


WIDGETS = Dataset(
    name="erp_demo.widgets",
    integration="erp_demo",
    dataset="widgets",
    description="Demo widgets into the ERP widgets table (declared in a test module only).",
    flow="tests/hub/test_declared_in_a_test.py:sync_widgets",
    deployment="sync-erp-demo-widgets",
    schedule="erp_demo",
    table="widgets",
    key=("widget_id",),
    cursor="last widget id read",
    cursor_datasets=("widgets",),
    error_datasets=("widgets",),
    concurrency_limit=1,
)

# What a `drymix` subprocess needs to know the dataset: this module as a plug-in.
PLUGIN = {PLUGINS_ENV: f"{__name__}:WIDGETS"}


@pytest.fixture
def erp_demo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The integrations file with an [erp_demo] table (its schedule), for this process and its subprocesses."""
    from hub.core.settings import get_settings, reset_settings_cache

    config = tmp_path / "integrations.toml"
    shipped = get_settings().integrations_file.read_text(encoding="utf-8")
    config.write_text(shipped + f'\n[erp_demo]\nbase_url = "http://127.0.0.1:9/"\nschedule_cron = "{CRON}"\n', encoding="utf-8")
    monkeypatch.setenv("INTEGRATIONS_FILE", str(config))
    reset_settings_cache()
    yield config
    monkeypatch.undo()
    reset_settings_cache()


def test_registered_only_inside_the_block() -> None:
    assert WIDGETS not in all_datasets()
    with registered(WIDGETS):
        assert by_name("erp_demo.widgets") is WIDGETS
    assert WIDGETS not in all_datasets()


def test_drymix_sync_runs_it_and_drymix_datasets_lists_it(db: str, erp_demo_config: Path) -> None:
    from connectors.core.errors import SyncFailed
    from hub.ledger.errors import record_error

    helped = drymix("sync", "--help", env={**PLUGIN, "COLUMNS": "200"})
    assert helped.returncode == 0, helped.stderr
    assert "erp_demo.widgets" in helped.stdout

    ran = drymix("sync", "erp_demo.widgets", "--json", env=PLUGIN)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert (summary["integration"], summary["loaded"]) == ("erp_demo", 3)
    refused = drymix("sync", "erp_demo.widgets", "--full-refresh", env=PLUGIN)  # it declares no full refresh
    assert refused.returncode == 2 and "No such option: --full-refresh" in refused.stderr

    record_error(SyncFailed("widget 2 refused", integration="erp_demo", operation="read"), integration="erp_demo", dataset="widgets")
    listed = drymix("datasets", "--json", env=PLUGIN)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {d.name for d in all_datasets()} | {"erp_demo.widgets"}
    widgets = rows["erp_demo.widgets"]
    assert (widgets["deployment"], widgets["schedule"]) == ("sync-erp-demo-widgets", CRON)
    assert widgets["watermark"] == {"widgets": {"last_widget_id": 3}} and widgets["last_run_id"]
    assert widgets["open_errors"] == 1


def test_monitoring_lists_its_integration(db: str, erp_demo_config: Path) -> None:
    from datetime import timedelta

    from hub.monitoring.config import MonitoringConfig
    from hub.monitoring.health import integration_stats

    def listed() -> set[str]:
        return {st.integration for st in integration_stats(timedelta(minutes=15), config=MonitoringConfig(integrations=[]))}

    assert "erp_demo" not in listed()
    with registered(WIDGETS):
        assert "erp_demo" in listed()  # before its first call: an integration cannot exist unmonitored
    health = drymix("health", "--json", env=PLUGIN)
    assert health.returncode == 0, health.stderr
    assert "erp_demo" in {st["integration"] for st in json.loads(health.stdout)["integrations"]}


def test_prefect_yaml_renders_its_deployment(erp_demo_config: Path) -> None:
    from hub.operations.deploy import PREFECT_YAML, render_prefect_yaml

    with registered(WIDGETS):
        rendered = yaml.safe_load(render_prefect_yaml())
    deployments = {d["name"]: d for d in rendered["deployments"]}
    widgets = deployments["sync-erp-demo-widgets"]
    assert widgets["entrypoint"] == "tests/hub/test_declared_in_a_test.py:sync_widgets"
    assert widgets["description"] == WIDGETS.description
    assert [s["cron"] for s in widgets["schedules"]] == [CRON]
    assert widgets["schedules"][0] is rendered["definitions"]["schedules"]["erp_demo"]  # the shared anchor
    assert widgets["work_pool"] is rendered["definitions"]["work_pools"]["process"]
    assert widgets["concurrency_limit"] == 1 and "erp_demo" in widgets["tags"]
    # Every product deployment is still there, unchanged.
    committed = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"]}
    assert {name: d for name, d in deployments.items() if name != "sync-erp-demo-widgets"} == committed

    checked = drymix("deploy", "render", "--check", env=PLUGIN)  # the committed file lacks it
    assert checked.returncode == 1
    assert "+  - name: sync-erp-demo-widgets\n" in checked.stdout
    assert "+    entrypoint: tests/hub/test_declared_in_a_test.py:sync_widgets\n" in checked.stdout
