"""The dataset registry (hub/datasets.py) and what loops over it: every flow and deployment is registered,
`drymix datasets` and `drymix sync <dataset>` know every dataset, and every dataset run in a fresh process
leaves its call measurements in `call_metrics`, where `drymix health` shows its integration."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.datasets import (
    HUB_JOBS,
    Dataset,
    all_datasets,
    by_name,
    declared_unit_kinds,
    monitored_integrations,
    runnable,
)
from tests.hub.cli.test_cli import drymix

ROOT = Path(__file__).resolve().parents[2]


# --- the registry is complete ----------------------------------------------------------------------------


def _flow_functions() -> dict[str, str]:
    """`flows/<file>.py:<function>` -> flow name, for every @flow in flows/ (read from the source)."""
    found = {}
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) and deco.func.id == "flow":
                        found[f"flows/{path.name}:{node.name}"] = node.name
    return found


def test_every_flow_is_a_registered_dataset_or_a_hub_job() -> None:
    registered = {d.flow for d in all_datasets() if d.flow}
    jobs = {f"flows/{schedule}.py:{schedule}" for schedule in HUB_JOBS.values()}
    flows = set(_flow_functions())
    assert flows, "no @flow found in flows/"
    assert flows - registered - jobs == set(), "a flow that moves data must be declared in hub/datasets.py"
    assert registered | jobs <= flows, "a registered entrypoint names no @flow"


def test_every_deployment_of_prefect_yaml_is_a_registered_dataset_or_a_hub_job() -> None:
    from hub.operations.deploy import declared_deployments, prefect_yaml_diff

    deployed = {d.name: d for d in declared_deployments()}
    for dataset in all_datasets():
        if dataset.deployment is not None:
            assert deployed[dataset.deployment].entrypoint == dataset.flow
            assert deployed[dataset.deployment].integrations == ([dataset.schedule] if dataset.schedule else [])  # none: queued on demand
    assert set(deployed) == {d.deployment for d in all_datasets() if d.deployment} | set(HUB_JOBS)
    assert prefect_yaml_diff() == "", "prefect.yaml is rendered from the registry: run `drymix deploy render`"


def _declared_elsewhere(name: str = "lab.elsewhere", deployment: str | None = "collect-elsewhere") -> Dataset:
    import dataclasses

    return dataclasses.replace(by_name("lab.lab_results"), name=name, deployment=deployment)


def test_a_registered_dataset_joins_the_registry_and_leaves_it() -> None:
    from hub.datasets import register, unregister

    extra = _declared_elsewhere()
    assert register(extra) is extra and register(extra) is extra  # the same declaration twice: no change
    try:
        assert all_datasets()[-1] is extra and by_name("lab.elsewhere") is extra
    finally:
        assert unregister("lab.elsewhere") is extra
    assert extra not in all_datasets()
    with pytest.raises(KeyError, match="no registered dataset 'lab.elsewhere'"):
        unregister("lab.elsewhere")
    with pytest.raises(ValueError, match="cannot be unregistered"):
        unregister("sap.customers")


def test_register_refuses_a_name_or_deployment_that_is_taken() -> None:
    from hub.datasets import register, registered

    with pytest.raises(ValueError, match="a dataset named 'sap.customers' is already hub/datasets.py DATASETS"):
        register(_declared_elsewhere(name="sap.customers"))
    with pytest.raises(ValueError, match="deployment 'collect-lab-results' is lab.lab_results's"):
        register(_declared_elsewhere(deployment="collect-lab-results"))
    with pytest.raises(ValueError, match="is a hub job"):
        register(_declared_elsewhere(deployment="retry-failed-units"))
    with registered(_declared_elsewhere()):
        with pytest.raises(ValueError, match="a dataset named 'lab.elsewhere' is already registered"):
            register(_declared_elsewhere(deployment=None))
    assert [d.name for d in all_datasets() if d.name == "lab.elsewhere"] == []


def test_registered_unregisters_after_a_failing_block() -> None:
    from hub.datasets import registered

    with pytest.raises(RuntimeError, match="boom"), registered(_declared_elsewhere()):
        raise RuntimeError("boom")
    assert "lab.elsewhere" not in {d.name for d in all_datasets()}


def test_a_plugin_that_cannot_be_loaded_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.datasets import PLUGINS_ENV

    monkeypatch.setenv(PLUGINS_ENV, "tests.hub.no_such_module:DATASETS")
    with pytest.raises(ImportError, match="DRYMIX_DATASETS: cannot load 'tests.hub.no_such_module:DATASETS'"):
        all_datasets()
    monkeypatch.setenv(PLUGINS_ENV, "hub.datasets:NO_SUCH_NAME")
    with pytest.raises(ImportError, match="has no attribute 'NO_SUCH_NAME'"):
        all_datasets()


def test_every_failed_unit_kind_has_a_rerun_handler_and_every_handler_a_dataset() -> None:
    from hub.ledger.retry_units import _REGISTRY, rerun_spec

    for kind, dataset in declared_unit_kinds().items():
        spec = rerun_spec({"kind": kind})
        assert spec is not None and spec.description, f"{dataset}: no rerun for {kind}"
    # Handlers registered by hand (work that is not a dataset's flow) still belong to a declared dataset.
    # Test modules register kinds of their own (tests/hub/ledger/test_error_workflow.py): only the product's count.
    product = {kind for kind, spec in _REGISTRY.items() if not spec.handler.__module__.startswith("tests.")}
    assert product <= set(declared_unit_kinds())


def test_every_replay_rule_belongs_to_a_dataset_and_every_declared_replay_exists() -> None:
    from hub.ledger.quarantine import _REPLAYS, replay_spec

    declared = {(d.integration, replay) for d in all_datasets() for replay in d.replays}
    for integration, dataset in declared:
        assert replay_spec(integration, dataset) is not None, f"{integration}.{dataset}"
    # Rules registered by hand (datasets not run by the sync engine) belong to a declared dataset; the
    # engine's datasets replay through their stream (hub/ledger/quarantine.py `_from_stream`).
    assert set(_REPLAYS) <= declared


def test_each_dataset_names_a_schedule_mapping_suite_and_simulator_that_exist() -> None:
    from hub.operations.deploy import configured_schedules
    from hub.operations.stack import sandbox_commands

    schedules = configured_schedules()
    simulators = sandbox_commands()
    for d in all_datasets():
        if d.schedule is not None:
            assert d.schedule in schedules, d.name
        if d.mapping is not None:
            assert (ROOT / "data_mappings" / f"{d.mapping}.py").is_file(), d.name
        if d.suite is not None:
            assert (ROOT / "expectations" / f"{d.suite}.py").is_file(), d.name
        if d.simulator is not None:
            assert d.simulator in simulators, d.name
    assert len({d.name for d in all_datasets()}) == len(all_datasets())
    assert by_name("sap.customers").flow_function == "sync_sap_customers"
    with pytest.raises(KeyError, match="no dataset 'sap.nothing'"):
        by_name("sap.nothing")


def test_monitoring_lists_every_registered_integration_plus_the_configured_extras() -> None:
    expected = {"sap", "razorpay", "whatsapp", "plant_opcua", "lab", "microsoft365", "google_workspace"}
    assert set(monitored_integrations()) == expected
    assert set(monitored_integrations(["erp_ftp"])) == expected | {"erp_ftp"}


def test_every_registered_integration_has_its_config_and_a_smoke_connection_check() -> None:
    from hub.core.settings import all_integrations
    from hub.operations.smoke import connection_checks

    checks = connection_checks()  # `drymix smoke` runs one per configured integration
    for name in monitored_integrations():
        assert name in all_integrations(), f"{name}: no [{name}] table in config/integrations.toml"
        assert checks.get(name) is not None, f"{name}: `drymix smoke` has no connection check for it"


def test_every_registered_simulator_is_wired_into_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.operations.stack import sandbox_wiring

    monkeypatch.setenv("DRYMIX_STACK_DIR", str(tmp_path))  # the Google wiring writes its key file there
    for d in all_datasets():
        if d.simulator is not None:
            wiring = sandbox_wiring(d.simulator)
            assert wiring is not None and wiring.env, f"{d.name}: `drymix stack up` does not point the worker at {d.simulator}"


def test_the_stack_starts_the_simulator_of_every_registered_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from hub.datasets import registered
    from hub.operations.stack import plan_stack

    monkeypatch.setenv("DRYMIX_STACK_DIR", str(tmp_path))
    plan = plan_stack(sandbox=True, fixed_ports=False)
    started = {p.name for p in plan.processes if p.name.startswith("sandbox-")}
    assert started == {f"sandbox-{d.simulator}" for d in all_datasets() if d.simulator}
    with registered(dataclasses.replace(_declared_elsewhere(), simulator="widgets")):
        with pytest.raises(KeyError, match="lab.elsewhere: simulator 'widgets' is no `drymix sandbox` command"):
            plan_stack(sandbox=True, fixed_ports=False)


def test_health_report_lists_every_registered_integration_before_any_call(db: str) -> None:
    from datetime import timedelta

    from hub.monitoring.config import MonitoringConfig
    from hub.monitoring.health import integration_stats

    listed = [st.integration for st in integration_stats(timedelta(minutes=15), config=MonitoringConfig(integrations=["erp_ftp"]))]
    assert listed == sorted([*monitored_integrations(), "erp_ftp"])


# --- the CLI over the registry ---------------------------------------------------------------------------


def test_sync_has_a_command_per_runnable_dataset_and_keeps_the_old_verb() -> None:
    from typer.main import get_command

    from hub.cli.main import app

    sync = get_command(app).commands["sync"]  # type: ignore[attr-defined]
    assert set(sync.commands) == {d.name for d in runnable()} | {"sap-customers"}
    assert "datasets" in get_command(app).commands  # type: ignore[attr-defined]


def test_datasets_command_shows_schedule_watermark_last_run_and_open_errors(db: str) -> None:
    from sqlalchemy import update

    from connectors.core.errors import SyncFailed
    from hub.core.db import get_engine
    from hub.core.models import IntegrationErrorRow
    from hub.ledger.errors import record_error
    from hub.ledger.loading import write_cursor

    with get_engine().begin() as conn:
        write_cursor(conn, "sap", "customers", {"last_change_date": "2026-11-30"}, flow_run_id="run-sap-1", rows_added=3)
        write_cursor(conn, "google_workspace", "events:depot.ops@drymix.in", {"sync_token": "tok-1"}, flow_run_id="run-g-1", rows_added=1)
    for n, status in enumerate(("pending", "escalated", "resolved")):
        error_id = record_error(SyncFailed(f"boom {n}", integration="sap", operation="read"), integration="sap", dataset="customers", unit={"n": n})
        with get_engine().begin() as conn:
            conn.execute(update(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id).values(status=status))
    record_error(SyncFailed("elsewhere", integration="sap", operation="read"), integration="sap", dataset="sales_orders")
    listed = drymix("datasets", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {d.name for d in all_datasets()}
    sap = rows["sap.customers"]
    assert sap["schedule"] == "*/15 * * * *" and sap["deployment"] == "sync-sap-customers"
    assert sap["watermark"] == {"customers": {"last_change_date": "2026-11-30"}}
    assert sap["last_run_id"] == "run-sap-1" and sap["last_success_at"]
    assert sap["open_errors"] == 2  # pending + escalated; the resolved one is not open
    google = rows["google_workspace.calendar"]
    # A per-calendar cursor is found by its prefix; the token itself is never printed.
    assert google["watermark"] == {"events:depot.ops@drymix.in": {"sync_token": "***"}} and google["open_errors"] == 0
    assert "tok-1" not in listed.stdout
    assert rows["whatsapp.messages"]["schedule"] is None and rows["lab.lab_results"]["watermark"] is None

    table = drymix("datasets", env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "sap.customers" in table.stdout and "last_change_date=2026-11-30" in table.stdout and "run-sap-1" in table.stdout


def test_sync_dataset_runs_the_flow_and_full_refresh_only_where_there_is_one(db: str) -> None:
    from sandbox.core import running_server
    from sandbox.sap import SapSandbox

    with running_server(SapSandbox(partners=40, seed=3, max_page_size=10)) as base:
        env = {"SAP_BASE_URL": f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"}
        result = drymix("sync", "sap.customers", "--full-refresh", "--json", env=env)
        # A large load's batch size (docs/scaling.md): one page a batch here, where the configured 10 read all at once.
        paged = drymix("sync", "sap.customers", "--full-refresh", "--batch-pages", "1", "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["mode"], summary["extracted"], summary["batches"]) == ("full", 40, 1)
    assert paged.returncode == 0, paged.stderr[-3000:]
    summary = json.loads(paged.stdout.strip().splitlines()[-1])
    assert (summary["extracted"], summary["batches"]) == (40, summary["pages"]) and summary["pages"] >= 4
    refused = drymix("sync", "plant_opcua.plant", "--full-refresh", env={"COLUMNS": "200"})  # it keeps no watermark to ignore
    assert refused.returncode == 2 and "No such option: --full-refresh" in refused.stderr
    refused = drymix("sync", "plant_opcua.plant", "--batch-pages", "2", env={"COLUMNS": "200"})
    assert refused.returncode == 2 and "No such option: --batch-pages" in refused.stderr


# --- THE metrics test: every dataset in a fresh process reaches call_metrics and `drymix health` ----------

Runner = Callable[[Path], AbstractContextManager[list[str]]]


@contextmanager
def _sap(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.sap import SapSandbox

    with running_server(SapSandbox(partners=20, seed=9)) as base:
        yield [f"SAP_BASE_URL={base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"]


@contextmanager
def _sap_sales_orders(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.sap import build_sap_system

    # One SAP host serving both services: the sales-order service is found beside SAP_BASE_URL's.
    with running_server(build_sap_system(partners=20, orders=30, seed=9)) as base:
        yield [f"SAP_BASE_URL={base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"]


@contextmanager
def _sap_customer_push(tmp: Path) -> Iterator[list[str]]:
    from hub.core.db import get_engine
    from hub.systems.sap_push import enqueue_customer_change
    from sandbox.core import running_server
    from sandbox.sap import SapSandbox

    with get_engine().begin() as conn:
        enqueue_customer_change(conn, "ERP-REG-001", {"name": "Registry Traders", "city": "Pune", "postal_code": "411001", "country": "IN"})
    with running_server(SapSandbox(partners=5, seed=9)) as base:
        yield [f"SAP_BASE_URL={base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"]


@contextmanager
def _razorpay(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.razorpay import RazorpaySandbox

    sandbox = RazorpaySandbox()
    try:
        with running_server(sandbox) as base:
            yield [f"RAZORPAY_BASE_URL={base}/v1/"]
    finally:
        sandbox.close()


@contextmanager
def _webhooks(tmp: Path) -> Iterator[list[str]]:
    import orjson

    from hub.core.db import get_engine
    from hub.ingress.inbox import PendingEvent, write_batch

    body = orjson.dumps({"event": "payment.authorized", "created_at": 1_764_000_000, "payload": {"payment": {"entity": {
        "id": "pay_Reg00000000001", "order_id": "order_Reg0000000001", "status": "authorized", "created_at": 1_764_000_000}}}})
    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent("razorpay", "evt_registry", "payment.authorized", body, {}, None, datetime.now(UTC))], [])
    yield []


@contextmanager
def _plant(tmp: Path) -> Iterator[list[str]]:
    from sandbox.plant import ThreadedPlant

    with ThreadedPlant(mixers=1, speed=1.0, ring_size=5) as plant:
        yield [f"PLANT_OPCUA_URL={plant.url}", f"PLANT_OPCUA_BUFFER_DIR={tmp / 'plant_buffer'}"]


@contextmanager
def _lab(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.lab import LabSandbox

    sandbox = LabSandbox(seed=11)
    sandbox.test_session(batch_ids=["B-M1-000301"])
    (tmp / "lab_drop").mkdir()
    with running_server(sandbox) as base:
        yield [f"LAB_API_URL={base}", f"LAB_DROP_DIR={tmp / 'lab_drop'}"]


def _graph_env(base: str) -> list[str]:
    return [f"MICROSOFT365_BASE_URL={base}/v1.0/", "MICROSOFT365_TOKEN_URL=" + base + "/{tenant}/oauth2/v2.0/token"]


@contextmanager
def _documents(tmp: Path) -> Iterator[list[str]]:
    from hub.systems.documents import enqueue_document
    from sandbox.core import running_server
    from sandbox.microsoft365 import Microsoft365Sandbox

    enqueue_document("INV-2026-REG001", "ERP/Invoices", "INV-2026-REG001.pdf", content=b"%PDF-1.7 registry")
    with running_server(Microsoft365Sandbox(seed=5)) as base:
        yield _graph_env(base)


@contextmanager
def _outlook(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.microsoft365 import Microsoft365Sandbox

    with running_server(Microsoft365Sandbox(seed=6)) as base:
        yield _graph_env(base)


@contextmanager
def _google(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.google_calendar import GoogleCalendarSandbox
    from tests.google_support import write_key_file

    sandbox = GoogleCalendarSandbox()
    write_key_file(sandbox)
    with running_server(sandbox) as base:
        yield [f"GOOGLE_BASE_URL={base}/calendar/v3/", f"GOOGLE_TOKEN_URL={base}/token"]


@contextmanager
def _whatsapp(tmp: Path) -> Iterator[list[str]]:
    from sandbox.core import running_server
    from sandbox.whatsapp import WhatsAppSandbox

    sandbox = WhatsAppSandbox()
    try:
        with running_server(sandbox) as base:
            yield [f"WHATSAPP_BASE_URL={base}/v21.0/"]
    finally:
        sandbox.close()


# Each registered dataset against its simulator, small: a new dataset fails the test below until it is added here.
SANDBOXES: dict[str, Runner] = {
    "sap.customers": _sap,
    "sap.customer_push": _sap_customer_push,
    "sap.sales_orders": _sap_sales_orders,
    "razorpay.payments": _razorpay,
    "webhooks.events": _webhooks,
    "plant_opcua.plant": _plant,
    "lab.lab_results": _lab,
    "microsoft365.documents": _documents,
    "microsoft365.calendar": _outlook,
    "google_workspace.calendar": _google,
    "whatsapp.messages": _whatsapp,
}
# The dataset a person sends by command (its flow is the queued form, `whatsapp send --queue`): how it is run here.
COMMANDS = {"whatsapp.messages": ["whatsapp", "send", "--to", "+919811111111", "--template", "order_update", "--param", "SO-4711", "--json"]}


def _minute_rows(integration: str) -> int:
    from hub.core.db import get_engine
    from hub.core.models import CallMetric

    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(CallMetric).where(CallMetric.integration == integration)).scalar_one())


def test_every_registered_dataset_is_wired_for_the_metrics_test() -> None:
    assert set(SANDBOXES) == {d.name for d in all_datasets()}
    assert {d.name for d in all_datasets() if d.flow is None} <= set(COMMANDS)


@pytest.mark.parametrize("dataset", all_datasets(), ids=lambda d: d.name)
def test_a_dataset_run_in_a_fresh_process_reaches_call_metrics_and_health(dataset: Dataset, db: str, tmp_path: Path) -> None:
    assert dataset.name in SANDBOXES, f"wire {dataset.name} into SANDBOXES"
    assert not any(_minute_rows(name) for name in dataset.integrations)  # `db` emptied call_metrics
    args = COMMANDS.get(dataset.name) or ["sync", dataset.name, "--json"]
    with SANDBOXES[dataset.name](tmp_path) as assignments:
        env = dict(item.split("=", 1) for item in assignments)
        env["METRICS_ENABLED"] = "1"
        result = drymix(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # The process has exited: what it measured is in the database, not lost with it.
    measured = [name for name in dataset.integrations if _minute_rows(name)]
    assert measured, f"{dataset.name}: no call_metrics rows for {dataset.integrations} after `drymix {' '.join(args)}`"
    health = drymix("health", "--json")
    assert health.returncode == 0, health.stderr
    listed = {st["integration"]: st for st in json.loads(health.stdout)["integrations"]}
    for name in dataset.integrations:
        assert name in listed, f"`drymix health` does not list {name}"
    assert any(listed[name]["calls"] + listed[name]["webhooks_processed"] > 0 for name in measured)
