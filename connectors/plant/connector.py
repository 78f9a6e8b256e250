"""OPC UA client of the plant (asyncua 2): the site tag map resolved on the server, batched reads, subscriptions,
declared batch records and drift.

What to collect is the site's tag map (connectors/plant/tag_map.py, ``plant_opcua.tag_map``): its namespace URIs
are resolved against the server's NamespaceArray at connect, its folders browsed and its patterns matched, so
the same connector serves our simulator, a Kepware channel or an S7-1500's DataBlocksGlobal. Reads, browses and
monitored-item calls are chunked to the server's OperationLimits (read at connect) and ``page_size``.

Knows nothing of Prefect. Every OPC UA failure leaves as an :class:`IntegrationError` of the hub's
taxonomy (connectors/core/errors.py): a request timeout is TIMEOUT, a bad node id INVALID_REQUEST, a
refused session or failed security check AUTHENTICATION_FAILED, a refused or lost connection
SERVER_ERROR (transient: the server is down or restarting, so it is retried like an HTTP 503).

Reconnects are supervised in two layers. asyncua 2's own supervisor (``auto_reconnect=True``) watches
the channel, re-creates the session after a server restart and re-creates live subscriptions; requests
made while it reconnects wait for it. Around each request this connector retries transient failures with
the integration's backoff policy, so a request that fails while the server is away is sent again once the
supervisor has the session back.

Values keep what OPC UA says about them: status code, source and server timestamps
(``read_attributes``, never ``read_values``, which turns a bad value into a silent None).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar, cast

from asyncua import Client, Node, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto import security_policies
from pydantic import SecretStr

from connectors.core.base import Integration
from connectors.core.config import PlantOpcuaConfig, RetryPolicy
from connectors.core.debug import DebugLog
from connectors.core.errors import IntegrationError, InvalidRequest, classify_exception
from connectors.core.metrics import METRICS
from connectors.core.retry import backoff_delay
from connectors.plant.tag_map import (
    BatchSource,
    BrowseSegment,
    NodeRef,
    ResolvedRule,
    TagMap,
    TagMapError,
    folder_key,
    load_tag_map,
    match_path,
    render,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

INTEGRATION = "plant_opcua"
#: Server/ServerCapabilities/OperationLimits variables the connector honours (Part 5, 6.3.11).
OPERATION_LIMITS: dict[str, int] = {
    "max_nodes_per_read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "max_nodes_per_browse": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    "max_monitored_items_per_call": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}
_DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


@dataclass(frozen=True)
class TagInfo:
    """One mapped plant variable: its ERP tag name, its NodeId on this server and how the map samples it."""

    tag: str  # ERP tag name, e.g. "Mixers/M1/MotorCurrentA"
    node_id: str  # this server's NodeId, e.g. "ns=2;s=Plant.Mixers.M1.MotorCurrentA"
    unit: str | None = None  # EngineeringUnits display name, else the map's unit
    equipment_name: str | None = None  # the map's equipment; None: the tag's parent path
    kind: str = "analog"  # analog | state | counter | text
    sampling: str = "read"  # read | subscription
    deadband: str = "none"  # none | absolute | percent
    deadband_value: float = 0.0
    browse_path: str = ""  # where it was found (folder/relative path), or the map's NodeId

    @property
    def equipment(self) -> str:
        if self.equipment_name is not None:
            return self.equipment_name
        return self.tag.rsplit("/", 1)[0] if "/" in self.tag else ""

    @property
    def measurement(self) -> str:
        return self.tag.rsplit("/", 1)[-1]


@dataclass
class OperationLimits:
    """What the server allows per service call (0: no limit announced)."""

    max_nodes_per_read: int = 0
    max_nodes_per_browse: int = 0
    max_monitored_items_per_call: int = 0


@dataclass
class TagDrift:
    """Where the map and the server disagree (``drymix plant tags --check``; a warning of the run)."""

    map_path: str
    missing: list[dict[str, str]] = field(default_factory=list)  # mapped, not on the server
    unmapped: list[dict[str, str]] = field(default_factory=list)  # on the server under a mapped folder, not in the map
    unit_mismatches: list[dict[str, str]] = field(default_factory=list)  # the server's EngineeringUnits differ from the map
    batches: str | None = None  # declared batch records the server does not have

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unmapped or self.unit_mismatches or self.batches)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} mapped tag(s) missing on the server ({', '.join(m['mapped'] for m in self.missing[:5])})")
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} server variable(s) not in the map ({', '.join(u['path'] for u in self.unmapped[:5])})")
        if self.unit_mismatches:
            parts.append(f"{len(self.unit_mismatches)} unit disagreement(s) ({', '.join(u['tag'] for u in self.unit_mismatches[:5])})")
        if self.batches:
            parts.append(self.batches)
        return f"tag map {self.map_path}: " + "; ".join(parts) if parts else f"tag map {self.map_path}: no drift"

    def as_dict(self) -> dict[str, Any]:
        return {"map": self.map_path, "missing": self.missing, "unmapped": self.unmapped,
                "unit_mismatches": self.unit_mismatches, "batches": self.batches}


@dataclass(frozen=True)
class _Variable:
    path: str  # full path of browse names below Objects
    node_id: ua.NodeId


@dataclass(slots=True)
class TagReading:
    """One value as the server reported it, with its quality and timestamps."""

    tag: str
    node_id: str
    unit: str | None
    value: Any
    status_code: int
    status_name: str
    source_timestamp: datetime | None
    server_timestamp: datetime | None
    collected_at: datetime
    equipment: str = ""
    kind: str = "analog"
    sampling: str = "read"

    @classmethod
    def from_data_value(cls, info: TagInfo, dv: ua.DataValue, collected_at: datetime) -> TagReading:
        code = int(dv.StatusCode.value) if dv.StatusCode is not None else 0
        return cls(
            tag=info.tag,
            node_id=info.node_id,
            unit=info.unit,
            value=dv.Value.Value if dv.Value is not None else None,
            status_code=code,
            status_name=status_name(code),
            source_timestamp=_aware(dv.SourceTimestamp),
            server_timestamp=_aware(dv.ServerTimestamp),
            collected_at=collected_at,
            equipment=info.equipment,
            kind=info.kind,
            sampling=info.sampling,
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict (what the durable buffer stores and the mapping reads)."""
        value = self.value
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list):
            value = [v.isoformat() if isinstance(v, datetime) else v for v in value]
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = str(value)
        return {
            "tag": self.tag,
            "node_id": self.node_id,
            "unit": self.unit,
            "value": value,
            "status_code": self.status_code,
            "status_name": self.status_name,
            "source_timestamp": self.source_timestamp.isoformat() if self.source_timestamp else None,
            "server_timestamp": self.server_timestamp.isoformat() if self.server_timestamp else None,
            "collected_at": self.collected_at.isoformat(),
            "equipment": self.equipment,
            "kind": self.kind,
            "sampling": self.sampling,
        }


