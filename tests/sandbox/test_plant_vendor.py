"""The vendor-shaped plant sandbox over real OPC UA: its two layouts, its limits and its batch structure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadTooManyOperations, BadTooManySessions

from sandbox.plant_vendor import (
    KEPWARE_NAMESPACE_URI,
    S7_NAMESPACE_URI,
    VendorPlantSimulator,
    main,
    running_vendor_plant,
)

MANUAL = 3600.0  # a tick this long never comes during a test: the test drives the plant with step()


async def _child(client: Client, ns: int, *names: str) -> Any:
    return await client.nodes.objects.get_child([f"{ns}:{n}" for n in names])


def _value(dv: ua.DataValue) -> Any:
    assert dv.Value is not None
    return dv.Value.Value


async def _unit(node: Any) -> str | None:
    for prop in await node.get_properties():
        if (await prop.read_browse_name()).Name == "EngineeringUnits":
            return str((await prop.read_value()).DisplayName.Text)
    return None


def test_kepware_layout_is_channel_device_tag_with_string_and_numeric_node_ids() -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("kepware", tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            namespaces = await client.get_namespace_array()
            assert namespaces[2] == KEPWARE_NAMESPACE_URI
            ns = await client.get_namespace_index(KEPWARE_NAMESPACE_URI)
            channels = {(await n.read_browse_name()).Name for n in await client.nodes.objects.get_children() if n.nodeid.NamespaceIndex == ns}
            assert channels == {"Mixing", "Silos", "Dryer", "Field"}  # no batch ring, no Plant folder

            current = await _child(client, ns, "Mixing", "Mixer1", "MotorCurrent")
            assert current.nodeid.to_string() == "ns=2;s=Mixing.Mixer1.MotorCurrent"
            assert await current.read_data_type_as_variant_type() == ua.VariantType.Float
            assert await _unit(current) == "A"
            state = await _child(client, ns, "Mixing", "Mixer1", "State")
            assert await state.read_data_type_as_variant_type() == ua.VariantType.Int32
            assert await state.read_value() in (0, 1, 2, 3)
            counter = await _child(client, ns, "Mixing", "Mixer2", "BatchCount")
            assert await counter.read_data_type_as_variant_type() == ua.VariantType.UInt32
            recipe = await _child(client, ns, "Mixing", "Mixer1", "Recipe")
            assert await recipe.read_data_type_as_variant_type() == ua.VariantType.String
            mix_time = await _child(client, ns, "Mixing", "Mixer1", "MixTime")
            assert await _unit(mix_time) is None  # an analog tag without EngineeringUnits
            level = await _child(client, ns, "Silos", "Silo1", "Level")
            assert level.nodeid.to_string() == "ns=2;s=Silos.Silo1.Level" and await _unit(level) == "%"
            error = await _child(client, ns, "Silos", "Silo1", "_System", "_Error")
            assert await error.read_value() is False

            folder = await _child(client, ns, "Field", "AnalogIn")
            analog = await folder.get_children()
            assert len(analog) == 100
            kinds = {n.nodeid.NodeIdType for n in analog}
            assert ua.NodeIdType.String in kinds and (ua.NodeIdType.Numeric in kinds or ua.NodeIdType.FourByte in kinds)
            numeric = [n for n in analog if isinstance(n.nodeid.Identifier, int)]
            assert len(numeric) == 50
            ai_051 = await _child(client, ns, "Field", "AnalogIn", "AI_051")
            assert ai_051.nodeid.to_string() == "ns=2;i=1051"
            assert isinstance(await ai_051.read_value(), float)
            ai_001 = await _child(client, ns, "Field", "AnalogIn", "AI_001")
            assert ai_001.nodeid.to_string() == "ns=2;s=Field.AnalogIn.AI_001"
            assert await _unit(ai_001) is not None and await _unit(await _child(client, ns, "Field", "AnalogIn", "AI_002")) is None
            assert sim.node_id("Field/AnalogIn/AI_051") == "ns=2;i=1051"

    asyncio.run(scenario())


def test_s7_layout_is_datablocksglobal_with_quoted_string_node_ids() -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("s7", tags=10, tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            namespaces = await client.get_namespace_array()
            assert namespaces[3] == S7_NAMESPACE_URI
            ns = await client.get_namespace_index(S7_NAMESPACE_URI)
            dbs = await _child(client, ns, "PLC_1", "DataBlocksGlobal")
            assert dbs.nodeid.to_string() == "ns=3;s=DataBlocksGlobal"
            names = {(await n.read_browse_name()).Name for n in await dbs.get_children()}
            assert names == {"DB_Mixer1", "DB_Mixer2", "DB_Silo1", "DB_Silo2", "DB_Silo3", "DB_Silo4", "DB_Dryer", "DB_Analog"}  # no DB_Batch
            current = await _child(client, ns, "PLC_1", "DataBlocksGlobal", "DB_Mixer1", "MotorCurrent")
            assert current.nodeid.to_string() == 'ns=3;s="DB_Mixer1"."MotorCurrent"'
            assert await current.read_data_type_as_variant_type() == ua.VariantType.Float  # S7 Real
            assert await _unit(current) is None  # the S7 server publishes no EngineeringUnits
            state = client.get_node('ns=3;s="DB_Mixer1"."State"')
            assert await state.read_data_type_as_variant_type() == ua.VariantType.Int16  # S7 Int
            count = client.get_node('ns=3;s="DB_Mixer2"."BatchCount"')
            assert await count.read_data_type_as_variant_type() == ua.VariantType.UInt32  # S7 UDInt
            analog = await _child(client, ns, "PLC_1", "DataBlocksGlobal", "DB_Analog")
            assert len(await analog.get_children()) == 10
            heartbeat = await _child(client, ns, "PLC_1", "Memory", "Heartbeat")
            assert heartbeat.nodeid.to_string() == 'ns=3;s="Heartbeat"'
            assert sim.node_id("DB_Silo2/Level") == 'ns=3;s="DB_Silo2"."Level"'

    asyncio.run(scenario())


def test_operation_limits_are_published_and_a_read_of_more_than_50_nodes_is_refused() -> None:
    async def scenario() -> None:
        async with running_vendor_plant(layout="kepware", tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            limits = client.get_node(ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits)))
            per_read = await limits.get_child("0:MaxNodesPerRead")
            assert await per_read.read_value() == 50
            assert await (await limits.get_child("0:MaxNodesPerBrowse")).read_value() == 50
            assert await client.get_node(ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_MaxSessions))).read_value() == 2

            nodes = [client.get_node(tag.node_id) for tag in sim.tags.values()][:51]
            with pytest.raises(BadTooManyOperations):
                await client.read_attributes(nodes)
            with pytest.raises(BadTooManyOperations):
                params = ua.BrowseParameters()
                params.NodesToBrowse = [ua.BrowseDescription(NodeId=n.nodeid, BrowseDirection=ua.BrowseDirection.Forward) for n in nodes]
                await client.uaclient.browse(params)
            values = await client.read_attributes(nodes[:50])  # at the limit: answered, and the session survived
            assert len(values) == 50 and all(dv.StatusCode is not None and dv.StatusCode.is_good() for dv in values)
            assert sim.request_sizes["MaxNodesPerRead"][-2:] == [51, 50]

    asyncio.run(scenario())


def test_a_third_session_is_refused_with_bad_too_many_sessions() -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("s7", tags=5, tick_s=MANUAL) as sim:
            first, second = Client(sim.endpoint), Client(sim.endpoint)
            await first.connect()
            await second.connect()
            try:
                assert sim.live_sessions() == 2
                with pytest.raises(BadTooManySessions):
                    async with Client(sim.endpoint):
                        pass
                assert await second.get_node('ns=3;s="DB_Mixer1"."State"').read_value() in (0, 1, 2, 3)  # the two keep working
            finally:
                await second.disconnect()
            async with Client(sim.endpoint) as third:  # a slot is free again
                assert await third.get_node('ns=3;s="DB_Mixer1"."State"').read_value() in (0, 1, 2, 3)
            await first.disconnect()

    asyncio.run(scenario())


def test_values_change_on_the_server_tick_and_are_deterministic_for_a_seed() -> None:
    async def moving() -> tuple[list[Any], list[Any]]:
        async with VendorPlantSimulator("kepware", tags=4, tick_s=0.05) as sim, Client(sim.endpoint) as client:
            nodes = [client.get_node(sim.node_id(k)) for k in ("Field/AnalogIn/AI_001", "Field/AnalogIn/AI_003", "Mixing/Mixer1/MotorCurrent")]
            before = await client.read_attributes(nodes)
            await asyncio.sleep(0.5)
            after = await client.read_attributes(nodes)
            return before, after

    before, after = asyncio.run(moving())
    assert [_value(dv) for dv in before] != [_value(dv) for dv in after]
    assert all(a.SourceTimestamp > b.SourceTimestamp for a, b in zip(after, before, strict=True))

    async def stepped(seed: int) -> list[Any]:
        async with VendorPlantSimulator("s7", tags=6, seed=seed, tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            for _ in range(7):
                await sim.step(50.0)
            keys = [k for k in sim.tags if not k.startswith("DB_Mixer") or not k.endswith("BatchId")]  # batch ids carry the start time
            return [_value(dv) for dv in await client.read_attributes([client.get_node(sim.node_id(k)) for k in keys[:50]])]

    assert asyncio.run(stepped(7)) == asyncio.run(stepped(7)) != asyncio.run(stepped(8))


def test_s7_batch_structure_changes_when_a_batch_completes() -> None:
    async def scenario() -> None:
        async with VendorPlantSimulator("s7", tags=5, batches=True, tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            ns = await client.get_namespace_index(S7_NAMESPACE_URI)
            db = await _child(client, ns, "PLC_1", "DataBlocksGlobal", "DB_Batch")
            members = {(await n.read_browse_name()).Name: n for n in await db.get_children()}
            assert set(members) == {"BatchId", "ProductId", "RecipeId", "Mixer", "StartTime", "EndTime", "Components", "TargetKg", "ActualKg", "BatchCount"}
            assert members["BatchCount"].nodeid.to_string() == 'ns=3;s="DB_Batch"."BatchCount"'
            assert await members["BatchCount"].read_value() == 0 and await members["BatchId"].read_value() == ""

            async def record() -> dict[str, Any]:
                names = list(members)
                values = await client.read_attributes([members[n] for n in names])
                return {n: _value(dv) for n, dv in zip(names, values, strict=True)}

            while sim.batch_count < 1:
                await sim.step(20.0)
            first = await record()
            done = sim.completed[0]
            assert first["BatchCount"] == 1 and first["BatchId"] == done.batch_id
            assert first["RecipeId"] == done.recipe_id and first["ProductId"] == done.product_id and first["Mixer"] == done.mixer
            assert first["Components"] == done.components and len(first["ActualKg"]) == len(first["TargetKg"]) == len(done.components)
            assert all(abs(a - t) / t < 0.02 for a, t in zip(first["ActualKg"], first["TargetKg"], strict=True))
            assert first["StartTime"] <= first["EndTime"]
            while sim.batch_count < 2:
                await sim.step(20.0)
            second = await record()
            assert second["BatchCount"] == 2 and second["BatchId"] == sim.completed[1].batch_id != first["BatchId"]

    asyncio.run(scenario())


def test_a_layout_without_batch_records_cannot_be_asked_for_them() -> None:
    with pytest.raises(ValueError, match="no batch records"):
        VendorPlantSimulator("kepware", batches=True)
    with pytest.raises(ValueError, match="layout"):
        VendorPlantSimulator("ignition")
    with pytest.raises(SystemExit) as exit_info:
        main(["--layout", "kepware", "--batches"])
    assert exit_info.value.code == 2


def test_a_vendor_server_whose_free_port_is_taken_before_binding_starts_on_another(port_taken_before_binding: int) -> None:
    async def scenario() -> tuple[int, int]:
        async with VendorPlantSimulator("s7", tick_s=MANUAL) as sim, Client(sim.endpoint) as client:
            ns = await client.get_namespace_index(S7_NAMESPACE_URI)
            return sim.port, ns

    port, ns = asyncio.run(scenario())
    assert port != port_taken_before_binding
    assert ns > 0  # the rebuilt server carries the layout's namespace
