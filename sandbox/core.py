"""Framework-free core shared by every sandbox simulator.

A simulator answers plain :class:`SandboxRequest` objects with plain :class:`SandboxResponse`
objects. Around that sits one fault layer (latency, 429, 5xx, timeouts, broken JSON, dropped
connections, rejected credentials) and one control API under ``/_sandbox``. Two thin adapters
expose the same simulator in-process as an httpx transport and over real HTTP with uvicorn::

    sim = SapSandbox(partners=2_000)
    client = httpx.Client(transport=as_transport(sim), base_url="http://sap.sandbox")
    with running_server(sim) as base_url:      # real socket, background thread
        httpx.get(f"{base_url}/_sandbox/health")
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox"

#: Order in which the fault layer considers fault kinds; the first one that fires wins.
FAULT_KINDS: tuple[str, ...] = (
    "expire_tokens",
    "rate_limit",
    "error_5xx",
    "timeout",
    "drop_connection",
    "malformed_json",
)
_COUNTED_KINDS: tuple[str, ...] = FAULT_KINDS[1:]
#: Decided after the backend answered, only for a write it accepted (2xx), and only when no
#: other fault fired: the change is committed but its answer never reaches the client.
TIMEOUT_AFTER_COMMIT: str = "timeout_after_commit"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# Plain request / response types
# --------------------------------------------------------------------------------------------


class Headers:
    """Case-insensitive, multi-valued, read-only header collection."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items or ())
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        self._index: dict[str, list[str]] = {}
        for key, value in self._items:
            self._index.setdefault(key.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (any case), or ``default``."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order."""
        return list(self._index.get(name.lower(), ()))

    def items(self) -> list[tuple[str, str]]:
        """All (name, value) pairs as received."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


# Host names end up inside absolute URLs in response bodies; refuse anything odd.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_")


@dataclass
class SandboxRequest:
    """One HTTP request as the simulator sees it, independent of any web framework."""

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    scheme: str = "http"
    host: str = "localhost"

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    def query_get(self, name: str) -> str | None:
        """First value of query parameter ``name`` (exact, case-sensitive match)."""
        for key, value in self.query:
            if key == name:
                return value
        return None

    @property
    def base_url(self) -> str:
        """``scheme://host[:port]`` of the request, for absolute links in responses."""
        host = self.host if self.host and set(self.host) <= _HOST_CHARS else "localhost"
        scheme = self.scheme if self.scheme in ("http", "https") else "http"
        return f"{scheme}://{host}"

    def json(self) -> Any:
        """Body parsed as JSON (``None`` for an empty body); raises ``ValueError`` if invalid."""
        if not self.body.strip():
            return None
        return json.loads(self.body)


@dataclass
class SandboxResponse:
    """A simulator's answer; the ``delay_s``/``timeout``/``drop_after`` fields are fault directives."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Set only by the fault layer; adapters turn them into sleeps, timeouts and broken sockets.
    delay_s: float = 0.0
    timeout: bool = False
    timeout_sleep_s: float = 0.0
    drop_after: int | None = None

    @classmethod
    def json(cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> SandboxResponse:
        """JSON response with ``application/json; charset=utf-8``."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, [("content-type", "application/json; charset=utf-8"), *headers], body)

    @classmethod
    def text(
        cls,
        status: int,
        text: str,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> SandboxResponse:
        """Text response (plain, HTML or XML by ``content_type``)."""
        return cls(status, [("content-type", content_type), *headers], text.encode())

    def header(self, name: str) -> str | None:
        """First value of response header ``name`` (any case)."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


_Count = Annotated[int, Field(ge=0)]
_Probability = Annotated[float, Field(ge=0, le=1)]
_Seconds = Annotated[float, Field(ge=0)]  # also used for milliseconds


class FaultSwitches(BaseModel):
    """Fault switches. Counted modes (``*_next_n``) are deterministic; probabilities use ``seed``.

    For each kind, ``<kind>_next_n`` fails the next N API requests (and counts down),
    ``<kind>_every_n`` fails every N-th API request counted since the switches last changed,
    ``<kind>_probability`` fails at random.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    # Faults fire only on API requests whose path and decoded query contain this text (one partition's key
    # range, one entity set); empty: on every request. Counters count only those requests.
    only_where: str = ""
    latency_ms: _Seconds = 0.0
    latency_jitter_ms: _Seconds = 0.0

    rate_limit_next_n: _Count = 0
    rate_limit_every_n: _Count = 0
    rate_limit_probability: _Probability = 0.0
    retry_after_s: int | str | None = 1

    error_5xx_status: Literal[500, 502, 503, 504] = 503
    error_5xx_next_n: _Count = 0
    error_5xx_every_n: _Count = 0
    error_5xx_probability: _Probability = 0.0
    error_5xx_retry_after_s: int | str | None = None

    timeout_next_n: _Count = 0
    timeout_every_n: _Count = 0
    timeout_probability: _Probability = 0.0
    timeout_sleep_s: _Seconds = 30.0

    malformed_json_next_n: _Count = 0
    malformed_json_every_n: _Count = 0
    malformed_json_probability: _Probability = 0.0
    malformed_json_mode: Literal["truncate", "garble"] = "truncate"

    drop_connection_next_n: _Count = 0
    drop_connection_every_n: _Count = 0
    drop_connection_probability: _Probability = 0.0
    drop_after_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.5

    # Counted over successful writes only (POST/PUT/PATCH/MERGE/DELETE answered 2xx); the
    # answer then times out like ``timeout`` (same ``timeout_sleep_s``) after the change is made.
    timeout_after_commit_next_n: _Count = 0
    timeout_after_commit_every_n: _Count = 0
    timeout_after_commit_probability: _Probability = 0.0

    expire_tokens: bool = False

    @field_validator("retry_after_s", "error_5xx_retry_after_s")
    @classmethod
    def _check_retry_after(cls, value: int | str | None) -> int | str | None:
        # The value goes verbatim into a header: no negatives, no line breaks.
        if isinstance(value, int) and value < 0:
            raise ValueError("must be >= 0")
        if isinstance(value, str) and (not value.strip() or "\r" in value or "\n" in value):
            raise ValueError("must be a non-empty single-line header value")
        return value

    @classmethod
    def from_value(cls, value: FaultSwitches | Mapping[str, Any] | None) -> FaultSwitches:
        """Accept a model, a plain mapping (e.g. parsed JSON) or ``None`` (no faults)."""
        if value is None:
            return cls()
        if isinstance(value, FaultSwitches):
            return value.model_copy()
        return cls.model_validate(dict(value))

    def active(self) -> dict[str, Any]:
        """Only the switches that differ from their defaults (for logs and banners)."""
        return self.model_dump(exclude_defaults=True)


def parse_fault_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Parse CLI-style ``name=value`` pairs; values are JSON when they parse, else strings."""
    result: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"fault switch must look like name=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        result[name.strip()] = value
    return result


@dataclass(frozen=True)
class FaultDecision:
    """What the fault layer decided for one API request."""

    kind: str | None
    latency_s: float


class FaultInjector:
    """Live fault switches plus counters; decides per API request which fault fires, if any."""

    def __init__(self, switches: FaultSwitches | None = None) -> None:
        self._lock = threading.Lock()
        self._switches = FaultSwitches()
        self._rng = random.Random(0)
        self._requests = 0  # API requests since start (statistics)
        self._since_set = 0  # API requests since the switches last changed (for every_n)
        self._commits_since_set = 0  # successful writes since then (for timeout_after_commit_every_n)
        self._fired: dict[str, int] = dict.fromkeys((*FAULT_KINDS, TIMEOUT_AFTER_COMMIT), 0)
        self.replace(switches or FaultSwitches())

    @property
    def switches(self) -> FaultSwitches:
        """A copy of the current switches (``*_next_n`` show what is left)."""
        with self._lock:
            return self._switches.model_copy()

    def replace(self, switches: FaultSwitches | Mapping[str, Any] | None) -> FaultSwitches:
        """Install a new set of switches; resets the request counter and the random stream."""
        new = FaultSwitches.from_value(switches)
        with self._lock:
            self._switches = new
            self._rng = random.Random(new.seed)
            self._since_set = self._commits_since_set = 0
            return new.model_copy()

    def update(self, changes: Mapping[str, Any]) -> FaultSwitches:
        """Merge ``changes`` into the current switches (validated as a whole)."""
        with self._lock:
            merged = FaultSwitches.model_validate({**self._switches.model_dump(), **dict(changes)})
            self._switches = merged
            self._since_set = self._commits_since_set = 0
            if "seed" in changes:
                self._rng = random.Random(merged.seed)
            return merged.model_copy()

    def clear(self) -> FaultSwitches:
        """Switch every fault off."""
        return self.replace(None)

    def snapshot(self) -> dict[str, Any]:
        """Switches plus statistics, as served by ``GET /_sandbox/faults``."""
        with self._lock:
            return {
                "switches": self._switches.model_dump(),
                "stats": {"api_requests": self._requests, "fired": dict(self._fired)},
            }

    def decide(self, target: str = "") -> FaultDecision:
        """Count one API request (`target`: its path and decoded query) and pick the fault (or none) it gets."""
        with self._lock:
            sw = self._switches
            self._requests += 1
            if sw.only_where and sw.only_where not in target:
                return FaultDecision(None, 0.0)
            self._since_set += 1
            latency = sw.latency_ms
            if sw.latency_jitter_ms:
                latency += self._rng.uniform(0, sw.latency_jitter_ms)
            kind: str | None = "expire_tokens" if sw.expire_tokens else None
            if kind is None:
                for candidate in _COUNTED_KINDS:
                    if self._fires(sw, candidate):
                        kind = candidate
                        break
            if kind is not None:
                self._fired[kind] += 1
            return FaultDecision(kind, latency / 1000.0)

    def decide_after_commit(self) -> bool:
        """Count one successful write (no other fault fired on it); True if its answer must time out."""
        with self._lock:
            self._commits_since_set += 1
            sw = self._switches
            fires = sw.timeout_after_commit_next_n > 0
            if fires:
                object.__setattr__(sw, "timeout_after_commit_next_n", sw.timeout_after_commit_next_n - 1)
            else:
                every = sw.timeout_after_commit_every_n
                fires = (every > 0 and self._commits_since_set % every == 0) or (
                    sw.timeout_after_commit_probability > 0 and self._rng.random() < sw.timeout_after_commit_probability
                )
            if fires:
                self._fired[TIMEOUT_AFTER_COMMIT] += 1
            return fires

    def _fires(self, sw: FaultSwitches, kind: str) -> bool:
        remaining: int = getattr(sw, f"{kind}_next_n")
        if remaining > 0:
            # Bypass validate_assignment: this runs on every request.
            object.__setattr__(sw, f"{kind}_next_n", remaining - 1)
            return True
        every: int = getattr(sw, f"{kind}_every_n")
        if every > 0 and self._since_set % every == 0:
            return True
        probability: float = getattr(sw, f"{kind}_probability")
        return probability > 0 and self._rng.random() < probability


def corrupt_body(body: bytes, mode: str) -> bytes:
    """Break a response body so that a JSON parser must fail on it."""
    if len(body) < 2:
        return b"{"
    if mode == "garble":
        garbled = body.replace(b'":', b'"=')
        # Bodies without any JSON member fall back to truncation.
        return garbled if garbled != body else body[: len(body) // 2]
    return body[: len(body) // 2]


# --------------------------------------------------------------------------------------------
# Simulator base class with the fault layer and the generic control API
# --------------------------------------------------------------------------------------------


class Simulator(ABC):
    """Base class of every sandbox: subclasses implement :meth:`handle`, adapters call :meth:`dispatch`."""

    #: Short name; simulator-specific control routes live under ``/_sandbox/<name>/``.
    name: str = "sandbox"

    def __init__(self, *, faults: FaultSwitches | Mapping[str, Any] | None = None) -> None:
        self.faults = FaultInjector(FaultSwitches.from_value(faults))
        # One lock serialises simulator state changes between server threads and test code.
        self.lock = threading.RLock()

    # -- to implement / override ---------------------------------------------------------

    @abstractmethod
    def handle(self, req: SandboxRequest) -> SandboxResponse:
        """Answer one API request; faults are applied around this by :meth:`dispatch`."""

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        """Answer a simulator-specific control route, or ``None`` when it is unknown."""
        return None

    def control_routes(self) -> list[str]:
        """Simulator-specific control routes, listed by ``GET /_sandbox``."""
        return []

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        """401 used by the ``expire_tokens`` fault."""
        return SandboxResponse.json(401, {"error": "invalid_token", "error_description": "credentials expired"})

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        """429 used by the ``rate_limit`` fault."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        return SandboxResponse.json(429, {"error": "too_many_requests"}, headers)

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        """5xx used by the ``error_5xx`` fault and for unexpected simulator errors."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        return SandboxResponse.json(status, {"error": "server_error"}, headers)

    # -- entry point for adapters ----------------------------------------------------------

    def dispatch(self, req: SandboxRequest) -> SandboxResponse:
        """Route control requests, apply faults to API requests, and call :meth:`handle`."""
        if req.path == CONTROL_PREFIX or req.path.startswith(CONTROL_PREFIX + "/"):
            with self.lock:
                try:
                    return self._control(req)
                except Exception:
                    logger.exception("sandbox %s control route %s %s failed", self.name, req.method, req.path)
                    return SandboxResponse.json(500, {"error": "control route failed; see the sandbox log"})
        decision = self.faults.decide(req.path + "?" + "&".join(f"{k}={v}" for k, v in req.query))
        switches = self.faults.switches
        with self.lock:
            resp = self._apply_fault(decision.kind, switches, req)
        if decision.kind is None and self.commits(req, resp) and self.faults.decide_after_commit():
            resp.timeout = True
            resp.timeout_sleep_s = switches.timeout_sleep_s
        resp.delay_s += decision.latency_s
        return resp

    def commits(self, req: SandboxRequest, resp: SandboxResponse) -> bool:
        """Whether answering ``req`` with ``resp`` means a change was made (``timeout_after_commit`` counts these).

        A write method answered 2xx; a simulator excludes what is not a change of its data
        (an OAuth token request, for one).
        """
        return req.method in _WRITE_METHODS and 200 <= resp.status < 300

    def _apply_fault(self, kind: str | None, sw: FaultSwitches, req: SandboxRequest) -> SandboxResponse:
        if kind == "expire_tokens":
            return self.unauthorized_response(req)
        if kind == "rate_limit":
            retry = None if sw.retry_after_s is None else str(sw.retry_after_s)
            return self.rate_limited_response(req, retry)
        if kind == "error_5xx":
            retry = None if sw.error_5xx_retry_after_s is None else str(sw.error_5xx_retry_after_s)
            return self.server_error_response(req, sw.error_5xx_status, retry)
        resp = self._safe_handle(req)
        # The remaining faults hit after the backend did its work, as on a real network.
        if kind == "timeout":
            resp.timeout = True
            resp.timeout_sleep_s = sw.timeout_sleep_s
        elif kind == "drop_connection":
            resp.drop_after = int(len(resp.body) * sw.drop_after_fraction)
        elif kind == "malformed_json":
            resp.body = corrupt_body(resp.body, sw.malformed_json_mode)
        return resp

    def _safe_handle(self, req: SandboxRequest) -> SandboxResponse:
        try:
            return self.handle(req)
        except Exception:
            # A simulator bug must look like a server error to the client, not kill the server.
            logger.exception("sandbox %s failed on %s %s", self.name, req.method, req.path)
            return self.server_error_response(req, 500, None)

    # -- generic control API ---------------------------------------------------------------

    def _control(self, req: SandboxRequest) -> SandboxResponse:
        path = req.path.rstrip("/") or "/"
        if path == CONTROL_PREFIX:
            return SandboxResponse.json(200, self._control_index())
        if path == f"{CONTROL_PREFIX}/health":
            return SandboxResponse.json(200, {"status": "ok", "simulator": self.name})
        if path == f"{CONTROL_PREFIX}/faults":
            return self._control_faults(req)
        resp = self.handle_control(req)
        if resp is not None:
            return resp
        return SandboxResponse.json(404, {"error": f"unknown control route {req.method} {req.path}"})

    def _control_index(self) -> dict[str, Any]:
        generic = [
            f"GET {CONTROL_PREFIX}/health",
            f"GET {CONTROL_PREFIX}/faults",
            f"PUT {CONTROL_PREFIX}/faults (replace all switches)",
            f"POST {CONTROL_PREFIX}/faults (merge switches)",
            f"DELETE {CONTROL_PREFIX}/faults (clear)",
        ]
        return {"simulator": self.name, "routes": generic + self.control_routes()}

    def _control_faults(self, req: SandboxRequest) -> SandboxResponse:
        if req.method == "GET":
            return SandboxResponse.json(200, self.faults.snapshot())
        if req.method == "DELETE":
            self.faults.clear()
            return SandboxResponse.json(200, self.faults.snapshot())
        if req.method not in ("PUT", "POST"):
            return SandboxResponse.json(405, {"error": "use GET, PUT, POST or DELETE"})
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if req.method == "PUT":
                self.faults.replace(body)
            else:
                self.faults.update(body)
        except ValidationError as exc:
            return SandboxResponse.json(422, {"error": "invalid fault switches", "detail": _errors(exc)})
        logger.info("sandbox %s faults now %s", self.name, self.faults.switches.active())
        return SandboxResponse.json(200, self.faults.snapshot())


def control_json_body(req: SandboxRequest) -> tuple[dict[str, Any], SandboxResponse | None]:
    """Parse a control route's JSON object body (empty body = ``{}``), or give a 400."""
    try:
        body = req.json()
    except ValueError as exc:
        return {}, SandboxResponse.json(400, {"error": f"body is not valid JSON: {exc}"})
    if body is None:
        return {}, None
    if not isinstance(body, dict):
        return {}, SandboxResponse.json(400, {"error": "body must be a JSON object"})
    return body, None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    detail: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    return detail


# --------------------------------------------------------------------------------------------
# Adapter 1: in-process httpx transport
# --------------------------------------------------------------------------------------------


class _TruncatedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Body stream that delivers the first bytes and then fails like a dropped socket."""

    def __init__(self, head: bytes, request: httpx.Request) -> None:
        self._head = head
        self._request = request

    def _error(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (sandbox fault)",
            request=self._request,
        )

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        raise self._error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        raise self._error()


def _request_from_httpx(request: httpx.Request) -> SandboxRequest:
    return SandboxRequest(
        method=request.method,
        path=request.url.path,
        query=list(request.url.params.multi_items()),
        headers=Headers(request.headers.multi_items()),
        body=request.content,
        scheme=request.url.scheme,
        host=request.headers.get("host") or request.url.host,
    )


def _response_to_httpx(request: httpx.Request, resp: SandboxResponse) -> httpx.Response:
    if resp.timeout:
        raise httpx.ReadTimeout("timed out (sandbox fault)", request=request)
    if resp.drop_after is not None:
        if resp.drop_after <= 0:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response. (sandbox fault)", request=request
            )
        headers = [*resp.headers, ("content-length", str(len(resp.body)))]
        return httpx.Response(
            resp.status, headers=headers, stream=_TruncatedStream(resp.body[: resp.drop_after], request)
        )
    return httpx.Response(resp.status, headers=resp.headers, content=resp.body)


class SandboxTransport(httpx.MockTransport):
    """httpx transport that answers from a simulator; works for ``Client`` and ``AsyncClient``.

    Latency sleeps (``time.sleep`` or ``asyncio.sleep``), timeouts raise ``httpx.ReadTimeout``
    and dropped connections raise ``httpx.RemoteProtocolError`` while reading the body.
    """

    def __init__(self, simulator: Simulator) -> None:
        super().__init__(self._sync_handler)
        self.simulator = simulator

    def _sync_handler(self, request: httpx.Request) -> httpx.Response:
        resp = self.simulator.dispatch(_request_from_httpx(request))
        if resp.delay_s > 0:
            time.sleep(resp.delay_s)
        return _response_to_httpx(request, resp)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        return self._sync_handler(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        resp = self.simulator.dispatch(_request_from_httpx(request))
        if resp.delay_s > 0:
            await asyncio.sleep(resp.delay_s)
        return _response_to_httpx(request, resp)


def as_transport(simulator: Simulator) -> SandboxTransport:
    """Wrap a simulator as an httpx transport (``httpx.Client(transport=...)``)."""
    return SandboxTransport(simulator)


# --------------------------------------------------------------------------------------------
# Adapter 2: ASGI app + uvicorn
# --------------------------------------------------------------------------------------------

_INCOMPLETE_MSG = "ASGI callable returned without completing response."


class _DeliberateDropFilter(logging.Filter):
    """Silence uvicorn's error line for connections the sandbox drops on purpose (and only those)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = 0
        self._lock = threading.Lock()

    def expect(self) -> None:
        with self._lock:
            self._pending += 1

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != _INCOMPLETE_MSG:
            return True
        with self._lock:
            if self._pending > 0:
                self._pending -= 1
                return False
        return True


_drop_filter = _DeliberateDropFilter()
_drop_filter_installed = False
_drop_filter_lock = threading.Lock()


def _install_drop_filter() -> None:
    global _drop_filter_installed
    with _drop_filter_lock:
        if not _drop_filter_installed:
            logging.getLogger("uvicorn.error").addFilter(_drop_filter)
            _drop_filter_installed = True


class SandboxASGIApp:
    """Plain ASGI app: read the whole body, call the simulator, write the response."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        # Set on shutdown so that requests stuck in a timeout fault end promptly.
        self.closing = threading.Event()

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            # No websockets in any sandbox.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        body = await _read_body(receive)
        req = _request_from_scope(scope, body)
        resp = self.simulator.dispatch(req)
        if resp.delay_s > 0:
            await asyncio.sleep(resp.delay_s)
        if resp.timeout and not await self._hang(resp.timeout_sleep_s, receive):
            return
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        headers.append((b"content-length", str(len(resp.body)).encode()))
        if resp.drop_after is not None:
            await _drop(send, resp, headers)
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})

    async def _hang(self, seconds: float, receive: ASGIReceive) -> bool:
        """Sleep like a stuck backend; False if the client went away (nothing left to send)."""
        deadline = time.monotonic() + seconds
        waiter: asyncio.Future[ASGIMessage] = asyncio.ensure_future(receive())
        try:
            while not self.closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                done, _ = await asyncio.wait({waiter}, timeout=min(remaining, 0.1))
                if waiter in done:
                    if waiter.result().get("type") == "http.disconnect":
                        return False
                    waiter = asyncio.ensure_future(receive())
            return True
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.closing.set()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: ASGIReceive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _request_from_scope(scope: ASGIScope, body: bytes) -> SandboxRequest:
    raw_headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers])
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    query_string: bytes = scope.get("query_string", b"")
    return SandboxRequest(
        method=scope["method"],
        path=scope["path"],
        query=parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True),
        headers=headers,
        body=body,
        scheme=scope.get("scheme", "http"),
        host=host,
    )


async def _drop(send: ASGISend, resp: SandboxResponse, headers: list[tuple[bytes, bytes]]) -> None:
    """Send the headers and part of the body, then abort the connection."""
    cut = resp.drop_after or 0
    transport = _uvicorn_transport(send)
    if cut <= 0 and transport is not None:
        # Nothing may be sent at all: close before the status line, as a crashed backend would.
        transport.close()
        await asyncio.sleep(0)
        return
    if cut <= 0:
        # Without access to the socket, promise a body and never deliver it.
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"content-length", str(max(len(resp.body), 1)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body[:cut], "more_body": True})
    # Returning with the response incomplete makes uvicorn close the socket mid-body.
    _drop_filter.expect()


def _uvicorn_transport(send: ASGISend) -> asyncio.Transport | None:
    # uvicorn passes a bound method of its request cycle; its transport is the raw socket.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if isinstance(transport, asyncio.BaseTransport) else None  # type: ignore[return-value]


def _server_config(app: SandboxASGIApp, log_level: str, access_log: bool, **kwargs: Any) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        # Requests stuck in a timeout fault must not hold a shutdown hostage.
        timeout_graceful_shutdown=2,
        **kwargs,
    )
    _install_drop_filter()
    return config


def serve(simulator: Simulator, host: str = "127.0.0.1", port: int = 8400, *, log_level: str = "info") -> None:
    """Serve a simulator over HTTP until interrupted (Ctrl+C)."""
    app = SandboxASGIApp(simulator)
    server = uvicorn.Server(_server_config(app, log_level, True, host=host, port=port))
    server.run()


def server_parser(system: str, description: str, default_port: int) -> argparse.ArgumentParser:
    """``python -m sandbox <system>``'s options every HTTP simulator shares: host, port, fault switches and
    the log level; a simulator adds its own before calling `serve_main`."""
    parser = argparse.ArgumentParser(prog=f"python -m sandbox {system}", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE", help="fault switch, repeatable")
    parser.add_argument("--log-level", default="info")
    return parser


def serve_main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    build: Callable[[argparse.Namespace, dict[str, Any]], Simulator],
) -> int:
    """Parse the options, build the simulator with its fault switches and serve it until interrupted;
    a bad option or fault switch is a usage error (exit 2), and the simulator is closed on the way out."""
    args = parser.parse_args(argv)
    try:
        simulator = build(args, parse_fault_assignments(args.fault))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(simulator, args.host, args.port, log_level=args.log_level)
    finally:
        close = getattr(simulator, "close", None)
        if callable(close):
            close()
    return 0


@contextlib.contextmanager
def running_server(
    simulator: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout_s: float = 10.0,
) -> Iterator[str]:
    """Run a simulator with uvicorn in a background thread; yields its base URL.

    ``port=0`` picks a free port. The server is ready when the block starts and is shut
    down (and its thread joined) when the block ends.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    app = SandboxASGIApp(simulator)
    # log_config=None leaves the host process's logging (pytest, the hub CLI) alone.
    server = uvicorn.Server(_server_config(app, log_level, False, log_config=None))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{simulator.name}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
            raise RuntimeError(f"sandbox server for {simulator.name!r} did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield f"http://{url_host}:{bound_port}"
    finally:
        app.closing.set()
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# --------------------------------------------------------------------------------------------
# Outbound webhooks: the delivery worker shared by the sandboxes that push events
# --------------------------------------------------------------------------------------------


class WebhookDeliveryWorker(ABC):
    """A background thread that POSTs queued webhook deliveries, as providers do.

    Each queued item is a list of delivery objects (with `body`, `attempts`, `statuses`, `state`),
    delivered in order; a non-2xx answer or a transport error is retried with a doubling, bounded
    backoff. Subclasses say how one delivery is sent (`_deliver`) using `_post_with_retries`.
    """

    _worker_name = "sandbox-webhooks"

    def _init_delivery(self, transport: httpx.BaseTransport | None) -> None:
        import queue

        self._queue: queue.Queue[list[Any]] = queue.Queue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._http = httpx.Client(transport=transport, timeout=5.0)
        self._worker: threading.Thread | None = None
        self._closed = threading.Event()
        self._worker_lock = threading.Lock()

    def _queue_batch(self, batch: list[Any]) -> None:
        with self._idle:
            self._in_flight += 1
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run_worker, name=self._worker_name, daemon=True)
                self._worker.start()
        self._queue.put(batch)

    def _run_worker(self) -> None:
        import queue

        while not self._closed.is_set():
            try:
                batch = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                for delivery in batch:
                    self._deliver(delivery)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

    @abstractmethod
    def _deliver(self, delivery: Any) -> None:
        """Sign and address one delivery, then send it with `_post_with_retries`."""

    def _post_with_retries(
        self, delivery: Any, url: str | None, headers: Mapping[str, str], max_attempts: int, backoff_s: float
    ) -> bool:
        """POST `delivery.body` until a 2xx or `max_attempts`; records every attempt on the delivery."""
        if not url:
            delivery.state = "failed"
            delivery.statuses.append("no webhook url configured")
            return False
        delay = backoff_s
        for attempt in range(1, max_attempts + 1):
            delivery.attempts += 1
            try:
                status: int | str = self._http.post(url, content=delivery.body, headers=dict(headers)).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            delivery.statuses.append(status)
            if isinstance(status, int) and 200 <= status < 300:
                delivery.state = "delivered"
                return True
            if attempt < max_attempts and not self._closed.wait(delay):
                delay *= 2
        delivery.state = "failed"
        return False

    def wait_for_deliveries(self, timeout_s: float = 10.0) -> bool:
        """Block until every queued webhook was delivered or given up on; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the delivery thread and its HTTP client."""
        self._closed.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        self._http.close()
