"""Per-integration API budgets shared by every worker: Prefect global concurrency limits with slot decay.

`rate:<integration>` has `limit` = `slot_decay_per_second` = `rate_budget_per_s` from
config/integrations.toml, so every process that takes a slot before each call (Prefect's `rate_limit`)
together sends at most that many requests per second, after an initial burst of `limit`.
`ensure_rate_limits` creates or updates them (`drymix stack up`, `drymix deploy`); `install` plugs the
Prefect-backed acquire function into the connector core's `RateBudget` (flows/__init__.py does it), so
connectors never import Prefect. Without a Prefect server, or without the limit, only the in-process
budget applies.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from hub.core.settings import all_integrations

log = logging.getLogger(__name__)

PREFIX = "rate:"
# How long a "this limit exists / does not exist" answer is trusted before the server is asked again.
EXISTS_TTL_S = 60.0


def limit_name(integration: str) -> str:
    return f"{PREFIX}{integration}"


@dataclass(frozen=True)
class RateLimitSpec:
    name: str
    integration: str
    per_second: float

    @property
    def limit(self) -> int:
        # A slot-decay limit holds whole slots; at least one, so a budget below 1/s still lets calls through.
        return max(1, int(self.per_second))


def declared_rate_limits() -> list[RateLimitSpec]:
    """One limit per integration of config/integrations.toml, from its rate_budget_per_s."""
    return [
        RateLimitSpec(limit_name(name), name, config.rate_budget_per_s)
        for name, config in sorted(all_integrations().items())
    ]


def ensure_rate_limits(client: Any, specs: list[RateLimitSpec] | None = None) -> list[RateLimitSpec]:
    """Create or update each `rate:<integration>` global concurrency limit through a sync Prefect client."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    specs = declared_rate_limits() if specs is None else specs
    for spec in specs:
        try:
            client.read_global_concurrency_limit_by_name(spec.name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=spec.name, limit=spec.limit, slot_decay_per_second=spec.per_second, active=True
                )
            )
        else:
            client.update_global_concurrency_limit(
                spec.name,
                GlobalConcurrencyLimitUpdate(limit=spec.limit, slot_decay_per_second=spec.per_second, active=True),
            )
    return specs


class PrefectRateLimiter:
    """The acquire function installed into `RateBudget`: one slot of `rate:<integration>` per call.

    Only when a Prefect API URL is configured (a real server, as under a worker) and the limit exists;
    whether it exists is remembered for EXISTS_TTL_S so a missing limit costs one lookup a minute.
    """

    def __init__(self, ttl_s: float = EXISTS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, integration: str) -> None:
        name = limit_name(integration)
        if not self._exists(name):
            return
        from prefect.concurrency.sync import rate_limit

        rate_limit(name, occupy=1, strict=False)

    def _exists(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            known = self._known.get(name)
            if known is not None and now - known[1] < self.ttl_s:
                return known[0]
        exists = _limit_exists(name)
        with self._lock:
            self._known[name] = (exists, now)
        return exists


def _limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False  # no server configured: the in-process budget is the whole budget
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except Exception as exc:  # noqa: BLE001 - missing limit or unreachable server: fall back to the local budget
        log.debug("no shared rate limit %s: %s", name, type(exc).__name__)
        return False
    return True


_INSTALLED: PrefectRateLimiter | None = None


def install() -> PrefectRateLimiter:
    """Plug the Prefect-backed shared budget into every connector's `RateBudget` (idempotent)."""
    global _INSTALLED
    from connectors.core.client import set_shared_rate_limiter

    if _INSTALLED is None:
        _INSTALLED = PrefectRateLimiter()
    set_shared_rate_limiter(_INSTALLED)
    return _INSTALLED
