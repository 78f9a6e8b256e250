"""The plant sandbox itself: batches complete, records survive a restart, fault switches are checked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from sandbox.plant import BatchRecord, PlantFaults, PlantSimulator


def test_completed_batches_are_kept_in_the_state_file_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"

    async def scenario() -> tuple[list[BatchRecord], list[BatchRecord], int]:
        sim = PlantSimulator(port=0, mixers=2, ring_size=4, state_file=state, tick_s=3600.0)
        await sim.start()
        for _ in range(40):  # drive the plant by hand: 40 steps of 50 sandbox seconds
            await sim.step(50.0)
        before = sim.records()
        await sim.stop()
        again = PlantSimulator(port=0, mixers=2, ring_size=4, state_file=state, tick_s=3600.0)
        return before, again.records(), again.batch_counter

    before, after, counter = asyncio.run(scenario())
    assert len(before) == 4 and after == before  # the ring keeps the last 4
    assert counter == before[-1].seq >= 8
    assert [r.seq for r in before] == list(range(counter - 3, counter + 1))
    for record in before:
        assert record.started_at <= record.ended_at <= datetime.now(UTC)
        assert len(record.components) == len(record.target_kg) == len(record.actual_kg)
        assert all(abs(a - t) / t < 0.02 for a, t in zip(record.actual_kg, record.target_kg, strict=True))


def test_faults_are_validated() -> None:
    with pytest.raises(ValidationError):
        PlantFaults(bad_quality_ratio=1.5)
    with pytest.raises(ValidationError):
        PlantFaults(no_such_switch=True)  # type: ignore[call-arg]
    faults = PlantFaults()
    with pytest.raises(ValidationError):
        faults.read_delay_ms = -1


def test_a_free_port_taken_before_the_server_binds_it_is_replaced_by_another(port_taken_before_binding: int) -> None:
    # Another process takes the port free_port() picked while the address space is being built.
    async def scenario() -> tuple[int, int]:
        async with PlantSimulator(port=0, tick_s=3600.0) as sim:
            from asyncua import Client

            async with Client(sim.url) as client:
                children = await client.nodes.objects.get_children()
            return sim.port, len(children)

    port, children = asyncio.run(scenario())
    assert port != port_taken_before_binding and port > 0
    assert children > 1  # the server on the new port serves its address space


def test_a_fixed_port_that_is_taken_is_an_error() -> None:
    import errno
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        sim = PlantSimulator(port=taken.getsockname()[1], tick_s=3600.0)
        with pytest.raises(OSError) as caught:
            asyncio.run(sim.start())
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        taken.close()
