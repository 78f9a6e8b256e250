"""A second OPC UA plant simulator shaped like other vendors' servers, not like ours (sandbox/plant.py).

Two layouts of the same dry-mix plant (2 mixers, 4 silos, a sand dryer, a plain folder of analog tags):

``kepware`` (a KEPServerEX-style gateway; namespace URI ``KEPServerEX``, index 2)::

    Objects/Mixing/Mixer1/MotorCurrent      ns=2;s=Mixing.Mixer1.MotorCurrent   Float   EngineeringUnits A
                         /State             ns=2;s=Mixing.Mixer1.State          Int32   0 Idle, 1 Filling, 2 Mixing, 3 Discharging
                         /BatchCount        ns=2;s=Mixing.Mixer1.BatchCount     UInt32  batches completed (counter)
                         /MixTime           ns=2;s=Mixing.Mixer1.MixTime        Float   s, no EngineeringUnits
                         /Recipe            ns=2;s=Mixing.Mixer1.Recipe         String  (text)
                         /_System/_Error    ns=2;s=Mixing.Mixer1._System._Error Boolean (Kepware's own device tags)
           /Mixer2/...
    Objects/Silos/Silo1..Silo4/Level        Float  EngineeringUnits %;  /Material String;  /_System/_Error
    Objects/Dryer/Dryer1/SandTemp           Float  EngineeringUnits degC; /Moisture Float (%, no EngineeringUnits)
    Objects/Field/AnalogIn/AI_001..AI_<n>   Float; the first half string NodeIds ``ns=2;s=Field.AnalogIn.AI_001``,
                                            the second half numeric ``ns=2;i=<1000+n>``; odd-numbered tags carry
                                            EngineeringUnits, even-numbered ones do not.

No batch records at all.

``s7`` (a SIMATIC S7-1500's built-in server; PLC data in ``http://www.siemens.com/simatic-s7-opcua``, index 3)::

    Objects/PLC_1 (ns=3;s=PLC)/DataBlocksGlobal (ns=3;s=DataBlocksGlobal)/
        DB_Mixer1 (ns=3;s="DB_Mixer1")/MotorCurrent   ns=3;s="DB_Mixer1"."MotorCurrent"  Real (Float)
                                      /State          Int (Int16), same codes as above
                                      /BatchCount     UDInt (UInt32)
                                      /MixTime        Real, s
                                      /RecipeId, BatchId  String (the batch being made)
        DB_Mixer2/...;  DB_Silo1..DB_Silo4/Level (Real %), Material (String);  DB_Dryer/SandTemp, Moisture (Real)
        DB_Analog/AI_001..AI_<n>                      Real
        DB_Batch/ (only with batches=True)  an ISA-88-like record of the last completed batch:
            BatchId, ProductId, RecipeId, Mixer (String), StartTime, EndTime (DateTime),
            Components (String[]), TargetKg, ActualKg (Real[]), BatchCount (UDInt, written last)
    Objects/PLC_1/Memory (ns=3;s=Memory)/Heartbeat    ns=3;s="Heartbeat"  Bool

The S7 server publishes no EngineeringUnits: units come from the site's tag map.

Both layouts behave like a small real server: ``Server/ServerCapabilities/OperationLimits`` says
MaxNodesPerRead 50 (and MaxNodesPerBrowse, MaxNodesPerWrite, MaxNodesPerTranslateBrowsePathsToNodeIds
50, MaxMonitoredItemsPerCall 100), and a request above a limit is refused whole with
``BadTooManyOperations``; ``ServerCapabilities/MaxSessions`` is 2 and a third session is refused at
CreateSession with ``BadTooManySessions``. Values change on a server-side tick, deterministically for a
seed (the same sequence of steps gives the same values; only timestamps follow the wall clock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState

from sandbox.plant import COMPONENTS, CYCLE, RECIPES, start_server

logger = logging.getLogger(__name__)

Layout = Literal["kepware", "s7"]
LAYOUTS: tuple[str, ...] = ("kepware", "s7")

KEPWARE_NAMESPACE_URI = "KEPServerEX"
S7_NAMESPACE_URI = "http://www.siemens.com/simatic-s7-opcua"
# An S7-1500 lists the DI companion namespace before its own, which is why the PLC's data sits at index 3.
DI_NAMESPACE_URI = "http://opcfoundation.org/UA/DI/"
NAMESPACE_URIS: dict[str, str] = {"kepware": KEPWARE_NAMESPACE_URI, "s7": S7_NAMESPACE_URI}
APPLICATION_URIS: dict[str, str] = {"kepware": "urn:drymix-sandbox:Kepware.KEPServerEX.V6:UA%20Server", "s7": "urn:SIMATIC.S7-1500.OPC-UA.Application:PLC_1"}
SERVER_NAMES: dict[str, str] = {"kepware": "KEPServerEX/UA@drymix-sandbox", "s7": "SIMATIC.S7-1500.OPC-UA.Application:PLC_1"}
DEFAULT_PORTS: dict[str, int] = {"kepware": 49320, "s7": 4841}

# Mixer State codes (Kepware Int32, S7 Int).
STATE_CODES: dict[str, int] = {"Idle": 0, "Filling": 1, "Mixing": 2, "Discharging": 3}
MOTOR_CURRENT_A: dict[str, float] = {"Idle": 1.5, "Filling": 22.0, "Mixing": 86.0, "Discharging": 41.0}
SILOS: tuple[tuple[str, str], ...] = (("Silo1", "Cement"), ("Silo2", "Sand"), ("Silo3", "Limestone"), ("Silo4", "Polymer"))
SILO_CAPACITY_KG: dict[str, float] = {"Cement": 60_000.0, "Sand": 80_000.0, "Limestone": 40_000.0, "Polymer": 5_000.0}
# Units the analog folder's odd-numbered tags publish, in turn.
ANALOG_UNITS: tuple[str, ...] = ("bar", "degC", "%", "kg", "A", "m3/h")
_UNECE: dict[str, str] = {"A": "AMP", "%": "P1", "degC": "CEL", "kg": "KGM", "bar": "BAR", "m3/h": "MQH", "s": "SEC"}
NUMERIC_ID_BASE = 1000  # kepware: AI_n in the second half of the folder is ns=2;i=<1000+n>

DEFAULT_LIMITS: dict[str, int] = {
    "MaxNodesPerRead": 50,
    "MaxNodesPerBrowse": 50,
    "MaxNodesPerWrite": 50,
    "MaxNodesPerTranslateBrowsePathsToNodeIds": 50,
    "MaxMonitoredItemsPerCall": 100,
}
_LIMIT_NODES: dict[str, int] = {
    "MaxNodesPerRead": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "MaxNodesPerBrowse": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    "MaxNodesPerWrite": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    "MaxNodesPerTranslateBrowsePathsToNodeIds": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
    "MaxMonitoredItemsPerCall": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}


def _unit_id(code: str) -> int:
    value = 0
    for ch in code:
        value = (value << 8) | ord(ch)
    return value


def eu_information(unit: str) -> ua.EUInformation:
    """An EngineeringUnits value as OPC UA Part 8 describes it (UNECE common code as UnitId)."""
    return ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=_unit_id(_UNECE[unit]),
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


# ------------------------------------------------------------------ limits and sessions, enforced


class _LimitedSession(InternalSession):
    """A client session that refuses a service call naming more nodes than the OperationLimits allow."""

    def _check(self, limit: str, count: int) -> None:
        iserver = cast(_VendorInternalServer, self.iserver)
        iserver.request_sizes.setdefault(limit, []).append(count)
        allowed = iserver.limits.get(limit)
        if allowed and count > allowed:
            logger.info("vendor plant: refused a request of %d nodes (%s %d)", count, limit, allowed)
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        self._check("MaxNodesPerRead", len(params.NodesToRead))
        return await super().read(params)

    async def browse(self, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
        self._check("MaxNodesPerBrowse", len(params.NodesToBrowse))
        return await super().browse(params)

    async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
        self._check("MaxNodesPerWrite", len(params.NodesToWrite))
        return await super().write(params)

    async def translate_browsepaths_to_nodeids(self, params: list[ua.BrowsePath]) -> list[ua.BrowsePathResult]:
        self._check("MaxNodesPerTranslateBrowsePathsToNodeIds", len(params))
        return await super().translate_browsepaths_to_nodeids(params)

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
        self._check("MaxMonitoredItemsPerCall", len(params.ItemsToCreate))
        return await super().create_monitored_items(params)


class _VendorInternalServer(InternalServer):
    """asyncua's internal server with a per-server session cap and per-call operation limits.

    asyncua's own connection cap is a class attribute shared by every server in the process, so a
    test running two simulators would see one's sessions count against the other: this counts its own.
    """

    def __init__(self, *, max_sessions: int, limits: dict[str, int]) -> None:
        super().__init__()
        self.max_sessions = max_sessions
        self.limits = dict(limits)
        self.request_sizes: dict[str, list[int]] = {}
        self._client_sessions: list[InternalSession] = []

    def live_sessions(self) -> int:
        self._client_sessions = [s for s in self._client_sessions if s.state != SessionState.Closed]
        return len(self._client_sessions)

    def create_session(self, name: str, user: User = User(role=UserRole.Anonymous), external: bool = False) -> InternalSession:  # noqa: B008 - asyncua's own signature
        if not external:
            return super().create_session(name, user=user, external=external)
        if self.live_sessions() >= self.max_sessions:
            logger.info("vendor plant: session refused, %d of %d in use", len(self._client_sessions), self.max_sessions)
            raise ServiceError(ua.StatusCodes.BadTooManySessions)
        session = _LimitedSession(self, self.aspace, self.subscription_service, name, user=user, external=True)
        self._client_sessions.append(session)
        return session


# ------------------------------------------------------------------ the plant


@dataclass(frozen=True)
class VendorTag:
    """One variable of the vendor's address space."""

    key: str  # layout-independent path inside the simulator, e.g. "Mixing/Mixer1/MotorCurrent"
    browse_path: tuple[str, ...]  # browse names below Objects
    node_id: str  # e.g. "ns=2;s=Mixing.Mixer1.MotorCurrent" or 'ns=3;s="DB_Mixer1"."MotorCurrent"'
    vtype: ua.VariantType
    unit: str | None  # EngineeringUnits published by the server (None: the server has none)


