"""Dry-mix plant simulator: an asyncua (OPC UA) server with mixers, dosing scales, silos, a sand dryer
and a ring of completed-batch records.

Address space (namespace ``urn:drymix:plant``, string NodeIds ``ns=<idx>;s=Plant.<path with dots>``)::

    Objects/Plant/
      Mixers/M1/State            String   Idle | Filling | Mixing | Discharging
               /CurrentBatch     String   batch id being made ("" when idle)
               /RecipeCode       String
               /MixingTimeS      Double   s    (sandbox time)
               /MotorCurrentA    Double   A
               /Scales/<Component>/TargetKg, ActualKg   Double kg (one dosing scale per component)
      Silos/S1/LevelPct          Double   %
              /Material          String
      Dryer/SandTemperatureC, ExhaustTemperatureC (degC), MoistureInPct (%)
      Batches/Counter            Int64    seq of the last completed batch (monotonic, survives restarts)
             /RingSize           Int32
             /Records/R000..     one object per ring slot: Seq, BatchId, ProductCode, RecipeCode, Mixer,
                                 StartedAt, EndedAt (DateTime), MixingTimeS, Components (String[]),
                                 TargetKg, ActualKg (Double[])

Analog variables carry an ``EngineeringUnits`` property (EUInformation), as AnalogItemType does.

No lost batch records: a completed batch is written to its ring slot (Seq last) and then to
``Counter``; the ring and counter are saved to a small state file (write, fsync, rename) after every
batch and restored on start, so records completed just before a restart are still readable after it.

Sandbox time runs ``speed`` times faster than the wall clock for durations (mixing time, cycle
phases); timestamps (source timestamps, batch start/end) are wall-clock UTC.

Faults (:class:`PlantFaults`, changeable while running): bad-quality values, stale tags (their source
timestamp stops moving), refused sessions (BadUserAccessDenied), slow reads, out-of-tolerance dosing
and corrupt batch records (a negative scale reading).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import random
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)
T = TypeVar("T")

NAMESPACE_URI = "urn:drymix:plant"
ENDPOINT_PATH = "/drymix/plant/"
SERVER_APP_URI = "urn:drymix:sandbox:plant-server"
ROOT_NAME = "Plant"

COMPONENTS: tuple[str, ...] = ("Cement", "Sand", "Limestone", "Lime", "Polymer", "Additive")
# Recipes of 1 t batches: kg per component (0 = not used by the recipe).
RECIPES: dict[str, dict[str, Any]] = {
    "R-TA-C1": {"product": "TILE-ADH-C1", "kg": {"Cement": 350.0, "Sand": 580.0, "Limestone": 50.0, "Lime": 0.0, "Polymer": 15.0, "Additive": 5.0}},
    "R-TA-C2": {"product": "TILE-ADH-C2", "kg": {"Cement": 380.0, "Sand": 520.0, "Limestone": 60.0, "Lime": 0.0, "Polymer": 30.0, "Additive": 10.0}},
    "R-PL-GP": {"product": "PLASTER-GP", "kg": {"Cement": 180.0, "Sand": 700.0, "Limestone": 60.0, "Lime": 55.0, "Polymer": 0.0, "Additive": 5.0}},
    "R-MM-M5": {"product": "MASONRY-M5", "kg": {"Cement": 200.0, "Sand": 760.0, "Limestone": 0.0, "Lime": 35.0, "Polymer": 0.0, "Additive": 5.0}},
    "R-SL-25": {"product": "SELF-LEVEL-25", "kg": {"Cement": 300.0, "Sand": 550.0, "Limestone": 120.0, "Lime": 0.0, "Polymer": 20.0, "Additive": 10.0}},
}
SILOS: tuple[tuple[str, str], ...] = (
    ("S1", "Cement"),
    ("S2", "Cement"),
    ("S3", "Sand"),
    ("S4", "Sand"),
    ("S5", "Limestone"),
    ("S6", "Lime"),
    ("S7", "Polymer"),
    ("S8", "Additive"),
)
SILO_CAPACITY_KG: dict[str, float] = {"Cement": 60_000.0, "Sand": 80_000.0, "Limestone": 40_000.0, "Lime": 30_000.0, "Polymer": 5_000.0, "Additive": 3_000.0}

# Mixer cycle in sandbox seconds: phase -> duration.
CYCLE: tuple[tuple[str, float], ...] = (("Idle", 10.0), ("Filling", 40.0), ("Mixing", 120.0), ("Discharging", 20.0))
MOTOR_CURRENT_A: dict[str, float] = {"Idle": 1.5, "Filling": 22.0, "Mixing": 86.0, "Discharging": 41.0}

UNITS: dict[str, str] = {
    "MixingTimeS": "s",
    "MotorCurrentA": "A",
    "TargetKg": "kg",
    "ActualKg": "kg",
    "LevelPct": "%",
    "SandTemperatureC": "degC",
    "ExhaustTemperatureC": "degC",
    "MoistureInPct": "%",
}
# UNECE Recommendation 20 codes as OPC UA UnitIds (Part 8: ASCII of the common code).
_UNECE: dict[str, str] = {"s": "SEC", "A": "AMP", "kg": "KGM", "%": "P1", "degC": "CEL"}


def _unit_id(code: str) -> int:
    value = 0
    for ch in code:
        value = (value << 8) | ord(ch)
    return value


class PlantFaults(BaseModel):
    """Fault switches of the plant simulator; assign to them while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    bad_quality_ratio: float = Field(0.0, ge=0.0, le=1.0, description="share of analog writes sent with BadSensorFailure")
    stale_tags: list[str] = Field(default_factory=list, description='tags that stop updating, e.g. "Dryer/MoistureInPct"')
    refuse_sessions: bool = Field(False, description="ActivateSession answers BadUserAccessDenied")
    read_delay_ms: float = Field(0.0, ge=0.0, description="extra delay before every Read service call")
    dosing_error_ratio: float = Field(0.0, ge=0.0, le=1.0, description="share of batches with one component 4-8 % off target")
    corrupt_batch_ratio: float = Field(0.0, ge=0.0, le=1.0, description="share of batch records with a negative scale reading")