@dataclass
class BatchCollection:
    """Completed-batch records newer than a cursor, and what the server's ring said about loss."""

    records: list[dict[str, Any]] = field(default_factory=list)  # JSON-safe, oldest first
    counter: int = 0  # the server's Batches/Counter
    oldest_available: int | None = None  # lowest seq still in the ring
    missed: int = 0  # records overwritten in the ring before they could be collected
    counter_reset: bool = False  # the server's counter went back below our cursor (its state was lost)


@lru_cache(maxsize=1024)
def status_name(code: int) -> str:
    """Symbolic name of a StatusCode value (cached: a read of many tags repeats a handful of codes)."""
    return ua.StatusCode(ua.UInt32(code)).name


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class PlantConnector(Integration):
    """An asyncua client session to the plant; use ``async with PlantConnector(config) as plant:``.

    OPC UA is a session, not pages of HTTP: of the integration base it takes the name and `queue_job`;
    connect and close are its own (async, asyncua's)."""

    integration = INTEGRATION

    def __init__(
        self,
        config: PlantOpcuaConfig,
        *,
        username: str = "",
        password: SecretStr | None = None,
        key_password: SecretStr | None = None,
        retry: RetryPolicy | None = None,
        tag_map: TagMap | None = None,
        debug_log: DebugLog | None = None,
    ) -> None:
        self.config = config
        # Debug mode for the plant only: every read node's value, status and the Read's latency (redacted JSON lines).
        self.debug = debug_log
        self.url = config.base_url
        self.page_size = config.page_size
        self.retry = retry or config.retry
        self.tag_map = tag_map if tag_map is not None else _load_map(config.tag_map)
        self.limits = OperationLimits()
        self._username = username
        self._password = password or SecretStr("")
        self._key_password = key_password or SecretStr("")
        self._client: Client | None = None
        self._ns_index: dict[str, int] = {}
        self._tags: list[TagInfo] | None = None
        self._drift: TagDrift | None = None
        self._slots: list[dict[str, str]] | None = None
        self._counter_node: str | None = None
        self._structure: dict[str, str] | None = None
        self._notifier: ua.NodeId | None = None
        self._event_type: ua.NodeId | None = None
        self._nodes: dict[str, Node] = {}
        self.reconnects = 0
        self.requests = 0

    # ------------------------------------------------------------------ session

    async def __aenter__(self) -> PlantConnector:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("PlantConnector is not connected: use `async with PlantConnector(...)`")
        return self._client

    @property
    def read_chunk(self) -> int:
        """Nodes per Read request: ``page_size``, or less when the server's MaxNodesPerRead says so."""
        return _bounded(self.page_size, self.limits.max_nodes_per_read)

    @property
    def browse_chunk(self) -> int:
        return _bounded(self.page_size, self.limits.max_nodes_per_browse)

    @property
    def monitor_chunk(self) -> int:
        return _bounded(self.page_size, self.limits.max_monitored_items_per_call)

    async def connect(self) -> None:
        """Open the session (secured when configured), retrying transient failures; then resolve the map's
        namespaces and read the server's OperationLimits."""
        await self._with_retry("connect", self._connect_once)
        try:
            await self._resolve_namespaces()
            await self._read_operation_limits()
        except BaseException:
            await self.close()
            raise

    async def _connect_once(self) -> None:
        cfg = self.config
        client = Client(
            self.url,
            timeout=cfg.timeout_s,
            auto_reconnect=True,
            reconnect_max_delay=cfg.reconnect_max_delay_s,
            reconnect_request_timeout=max(cfg.timeout_s, 2 * cfg.reconnect_max_delay_s),
        )
        client.application_uri = cfg.application_uri
        client.name = client.description = "DryMix Integration Hub"
        client.connection_lost_callback = self._on_connection_lost
        if self._username:
            client.set_user(self._username)
            client.set_password(self._password.get_secret_value())
        try:
            if cfg.security == "sign_and_encrypt":
                await self._secure(client)
            await asyncio.wait_for(client.connect(), timeout=cfg.connect_timeout_s + cfg.timeout_s)
        except BaseException:
            await _quiet_disconnect(client)
            raise
        self._client = client
        logger.info("plant OPC UA session open on %s (security %s)", self.url, cfg.security)

    async def _resolve_namespaces(self) -> None:
        """Every namespace URI the map uses -> this server's index (NamespaceArray), never a hard-coded index."""
        array = await self._with_retry("connect", self.client.get_namespace_array)
        wanted = dict(self.tag_map.spec.namespaces)
        for rule in self.tag_map.rules:
            if rule.node is not None and rule.node.namespace_uri and rule.node.namespace_uri not in wanted.values():
                wanted[rule.node.namespace_uri] = rule.node.namespace_uri
        missing = {alias: uri for alias, uri in wanted.items() if uri not in array}
        if missing:
            named = ", ".join(f"{alias} = {uri!r}" if alias != uri else repr(uri) for alias, uri in missing.items())
            raise InvalidRequest(
                f"the server has no namespace {named} that the tag map {self.tag_map.path} uses; "
                f"its namespaces are {', '.join(repr(u) for u in array)}: fix [namespaces] in the map or plant_opcua.tag_map",
                code="NAMESPACE_UNKNOWN",
                integration=INTEGRATION,
                operation="connect",
            )
        self._ns_index = {uri: array.index(uri) for uri in array}

    async def _read_operation_limits(self) -> None:
        """MaxNodesPerRead, MaxNodesPerBrowse, MaxMonitoredItemsPerCall where the server has them (0: no limit)."""
        nodes = [self.client.get_node(ua.NodeId(ua.Int32(i), ua.Int16(0))) for i in OPERATION_LIMITS.values()]
        self.requests += 1
        values = await self._with_retry("connect", partial(self.client.read_attributes, nodes))
        for name, dv in zip(OPERATION_LIMITS, values, strict=True):
            good = dv.StatusCode is None or dv.StatusCode.is_good()
            value = dv.Value.Value if good and dv.Value is not None else None
            setattr(self.limits, name, int(value) if isinstance(value, int) and value > 0 else 0)
        logger.info("plant OPC UA operation limits: %s", self.limits)

    def resolve(self, ref: NodeRef) -> ua.NodeId:
        """A map NodeId with this server's namespace index."""
        index = self._ns_index[ref.namespace_uri] if ref.namespace_uri else 0
        if ref.id_type == "i":
            return ua.NodeId(ua.Int32(int(ref.identifier)), ua.Int16(index))
        if ref.id_type == "g":
            return ua.NodeId(ua.Guid(ref.identifier), ua.Int16(index), ua.NodeIdType.Guid)
        if ref.id_type == "b":
            return ua.NodeId(ua.ByteString(ref.identifier.encode()), ua.Int16(index), ua.NodeIdType.ByteString)
        return ua.NodeId(ua.String(ref.identifier), ua.Int16(index), ua.NodeIdType.String)

    async def _secure(self, client: Client) -> None:
        """Basic256Sha256 SignAndEncrypt with the hub's certificate (generated on first use)."""
        cfg = self.config
        Path(cfg.client_certificate).parent.mkdir(parents=True, exist_ok=True)
        await client.setup_self_signed_certificate(
            Path(cfg.client_private_key),
            Path(cfg.client_certificate),
            {"countryName": "IN", "organizationName": "DryMix", "commonName": "DryMix Integration Hub"},
        )
        key_password = self._key_password.get_secret_value() or None
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            certificate=str(cfg.client_certificate),
            private_key=str(cfg.client_private_key),
            private_key_password=key_password,
            server_certificate=str(cfg.server_certificate) if cfg.server_certificate else None,
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )

    async def _on_connection_lost(self, exc: Exception) -> None:
        self.reconnects += 1
        logger.warning("plant OPC UA connection lost (%s); asyncua's supervisor is reconnecting", type(exc).__name__)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await _quiet_disconnect(client)

    # ------------------------------------------------------------------ requests

    async def _with_retry(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await call()
            except Exception as exc:  # noqa: BLE001 - classified, then retried or raised
                error = classify_exception(exc, integration=INTEGRATION, operation=operation)
                METRICS.record(INTEGRATION, operation, ok=False, latency_s=time.perf_counter() - started,
                               rate_limited=error.category.value == "RATE_LIMIT_EXCEEDED")
                attempt += 1
                if not error.transient or attempt > self.retry.max_retries:
                    if error is exc:
                        raise
                    raise error from exc
                delay = backoff_delay(attempt, self.retry, retry_after_s=error.retry_after_s)
                METRICS.record_retry(INTEGRATION, operation)
                logger.warning("%s: %s; retry %d/%d in %.2fs", operation, error, attempt, self.retry.max_retries, delay)
                await asyncio.sleep(delay)
                continue
            METRICS.record(INTEGRATION, operation, ok=True, latency_s=time.perf_counter() - started)
            return result

    def node(self, node_id: str) -> Node:
        found = self._nodes.get(node_id)
        if found is None:
            found = self._nodes[node_id] = self.client.get_node(node_id)
        return found

    async def read_data_values(self, node_ids: Sequence[str]) -> list[ua.DataValue]:
        """DataValues of the nodes, in pages of at most :attr:`read_chunk` nodes per Read request."""
        out: list[ua.DataValue] = []
        for page in chunks(list(node_ids), self.read_chunk):
            nodes = [self.node(n) for n in page]
            self.requests += 1
            started = time.perf_counter()
            values = await self._with_retry("read", partial(self.client.read_attributes, nodes))
            if self.debug is not None:
                self._debug_reads(page, [None] * len(page), values, time.perf_counter() - started)
            out.extend(values)
        return out

    async def read_tags(self, tags: Sequence[TagInfo]) -> list[TagReading]:
        """One reading per tag (bad ones included, with their status), in pages of :attr:`read_chunk`."""
        out: list[TagReading] = []
        for page in chunks(list(tags), self.read_chunk):
            nodes = [self.node(t.node_id) for t in page]
            self.requests += 1
            started = time.perf_counter()
            values = await self._with_retry("read", partial(self.client.read_attributes, nodes))
            if self.debug is not None:
                self._debug_reads([t.node_id for t in page], [t.tag for t in page], values, time.perf_counter() - started)
            collected_at = datetime.now(UTC)
            out.extend(TagReading.from_data_value(t, dv, collected_at) for t, dv in zip(page, values, strict=True))
        return out

    def _debug_reads(self, node_ids: Sequence[str], tags: Sequence[str | None], values: Sequence[ua.DataValue], latency_s: float) -> None:
        """One debug entry per node of a Read request: node, tag, value (bounded), status, the request's latency (retries included)."""
        assert self.debug is not None
        for node_id, tag, dv in zip(node_ids, tags, values, strict=True):
            code = int(dv.StatusCode.value) if dv.StatusCode is not None else 0
            self.debug.event(INTEGRATION, "opcua", {
                "operation": "read", "node": node_id, "tag": tag, "value": _debug_value(_value(dv)), "status": status_name(code),
                "source_timestamp": _aware(dv.SourceTimestamp), "latency_ms": round(latency_s * 1000, 2), "nodes_in_request": len(node_ids),
            })

    async def read_node(self, node_id: str) -> ua.DataValue:
        """One value; a bad status raises (INVALID_REQUEST for an unknown node id)."""
        dv = (await self.read_data_values([node_id]))[0]
        if dv.StatusCode is not None and not dv.StatusCode.is_good() and not dv.StatusCode.is_uncertain():
            try:
                dv.StatusCode.check()
            except ua.UaStatusCodeError as exc:
                raise classify_exception(exc, integration=INTEGRATION, operation="read") from exc
        return dv

    # ------------------------------------------------------------------ discovery

    async def discover(self, *, refresh: bool = False) -> list[TagInfo]:
        """The map's tags on this server: folders found, browsed level by level (one Browse request per level and
        :attr:`browse_chunk` nodes), patterns matched, explicit NodeIds checked, units read in one batched request.

        What the map names and the server lacks (or the reverse) is kept as :attr:`drift`; it never stops the
        other tags.
        """
        if self._tags is not None and not refresh:
            return self._tags
        tag_map = self.tag_map
        drift = TagDrift(map_path=str(tag_map.path))
        batch_folder = tag_map.batches.folder if tag_map.batches is not None else None
        folders = dict(tag_map.folders)
        if batch_folder is not None:
            folders.setdefault(folder_key(batch_folder), batch_folder)
        found = await self._find_folders(folders)
        # An event notifier (often the Server object) is not browsed: its events are read, not its variables.
        browsed = {k: v for k, v in found.items() if k in tag_map.folders or (tag_map.batches is not None and tag_map.batches.kind != "events")}
        variables, unit_nodes = await self._browse_subtrees([browsed[k] for k in _outermost(browsed)], browsed)
        explicit_rules = [r for r in tag_map.rules if r.node is not None]
        present = await self._check_explicit([r.node for r in explicit_rules if r.node is not None], unit_nodes)
        explicit = {rule.index: present[i] for i, rule in enumerate(explicit_rules) if i in present}
        units = await self._read_units(unit_nodes)

        tags: list[TagInfo] = []
        taken: set[str] = set()
        names: dict[str, str] = {}
        matched: set[str] = set()  # node ids some rule maps
        for rule in tag_map.rules:
            hits: list[tuple[str, str, list[str]]] = []  # (path, node id, captures)
            if rule.folder is not None:
                key = folder_key(rule.folder)
                if key not in found:
                    drift.missing.append({"mapped": rule.describe, "rule": rule.where, "reason": f"folder {key} not found"})
                    continue
                prefix = key + "/"
                for var in variables:
                    if var.path.startswith(prefix):
                        captures = match_path(rule.rule.path or "", var.path[len(prefix):])
                        if captures is not None:
                            hits.append((var.path, var.node_id.to_string(), captures))
            else:
                node_id = explicit.get(rule.index)
                if node_id is None:
                    drift.missing.append({"mapped": rule.describe, "rule": rule.where, "reason": "no such node on the server"})
                    continue
                hits.append((str(rule.node), node_id, []))
            if not hits:
                drift.missing.append({"mapped": rule.describe, "rule": rule.where, "reason": "no variable matches"})
                continue
            for path, node_id, captures in hits:
                matched.add(node_id)
                if node_id in taken:
                    continue  # an earlier rule maps it already
                leaf = path.rsplit("/", 1)[-1]
                tag = render(rule.rule.tag, captures, leaf)
                if tag in names:
                    logger.warning("tag map %s: %s and %s both map to %s; keeping the first", tag_map.path, names[tag], path, tag)
                    continue
                taken.add(node_id)
                names[tag] = path
                tags.append(self._tag_info(rule, tag, node_id, path, captures, units.get(node_id), drift))
        batch_prefix = folder_key(batch_folder) + "/" if batch_folder is not None else None
        for var in variables:
            in_tag_folder = any(var.path.startswith(k + "/") for k in tag_map.folders if k in found)
            if not in_tag_folder or var.node_id.to_string() in matched or tag_map.ignored(var.path):
                continue
            if batch_prefix is not None and var.path.startswith(batch_prefix):
                continue
            drift.unmapped.append({"path": var.path, "node_id": var.node_id.to_string()})
        if tag_map.batches is not None:
            drift.batches = await self._locate_batches(tag_map.batches, found, variables)
        self._tags = sorted(tags, key=lambda t: t.tag)
        self._drift = drift
        logger.info("plant: %d tags mapped by %s; %s", len(self._tags), tag_map.path, drift.summary())
        return self._tags

    @property
    def drift(self) -> TagDrift:
        if self._drift is None:
            raise RuntimeError("call discover() first")
        return self._drift

    async def check(self) -> TagDrift:
        """Browse again and compare the map with the server."""
        await self.discover(refresh=True)
        return self.drift

    def _tag_info(self, rule: ResolvedRule, tag: str, node_id: str, path: str, captures: list[str],
                  server_unit: str | None, drift: TagDrift) -> TagInfo:
        spec = rule.rule
        unit = server_unit or spec.unit
        if server_unit and spec.unit and server_unit != spec.unit:
            drift.unit_mismatches.append({"tag": tag, "server": server_unit, "map": spec.unit, "rule": rule.where})
        leaf = path.rsplit("/", 1)[-1]
        return TagInfo(
            tag=tag,
            node_id=node_id,
            unit=unit,
            equipment_name=render(spec.equipment, captures, leaf) if spec.equipment is not None else None,
            kind=spec.kind,
            sampling=spec.sampling,
            deadband=spec.deadband,
            deadband_value=spec.deadband_value,
            browse_path=path,
        )

    async def _children(self, nodes: Sequence[ua.NodeId]) -> list[list[ua.ReferenceDescription]]:
        return [list(r.References) for r in await self._browse(nodes)]

    async def _find_folders(self, folders: dict[str, tuple[BrowseSegment, ...]]) -> dict[str, ua.NodeId]:
        """Each folder's NodeId, walked from Objects one level at a time for all folders at once."""
        objects = self.client.nodes.objects.nodeid
        pending = {key: (objects, 0) for key in folders}
        found: dict[str, ua.NodeId] = {}
        while pending:
            parents = list({node for node, _ in pending.values()})
            listing = dict(zip(parents, await self._children(parents), strict=True))
            still: dict[str, tuple[ua.NodeId, int]] = {}
            for key, (node, depth) in pending.items():
                step = folders[key][depth]
                index = self._ns_index.get(step.namespace_uri) if step.namespace_uri else None
                child = next(
                    (ref.NodeId for ref in listing[node]
                     if ref.BrowseName.Name == step.name and (index is None or ref.BrowseName.NamespaceIndex == index)),
                    None,
                )
                if child is None:
                    continue  # not on this server: its rules are reported missing
                if depth + 1 == len(folders[key]):
                    found[key] = child
                else:
                    still[key] = (child, depth + 1)
            pending = still
        return found

    async def _browse_subtrees(
        self, roots: Sequence[ua.NodeId], found: dict[str, ua.NodeId]
    ) -> tuple[list[_Variable], dict[str, str]]:
        """Every variable below the folders (full browse paths) and the EngineeringUnits property of each."""
        key_of = {node: key for key, node in found.items()}
        level: list[tuple[ua.NodeId, str, bool]] = [(node, key_of[node], False) for node in roots]
        variables: list[_Variable] = []
        unit_nodes: dict[str, str] = {}  # variable node id -> its EngineeringUnits node id
        seen: set[ua.NodeId] = set(roots)
        while level:
            results = await self._children([n for n, _, _ in level])
            next_level: list[tuple[ua.NodeId, str, bool]] = []
            for (node, path, is_variable), refs in zip(level, results, strict=True):
                for ref in refs:
                    name = ref.BrowseName.Name
                    if is_variable:
                        if name == "EngineeringUnits":
                            unit_nodes[node.to_string()] = ref.NodeId.to_string()
                        continue
                    if ref.NodeId in seen:
                        continue
                    seen.add(ref.NodeId)
                    child_path = f"{path}/{name}"
                    if ref.NodeClass == ua.NodeClass.Object:
                        next_level.append((ref.NodeId, child_path, False))
                    elif ref.NodeClass == ua.NodeClass.Variable:
                        variables.append(_Variable(child_path, ref.NodeId))
                        next_level.append((ref.NodeId, child_path, True))
            level = next_level
        return variables, unit_nodes

    async def _check_explicit(self, refs: Sequence[NodeRef], unit_nodes: dict[str, str]) -> dict[int, str]:
        """position -> this server's NodeId string, for the explicit NodeIds that exist (a NodeClass read each)."""
        if not refs:
            return {}
        ids = [self.resolve(r) for r in refs]
        present: dict[int, str] = {}
        for first in range(0, len(ids), self.read_chunk):
            page = ids[first : first + self.read_chunk]
            params = ua.ReadParameters()
            params.NodesToRead = [ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.NodeClass) for nid in page]
            self.requests += 1
            values = await self._with_retry("read", partial(self.client.uaclient.read, params))
            for offset, (nid, dv) in enumerate(zip(page, values, strict=True)):
                if dv.StatusCode is None or dv.StatusCode.is_good():
                    present[first + offset] = nid.to_string()
        if present:
            nodes = [ua.NodeId.from_string(n) for n in present.values()]
            for nid, children in zip(nodes, await self._children(nodes), strict=True):
                for child in children:
                    if child.BrowseName.Name == "EngineeringUnits":
                        unit_nodes[nid.to_string()] = child.NodeId.to_string()
        return present

    async def _read_units(self, unit_nodes: dict[str, str]) -> dict[str, str]:
        units: dict[str, str] = {}
        if not unit_nodes:
            return units
        owners = list(unit_nodes)
        values = await self.read_data_values([unit_nodes[o] for o in owners])
        for owner, dv in zip(owners, values, strict=True):
            info = dv.Value.Value if dv.Value is not None else None
            text = getattr(getattr(info, "DisplayName", None), "Text", None)
            if text:
                units[owner] = str(text)
        return units

    async def _browse(self, nodes: Sequence[ua.NodeId]) -> list[ua.BrowseResult]:
        """Forward hierarchical references (Organizes, HasComponent, HasProperty) of objects and variables,
        in pages of :attr:`browse_chunk` nodes per Browse request; continuation points are followed."""
        out: list[ua.BrowseResult] = []
        for page in chunks(list(nodes), self.browse_chunk):
            params = ua.BrowseParameters()
            params.View = ua.ViewDescription()
            params.RequestedMaxReferencesPerNode = 0
            params.NodesToBrowse = [
                ua.BrowseDescription(
                    NodeId=node,
                    BrowseDirection=ua.BrowseDirection.Forward,
                    ReferenceTypeId=ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences)),
                    IncludeSubtypes=True,
                    NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
                    ResultMask=ua.BrowseResultMask.All,
                )
                for node in page
            ]
            self.requests += 1
            results = await self._with_retry("browse", partial(self.client.uaclient.browse, params))
            for result in results:
                result.StatusCode.check()
                while result.ContinuationPoint:
                    self.requests += 1
                    more = await self._with_retry(
                        "browse", partial(self.client.uaclient.browse_next, _browse_next(result.ContinuationPoint))
                    )
                    more[0].StatusCode.check()
                    result.References = [*result.References, *more[0].References]
                    result.ContinuationPoint = more[0].ContinuationPoint
            out.extend(results)
        return out

    async def status_tags(self) -> list[TagInfo]:
        """The tags of the status snapshot: every tag the map collects."""
        return await self.discover()

    async def read_snapshot(self) -> list[TagReading]:
        return await self.read_tags(await self.status_tags())

    # ------------------------------------------------------------------ batch records

    @property
    def batches_declared(self) -> bool:
        return self.tag_map.batches is not None

    async def _locate_batches(self, source: BatchSource, found: dict[str, ua.NodeId], variables: list[_Variable]) -> str | None:
        """Find the declared ring slots or structure members; what is missing, as one drift line (None: all there)."""
        key = folder_key(source.folder)
        if key not in found:
            return f"batches: folder {key} declared in {self.tag_map.path} not found on the server"
        if source.kind == "events":
            self._notifier = found[key]
            assert source.event_type is not None  # the loader requires it
            present = await self._check_explicit([source.event_type], {})
            self._event_type = ua.NodeId.from_string(present[0]) if present else None
            return None if present else f"batches: event type {source.event_type} declared in {self.tag_map.path} not found on the server"
        below = {v.path[len(key) + 1:]: v.node_id.to_string() for v in variables if v.path.startswith(key + "/")}
        if source.kind == "ring":
            counter = below.get(source.counter or "")
            slots: dict[str, dict[str, str]] = {}
            records = (source.records or "").strip("/") + "/"
            for path, node_id in below.items():
                if path.startswith(records):
                    slot, _, name = path[len(records):].rpartition("/")
                    if slot and "/" not in slot:
                        slots.setdefault(slot, {})[name] = node_id
            names = {f: str(n) for f, n in source.fields.items()}
            complete = [
                {f: slots[s][n] for f, n in names.items()} for s in sorted(slots) if all(n in slots[s] for n in names.values())
            ]
            self._counter_node = counter
            self._slots = complete
            if counter is None:
                return f"batches: counter {key}/{source.counter} not found on the server"
            if not complete:
                return f"batches: no complete record slot under {key}/{source.records}"
            return None
        members: dict[str, str] = {}
        absent: list[str] = []
        explicit = {f: ref for f, ref in source.fields.items() if isinstance(ref, NodeRef)}
        present = await self._check_explicit(list(explicit.values()), {})
        for i, (name, _ref) in enumerate(explicit.items()):
            if i in present:
                members[name] = present[i]
            else:
                absent.append(name)
        for name, where in source.fields.items():
            if isinstance(where, str):
                if where in below:
                    members[name] = below[where]
                else:
                    absent.append(name)
        self._structure = members
        return f"batches: structure member(s) {', '.join(sorted(absent))} not found under {key}" if absent else None

    async def read_batch_counter(self) -> int:
        await self.discover()
        if self._counter_node is None:
            raise IntegrationError(f"no batch counter on the server ({self.drift.batches or 'no ring declared in ' + str(self.tag_map.path)})",
                                   code="NO_BATCH_COUNTER", integration=INTEGRATION, operation="read_batches")
        dv = await self.read_node(self._counter_node)
        return int(dv.Value.Value or 0) if dv.Value is not None else 0

    async def read_batches(self, after_seq: int | None) -> BatchCollection:
        """Completed batches with ``seq > after_seq`` (every record available when None), oldest first, from the
        map's ``[batches]``: a ring of record slots or one structure."""
        await self.discover()
        source = self.tag_map.batches
        if source is None:
            raise IntegrationError(f"no [batches] declared in {self.tag_map.path}", code="NO_BATCHES_DECLARED",
                                   integration=INTEGRATION, operation="read_batches")
        if source.kind == "structure":
            return await self._read_structure(source, after_seq)
        if source.kind == "events":
            return await self._read_events(source, after_seq)
        return await self._read_ring(source, after_seq)

    async def _read_ring(self, source: BatchSource, after_seq: int | None) -> BatchCollection:
        """The counter is read first and only slots whose seq is at most that counter are taken, so a record being
        written while we read is left for the next collection instead of read half-done."""
        slots = self._slots or []
        collection = BatchCollection(counter=await self.read_batch_counter())
        if after_seq is not None and collection.counter < after_seq:
            logger.warning("plant batch counter %d is below the cursor %d: the server lost its state; re-reading its ring",
                           collection.counter, after_seq)
            collection.counter_reset = True
            after_seq = None
        seqs = await self.read_data_values([s["seq"] for s in slots])
        wanted: list[tuple[int, dict[str, str]]] = []
        present: list[int] = []
        for slot, dv in zip(slots, seqs, strict=True):
            seq = int(dv.Value.Value or 0) if dv.Value is not None else 0
            if seq <= 0 or seq > collection.counter:
                continue
            present.append(seq)
            if after_seq is None or seq > after_seq:
                wanted.append((seq, slot))
        collection.oldest_available = min(present) if present else None
        if after_seq is not None and collection.oldest_available is not None and collection.oldest_available > after_seq + 1:
            collection.missed = collection.oldest_available - after_seq - 1
        wanted.sort(key=lambda item: item[0])
        names = list(source.fields)
        values = await self.read_data_values([slot[f] for _, slot in wanted for f in names])
        width = len(names)
        for i, (seq, _slot) in enumerate(wanted):
            fields = {name: values[i * width + j] for j, name in enumerate(names)}
            record = _batch_record(fields, source)
            if record["seq"] != seq:
                continue  # overwritten between the two reads: the next collection takes it from its new slot
            collection.records.append(record)
        return collection

    async def _read_structure(self, source: BatchSource, after_seq: int | None) -> BatchCollection:
        """One batch structure (ISA-88/PackML style): a record when its end time (or seq) moved past the cursor.

        Without a ``seq`` member the batch's position is its end time in epoch milliseconds, so the same batch read
        twice is one record and a new batch id with a new end time is the next. A structure whose end lies before
        its start is a batch in progress (the end still from the previous one) and is left for the next run.
        """
        members = self._structure or {}
        collection = BatchCollection()
        if "batch_id" not in members or "ended_at" not in members:
            raise IntegrationError(f"the batch structure is not on the server ({self.drift.batches})", code="NO_BATCH_STRUCTURE",
                                   integration=INTEGRATION, operation="read_batches")
        names = list(members)
        values = dict(zip(names, await self.read_data_values([members[n] for n in names]), strict=True))
        record = _batch_record(values, source)
        started, ended = _aware(_value(values.get("started_at"))), _aware(_value(values.get("ended_at")))
        if not record["batch_id"] or ended is None or (started is not None and ended < started):
            return collection
        if "seq" not in members:
            record["seq"] = int(ended.timestamp() * 1000)
        collection.counter = record["seq"]
        collection.oldest_available = record["seq"]
        if after_seq is not None and collection.counter < after_seq:
            logger.warning("plant batch structure at %d is below the cursor %d: taking it again", collection.counter, after_seq)
            collection.counter_reset = True
            after_seq = None
        if after_seq is None or record["seq"] > after_seq:
            collection.records.append(record)
            if "seq" in members and after_seq is not None and record["seq"] > after_seq + 1:
                collection.missed = record["seq"] - after_seq - 1  # the structure holds one batch: those between are gone
        return collection

    async def _read_events(self, source: BatchSource, after_seq: int | None) -> BatchCollection:
        """Batch-completed events from the notifier's event history (HistoryRead of events) since the cursor.

        History, not a subscription: the collector visits every minute and an event raised between two visits
        would be lost to a subscription. An event's position is its ``seq`` field when declared, else its
        ``Time`` in epoch milliseconds; its end time is ``ended_at`` when declared, else that ``Time``.
        """
        if self._notifier is None or self._event_type is None:
            raise IntegrationError(f"the batch events are not on the server ({self.drift.batches})", code="NO_BATCH_EVENTS",
                                   integration=INTEGRATION, operation="read_batches")
        start = datetime.fromtimestamp(after_seq / 1000.0, UTC) if after_seq is not None and "seq" not in source.fields else None
        notifier = self.client.get_node(self._notifier)
        event_type = self._event_type
        self.requests += 1
        events = await self._with_retry(
            "read_batches", lambda: notifier.read_event_history(start, datetime.now(UTC) + timedelta(seconds=1), 0, [event_type])
        )
        collection = BatchCollection()
        for event in events:
            if getattr(event, "EventType", event_type) != event_type:
                continue  # a notifier such as the Server object reports every event type
            fields: dict[str, ua.DataValue] = {}
            for name, where in source.fields.items():
                value = getattr(event, str(where), None)
                fields[name] = ua.DataValue(ua.Variant(value) if value is not None else ua.Variant())
            when = _aware(getattr(event, "Time", None))
            if "ended_at" not in fields and when is not None:
                fields["ended_at"] = ua.DataValue(ua.Variant(when))
            record = _batch_record(fields, source)
            if "seq" not in source.fields:
                if when is None:
                    continue
                record["seq"] = int(when.timestamp() * 1000)
            if not record["batch_id"] or (after_seq is not None and record["seq"] <= after_seq):
                continue
            collection.records.append(record)
        collection.records.sort(key=lambda r: int(r["seq"]))
        collection.counter = max([int(r["seq"]) for r in collection.records] + [after_seq or 0])
        collection.oldest_available = collection.records[0]["seq"] if collection.records else None
        return collection

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self, tags: Sequence[TagInfo], *, period_ms: float | None = None, queue_maxsize: int = 10_000
    ) -> TagSubscription:
        """A data-change subscription on the tags (each with its map deadband); iterate it for :class:`TagReading`s."""
        sub = await self._with_retry(
            "subscribe",
            lambda: self.client.create_subscription(period_ms or self.config.subscription_period_ms, queue_maxsize=queue_maxsize),
        )
        by_node = {t.node_id: t for t in tags}
        groups: dict[tuple[str, float], list[TagInfo]] = {}
        for tag in tags:
            groups.setdefault((tag.deadband, tag.deadband_value), []).append(tag)
        for (deadband, value), group in groups.items():
            mfilter = None
            if deadband in _DEADBAND_TYPES:
                mfilter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                              DeadbandType=_DEADBAND_TYPES[deadband], DeadbandValue=value)
            for page in chunks(group, self.monitor_chunk):
                nodes = [self.node(t.node_id) for t in page]
                # asyncua's own deadband_monitor goes through _subscribe too: it is the call that takes a filter.
                call = partial(sub._subscribe, nodes, ua.AttributeIds.Value, mfilter, 0)
                handles = cast(list[int | ua.StatusCode], await self._with_retry("subscribe", call))
                for tag, handle in zip(page, handles, strict=True):
                    if isinstance(handle, ua.StatusCode):
                        try:
                            handle.check()
                        except ua.UaStatusCodeError as exc:
                            await sub.delete()
                            error = classify_exception(exc, integration=INTEGRATION, operation="subscribe")
                            error.message = f"{error.message} (tag {tag.tag})"
                            raise error from exc
        return TagSubscription(sub, by_node)


