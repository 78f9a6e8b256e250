"""The HTTP client every connector uses: pooled, timed, rate-budgeted, retried, measured, redacted.

One `IntegrationClient` per integration wraps one pooled `httpx.Client`. `transport=` is the test
seam (a sandbox runs in-process as an httpx transport); the same code talks to the real service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import orjson

from connectors.core.cache import TTLCache
from connectors.core.config import IntegrationConfig, RetryPolicy
from connectors.core.debug import DebugLog
from connectors.core.errors import (
    ErrorBodyParser,
    IntegrationError,
    classify_exception,
    classify_response,
)
from connectors.core.gcpause import paused_gc
from connectors.core.metrics import METRICS, CallMetrics
from connectors.core.retry import call_with_retry

log = logging.getLogger(__name__)


#: Takes one unit of an integration's budget shared by every process (blocks until it is free).
SharedAcquire = Callable[[str], None]

# The cross-process budget. Connectors know nothing of Prefect: the flow layer installs an acquire
# function backed by a Prefect global rate limit (hub/runtime/rate_limits.py) when a Prefect server is there.
_SHARED_ACQUIRE: SharedAcquire | None = None


def set_shared_rate_limiter(acquire: SharedAcquire | None) -> SharedAcquire | None:
    """Install (or with None remove) the shared budget every `RateBudget` also takes from; returns the previous one."""
    global _SHARED_ACQUIRE
    previous, _SHARED_ACQUIRE = _SHARED_ACQUIRE, acquire
    return previous


def shared_rate_limiter() -> SharedAcquire | None:
    """The installed shared budget, if any (a run's extract process takes its child's slots through it)."""
    return _SHARED_ACQUIRE


class RateBudget:
    """Token bucket: at most `rate_per_s` requests per second from this process.

    Hand-written because it must sit inside the HTTP call path (a few microseconds per call). When
    `name` is given and a shared limiter is installed (`set_shared_rate_limiter`), each call also takes a
    unit of the budget shared by every worker (a Prefect global rate limit), so that several processes
    together stay under the external system's limit.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ):
        self.name = name
        self.rate = rate_per_s
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Take one token (locally, then from the shared budget), sleeping until free; returns the seconds waited."""
        waited = self._acquire_local(sleep)
        shared = _SHARED_ACQUIRE
        if shared is not None and self.name is not None:
            started = time.monotonic()
            shared(self.name)
            waited += time.monotonic() - started
        return waited

    def _acquire_local(self, sleep: Callable[[float], None]) -> float:
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / self.rate
            sleep(wait)
            waited += wait


# In-process transports by integration (a sandbox's httpx transport): the seam that lets flows run
# against a simulator without a server. Empty in production, where the real network is used.
_TRANSPORT_OVERRIDES: dict[str, httpx.BaseTransport] = {}


@contextmanager
def use_transport(integration: str, transport: httpx.BaseTransport) -> Iterator[None]:
    """Route every client of `integration` built inside the block through `transport`."""
    previous = _TRANSPORT_OVERRIDES.get(integration)
    _TRANSPORT_OVERRIDES[integration] = transport
    try:
        yield
    finally:
        if previous is None:
            _TRANSPORT_OVERRIDES.pop(integration, None)
        else:
            _TRANSPORT_OVERRIDES[integration] = previous


class IntegrationClient:
    """HTTP access to one external system; raises only classified `IntegrationError`s."""

    def __init__(
        self,
        config: IntegrationConfig,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
        body_parser: ErrorBodyParser | None = None,
        metrics: CallMetrics = METRICS,
        sleep: Callable[[float], None] = time.sleep,
        debug_log: Path | DebugLog | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.retry = retry or config.retry
        self.body_parser = body_parser
        self.metrics = metrics
        self._sleep = sleep
        self.budget = RateBudget(config.rate_budget_per_s, name=config.name)
        cache = getattr(auth, "cache", None)
        if isinstance(cache, TTLCache) and cache.metrics_label is None:
            cache.metrics_label = (config.name, "token")  # token reuse shows as the cache hit rate
            cache.metrics = metrics
        # Debug mode: the runtime hands in where redacted request/response pairs go, only for an integration in debug mode.
        self.debug = (debug_log if isinstance(debug_log, DebugLog) else DebugLog(debug_log)) if debug_log is not None else None
        transport = transport or _TRANSPORT_OVERRIDES.get(config.name)
        # httpx's own network transport, not an in-process one (a sandbox's, a test's): a forked process can read
        # through a copy of this client (tasks/extract_process.py), where an in-process source would be a copy too.
        self.over_network = transport is None
        self._http_options: dict[str, Any] = {
            "base_url": config.base_url,
            "auth": auth,
            "transport": transport,
            "headers": headers or {},
            "timeout": httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            "limits": httpx.Limits(max_connections=10, max_keepalive_connections=10),
            "follow_redirects": False,
        }
        self.http = httpx.Client(**self._http_options)
        self._inherited: list[httpx.Client] = []

    def close(self) -> None:
        self.http.close()

    def after_fork(self) -> None:
        """In a forked process: a connection pool of its own. The inherited connections are the parent's sockets
        too (a keep-alive connection used by both would mix their requests), so they are set aside, never used
        and never closed here (closing a TLS connection would end the parent's session)."""
        self._inherited.append(self.http)
        self.http = httpx.Client(**self._http_options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_once(self, method: str, url: str, *, operation: str, **kwargs: Any) -> httpx.Response:
        """One attempt: a non-2xx answer becomes a classified error (nothing is retried here)."""
        self.budget.acquire(self._sleep)
        started = time.perf_counter()
        response: httpx.Response | None = None
        request = self.http.build_request(method, url, **kwargs)
        try:
            response = self.http.send(request)
            response.read()
            # httpx binds the stream it read to its response (BoundSyncStream -> response -> stream), a
            # reference cycle: the body (3 MB a page of 1,000 expanded partners) then waits for the cyclic
            # collector, not the last reference, and a sync held up to 8 dead pages (25 MB, tracemalloc) at its
            # peak. The stream is consumed: the bytes it read stand in for it, and the cycle is gone.
            response.stream = httpx.ByteStream(response.content)
        except Exception as exc:
            self._measure(operation, started, ok=False, request=request, response=None)
            raise classify_exception(exc, integration=self.name, operation=operation) from exc
        ok = response.is_success
        self._measure(operation, started, ok=ok, request=request, response=response, rate_limited=response.status_code == 429)
        if not ok:
            raise classify_response(response, body_parser=self.body_parser, integration=self.name, operation=operation)
        return response

    def request(self, method: str, url: str, *, operation: str, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """Send with the integration's retry policy for transient failures (honours Retry-After)."""
        if not retry:
            return self.send_once(method, url, operation=operation, **kwargs)
        return call_with_retry(
            lambda: self.send_once(method, url, operation=operation, **kwargs),
            self.retry,
            integration=self.name,
            operation=operation,
            sleep=self._sleep,
            on_retry=lambda *_: self.metrics.record_retry(self.name, operation),
        )

    def get_json(self, url: str, *, operation: str, **kwargs: Any) -> Any:
        """GET and decode JSON; a malformed body is a (transient) SERVER_ERROR, retried like any other."""

        def attempt() -> Any:
            response = self.send_once("GET", url, operation=operation, **kwargs)
            try:
                with paused_gc():
                    return orjson.loads(response.content)
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                raise classify_exception(exc, integration=self.name, operation=operation) from exc

        return call_with_retry(
            attempt,
            self.retry,
            integration=self.name,
            operation=operation,
            sleep=self._sleep,
            on_retry=lambda *_: self.metrics.record_retry(self.name, operation),
        )

    def _measure(
        self,
        operation: str,
        started: float,
        *,
        ok: bool,
        request: httpx.Request,
        response: httpx.Response | None,
        rate_limited: bool = False,
    ) -> None:
        latency = time.perf_counter() - started
        self.metrics.record(self.name, operation, ok=ok, latency_s=latency, rate_limited=rate_limited)
        if self.debug is not None:
            self.debug.write(self.name, response, request, latency)


def retries_of(client: IntegrationClient) -> int:
    return client.metrics.total(client.name, "retries")


__all__ = ["DebugLog", "IntegrationClient", "IntegrationError", "RateBudget", "SharedAcquire", "retries_of", "set_shared_rate_limiter",
           "shared_rate_limiter"]