@dataclass
class BatchRecord:
    """One completed batch as the plant stores it in its ring."""

    seq: int
    batch_id: str
    product_code: str
    recipe_code: str
    mixer: str
    started_at: datetime
    ended_at: datetime
    mixing_time_s: float
    components: list[str]
    target_kg: list[float]
    actual_kg: list[float]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "batch_id": self.batch_id,
            "product_code": self.product_code,
            "recipe_code": self.recipe_code,
            "mixer": self.mixer,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "mixing_time_s": self.mixing_time_s,
            "components": self.components,
            "target_kg": self.target_kg,
            "actual_kg": self.actual_kg,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BatchRecord:
        return cls(
            seq=int(raw["seq"]),
            batch_id=str(raw["batch_id"]),
            product_code=str(raw["product_code"]),
            recipe_code=str(raw["recipe_code"]),
            mixer=str(raw["mixer"]),
            started_at=datetime.fromisoformat(raw["started_at"]),
            ended_at=datetime.fromisoformat(raw["ended_at"]),
            mixing_time_s=float(raw["mixing_time_s"]),
            components=list(raw["components"]),
            target_kg=[float(v) for v in raw["target_kg"]],
            actual_kg=[float(v) for v in raw["actual_kg"]],
        )


@dataclass
class _Mixer:
    name: str
    phase_index: int = 0
    phase_elapsed: float = 0.0
    recipe_code: str = ""
    batch_id: str = ""
    started_at: datetime | None = None
    mixing_time_s: float = 0.0
    targets: dict[str, float] = field(default_factory=dict)
    actuals: dict[str, float] = field(default_factory=dict)
    dosing_bias: dict[str, float] = field(default_factory=dict)
    corrupt: bool = False

    @property
    def phase(self) -> str:
        return CYCLE[self.phase_index][0]


@dataclass
class _State:
    """What survives a restart (the state file)."""

    counter: int = 0
    ring: dict[int, BatchRecord] = field(default_factory=dict)  # slot -> record
    silo_levels: dict[str, float] = field(default_factory=dict)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def start_server(host: str, port: int, build: Callable[[int], Awaitable[Server]], *, attempts: int = 5) -> tuple[Server, int]:
    """Build an asyncua server for ``port`` and start it; port 0 means any free port.

    asyncua binds only in ``Server.start()``, after the address space is built, so another process can take
    the port free_port() picked in between (seen with two test suites side by side): then a new port and a
    new server are tried. A fixed port that is taken is the caller's error and is raised at once.
    """
    auto = port == 0
    for attempt in range(1, attempts + 1):
        chosen = free_port(host) if auto else port
        server = await build(chosen)
        try:
            await server.start()
        except OSError as exc:
            if not auto or exc.errno != errno.EADDRINUSE or attempt == attempts:
                raise
            logger.info("port %d was taken before the OPC UA server bound it; trying another", chosen)
            continue
        return server, chosen
    raise AssertionError("unreachable: the last attempt returns or raises")