def _load_map(path: Path) -> TagMap:
    """The configured tag map; an unusable one is a configuration error (never retried), naming file and line."""
    try:
        return load_tag_map(path)
    except TagMapError as exc:
        raise InvalidRequest(str(exc), code="TAG_MAP_INVALID", integration=INTEGRATION, operation="load_tag_map") from exc


def _bounded(page_size: int, limit: int) -> int:
    return min(page_size, limit) if limit > 0 else page_size


def _outermost(found: dict[str, ua.NodeId]) -> list[str]:
    """Folders not below another found folder (each subtree is browsed once)."""
    return [k for k in found if not any(k != o and k.startswith(o + "/") for o in found)]


def _browse_next(point: bytes) -> ua.BrowseNextParameters:
    params = ua.BrowseNextParameters()
    params.ReleaseContinuationPoints = False
    params.ContinuationPoints = [point]
    return params


def _debug_value(value: Any, limit: int = 200) -> Any:
    """A value as the debug log shows it: scalars as they are, anything longer cut to `limit` characters."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _value(dv: ua.DataValue | None) -> Any:
    return dv.Value.Value if dv is not None and dv.Value is not None else None


class TagSubscription:
    """Data changes of subscribed tags as :class:`TagReading`s; asyncua re-creates it after a reconnect."""

    def __init__(self, subscription: Subscription, tags: dict[str, TagInfo]) -> None:
        self._sub = subscription
        self._tags = tags
        self.status_changes: list[str] = []

    async def next(self, timeout: float) -> TagReading | None:
        """The next data change, or None when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = await self._sub.next_event(timeout=remaining)
            if event is None:
                return None
            if isinstance(event, StatusChangeEvent):
                self.status_changes.append(ua.StatusCode(event.notification.Status.value).name)
                continue
            if isinstance(event, DataChangeEvent):
                info = self._tags.get(event.node.nodeid.to_string())
                if info is None:
                    continue
                return TagReading.from_data_value(info, event.data.monitored_item.Value, datetime.now(UTC))

    async def collect(self, seconds: float) -> list[TagReading]:
        """Every data change for ``seconds``."""
        out: list[TagReading] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            reading = await self.next(remaining)
            if reading is not None:
                out.append(reading)
        return out

    async def __aiter__(self) -> AsyncIterator[TagReading]:
        while True:
            reading = await self.next(3600.0)
            if reading is not None:
                yield reading

    async def close(self) -> None:
        try:
            await self._sub.delete()
        except Exception as exc:  # noqa: BLE001 - the session may be gone already; nothing to undo then
            logger.debug("deleting the subscription failed: %s", exc)


