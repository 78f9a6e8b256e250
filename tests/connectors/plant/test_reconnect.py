"""Supervised reconnect against a real asyncua server that is stopped and started again mid-collection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.core.config import PlantOpcuaConfig
from connectors.plant import PlantConnector
from sandbox.plant import PlantSimulator


async def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the plant sandbox did not get there in time")
        await asyncio.sleep(0.05)


def test_server_restart_mid_collection_reconnects_and_loses_no_batch_records(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {"mixers": 3, "speed": 400.0, "tick_s": 0.05, "ring_size": 50, "state_file": tmp_path / "plant_state.json"}

    async def scenario() -> None:
        sim = PlantSimulator(port=0, **kwargs)
        await sim.start()
        port = sim.port
        collected: list[dict[str, Any]] = []
        try:
            async with PlantConnector(plant_config(sim.url, subscription_period_ms=100.0)) as plant:
                current = [t for t in await plant.status_tags() if t.tag == "Mixers/M1/MotorCurrentA"]
                subscription = await plant.subscribe(current)
                await _wait_for(lambda: sim.batch_counter >= 4)
                first = await plant.read_batches(None)
                collected += first.records
                cursor = first.records[-1]["seq"]
                # Batches complete after our last read and just before the server goes away.
                await _wait_for(lambda: sim.batch_counter >= cursor + 3)
                await sim.stop()
                completed_before_restart = sim.batch_counter
                await asyncio.sleep(1.0)
                sim = PlantSimulator(port=port, **kwargs)
                await sim.start()
                restarted_at = datetime.now(UTC)
                assert sim.batch_counter == completed_before_restart  # the ring and counter survived
                await _wait_for(lambda: sim.batch_counter >= completed_before_restart + 3)
                # The same connector, the same session object: asyncua's supervisor re-creates the session.
                second = await plant.read_batches(cursor)
                collected += second.records
                changes = await subscription.collect(2.0)
                await subscription.close()
                assert plant.reconnects >= 1
        finally:
            await sim.stop()
        seqs = [r["seq"] for r in collected]
        assert seqs == list(range(1, seqs[-1] + 1)), "every batch record exactly once, in order"
        assert seqs[-1] >= completed_before_restart + 3
        assert second.missed == 0 and not second.counter_reset
        on_server = {r.seq: r.batch_id for r in sim.records()}
        assert all(on_server[r["seq"]] == r["batch_id"] for r in collected if r["seq"] in on_server)
        assert len({r["batch_id"] for r in collected}) == len(collected)
        # The subscription was re-created on the new server and delivers its values.
        assert any(r.source_timestamp and r.source_timestamp > restarted_at for r in changes)

    asyncio.run(scenario())
