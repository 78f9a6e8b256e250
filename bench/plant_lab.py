"""Benchmark: OPC UA status reads of 100 plant tags, connector against raw asyncua, and a 1,000-row lab export.

Run: .venv/bin/python bench/plant_lab.py   (DATABASE_URL selects the database for the lab part)

1. The plant sandbox runs in its own process (as a plant's OPC UA server runs on its own machine), with
   5 mixers so that it has more than 100 status tags; the first 100 are read.
2. Connector: ``PlantConnector.read_tags`` of the 100 tags (one Read request at page_size 100), which also
   turns every DataValue into a TagReading with status code and timestamps. Per read latency -> p95 and
   reads/s; values/s = 100 x reads/s.
3. Baseline in the same run, against the same server and nodes: raw asyncua ``Client.read_attributes`` of
   the same 100 nodes. Connector and raw rounds alternate so that neither gets a quieter machine.
4. ``lab_1000_rows_s``: bench/_lab.py's ``lab_1000_rows_seconds()`` (read, map, validate and load a 1,000-row
   lab export, median of warm runs).

Plan targets: p95 under 200 ms, at least 100 reads/s, connector/raw at least 0.8, lab export under 1 s.
The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TAGS = 100
ROUNDS = 5
READS_PER_ROUND = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "plant", "--port", str(port), "--mixers", "5", "--speed", "50",
         "--state-file", str(state_dir / "plant_state.json")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"opc.tcp://127.0.0.1:{port}/drymix/plant/"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the plant sandbox exited") from None
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the plant sandbox did not start")


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[94]


async def measure(url: str) -> dict[str, float]:
    from asyncua import Client

    from connectors.plant import PlantConnector
    from hub.core.settings import plant_opcua_config

    config = plant_opcua_config().model_copy(update={"base_url": url})
    async with PlantConnector(config) as plant, Client(url, timeout=config.timeout_s) as raw:
        tags = (await plant.status_tags())[:TAGS]
        if len(tags) < TAGS:
            raise RuntimeError(f"the sandbox has only {len(tags)} status tags")
        raw_nodes = [raw.get_node(t.node_id) for t in tags]
        for _ in range(20):  # warm-up: sessions, node caches, the server's first reads
            await plant.read_tags(tags)
            await raw.read_attributes(raw_nodes)
        latencies: list[float] = []
        connector_s = raw_s = 0.0
        values = 0
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(READS_PER_ROUND):
                t0 = time.perf_counter()
                readings = await plant.read_tags(tags)
                latencies.append(time.perf_counter() - t0)
                values += len(readings)
            connector_s += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(READS_PER_ROUND):
                data_values = await raw.read_attributes(raw_nodes)
                assert len(data_values) == TAGS
            raw_s += time.perf_counter() - start
        # Throughput with 4 callers sharing the session (requests pipelined on one secure channel).
        start = time.perf_counter()
        await asyncio.gather(*(_loop_reads(plant, tags, READS_PER_ROUND) for _ in range(4)))
        concurrent_reads_per_s = 4 * READS_PER_ROUND / (time.perf_counter() - start)
    reads = ROUNDS * READS_PER_ROUND
    values_per_s = values / connector_s
    raw_values_per_s = reads * TAGS / raw_s
    return {
        "opcua_read100_p95_ms": round(p95(latencies) * 1000, 2),
        "opcua_reads_per_s": round(reads / connector_s, 1),
        "values_per_s": round(values_per_s, 0),
        "raw_values_per_s": round(raw_values_per_s, 0),
        "ratio_to_raw": round(values_per_s / raw_values_per_s, 3),
        "opcua_reads_per_s_4_callers": round(concurrent_reads_per_s, 1),
    }


async def _loop_reads(plant: object, tags: Sequence[object], count: int) -> None:
    for _ in range(count):
        await plant.read_tags(tags)  # type: ignore[attr-defined]


def main() -> int:
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="plant-bench-") as tmp:
        proc, url = start_sandbox(Path(tmp))
        try:
            result = asyncio.run(measure(url))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"OPC UA read of {TAGS} tags: p95 {result['opcua_read100_p95_ms']} ms, {result['opcua_reads_per_s']} reads/s; "
          f"connector {result['values_per_s']:.0f} values/s vs raw asyncua {result['raw_values_per_s']:.0f} values/s "
          f"(ratio {result['ratio_to_raw']}); {result['opcua_reads_per_s_4_callers']} reads/s with 4 callers on one session")

    from bench._lab import lab_1000_rows_seconds

    result["lab_1000_rows_s"] = round(lab_1000_rows_seconds(), 3)
    print(f"1,000-row lab export read and loaded in {result['lab_1000_rows_s']} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
