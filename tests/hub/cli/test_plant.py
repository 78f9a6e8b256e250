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
