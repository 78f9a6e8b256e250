"""`drymix plant ...` as a user runs it: a real process against the plant sandbox on a real socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sandbox.plant import ThreadedPlant

ROOT = Path(__file__).resolve().parents[3]


def drymix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli.main", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=240, check=False,
    )


def test_plant_tags_read_and_buffer_commands(tmp_path: Path) -> None:
    with ThreadedPlant(mixers=1, speed=1.0, ring_size=5) as plant:
        env = {"PLANT_OPCUA_URL": plant.url, "PLANT_OPCUA_BUFFER_DIR": str(tmp_path / "buffer")}
        tags = drymix("plant", "tags", "--json", env=env)
        read = drymix("plant", "read", "--json", env=env)
    assert tags.returncode == 0, tags.stderr
    listed = {json.loads(line)["tag"]: json.loads(line) for line in tags.stdout.splitlines()}
    assert listed["Mixers/M1/MotorCurrentA"]["unit"] == "A"
    assert read.returncode == 0, read.stderr
    readings = [json.loads(line) for line in read.stdout.splitlines()]
    assert readings and all("status_code" in r and "source_timestamp" in r for r in readings)
    buffer = drymix("plant", "buffer", "--json", env=env)
    assert buffer.returncode == 0 and json.loads(buffer.stdout)["pending"] == {}


def test_plant_read_against_no_server_fails_with_a_clear_message(tmp_path: Path) -> None:
    from sandbox.plant import free_port

    env = {"PLANT_OPCUA_URL": f"opc.tcp://127.0.0.1:{free_port()}/drymix/plant/", "PLANT_OPCUA_BUFFER_DIR": str(tmp_path)}
    result = drymix("plant", "read", env=env)
    assert result.returncode == 1
    assert "SERVER_ERROR" in result.stderr and "cannot connect" in result.stderr


def test_plant_tags_and_read_use_the_site_tag_map_against_another_vendors_server(tmp_path: Path) -> None:
    from tests.connectors.plant.vendor_support import PROFILES, ThreadedVendor

    with ThreadedVendor("s7", tags=60) as server:
        env = {"PLANT_OPCUA_URL": server.url, "PLANT_OPCUA_TAG_MAP": str(PROFILES / "s7-1500.toml"),
               "PLANT_OPCUA_BUFFER_DIR": str(tmp_path / "buffer")}
        tags = drymix("plant", "tags", "--json", env=env)
        read = drymix("plant", "read", "--json", env=env)
        sizes = list(server.sim.request_sizes["MaxNodesPerRead"])
    assert tags.returncode == 0, tags.stderr
    listed = {json.loads(line)["tag"]: json.loads(line) for line in tags.stdout.splitlines()}
    assert listed["Mixers/M2/MotorCurrentA"] == {
        "tag": "Mixers/M2/MotorCurrentA", "node_id": 'ns=3;s="DB_Mixer2"."MotorCurrent"', "unit": "A", "equipment": "Mixers/M2",
        "kind": "analog", "sampling": "subscription (absolute 0.5)", "browse_path": 'nsu=http://www.siemens.com/simatic-s7-opcua;s="DB_Mixer2"."MotorCurrent"',
    }
    assert read.returncode == 0, read.stderr
    readings = [json.loads(line) for line in read.stdout.splitlines()]
    assert len(readings) == len(listed) == 2 * 6 + 4 * 2 + 2 + 60
    assert max(sizes) <= 50  # the server's MaxNodesPerRead


def test_plant_tags_check_lists_drift_and_fails_when_a_mapped_tag_is_missing(tmp_path: Path) -> None:
    from tests.connectors.plant.vendor_support import PROFILES, ThreadedVendor, drifted_kepware_map

    drifted = drifted_kepware_map(tmp_path)
    with ThreadedVendor("kepware", tags=20) as server:
        env = {"PLANT_OPCUA_URL": server.url, "PLANT_OPCUA_BUFFER_DIR": str(tmp_path / "buffer"), "COLUMNS": "200"}
        table = drymix("plant", "tags", "--check", env={**env, "PLANT_OPCUA_TAG_MAP": str(drifted)})
        as_json = drymix("plant", "tags", "--check", "--json", env={**env, "PLANT_OPCUA_TAG_MAP": str(drifted)})
        clean = drymix("plant", "tags", "--check", env={**env, "PLANT_OPCUA_TAG_MAP": str(PROFILES / "kepware.toml")})
    assert table.returncode == 1, table.stderr
    assert "missing on the server" in table.stdout and "Dryer.Dryer1.ExhaustTemp" in table.stdout
    assert "not in the map" in table.stdout and "Silos/Silo3/Material" in table.stdout
    assert "unit differs" in table.stdout
    assert as_json.returncode == 1
    drift = json.loads(as_json.stdout)
    assert [m["mapped"] for m in drift["missing"]] == ["nsu=KEPServerEX;s=Dryer.Dryer1.ExhaustTemp"]
    assert len(drift["unmapped"]) == 4
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "agree" in clean.stdout
