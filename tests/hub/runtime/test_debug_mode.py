"""Debug mode per integration: only the integration in debug mode writes its redacted call log (HTTP requests and
responses with bounded bodies, OPC UA reads, lab file pickups); the others stay quiet."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from connectors.core.config import PlantOpcuaConfig, RetryPolicy
from connectors.core.redact import register_secret
from hub.core.settings import integration_debug_enabled, plant_opcua_config, reset_settings_cache
from hub.runtime.connections import build_plant_connector, build_razorpay_connector, build_sap_connector
from sandbox.plant import running_plant

BODY_SECRET = "h5-body-secret-Zk42"


@pytest.fixture
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh LOG_DIR and no debug switch from the environment; settings re-read before and after."""
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    for name in ("INTEGRATION_DEBUG", "DEBUG_INTEGRATIONS", "SAP_DEBUG", "RAZORPAY_DEBUG", "PLANT_OPCUA_DEBUG", "LAB_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    reset_settings_cache()
    yield tmp_path / "logs"
    monkeypatch.undo()
    reset_settings_cache()


def entries(log_dir: Path) -> list[dict[str, Any]]:
    path = log_dir / "integration_debug.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _echo(request: httpx.Request) -> httpx.Response:
    # A remote that repeats what it was sent and pads its answer: both bodies must come out bounded and redacted.
    return httpx.Response(200, json={"echo": request.content.decode(), "padding": "x" * 20_000})


def test_only_the_integration_in_debug_mode_logs_its_redacted_requests_and_responses(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAP_DEBUG", "1")
    reset_settings_cache()
    register_secret(BODY_SECRET)
    transport = httpx.MockTransport(_echo)
    sap = build_sap_connector(transport=transport)
    razorpay = build_razorpay_connector(transport=transport)
    try:
        sap.client.request("POST", "A_BusinessPartner", operation="probe",
                           json={"client_secret": BODY_SECRET, "note": "y" * 10_000})
        razorpay.client.request("POST", "orders", operation="probe", json={"amount": 100})
    finally:
        sap.close()
        razorpay.close()
    logged = entries(log_dir)
    assert [e["integration"] for e in logged] == ["sap"]
    (entry,) = logged
    assert entry["kind"] == "http" and entry["response"]["status_code"] == 200 and entry["latency_ms"] >= 0
    assert entry["request"]["headers"]["authorization"] == "***"
    assert len(entry["request"]["body"]) <= 4000 + 40 and entry["request"]["body"].endswith(" bytes)")
    assert len(entry["response"]["body"]) <= 4000
    text = (log_dir / "integration_debug.log").read_text()
    assert BODY_SECRET not in text and "sandbox-secret" not in text


def test_debug_mode_from_the_config_file_and_the_environment(log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = Path(os.environ["INTEGRATIONS_FILE"]).read_text()
    config = tmp_path / "integrations.toml"
    config.write_text(shipped.replace("[razorpay]\n", "[razorpay]\ndebug = true\n", 1))
    monkeypatch.setenv("INTEGRATIONS_FILE", str(config))
    reset_settings_cache()
    assert integration_debug_enabled("razorpay") and not integration_debug_enabled("sap")
    monkeypatch.setenv("RAZORPAY_DEBUG", "0")  # the environment turns the file's setting off for this process
    reset_settings_cache()
    assert not integration_debug_enabled("razorpay")
    monkeypatch.setenv("DEBUG_INTEGRATIONS", "sap,lab")
    reset_settings_cache()
    assert integration_debug_enabled("sap") and integration_debug_enabled("lab") and not integration_debug_enabled("whatsapp")
    monkeypatch.setenv("INTEGRATION_DEBUG", "1")  # the global switch: every integration
    reset_settings_cache()
    assert integration_debug_enabled("whatsapp") and integration_debug_enabled("razorpay")


def test_cli_debug_option_turns_on_one_integration_and_refuses_unknown_names(log_dir: Path, db: str) -> None:
    from hub.cli.main import app

    runner = CliRunner()
    refused = runner.invoke(app, ["--debug", "sapp", "errors", "list", "--json"])
    assert refused.exit_code == 2 and "no integration 'sapp'" in refused.output
    assert not integration_debug_enabled("sap")
    done = runner.invoke(app, ["--debug", "plant_opcua", "--debug", "sap", "errors", "list", "--json"])
    assert done.exit_code == 0, done.output
    assert os.environ["DEBUG_INTEGRATIONS"] == "plant_opcua,sap"
    assert integration_debug_enabled("sap") and integration_debug_enabled("plant_opcua") and not integration_debug_enabled("razorpay")


def _plant_config(url: str, tmp_path: Path) -> PlantOpcuaConfig:
    """The shipped [plant_opcua] pointed at the sandbox, with test-sized timeouts and retries."""
    return plant_opcua_config().model_copy(update={
        "base_url": url, "timeout_s": 3.0, "connect_timeout_s": 2.0, "reconnect_max_delay_s": 1.0,
        "retry": RetryPolicy(max_retries=1, base_delay_ms=50, max_delay_ms=200, jitter_ratio=0.0),
        "client_certificate": tmp_path / "pki" / "hub_client_cert.der", "client_private_key": tmp_path / "pki" / "hub_client_key.pem",
        "buffer_dir": tmp_path / "buffer",
    })


def test_opcua_reads_are_logged_for_the_plant_only(log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def read(config: PlantOpcuaConfig) -> list[Any]:
        plant = build_plant_connector(config)
        async with plant:
            tags = [t for t in await plant.status_tags() if t.tag.startswith("Mixers/M1/")][:3]
            return await plant.read_tags(tags)

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with running_plant(mixers=1, ring_size=3, speed=1.0) as sim:
            quiet = await read(_plant_config(sim.url, tmp_path))  # SAP in debug mode only: the plant says nothing
            monkeypatch.setenv("PLANT_OPCUA_DEBUG", "1")
            reset_settings_cache()
            return quiet, await read(_plant_config(sim.url, tmp_path))

    monkeypatch.setenv("SAP_DEBUG", "1")
    reset_settings_cache()
    quiet, readings = asyncio.run(scenario())
    assert len(quiet) == 3
    logged = entries(log_dir)
    # Every read of the second session (the connect's namespace and limit reads, discovery's, then the tags'), nothing of the first.
    assert {(e["integration"], e["kind"], e["operation"]) for e in logged} == {("plant_opcua", "opcua", "read")}
    by_node = {e["node"]: e for e in logged}  # the last read of each node: the tags' Read request
    for reading in readings:
        entry = by_node[reading.node_id]
        assert entry["tag"] == reading.tag and entry["status"] == reading.status_name
        assert entry["value"] == reading.value
        assert entry["latency_ms"] >= 0 and entry["nodes_in_request"] == 3
