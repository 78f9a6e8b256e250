"""Exponential backoff with our own jitter, honouring Retry-After.

Written by hand on purpose: Prefect's `retry_jitter_factor` has been reported to be a no-op for task
retries (Prefect PR #22203), and the HTTP layer must honour `Retry-After` per response, which a
decorator-level retry library cannot see. Prefect task retries stay the outer net.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from connectors.core.config import RetryPolicy
from connectors.core.errors import IntegrationError, classify_exception

log = logging.getLogger(__name__)
T = TypeVar("T")

_system_random = random.SystemRandom()


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    delay = base * 2^(attempt-1), plus a random jitter of up to `jitter_ratio` of it, capped at
    max_delay. A positive Retry-After wins when it is longer, up to the same cap (a server that says
    `Retry-After: 86400` must not put a worker to sleep for a day: `call_with_retry` turns such an
    answer into a deferred error instead); `Retry-After: 0` means "retry with the normal schedule"
    rather than "retry at once", so a server that says 0 cannot make us spin.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    base = policy.base_delay_ms / 1000.0
    cap = policy.max_delay_ms / 1000.0
    exp = base * (2 ** (attempt - 1))
    jitter = (rng or _system_random).uniform(0.0, exp * policy.jitter_ratio)
    delay = min(cap, exp + jitter)
    if retry_after_s is not None and retry_after_s > 0:
        # The server knows its own recovery time: honour it, within the policy's cap.
        delay = max(delay, min(retry_after_s, cap))
    return delay


def deferred(error: IntegrationError, policy: RetryPolicy) -> IntegrationError | None:
    """A transient error whose Retry-After is longer than the policy's maximum delay, as a deferral.

    Sleeping that long would hold a worker (and its concurrency slot) hostage; the caller records the
    failed unit instead, with `next_retry_at` no earlier than the server asked (`defer_s`), and the
    retry-failed-units flow reruns it then. None when the wait fits the policy.
    """
    wait = error.retry_after_s
    if not error.transient or wait is None or wait <= policy.max_delay_ms / 1000.0:
        return None
    error.defer_s = float(wait)
    error.message = (
        f"{error.message} (the server asked to wait {wait:g} s, longer than the policy's maximum delay of "
        f"{policy.max_delay_ms / 1000.0:g} s: deferred to a queued rerun, not slept on)"
    )
    return error


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    integration: str | None = None,
    operation: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, IntegrationError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run `fn`, retrying transient failures per `policy`; non-transient ones raise at once, classified."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, then re-raised or retried
            error = classify_exception(exc, integration=integration, operation=operation)
            attempt += 1
            if not error.transient or attempt > policy.max_retries or deferred(error, policy) is not None:
                if error is not exc:
                    raise error from exc
                raise
            delay = backoff_delay(attempt, policy, retry_after_s=error.retry_after_s, rng=rng)
            log.warning(
                "%s %s: %s; retry %d/%d in %.2fs",
                integration or "",
                operation or "call",
                error,
                attempt,
                policy.max_retries,
                delay,
            )
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
