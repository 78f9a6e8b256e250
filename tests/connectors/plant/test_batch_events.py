"""Batch records declared as OPC UA events (``[batches] kind = "events"``): a real asyncua server that raises a
custom batch-completed event from its line object and keeps the Server object's event history, as a SCADA's
alarm-and-event server does. Events between two collector visits are read from the history, each once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Server, ua

from connectors.core.config import PlantOpcuaConfig
from connectors.plant import PlantConnector
from sandbox.plant import free_port

NAMESPACE = "urn:site:line1"

MAP = """\
name = "line with batch events"

[namespaces]
site = "urn:site:line1"

[[tags]]
folder = "site:Line1"
path = "Speed"
tag = "Line1/SpeedRpm"
unit = "rpm"

[batches]
kind = "events"
folder = "Server"                  # the Server object: the notifier every event reaches

event_type = "site:s=BatchCompletedEventType"

[batches.fields]
batch_id = "BatchId"
product_code = "ProductCode"
recipe_code = "RecipeCode"
mixer = "Mixer"
started_at = "StartedAt"
components = "Components"
target_kg = "TargetKg"
actual_kg = "ActualKg"
"""


class EventServer:
    """The server and a way to raise a batch-completed event on Line1."""

    def __init__(self, server: Server, generator: Any, url: str) -> None:
        self.server = server
        self.generator = generator
        self.url = url

    async def complete(self, batch_id: str, *, kg: float = 1000.0) -> None:
        now = datetime.now(UTC)
        event = self.generator.event
        event.BatchId = batch_id
        event.ProductCode = "TILE-ADH-C1"
        event.RecipeCode = "R-TA-C1"
        event.Mixer = "M1"
        event.StartedAt = now - timedelta(minutes=4)
        event.Components = ["Cement", "Sand"]
        event.TargetKg = [kg * 0.4, kg * 0.6]
        event.ActualKg = [kg * 0.401, kg * 0.599]
        event.Message = ua.LocalizedText(f"batch {batch_id} completed")
        await self.generator.trigger(now)
        await asyncio.sleep(0.01)  # distinct event times


@asynccontextmanager
async def event_server() -> AsyncIterator[EventServer]:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/site/"
    server = Server()
    await server.init()
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NAMESPACE)
    line = await server.nodes.objects.add_object(ua.NodeId("Line1", idx), ua.QualifiedName("Line1", idx))
    await line.add_variable(ua.NodeId("Line1.Speed", idx), ua.QualifiedName("Speed", idx), 42.0)
    await line.write_attribute(ua.AttributeIds.EventNotifier, ua.DataValue(ua.Variant(
        ua.EventNotifier.SubscribeToEvents | ua.EventNotifier.HistoryRead, ua.VariantType.Byte)))
    # A string NodeId of the type, as the site's map names it (create_custom_event_type would number it).
    event_type = await server.nodes.base_event_type.add_object_type(
        ua.NodeId("BatchCompletedEventType", idx), ua.QualifiedName("BatchCompletedEventType", idx))
    for name, empty, vtype in (("BatchId", "", ua.VariantType.String), ("ProductCode", "", ua.VariantType.String),
                               ("RecipeCode", "", ua.VariantType.String), ("Mixer", "", ua.VariantType.String),
                               ("StartedAt", datetime.now(UTC), ua.VariantType.DateTime), ("Components", [], ua.VariantType.String),
                               ("TargetKg", [], ua.VariantType.Double), ("ActualKg", [], ua.VariantType.Double)):
        prop = await event_type.add_property(idx, name, ua.Variant(empty, vtype))
        await prop.set_modelling_rule(True)
    generator = await server.get_event_generator(event_type, line)
    await server.start()
    await server.historize_node_event([line, server.nodes.server], period=None)  # the object and the Server keep history
    try:
        yield EventServer(server, generator, url)
    finally:
        await server.stop()


def test_batch_events_between_visits_come_from_the_history_once_and_in_order(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    site_map = tmp_path / "line1.toml"
    site_map.write_text(MAP)

    async def scenario() -> None:
        async with event_server() as site:
            config = plant_config(site.url, tag_map=site_map)
            async with PlantConnector(config) as plant:
                tags = await plant.discover()
                assert plant.drift.clean, plant.drift.summary()
                nothing = await plant.read_batches(None)
                for n in (1, 2, 3):
                    await site.complete(f"L1-{n:04d}")
                first = await plant.read_batches(None)
                again = await plant.read_batches(first.counter)
                await site.complete("L1-0004", kg=1200.0)
                later = await plant.read_batches(first.counter)
        assert [t.tag for t in tags] == ["Line1/SpeedRpm"] and tags[0].unit == "rpm"
        assert nothing.records == []
        assert [r["batch_id"] for r in first.records] == ["L1-0001", "L1-0002", "L1-0003"]
        assert [r["seq"] for r in first.records] == sorted(r["seq"] for r in first.records) and first.counter == first.records[-1]["seq"]
        record = first.records[0]
        assert (record["product_code"], record["recipe_code"], record["mixer"]) == ("TILE-ADH-C1", "R-TA-C1", "M1")
        assert record["components"] == ["Cement", "Sand"] and record["actual_kg"] == [401.0, 599.0]
        assert record["started_at"] < record["ended_at"]  # ended_at: the event's Time
        assert again.records == []  # nothing after the cursor: each event once
        assert [r["batch_id"] for r in later.records] == ["L1-0004"] and later.records[0]["target_kg"] == [480.0, 720.0]

    asyncio.run(scenario())


def test_a_declared_event_type_the_server_lacks_is_drift_not_a_failure(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    site_map = tmp_path / "line1.toml"
    site_map.write_text(MAP.replace("site:s=BatchCompletedEventType", "site:s=BatchDoneEventType"))

    async def scenario() -> None:
        async with event_server() as site, PlantConnector(plant_config(site.url, tag_map=site_map)) as plant:
            readings = await plant.read_snapshot()
            drift = plant.drift
        assert [r.value for r in readings] == [42.0]
        assert drift.batches is not None and "BatchDoneEventType" in drift.batches and not drift.missing

    asyncio.run(scenario())