def _batch_record(fields: dict[str, ua.DataValue], source: BatchSource) -> dict[str, Any]:
    """Declared fields (hub name -> DataValue) as the record the mapping reads; undeclared fields are None."""

    def value(name: str) -> Any:
        return _value(fields.get(name))

    def when(name: str) -> str | None:
        stamp = _aware(value(name))
        return stamp.isoformat() if isinstance(stamp, datetime) else None

    def listed(name: str) -> list[Any]:
        found = value(name)
        return list(found) if isinstance(found, list | tuple) else ([] if found is None else [found])

    # A bad field is named as the server names it (its browse name), or by the hub's name for a NodeId.
    statuses = {
        (where if isinstance(where := source.fields.get(name), str) else name).rsplit("/", 1)[-1]: dv.StatusCode.name
        for name, dv in fields.items()
        if dv.StatusCode is not None and not dv.StatusCode.is_good()
    }
    return {
        "seq": int(value("seq") or 0),
        "batch_id": value("batch_id"),
        "product_code": value("product_code"),
        "recipe_code": value("recipe_code"),
        "mixer": value("mixer"),
        "started_at": when("started_at"),
        "ended_at": when("ended_at"),
        "mixing_time_s": value("mixing_time_s"),
        "components": [str(c) for c in listed("components")],
        "target_kg": listed("target_kg"),
        "actual_kg": listed("actual_kg"),
        "bad_fields": statuses,
    }


async def _quiet_disconnect(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - closing a broken session must not hide the original error
        logger.debug("disconnect after failure: %s", exc)
