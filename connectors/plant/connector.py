"""OPC UA client of the plant (asyncua 2): discover tags, batched reads, subscriptions, batch records.

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
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar, cast

from asyncua import Client, Node, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto import security_policies
from pydantic import SecretStr

from connectors.core.config import PlantOpcuaConfig, RetryPolicy
from connectors.core.errors import IntegrationError, classify_exception
from connectors.core.metrics import METRICS
from connectors.core.retry import backoff_delay

logger = logging.getLogger(__name__)
T = TypeVar("T")

INTEGRATION = "plant_opcua"
BATCHES_FOLDER = "Batches"
RECORDS_FOLDER = "Batches/Records"
# Batch-record slot fields the connector needs (browse names under each Records/Rnnn object).
RECORD_FIELDS: tuple[str, ...] = (
    "Seq",
    "BatchId",
    "ProductCode",
    "RecipeCode",
    "Mixer",
    "StartedAt",
    "EndedAt",
    "MixingTimeS",
    "Components",
    "TargetKg",
    "ActualKg",
)


@dataclass(frozen=True)
class TagInfo:
    """One plant variable found by browsing: its path below the plant folder and its NodeId."""

    tag: str  # e.g. "Mixers/M1/MotorCurrentA"
    node_id: str  # e.g. "ns=2;s=Plant.Mixers.M1.MotorCurrentA"
    unit: str | None = None  # EngineeringUnits display name, when the server publishes one

    @property
    def equipment(self) -> str:
        return self.tag.rsplit("/", 1)[0] if "/" in self.tag else ""

    @property
    def measurement(self) -> str:
        return self.tag.rsplit("/", 1)[-1]


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


class PlantConnector:
    """An asyncua client session to the plant; use ``async with PlantConnector(config) as plant:``."""

    def __init__(
        self,
        config: PlantOpcuaConfig,
        *,
        username: str = "",
        password: SecretStr | None = None,
        key_password: SecretStr | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.url = config.base_url
        self.page_size = config.page_size
        self.retry = retry or config.retry
        self._username = username
        self._password = password or SecretStr("")
        self._key_password = key_password or SecretStr("")
        self._client: Client | None = None
        self._ns: int | None = None
        self._tags: list[TagInfo] | None = None
        self._slots: list[dict[str, str]] | None = None
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

    async def connect(self) -> None:
        """Open the session (secured when configured), retrying transient failures."""
        await self._with_retry("connect", self._connect_once)

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
        try:
            self._ns = await client.get_namespace_index(cfg.namespace_uri)
        except ValueError as exc:
            await self.close()
            raise IntegrationError(
                f"the server has no namespace {cfg.namespace_uri!r}: check plant_opcua.namespace_uri",
                code="NAMESPACE_UNKNOWN",
                integration=INTEGRATION,
                operation="connect",
            ) from exc
        logger.info("plant OPC UA session open on %s (security %s)", self.url, cfg.security)

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
        """DataValues of the nodes, in pages of at most ``page_size`` nodes per Read request."""
        out: list[ua.DataValue] = []
        for page in chunks(list(node_ids), self.page_size):
            nodes = [self.node(n) for n in page]
            self.requests += 1
            out.extend(await self._with_retry("read", partial(self.client.read_attributes, nodes)))
        return out

    async def read_tags(self, tags: Sequence[TagInfo]) -> list[TagReading]:
        """One reading per tag (bad ones included, with their status), batched by ``page_size``."""
        out: list[TagReading] = []
        for page in chunks(list(tags), self.page_size):
            nodes = [self.node(t.node_id) for t in page]
            self.requests += 1
            values = await self._with_retry("read", partial(self.client.read_attributes, nodes))
            collected_at = datetime.now(UTC)
            out.extend(TagReading.from_data_value(t, dv, collected_at) for t, dv in zip(page, values, strict=True))
        return out

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

    async def _root(self) -> Node:
        assert self._ns is not None
        objects = self.client.nodes.objects
        return await self._with_retry(
            "browse", lambda: objects.get_child([f"{self._ns}:{self.config.root_path}"])
        )

    async def discover(self, *, refresh: bool = False) -> list[TagInfo]:
        """Browse the plant folder level by level (one Browse request per level) and find its variables.

        Batch-record slots are kept apart (see :meth:`read_batches`); units come from each variable's
        ``EngineeringUnits`` property, read in one batched request.
        """
        if self._tags is not None and not refresh:
            return self._tags
        root = await self._root()
        level: list[tuple[Node, str, int]] = [(root, "", ua.NodeClass.Object)]
        variables: list[tuple[str, str]] = []
        unit_nodes: dict[str, str] = {}
        slots: dict[str, dict[str, str]] = {}
        while level:
            results = await self._browse([n for n, _, _ in level])
            next_level: list[tuple[Node, str, int]] = []
            for (_node, path, parent_class), result in zip(level, results, strict=True):
                for ref in result.References:
                    name = ref.BrowseName.Name
                    child = self.client.get_node(ref.NodeId)
                    child_path = f"{path}/{name}" if path else name
                    if parent_class == ua.NodeClass.Variable:
                        if name == "EngineeringUnits":
                            unit_nodes[path] = ref.NodeId.to_string()
                        continue
                    if ref.NodeClass == ua.NodeClass.Object:
                        next_level.append((child, child_path, ua.NodeClass.Object))
                    elif ref.NodeClass == ua.NodeClass.Variable:
                        parent = path
                        if parent.startswith(RECORDS_FOLDER + "/"):
                            slots.setdefault(parent, {})[name] = ref.NodeId.to_string()
                            continue
                        variables.append((child_path, ref.NodeId.to_string()))
                        next_level.append((child, child_path, ua.NodeClass.Variable))
            level = next_level
        units: dict[str, str] = {}
        if unit_nodes:
            paths = list(unit_nodes)
            values = await self.read_data_values([unit_nodes[p] for p in paths])
            for path, dv in zip(paths, values, strict=True):
                info = dv.Value.Value if dv.Value is not None else None
                text = getattr(getattr(info, "DisplayName", None), "Text", None)
                if text:
                    units[path] = str(text)
        self._tags = [TagInfo(tag=path, node_id=node_id, unit=units.get(path)) for path, node_id in sorted(variables)]
        self._slots = [slots[k] for k in sorted(slots) if all(f in slots[k] for f in RECORD_FIELDS)]
        logger.info("plant: %d tags, %d batch-record slots", len(self._tags), len(self._slots))
        return self._tags

    async def _browse(self, nodes: Sequence[Node]) -> list[ua.BrowseResult]:
        """Forward hierarchical references (Organizes, HasComponent, HasProperty) of objects and variables,
        in pages of ``page_size`` nodes per Browse request."""
        out: list[ua.BrowseResult] = []
        for page in chunks(list(nodes), self.page_size):
            params = ua.BrowseParameters()
            params.View = ua.ViewDescription()
            params.RequestedMaxReferencesPerNode = 0
            params.NodesToBrowse = [
                ua.BrowseDescription(
                    NodeId=node.nodeid,
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
            out.extend(results)
        return out

    async def status_tags(self) -> list[TagInfo]:
        """The tags of the status snapshot: everything but the batch bookkeeping."""
        tags = await self.discover()
        return [t for t in tags if not t.tag.startswith(BATCHES_FOLDER + "/")]

    async def read_snapshot(self) -> list[TagReading]:
        return await self.read_tags(await self.status_tags())

    # ------------------------------------------------------------------ batch records

    async def read_batch_counter(self) -> int:
        tags = {t.tag: t for t in await self.discover()}
        counter = tags.get(f"{BATCHES_FOLDER}/Counter")
        if counter is None:
            raise IntegrationError(f"no {BATCHES_FOLDER}/Counter variable under {self.config.root_path}", code="NO_BATCH_COUNTER",
                                   integration=INTEGRATION, operation="read_batches")
        dv = await self.read_node(counter.node_id)
        return int(dv.Value.Value or 0) if dv.Value is not None else 0

    async def read_batches(self, after_seq: int | None) -> BatchCollection:
        """Completed batches with ``seq > after_seq`` (every record in the ring when None), oldest first.

        The counter is read first and only slots whose ``Seq`` is at most that counter are taken, so a
        record being written while we read is left for the next collection instead of read half-done.
        """
        await self.discover()
        slots = self._slots or []
        collection = BatchCollection(counter=await self.read_batch_counter())
        if after_seq is not None and collection.counter < after_seq:
            logger.warning("plant batch counter %d is below the cursor %d: the server lost its state; re-reading its ring",
                           collection.counter, after_seq)
            collection.counter_reset = True
            after_seq = None
        seqs = await self.read_data_values([s["Seq"] for s in slots])
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
        node_ids = [slot[f] for _, slot in wanted for f in RECORD_FIELDS]
        values = await self.read_data_values(node_ids)
        width = len(RECORD_FIELDS)
        for i, (seq, _slot) in enumerate(wanted):
            fields = {name: values[i * width + j] for j, name in enumerate(RECORD_FIELDS)}
            record = _batch_record(fields)
            if record["seq"] != seq:
                continue  # overwritten between the two reads: the next collection takes it from its new slot
            collection.records.append(record)
        return collection

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self, tags: Sequence[TagInfo], *, period_ms: float | None = None, queue_maxsize: int = 10_000
    ) -> TagSubscription:
        """A data-change subscription on the tags; iterate it for :class:`TagReading`s."""
        sub = await self._with_retry(
            "subscribe",
            lambda: self.client.create_subscription(period_ms or self.config.subscription_period_ms, queue_maxsize=queue_maxsize),
        )
        by_node = {t.node_id: t for t in tags}
        for page in chunks(list(tags), self.page_size):
            nodes = [self.node(t.node_id) for t in page]
            handles = cast(list[int | ua.StatusCode], await self._with_retry("subscribe", partial(sub.subscribe_data_change, nodes)))
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


def _batch_record(fields: dict[str, ua.DataValue]) -> dict[str, Any]:
    def value(name: str) -> Any:
        dv = fields[name]
        return dv.Value.Value if dv.Value is not None else None

    def when(name: str) -> str | None:
        stamp = _aware(value(name))
        return stamp.isoformat() if stamp else None

    statuses = {name: dv.StatusCode.name for name, dv in fields.items() if dv.StatusCode is not None and not dv.StatusCode.is_good()}
    return {
        "seq": int(value("Seq") or 0),
        "batch_id": value("BatchId"),
        "product_code": value("ProductCode"),
        "recipe_code": value("RecipeCode"),
        "mixer": value("Mixer"),
        "started_at": when("StartedAt"),
        "ended_at": when("EndedAt"),
        "mixing_time_s": value("MixingTimeS"),
        "components": list(value("Components") or []),
        "target_kg": list(value("TargetKg") or []),
        "actual_kg": list(value("ActualKg") or []),
        "bad_fields": statuses,
    }


async def _quiet_disconnect(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - closing a broken session must not hide the original error
        logger.debug("disconnect after failure: %s", exc)