class PlantSimulator:
    """The simulated plant; ``async with PlantSimulator(port=0) as sim: sim.url`` serves it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4840,
        mixers: int = 2,
        speed: float = 50.0,
        tick_s: float = 0.25,
        ring_size: int = 200,
        state_file: str | Path | None = None,
        secure: bool = False,
        pki_dir: str | Path = "var/plant_pki",
        users: dict[str, str] | None = None,
        faults: PlantFaults | dict[str, Any] | None = None,
        seed: int = 42,
    ) -> None:
        if mixers < 1:
            raise ValueError("a plant needs at least one mixer")
        if ring_size < 1:
            raise ValueError("ring_size must be positive")
        self.host = host
        self.port = port
        self.speed = speed
        self.tick_s = tick_s
        self.ring_size = ring_size
        self.state_file = Path(state_file) if state_file else None
        self.secure = secure
        self.pki_dir = Path(pki_dir)
        self.users = dict(users or {})
        self.faults = faults if isinstance(faults, PlantFaults) else PlantFaults(**(faults or {}))
        self._rng = random.Random(seed)
        self._mixers = [_Mixer(name=f"M{i + 1}") for i in range(mixers)]
        # Stagger the mixers so batches complete at a steady pace rather than together.
        cycle_len = sum(d for _, d in CYCLE)
        for i, mixer in enumerate(self._mixers):
            offset = cycle_len * i / mixers
            while offset >= CYCLE[mixer.phase_index][1]:
                offset -= CYCLE[mixer.phase_index][1]
                mixer.phase_index = (mixer.phase_index + 1) % len(CYCLE)
            mixer.phase_elapsed = offset
        self._state = _State(silo_levels={sid: 60.0 + 5.0 * i for i, (sid, _) in enumerate(SILOS)})
        self._batch_numbers: dict[str, int] = {}
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._nodes: dict[str, Node] = {}
        self._slot_nodes: list[dict[str, Node]] = []
        self._last_values: dict[str, Any] = {}
        self._idx = 0
        self.server_certificate: Path | None = None
        self.reads = 0
        self._load_state()

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    @property
    def batch_counter(self) -> int:
        return self._state.counter

    def records(self) -> list[BatchRecord]:
        """The batch records the ring still holds, oldest first."""
        return sorted(self._state.ring.values(), key=lambda r: r.seq)

    async def start(self) -> None:
        async def build(port: int) -> Server:
            self.port = port
            return await self._new_server()

        server, _ = await start_server(self.host, self.port, build)
        self._server = server
        await self._publish_ring()
        self._task = asyncio.create_task(self._run(), name="plant-simulator")
        logger.info("plant sandbox on %s (%d mixers, speed x%s, secure=%s)", self.url, len(self._mixers), self.speed, self.secure)

    async def _new_server(self) -> Server:
        server = Server(user_manager=_UserManager(self))  # type: ignore[arg-type]  # a duck-typed UserManager, as asyncua's own
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("DryMix plant sandbox")
        await server.set_application_uri(SERVER_APP_URI)
        if self.secure:
            key_file, cert_file = await self._ensure_certificate()
            await server.load_certificate(str(cert_file))
            await server.load_private_key(str(key_file))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            self.server_certificate = cert_file
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        self._idx = await server.register_namespace(NAMESPACE_URI)
        self._nodes = {}
        self._slot_nodes = []
        await self._build_address_space(server)
        server.subscribe_server_callback(CallbackType.PreRead, self._before_read)
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
        self._save_state()

    async def __aenter__(self) -> PlantSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _ensure_certificate(self) -> tuple[Path, Path]:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate

        self.pki_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.pki_dir / "plant_server_key.pem"
        cert_file = self.pki_dir / "plant_server_cert.der"
        await setup_self_signed_certificate(
            key_file,
            cert_file,
            SERVER_APP_URI,
            socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "IN", "organizationName": "DryMix sandbox", "commonName": "DryMix plant sandbox"},
        )
        return key_file, cert_file

    # ---------------------------------------------------------------- address space

    def node_id(self, path: str) -> str:
        """NodeId string of a tag path such as ``Mixers/M1/MotorCurrentA``."""
        return f"ns={self._idx};s={ROOT_NAME}.{path.replace('/', '.')}"

    def _nid(self, path: str) -> ua.NodeId:
        name = f"{ROOT_NAME}.{path.replace('/', '.')}" if path else ROOT_NAME
        return ua.NodeId(ua.String(name), ua.Int16(self._idx))

    async def _variable(self, parent: Node, path: str, value: Any, vtype: ua.VariantType) -> Node:
        name = path.rsplit("/", 1)[-1]
        node = await parent.add_variable(self._nid(path), ua.QualifiedName(name, self._idx), ua.Variant(value, vtype))
        unit = UNITS.get(name)
        if unit:
            info = ua.EUInformation(
                NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                UnitId=_unit_id(_UNECE[unit]),
                DisplayName=ua.LocalizedText(unit),
                Description=ua.LocalizedText(unit),
            )
            await node.add_property(
                self._nid(path + "/EngineeringUnits"),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.Variant(info, ua.VariantType.ExtensionObject),
            )
        self._nodes[path] = node
        self._last_values[path] = value
        return node

    async def _folder(self, parent: Node, path: str) -> Node:
        name = path.rsplit("/", 1)[-1]
        return await parent.add_object(self._nid(path), ua.QualifiedName(name, self._idx))

    async def _build_address_space(self, server: Server) -> None:
        plant = await server.nodes.objects.add_object(self._nid(""), ua.QualifiedName(ROOT_NAME, self._idx))
        mixers = await self._folder(plant, "Mixers")
        d, s = ua.VariantType.Double, ua.VariantType.String
        for mixer in self._mixers:
            base = f"Mixers/{mixer.name}"
            obj = await self._folder(mixers, base)
            await self._variable(obj, f"{base}/State", mixer.phase, s)
            await self._variable(obj, f"{base}/CurrentBatch", "", s)
            await self._variable(obj, f"{base}/RecipeCode", "", s)
            await self._variable(obj, f"{base}/MixingTimeS", 0.0, d)
            await self._variable(obj, f"{base}/MotorCurrentA", MOTOR_CURRENT_A[mixer.phase], d)
            scales = await self._folder(obj, f"{base}/Scales")
            for component in COMPONENTS:
                scale = await self._folder(scales, f"{base}/Scales/{component}")
                await self._variable(scale, f"{base}/Scales/{component}/TargetKg", 0.0, d)
                await self._variable(scale, f"{base}/Scales/{component}/ActualKg", 0.0, d)
        silos = await self._folder(plant, "Silos")
        for sid, material in SILOS:
            obj = await self._folder(silos, f"Silos/{sid}")
            await self._variable(obj, f"Silos/{sid}/LevelPct", self._state.silo_levels.get(sid, 60.0), d)
            await self._variable(obj, f"Silos/{sid}/Material", material, s)
        dryer = await self._folder(plant, "Dryer")
        await self._variable(dryer, "Dryer/SandTemperatureC", 95.0, d)
        await self._variable(dryer, "Dryer/ExhaustTemperatureC", 62.0, d)
        await self._variable(dryer, "Dryer/MoistureInPct", 0.2, d)
        batches = await self._folder(plant, "Batches")
        await self._variable(batches, "Batches/Counter", self._state.counter, ua.VariantType.Int64)
        await self._variable(batches, "Batches/RingSize", self.ring_size, ua.VariantType.Int32)
        records = await self._folder(batches, "Batches/Records")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        self._slot_nodes = []
        for slot in range(self.ring_size):
            base = f"Batches/Records/R{slot:03d}"
            obj = await self._folder(records, base)
            fields = {
                "Seq": await self._variable(obj, f"{base}/Seq", 0, ua.VariantType.Int64),
                "BatchId": await self._variable(obj, f"{base}/BatchId", "", s),
                "ProductCode": await self._variable(obj, f"{base}/ProductCode", "", s),
                "RecipeCode": await self._variable(obj, f"{base}/RecipeCode", "", s),
                "Mixer": await self._variable(obj, f"{base}/Mixer", "", s),
                "StartedAt": await self._variable(obj, f"{base}/StartedAt", epoch, ua.VariantType.DateTime),
                "EndedAt": await self._variable(obj, f"{base}/EndedAt", epoch, ua.VariantType.DateTime),
                "MixingTimeS": await self._variable(obj, f"{base}/MixingTimeS", 0.0, d),
                "Components": await self._variable(obj, f"{base}/Components", [], s),
                "TargetKg": await self._variable(obj, f"{base}/TargetKg", [], d),
                "ActualKg": await self._variable(obj, f"{base}/ActualKg", [], d),
            }
            self._slot_nodes.append(fields)

    # ---------------------------------------------------------------- faults

    async def _before_read(self, event: Any, dispatcher: Any) -> None:
        self.reads += 1
        if self.faults.read_delay_ms > 0:
            await asyncio.sleep(self.faults.read_delay_ms / 1000.0)

    # ---------------------------------------------------------------- simulation

    async def _write(self, path: str, value: Any, vtype: ua.VariantType, *, analog: bool = False) -> None:
        if path in self.faults.stale_tags:
            return  # a stale tag: the device stopped updating it, its source timestamp stays put
        assert self._server is not None
        status = ua.StatusCode(ua.UInt32(ua.StatusCodes.Good))
        if analog and self.faults.bad_quality_ratio and self._rng.random() < self.faults.bad_quality_ratio:
            status = ua.StatusCode(ua.UInt32(ua.StatusCodes.BadSensorFailure))
        stamp = cast(ua.DateTime, datetime.now(UTC))  # asyncua types timestamps as its datetime subclass
        await self._server.write_attribute_value(
            self._nodes[path].nodeid,
            ua.DataValue(ua.Variant(value, vtype), StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=stamp),
        )
        self._last_values[path] = value

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            dt_sim = (now - last) * self.speed
            last = now
            try:
                await self.step(dt_sim)
            except Exception:
                logger.exception("plant simulation step failed")

    async def step(self, dt_sim: float) -> None:
        """Advance the plant by ``dt_sim`` sandbox seconds and publish the new values."""
        d, s = ua.VariantType.Double, ua.VariantType.String
        for mixer in self._mixers:
            mixer.phase_elapsed += dt_sim
            while mixer.phase_elapsed >= CYCLE[mixer.phase_index][1]:
                mixer.phase_elapsed -= CYCLE[mixer.phase_index][1]
                await self._leave_phase(mixer)
                mixer.phase_index = (mixer.phase_index + 1) % len(CYCLE)
                await self._enter_phase(mixer)
                await self._write(f"Mixers/{mixer.name}/State", mixer.phase, s)
            base = f"Mixers/{mixer.name}"
            if mixer.phase == "Filling":
                share = min(1.0, mixer.phase_elapsed / CYCLE[1][1])
                for component in COMPONENTS:
                    target = mixer.targets.get(component, 0.0)
                    if target > 0:
                        mixer.actuals[component] = round(target * (1.0 + mixer.dosing_bias.get(component, 0.0)) * share, 2)
                        await self._write(f"{base}/Scales/{component}/ActualKg", mixer.actuals[component], d, analog=True)
            elif mixer.phase == "Mixing":
                mixer.mixing_time_s = round(mixer.phase_elapsed, 1)
                await self._write(f"{base}/MixingTimeS", mixer.mixing_time_s, d)
            current = MOTOR_CURRENT_A[mixer.phase] * (1.0 + self._rng.uniform(-0.04, 0.04))
            await self._write(f"{base}/MotorCurrentA", round(current, 2), d, analog=True)
        for sid, _material in SILOS:
            level = self._state.silo_levels.get(sid, 60.0)
            await self._write(f"Silos/{sid}/LevelPct", round(level + self._rng.uniform(-0.05, 0.05), 2), d, analog=True)
        await self._write("Dryer/SandTemperatureC", round(95.0 + self._rng.uniform(-3.0, 3.0), 1), d, analog=True)
        await self._write("Dryer/ExhaustTemperatureC", round(62.0 + self._rng.uniform(-2.0, 2.0), 1), d, analog=True)
        await self._write("Dryer/MoistureInPct", round(0.2 + self._rng.uniform(-0.05, 0.05), 3), d, analog=True)

    async def _enter_phase(self, mixer: _Mixer) -> None:
        d, s = ua.VariantType.Double, ua.VariantType.String
        base = f"Mixers/{mixer.name}"
        if mixer.phase == "Filling":
            mixer.recipe_code = self._rng.choice(sorted(RECIPES))
            number = self._batch_numbers.get(mixer.name, 0) + 1
            self._batch_numbers[mixer.name] = number
            mixer.started_at = datetime.now(UTC)
            mixer.batch_id = f"{mixer.name}-{mixer.started_at:%y%m%d}-{self._state.counter + 1:06d}-{number:03d}"
            mixer.targets = dict(RECIPES[mixer.recipe_code]["kg"])
            mixer.actuals = dict.fromkeys(COMPONENTS, 0.0)
            mixer.dosing_bias = {c: self._rng.uniform(-0.012, 0.012) for c in COMPONENTS}
            if self.faults.dosing_error_ratio and self._rng.random() < self.faults.dosing_error_ratio:
                used = [c for c in COMPONENTS if mixer.targets[c] > 0]
                mixer.dosing_bias[self._rng.choice(used)] = self._rng.choice((-1, 1)) * self._rng.uniform(0.04, 0.08)
            mixer.corrupt = bool(self.faults.corrupt_batch_ratio and self._rng.random() < self.faults.corrupt_batch_ratio)
            mixer.mixing_time_s = 0.0
            await self._write(f"{base}/CurrentBatch", mixer.batch_id, s)
            await self._write(f"{base}/RecipeCode", mixer.recipe_code, s)
            await self._write(f"{base}/MixingTimeS", 0.0, d)
            for component in COMPONENTS:
                await self._write(f"{base}/Scales/{component}/TargetKg", mixer.targets[component], d)
                await self._write(f"{base}/Scales/{component}/ActualKg", 0.0, d)
        elif mixer.phase == "Idle":
            await self._write(f"{base}/CurrentBatch", "", s)

    async def _leave_phase(self, mixer: _Mixer) -> None:
        if mixer.phase == "Filling":
            for component in COMPONENTS:
                target = mixer.targets.get(component, 0.0)
                mixer.actuals[component] = round(target * (1.0 + mixer.dosing_bias.get(component, 0.0)), 2)
                await self._write(f"Mixers/{mixer.name}/Scales/{component}/ActualKg", mixer.actuals[component], ua.VariantType.Double)
                self._draw_from_silos(component, mixer.actuals[component])
        elif mixer.phase == "Mixing":
            mixer.mixing_time_s = CYCLE[2][1]  # the whole phase, whatever the tick length
            await self._write(f"Mixers/{mixer.name}/MixingTimeS", mixer.mixing_time_s, ua.VariantType.Double)
        elif mixer.phase == "Discharging" and mixer.batch_id:
            await self._complete_batch(mixer)

    def _draw_from_silos(self, material: str, kg: float) -> None:
        silos = [sid for sid, m in SILOS if m == material]
        if not silos or kg <= 0:
            return
        sid = max(silos, key=lambda x: self._state.silo_levels.get(x, 0.0))
        level = self._state.silo_levels.get(sid, 60.0) - 100.0 * kg / SILO_CAPACITY_KG[material]
        self._state.silo_levels[sid] = 92.0 if level < 15.0 else round(level, 3)  # a truck refilled it

    async def _complete_batch(self, mixer: _Mixer) -> None:
        used = [c for c in COMPONENTS if mixer.targets.get(c, 0.0) > 0]
        actual = [mixer.actuals[c] for c in used]
        if mixer.corrupt and actual:
            actual[self._rng.randrange(len(actual))] = -abs(actual[0])  # a load-cell glitch recorded as is
        record = BatchRecord(
            seq=self._state.counter + 1,
            batch_id=mixer.batch_id,
            product_code=str(RECIPES[mixer.recipe_code]["product"]),
            recipe_code=mixer.recipe_code,
            mixer=mixer.name,
            started_at=mixer.started_at or datetime.now(UTC),
            ended_at=datetime.now(UTC),
            mixing_time_s=mixer.mixing_time_s,
            components=used,
            target_kg=[mixer.targets[c] for c in used],
            actual_kg=actual,
        )
        await self.publish_batch(record)
        mixer.batch_id = ""

    async def publish_batch(self, record: BatchRecord) -> None:
        """Put a completed batch in its ring slot (Seq last), bump the counter, save the state file."""
        slot = (record.seq - 1) % self.ring_size
        self._state.ring[slot] = record
        self._state.counter = record.seq
        self._save_state()
        if self._server is not None:
            await self._write_slot(slot, record)
            await self._write("Batches/Counter", record.seq, ua.VariantType.Int64)

    async def _write_slot(self, slot: int, record: BatchRecord) -> None:
        assert self._server is not None
        nodes = self._slot_nodes[slot]
        d, s = ua.VariantType.Double, ua.VariantType.String
        values: list[tuple[str, Any, ua.VariantType]] = [
            ("BatchId", record.batch_id, s),
            ("ProductCode", record.product_code, s),
            ("RecipeCode", record.recipe_code, s),
            ("Mixer", record.mixer, s),
            ("StartedAt", record.started_at, ua.VariantType.DateTime),
            ("EndedAt", record.ended_at, ua.VariantType.DateTime),
            ("MixingTimeS", record.mixing_time_s, d),
            ("Components", record.components, s),
            ("TargetKg", record.target_kg, d),
            ("ActualKg", record.actual_kg, d),
            ("Seq", record.seq, ua.VariantType.Int64),  # last: a reader that sees the seq sees the whole record
        ]
        stamp = cast(ua.DateTime, datetime.now(UTC))
        for name, value, vtype in values:
            await self._server.write_attribute_value(
                nodes[name].nodeid, ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=stamp, ServerTimestamp=stamp)
            )

    async def _publish_ring(self) -> None:
        for slot, record in sorted(self._state.ring.items()):
            if slot < self.ring_size:
                await self._write_slot(slot, record)

    # ---------------------------------------------------------------- state file

    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        raw = json.loads(self.state_file.read_text())
        self._state.counter = int(raw.get("counter", 0))
        self._state.ring = {int(k): BatchRecord.from_json(v) for k, v in raw.get("ring", {}).items()}
        self._state.silo_levels.update({k: float(v) for k, v in raw.get("silo_levels", {}).items()})
        logger.info("plant sandbox state restored: %d batches, counter %d", len(self._state.ring), self._state.counter)

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "counter": self._state.counter,
            "ring": {str(k): v.to_json() for k, v in self._state.ring.items()},
            "silo_levels": self._state.silo_levels,
        }
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        with tmp.open("w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)


class _UserManager:
    """Anonymous or username/password sessions; refuses every session while the fault says so."""

    def __init__(self, sim: PlantSimulator) -> None:
        self._sim = sim

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None) -> User | None:
        if self._sim.faults.refuse_sessions:
            return None
        if self._sim.users:
            if username is None or self._sim.users.get(username) != password:
                return None
        return User(role=UserRole.User, name=username)


@contextlib.asynccontextmanager
async def running_plant(**kwargs: Any) -> AsyncIterator[PlantSimulator]:
    """A plant simulator on a free port for the duration of the block."""
    kwargs.setdefault("port", 0)
    sim = PlantSimulator(**kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class ThreadedPlant:
    """The simulator on its own event loop in a background thread, for synchronous callers (flows, tests).

    ``restart()`` stops the server and starts a new one on the same port with the same state file, as a
    plant's OPC UA server comes back after a power cycle.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("port", 0)
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plant-sandbox", daemon=True)
        self._thread.start()
        self.sim = PlantSimulator(**kwargs)
        self.call(self.sim.start())
        self._kwargs["port"] = self.sim.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        return self.sim.url

    def stop(self) -> None:
        self.call(self.sim.stop())

    def start(self) -> None:
        self.sim = PlantSimulator(**self._kwargs)
        self.call(self.sim.start())

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedPlant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_plant(**kwargs: Any) -> None:
    """Run the simulator until Ctrl-C (blocking)."""

    async def _main() -> None:
        sim = PlantSimulator(**kwargs)
        await sim.start()
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox plant [options]``: serve the plant simulator."""
    parser = argparse.ArgumentParser(prog="python -m sandbox plant", description="Serve the OPC UA dry-mix plant sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--mixers", type=int, default=2)
    parser.add_argument("--speed", type=float, default=50.0, help="sandbox seconds per wall-clock second")
    parser.add_argument("--secure", action="store_true", help="Basic256Sha256 SignAndEncrypt only, with a generated certificate")
    parser.add_argument("--state-file", default="var/plant_sandbox_state.json")
    parser.add_argument("--faults", default=None, help='fault switches as JSON, e.g. \'{"bad_quality_ratio": 0.02}\'')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve_plant(
        host=args.host,
        port=args.port,
        mixers=args.mixers,
        speed=args.speed,
        secure=args.secure,
        state_file=args.state_file,
        faults=json.loads(args.faults) if args.faults else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