@dataclass
class VendorBatch:
    """A batch the simulated plant completed (in the S7 layout it is what DB_Batch shows)."""

    count: int
    batch_id: str
    product_id: str
    recipe_id: str
    mixer: str
    start_time: datetime
    end_time: datetime
    components: list[str]
    target_kg: list[float]
    actual_kg: list[float]


@dataclass
class _Mixer:
    number: int
    phase_index: int = 0
    phase_elapsed: float = 0.0
    batch_count: int = 0
    recipe_id: str = ""
    batch_id: str = ""
    started_at: datetime | None = None
    mix_time_s: float = 0.0
    targets: dict[str, float] = field(default_factory=dict)
    actuals: dict[str, float] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return CYCLE[self.phase_index][0]


class VendorPlantSimulator:
    """The plant in another vendor's shape; ``async with VendorPlantSimulator(layout="s7") as sim: sim.endpoint``."""

    def __init__(
        self,
        layout: Layout | str = "kepware",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tags: int = 100,
        batches: bool = False,
        seed: int = 0,
        speed: float = 50.0,
        tick_s: float = 0.25,
        max_sessions: int = 2,
        limits: dict[str, int] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        if batches and layout == "kepware":
            raise ValueError("the kepware layout has no batch records (batches=True needs layout='s7')")
        if not 1 <= tags <= 999:
            raise ValueError("tags must be between 1 and 999")
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.layout: str = layout
        self.host = host
        self.port = port
        self.analog_tags = tags
        self.batches = batches
        self.seed = seed
        self.speed = speed
        self.tick_s = tick_s
        self.max_sessions = max_sessions
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.namespace_uri = NAMESPACE_URIS[layout]
        self.namespace_index = 2 if layout == "kepware" else 3
        self._rng = random.Random(seed)
        self._mixers = [_Mixer(number=i + 1) for i in range(2)]
        cycle_len = sum(d for _, d in CYCLE)
        for i, mixer in enumerate(self._mixers):  # staggered, so batches complete at a steady pace
            offset = cycle_len * i / len(self._mixers)
            while offset >= CYCLE[mixer.phase_index][1]:
                offset -= CYCLE[mixer.phase_index][1]
                mixer.phase_index = (mixer.phase_index + 1) % len(CYCLE)
            mixer.phase_elapsed = offset
        self._silo_levels = {sid: 55.0 + 8.0 * i for i, (sid, _) in enumerate(SILOS)}
        self._analog = [(20.0 + 7.0 * (n % 13), 1.0 + (n % 5), 30.0 + 11.0 * (n % 7)) for n in range(1, tags + 1)]  # base, amplitude, period
        self.sim_time_s = 0.0
        self.ticks = 0
        self.completed: list[VendorBatch] = []
        self._batch_count = 0
        self._heartbeat = False
        self.tags: dict[str, VendorTag] = {}
        self._nodes: dict[str, ua.NodeId] = {}
        self._server: Server | None = None
        self._iserver: _VendorInternalServer | None = None
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint, under the name sandbox/plant.py uses."""
        return self.endpoint

    @property
    def batch_count(self) -> int:
        """Batches completed since start (in the S7 layout, ``DB_Batch.BatchCount`` once published)."""
        return self._batch_count

    @property
    def last_batch(self) -> VendorBatch | None:
        return self.completed[-1] if self.completed else None

    @property
    def request_sizes(self) -> dict[str, list[int]]:
        """Nodes per client request, by the OperationLimits name that governs it (for tests of paging)."""
        return self._iserver.request_sizes if self._iserver is not None else {}

    def live_sessions(self) -> int:
        return self._iserver.live_sessions() if self._iserver is not None else 0

    async def start(self) -> None:
        await start_server(self.host, self.port, self._new_server)
        await self._publish()
        self._task = asyncio.create_task(self._run(), name=f"vendor-plant-{self.layout}")
        logger.info("vendor plant sandbox (%s) on %s: %d tags, batches=%s", self.layout, self.endpoint, len(self.tags), self.batches)

    async def _new_server(self, port: int) -> Server:
        self.port = port
        self._iserver = _VendorInternalServer(max_sessions=self.max_sessions, limits=self.limits)
        server = Server(iserver=self._iserver)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(SERVER_NAMES[self.layout])
        await server.set_application_uri(APPLICATION_URIS[self.layout])
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        if self.layout == "s7":
            await server.register_namespace(DI_NAMESPACE_URI)
        idx = await server.register_namespace(self.namespace_uri)
        if idx != self.namespace_index:
            raise RuntimeError(f"{self.namespace_uri} registered at index {idx}, expected {self.namespace_index}")
        await self._write_capabilities(server)
        self._server = server
        if self.layout == "kepware":
            await self._build_kepware(server)
        else:
            await self._build_s7(server)
        return server

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> VendorPlantSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _write_capabilities(self, server: Server) -> None:
        for name, value in self.limits.items():
            await server.write_attribute_value(ua.NodeId(ua.Int32(_LIMIT_NODES[name])), ua.DataValue(ua.Variant(value, ua.VariantType.UInt32)))
        await server.write_attribute_value(
            ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_MaxSessions)), ua.DataValue(ua.Variant(self.max_sessions, ua.VariantType.UInt32))
        )

    # ---------------------------------------------------------------- address space

    def node_id(self, key: str) -> str:
        """NodeId string of a tag, e.g. ``node_id("Mixing/Mixer1/MotorCurrent")``."""
        return self.tags[key].node_id

    def keys(self) -> list[str]:
        return list(self.tags)

    def _id(self, identifier: str | int) -> ua.NodeId:
        """A NodeId in the vendor's namespace: string or numeric, as the vendor's server assigns them."""
        if isinstance(identifier, str):
            return ua.NodeId(ua.String(identifier), ua.Int16(self.namespace_index))
        return ua.NodeId(ua.Int32(identifier), ua.Int16(self.namespace_index))

    async def _folder(self, parent: Node, nodeid: ua.NodeId, name: str) -> Node:
        return await parent.add_folder(nodeid, ua.QualifiedName(name, self.namespace_index))

    async def _add(self, parent: Node, key: str, browse_path: tuple[str, ...], nodeid: ua.NodeId, value: Any, vtype: ua.VariantType, unit: str | None = None) -> None:
        node = await parent.add_variable(nodeid, ua.QualifiedName(browse_path[-1], self.namespace_index), ua.Variant(value, vtype))
        if unit is not None:
            await node.add_property(
                self._id(f"{nodeid.Identifier}.EngineeringUnits" if isinstance(nodeid.Identifier, str) else NUMERIC_ID_BASE * 10 + int(nodeid.Identifier)),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.Variant(eu_information(unit), ua.VariantType.ExtensionObject),
            )
        self.tags[key] = VendorTag(key=key, browse_path=browse_path, node_id=nodeid.to_string(), vtype=vtype, unit=unit)
        self._nodes[key] = nodeid

    def _kid(self, *path: str) -> ua.NodeId:
        return self._id(".".join(path))

    async def _build_kepware(self, server: Server) -> None:
        f, i32, u32, s, b = ua.VariantType.Float, ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.String, ua.VariantType.Boolean
        objects = server.nodes.objects

        async def device(channel: Node, ch: str, dev: str) -> Node:
            node = await self._folder(channel, self._kid(ch, dev), dev)
            system = await self._folder(node, self._kid(ch, dev, "_System"), "_System")
            await self._add(system, f"{ch}/{dev}/_System/_Error", (ch, dev, "_System", "_Error"), self._kid(ch, dev, "_System", "_Error"), False, b)
            return node

        mixing = await self._folder(objects, self._kid("Mixing"), "Mixing")
        for mixer in self._mixers:
            dev = f"Mixer{mixer.number}"
            node = await device(mixing, "Mixing", dev)
            for name, value, vtype, unit in (
                ("MotorCurrent", MOTOR_CURRENT_A[mixer.phase], f, "A"),
                ("State", STATE_CODES[mixer.phase], i32, None),
                ("BatchCount", 0, u32, None),
                ("MixTime", 0.0, f, None),
                ("Recipe", "", s, None),
            ):
                await self._add(node, f"Mixing/{dev}/{name}", ("Mixing", dev, name), self._kid("Mixing", dev, name), value, vtype, unit)
        silos = await self._folder(objects, self._kid("Silos"), "Silos")
        for sid, material in SILOS:
            node = await device(silos, "Silos", sid)
            await self._add(node, f"Silos/{sid}/Level", ("Silos", sid, "Level"), self._kid("Silos", sid, "Level"), self._silo_levels[sid], f, "%")
            await self._add(node, f"Silos/{sid}/Material", ("Silos", sid, "Material"), self._kid("Silos", sid, "Material"), material, s)
        dryer = await self._folder(objects, self._kid("Dryer"), "Dryer")
        node = await device(dryer, "Dryer", "Dryer1")
        await self._add(node, "Dryer/Dryer1/SandTemp", ("Dryer", "Dryer1", "SandTemp"), self._kid("Dryer", "Dryer1", "SandTemp"), 95.0, f, "degC")
        await self._add(node, "Dryer/Dryer1/Moisture", ("Dryer", "Dryer1", "Moisture"), self._kid("Dryer", "Dryer1", "Moisture"), 0.2, f)
        field_channel = await self._folder(objects, self._kid("Field"), "Field")
        analog = await self._folder(field_channel, self._kid("Field", "AnalogIn"), "AnalogIn")
        half = self.analog_tags // 2
        for n in range(1, self.analog_tags + 1):
            name = f"AI_{n:03d}"
            nodeid = self._kid("Field", "AnalogIn", name) if n <= half else self._id(NUMERIC_ID_BASE + n)
            unit = ANALOG_UNITS[(n // 2) % len(ANALOG_UNITS)] if n % 2 == 1 else None
            await self._add(analog, f"Field/AnalogIn/{name}", ("Field", "AnalogIn", name), nodeid, self._analog[n - 1][0], f, unit)

    def _sid(self, db: str, member: str | None = None) -> ua.NodeId:
        return self._id(f'"{db}"' if member is None else f'"{db}"."{member}"')

    async def _build_s7(self, server: Server) -> None:
        real, int16, udint, s, dt, b = ua.VariantType.Float, ua.VariantType.Int16, ua.VariantType.UInt32, ua.VariantType.String, ua.VariantType.DateTime, ua.VariantType.Boolean
        plc = await self._folder(server.nodes.objects, self._id("PLC"), "PLC_1")
        dbs = await self._folder(plc, self._id("DataBlocksGlobal"), "DataBlocksGlobal")
        top = ("PLC_1", "DataBlocksGlobal")

        async def data_block(name: str) -> Node:
            return await dbs.add_object(self._sid(name), ua.QualifiedName(name, self.namespace_index))

        async def member(db_node: Node, db: str, name: str, value: Any, vtype: ua.VariantType) -> None:
            await self._add(db_node, f"{db}/{name}", (*top, db, name), self._sid(db, name), value, vtype)

        for mixer in self._mixers:
            db = f"DB_Mixer{mixer.number}"
            node = await data_block(db)
            await member(node, db, "MotorCurrent", MOTOR_CURRENT_A[mixer.phase], real)
            await member(node, db, "State", STATE_CODES[mixer.phase], int16)
            await member(node, db, "BatchCount", 0, udint)
            await member(node, db, "MixTime", 0.0, real)
            await member(node, db, "RecipeId", "", s)
            await member(node, db, "BatchId", "", s)
        for sid, material in SILOS:
            db = f"DB_{sid}"
            node = await data_block(db)
            await member(node, db, "Level", self._silo_levels[sid], real)
            await member(node, db, "Material", material, s)
        node = await data_block("DB_Dryer")
        await member(node, "DB_Dryer", "SandTemp", 95.0, real)
        await member(node, "DB_Dryer", "Moisture", 0.2, real)
        node = await data_block("DB_Analog")
        for n in range(1, self.analog_tags + 1):
            await member(node, "DB_Analog", f"AI_{n:03d}", self._analog[n - 1][0], real)
        if self.batches:
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            node = await data_block("DB_Batch")
            for name, value, vtype in (
                ("BatchId", "", s),
                ("ProductId", "", s),
                ("RecipeId", "", s),
                ("Mixer", "", s),
                ("StartTime", epoch, dt),
                ("EndTime", epoch, dt),
                ("Components", [], s),
                ("TargetKg", [], real),
                ("ActualKg", [], real),
                ("BatchCount", 0, udint),
            ):
                await member(node, "DB_Batch", name, value, vtype)
        memory = await self._folder(plc, self._id("Memory"), "Memory")
        await self._add(memory, "Memory/Heartbeat", ("PLC_1", "Memory", "Heartbeat"), self._id('"Heartbeat"'), False, b)

    # ---------------------------------------------------------------- simulation

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.step(self.tick_s * self.speed)
            except Exception:
                logger.exception("vendor plant simulation step failed")

    async def step(self, dt_sim: float) -> None:
        """Advance the plant by ``dt_sim`` sandbox seconds and publish every value."""
        self.ticks += 1
        self.sim_time_s += dt_sim
        for mixer in self._mixers:
            mixer.phase_elapsed += dt_sim
            while mixer.phase_elapsed >= CYCLE[mixer.phase_index][1]:
                mixer.phase_elapsed -= CYCLE[mixer.phase_index][1]
                await self._leave_phase(mixer)
                mixer.phase_index = (mixer.phase_index + 1) % len(CYCLE)
                self._enter_phase(mixer)
            if mixer.phase == "Mixing":
                mixer.mix_time_s = round(mixer.phase_elapsed, 1)
        self._heartbeat = not self._heartbeat
        await self._publish()

    def _enter_phase(self, mixer: _Mixer) -> None:
        if mixer.phase != "Filling":
            return
        mixer.recipe_id = self._rng.choice(sorted(RECIPES))
        mixer.started_at = datetime.now(UTC)
        mixer.batch_id = f"B{mixer.started_at:%y%m%d%H%M%S}-M{mixer.number}-{mixer.batch_count + 1:04d}"
        mixer.targets = {c: kg for c, kg in RECIPES[mixer.recipe_id]["kg"].items() if kg > 0}
        mixer.actuals = {c: round(kg * (1.0 + self._rng.uniform(-0.012, 0.012)), 2) for c, kg in mixer.targets.items()}
        mixer.mix_time_s = 0.0

    async def _leave_phase(self, mixer: _Mixer) -> None:
        if mixer.phase == "Filling":
            for component, kg in mixer.actuals.items():
                self._draw_from_silos(component, kg)
        elif mixer.phase == "Mixing":
            mixer.mix_time_s = CYCLE[2][1]
        elif mixer.phase == "Discharging" and mixer.batch_id:
            mixer.batch_count += 1
            self._batch_count += 1
            components = [c for c in COMPONENTS if c in mixer.targets]
            batch = VendorBatch(
                count=self._batch_count,
                batch_id=mixer.batch_id,
                product_id=str(RECIPES[mixer.recipe_id]["product"]),
                recipe_id=mixer.recipe_id,
                mixer=f"Mixer{mixer.number}",
                start_time=mixer.started_at or datetime.now(UTC),
                end_time=datetime.now(UTC),
                components=components,
                target_kg=[mixer.targets[c] for c in components],
                actual_kg=[mixer.actuals[c] for c in components],
            )
            self.completed.append(batch)
            mixer.batch_id = ""
            if self.batches:
                await self._publish_batch(batch)

    def _draw_from_silos(self, material: str, kg: float) -> None:
        for sid, held in SILOS:
            if held == material:
                level = self._silo_levels[sid] - 100.0 * kg / SILO_CAPACITY_KG[material]
                self._silo_levels[sid] = 92.0 if level < 15.0 else level  # a truck refilled it

    def _values(self) -> dict[str, Any]:
        """Every tag's current value, keyed as :attr:`tags` is (one random draw per noisy value, in a fixed order)."""
        rng = self._rng
        out: dict[str, Any] = {}
        kep = self.layout == "kepware"
        for mixer in self._mixers:
            current = round(MOTOR_CURRENT_A[mixer.phase] * (1.0 + rng.uniform(-0.04, 0.04)), 2)
            if kep:
                base = f"Mixing/Mixer{mixer.number}"
                out.update({
                    f"{base}/MotorCurrent": current,
                    f"{base}/State": STATE_CODES[mixer.phase],
                    f"{base}/BatchCount": mixer.batch_count,
                    f"{base}/MixTime": mixer.mix_time_s,
                    f"{base}/Recipe": mixer.recipe_id,
                    f"{base}/_System/_Error": False,
                })
            else:
                base = f"DB_Mixer{mixer.number}"
                out.update({
                    f"{base}/MotorCurrent": current,
                    f"{base}/State": STATE_CODES[mixer.phase],
                    f"{base}/BatchCount": mixer.batch_count,
                    f"{base}/MixTime": mixer.mix_time_s,
                    f"{base}/RecipeId": mixer.recipe_id,
                    f"{base}/BatchId": mixer.batch_id,
                })
        for sid, _material in SILOS:
            level = round(self._silo_levels[sid] + rng.uniform(-0.05, 0.05), 2)
            out[f"Silos/{sid}/Level" if kep else f"DB_{sid}/Level"] = level
            if kep:
                out[f"Silos/{sid}/_System/_Error"] = False
        sand = round(95.0 + rng.uniform(-3.0, 3.0), 1)
        moisture = round(0.2 + rng.uniform(-0.05, 0.05), 3)
        if kep:
            out.update({"Dryer/Dryer1/SandTemp": sand, "Dryer/Dryer1/Moisture": moisture, "Dryer/Dryer1/_System/_Error": False})
        else:
            out.update({"DB_Dryer/SandTemp": sand, "DB_Dryer/Moisture": moisture, "Memory/Heartbeat": self._heartbeat})
        for n, (base_value, amplitude, period) in enumerate(self._analog, start=1):
            value = base_value + amplitude * math.sin(2.0 * math.pi * self.sim_time_s / period) + rng.uniform(-0.02, 0.02) * amplitude
            out[f"Field/AnalogIn/AI_{n:03d}" if kep else f"DB_Analog/AI_{n:03d}"] = round(value, 3)
        return out

    async def _write(self, key: str, value: Any, stamp: datetime) -> None:
        assert self._server is not None
        ts = cast(ua.DateTime, stamp)  # asyncua types timestamps as its datetime subclass
        await self._server.write_attribute_value(
            self._nodes[key], ua.DataValue(ua.Variant(value, self.tags[key].vtype), SourceTimestamp=ts, ServerTimestamp=ts)
        )

    async def _publish(self) -> None:
        if self._server is None:
            return
        stamp = datetime.now(UTC)
        for key, value in self._values().items():
            await self._write(key, value, stamp)

    async def _publish_batch(self, batch: VendorBatch) -> None:
        """Write DB_Batch member by member, BatchCount last: a reader that sees the count sees the record."""
        if self._server is None:
            return
        stamp = datetime.now(UTC)
        for key, value in (
            ("DB_Batch/BatchId", batch.batch_id),
            ("DB_Batch/ProductId", batch.product_id),
            ("DB_Batch/RecipeId", batch.recipe_id),
            ("DB_Batch/Mixer", batch.mixer),
            ("DB_Batch/StartTime", batch.start_time),
            ("DB_Batch/EndTime", batch.end_time),
            ("DB_Batch/Components", batch.components),
            ("DB_Batch/TargetKg", batch.target_kg),
            ("DB_Batch/ActualKg", batch.actual_kg),
            ("DB_Batch/BatchCount", batch.count),
        ):
            await self._write(key, value, stamp)


@contextlib.asynccontextmanager
async def running_vendor_plant(**kwargs: Any) -> AsyncIterator[VendorPlantSimulator]:
    """A vendor-shaped plant on a free port for the duration of the block."""
    kwargs.setdefault("port", 0)
    sim = VendorPlantSimulator(**kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def serve_vendor_plant(**kwargs: Any) -> None:
    """Run the vendor-shaped simulator until Ctrl-C (blocking)."""

    async def _main() -> None:
        sim = VendorPlantSimulator(**kwargs)
        await sim.start()
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox plant-vendor [options]``: serve the vendor-shaped plant simulator."""
    parser = argparse.ArgumentParser(prog="python -m sandbox plant-vendor", description="Serve an OPC UA plant shaped like a Kepware gateway or an S7-1500.")
    parser.add_argument("--layout", choices=LAYOUTS, default="kepware")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 49320 for kepware, 4841 for s7)")
    parser.add_argument("--tags", type=int, default=100, help="analog tags in the plain folder")
    parser.add_argument("--batches", action="store_true", help="s7 only: publish DB_Batch, the last completed batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", type=float, default=50.0, help="sandbox seconds per wall-clock second")
    args = parser.parse_args(argv)
    if args.batches and args.layout != "s7":
        parser.error("--batches needs --layout s7: the kepware layout has no batch records")
    logging.basicConfig(level=logging.INFO)
    serve_vendor_plant(
        layout=args.layout,
        host=args.host,
        port=args.port if args.port is not None else DEFAULT_PORTS[args.layout],
        tags=args.tags,
        batches=args.batches,
        seed=args.seed,
        speed=args.speed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
