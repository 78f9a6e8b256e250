"""The connector with the shipped Kepware and S7-1500 tag maps against the vendor-shaped asyncua server
(sandbox/plant_vendor.py): another namespace URI, string and numeric NodeIds, no EngineeringUnits on S7,
MaxNodesPerRead 50 and at most two sessions, drift, and a batch structure instead of our ring."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.core.config import PlantOpcuaConfig
from connectors.core.errors import IntegrationError
from connectors.plant import PlantConnector
from connectors.plant.tag_map import load_tag_map
from sandbox.plant_vendor import VendorPlantSimulator
from tests.connectors.plant.vendor_support import PROFILES, drifted_kepware_map


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_kepware_map_reads_more_than_fifty_tags_in_chunks_of_fifty_on_one_session(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("kepware", port=0, tags=100) as sim:
            config = plant_config(sim.url, tag_map=PROFILES / "kepware.toml", page_size=100)
            async with PlantConnector(config) as plant:
                sessions = sim.live_sessions()
                tags = {t.tag: t for t in await plant.discover()}
                before = len(sim.request_sizes.get("MaxNodesPerRead", []))
                readings = await plant.read_snapshot()
                sizes = sim.request_sizes["MaxNodesPerRead"][before:]
                drift = plant.drift
                limits = plant.limits
        assert sessions == 1
        assert (limits.max_nodes_per_read, limits.max_nodes_per_browse, limits.max_monitored_items_per_call) == (50, 50, 100)
        assert len(tags) == 2 * 5 + 4 * 2 + 2 + 100 and len(readings) == len(tags)
        assert sizes == [50] * (len(tags) // 50) + ([len(tags) % 50] if len(tags) % 50 else [])
        assert len(sizes) == math.ceil(len(tags) / 50)
        assert max(sim.request_sizes["MaxNodesPerBrowse"]) <= 50
        # ERP names from the map's templates; units from EngineeringUnits when the server has them, else the map's.
        current = tags["Mixers/Mixer1/MotorCurrentA"]
        assert (current.node_id, current.unit, current.equipment, current.sampling) == (sim.node_id("Mixing/Mixer1/MotorCurrent"), "A", "Mixers/Mixer1", "subscription")
        assert tags["Mixers/Mixer2/MixingTimeS"].unit == "s"  # the server publishes none for MixTime: the map's
        assert tags["Mixers/Mixer1/BatchCount"].kind == "counter" and tags["Mixers/Mixer1/State"].kind == "state"
        assert tags["Field/AnalogIn/AI_100"].node_id == "ns=2;i=1100"  # numeric NodeIds found by the same pattern
        assert tags["Field/AnalogIn/AI_001"].node_id == "ns=2;s=Field.AnalogIn.AI_001"
        assert tags["Field/AnalogIn/AI_001"].unit == "bar" and tags["Field/AnalogIn/AI_002"].unit is None
        assert tags["Dryer/SandTemperatureC"].node_id == "ns=2;s=Dryer.Dryer1.SandTemp"  # an explicit string NodeId
        assert drift.clean, drift.summary()  # Kepware's _System tags are ignored by the map
        assert all(r.status_name == "Good" for r in readings)

    run(scenario())


def test_drift_lists_missing_and_unmapped_tags_and_unit_disagreements_and_the_rest_is_still_read(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    drifted = drifted_kepware_map(tmp_path)

    async def scenario() -> None:
        async with VendorPlantSimulator("kepware", port=0, tags=100) as sim:
            async with PlantConnector(plant_config(sim.url, tag_map=drifted)) as plant:
                readings = await plant.read_snapshot()
                drift = plant.drift
        assert [m["mapped"] for m in drift.missing] == ["nsu=KEPServerEX;s=Dryer.Dryer1.ExhaustTemp"]
        assert drift.missing[0]["rule"] == "tags[9], line 84"  # where to fix it in the map
        assert sorted(u["path"] for u in drift.unmapped) == [f"Silos/Silo{i}/Material" for i in range(1, 5)]
        assert {(u["tag"], u["server"], u["map"]) for u in drift.unit_mismatches} == {
            ("Mixers/Mixer1/MotorCurrentA", "A", "mA"), ("Mixers/Mixer2/MotorCurrentA", "A", "mA")
        }
        by_tag = {r.tag: r for r in readings}
        assert "Dryer/ExhaustTemperatureC" not in by_tag and by_tag["Dryer/SandTemperatureC"].status_name == "Good"
        assert by_tag["Mixers/Mixer1/MotorCurrentA"].unit == "A"  # the server's unit wins
        assert len(readings) == 2 * 5 + 4 + 2 + 100

    run(scenario())


def test_s7_map_resolves_db_member_node_ids_takes_units_from_the_map_and_reads_the_batch_structure(
    plant_config: Callable[..., PlantOpcuaConfig]
) -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("s7", port=0, tags=100, batches=True, tick_s=3600.0) as sim:
            async with PlantConnector(plant_config(sim.url, tag_map=PROFILES / "s7-1500.toml")) as plant:
                tags = {t.tag: t for t in await plant.discover()}
                empty = await plant.read_batches(None)
                while sim.batch_count < 3:
                    await sim.step(50.0)
                first = await plant.read_batches(None)
                last, count = sim.last_batch, sim.batch_count
                again = await plant.read_batches(first.counter)
                while sim.batch_count < first.counter + 2:
                    await sim.step(50.0)
                later = await plant.read_batches(first.counter)
                drift = plant.drift
        assert tags["Mixers/M1/MotorCurrentA"].node_id == 'ns=3;s="DB_Mixer1"."MotorCurrent"'  # index 3 from the NamespaceArray
        assert tags["Mixers/M1/MotorCurrentA"].unit == "A" and tags["Silos/DB_Silo1/LevelPct"].unit == "%"  # from the map
        assert tags["Field/AnalogIn/AI_050"].unit is None
        assert drift.clean, drift.summary()
        assert empty.records == []  # no batch completed yet
        (record,) = first.records
        assert last is not None and record["batch_id"] == last.batch_id and record["seq"] == first.counter == count
        assert record["product_code"] and record["recipe_code"] and record["mixer"]
        assert len(record["components"]) == len(record["target_kg"]) == len(record["actual_kg"]) > 0
        assert record["started_at"] <= record["ended_at"]
        assert again.records == []  # the same structure read twice is one record
        assert later.records and later.missed == later.counter - first.counter - 1  # one structure: the ones between are gone

    run(scenario())


def test_s7_without_the_batch_structure_reports_it_as_drift(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("s7", port=0, tags=10) as sim:
            async with PlantConnector(plant_config(sim.url, tag_map=PROFILES / "s7-1500.toml")) as plant:
                readings = await plant.read_snapshot()
                drift = plant.drift
                with pytest.raises(IntegrationError) as info:
                    await plant.read_batches(None)
        assert readings and drift.batches is not None and "DB_Batch" in drift.batches
        assert info.value.code == "NO_BATCH_STRUCTURE"

    run(scenario())


def test_a_map_namespace_the_vendor_server_lacks_is_a_clear_error(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("kepware", port=0, tags=10) as sim:
            with pytest.raises(IntegrationError) as info:
                async with PlantConnector(plant_config(sim.url, tag_map=PROFILES / "s7-1500.toml")):
                    pass
            sessions_after = sim.live_sessions()
        assert info.value.code == "NAMESPACE_UNKNOWN" and not info.value.transient
        assert "http://www.siemens.com/simatic-s7-opcua" in info.value.message and "s7-1500.toml" in info.value.message
        assert "'KEPServerEX'" in info.value.message
        assert sessions_after == 0  # the refused connect closed its session

    run(scenario())


def test_subscription_with_deadbands_is_created_in_calls_of_max_monitored_items(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    text = (PROFILES / "kepware.toml").read_text().replace('path = "AnalogIn/*"\ntag = "Field/AnalogIn/{1}"',
                                                          'path = "AnalogIn/*"\ntag = "Field/AnalogIn/{1}"\nsampling = "subscription"')
    every = tmp_path / "kepware-subscribed.toml"
    every.write_text(text)

    async def scenario() -> None:
        async with VendorPlantSimulator("kepware", port=0, tags=120, tick_s=0.1) as sim:
            config = plant_config(sim.url, tag_map=every, page_size=500, subscription_period_ms=100.0)
            async with PlantConnector(config) as plant:
                tags = [t for t in await plant.discover() if t.sampling == "subscription"]
                subscription = await plant.subscribe(tags)
                try:
                    changes = await subscription.collect(1.5)
                finally:
                    await subscription.close()
        assert len(tags) > 100
        assert max(sim.request_sizes["MaxMonitoredItemsPerCall"]) <= 100
        seen = {r.tag for r in changes}
        assert "Mixers/Mixer1/MotorCurrentA" in seen and "Field/AnalogIn/AI_120" in seen

    run(scenario())


def test_the_shipped_simulator_map_reproduces_todays_tags(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    from sandbox.plant import running_plant

    async def scenario() -> None:
        async with running_plant(mixers=2, ring_size=5, speed=1.0) as sim, PlantConnector(plant_config(sim.url)) as plant:
            tags = await plant.discover()
            drift = plant.drift
        assert load_tag_map(plant_config(sim.url).tag_map).name == "DryMix plant simulator"
        assert drift.clean, drift.summary()
        assert len(tags) == 2 * 17 + 16 + 3
        assert {t.tag for t in tags if t.sampling == "subscription"} == {
            *(f"Mixers/M{i}/MotorCurrentA" for i in (1, 2)), *(f"Silos/S{i}/LevelPct" for i in range(1, 9)),
            "Dryer/SandTemperatureC", "Dryer/ExhaustTemperatureC", "Dryer/MoistureInPct",
        }
        assert all(t.tag == t.browse_path.removeprefix("Plant/") for t in tags)

    run(scenario())
