"""Prefect's outer retry net: only transient categories retry, with our own jittered delays."""

from __future__ import annotations

from typing import Any

from connectors.core.errors import classify_exception
from connectors.core.retry import backoff_delay
from hub.core.settings import RetryPolicy


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn`: never retry authentication, invalid-request or validation failures."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # noqa: BLE001 - a state whose result raises carries the failure
            exc = raised
    if not isinstance(exc, BaseException):
        return False
    error = classify_exception(exc)
    # A deferred error (Retry-After beyond the policy) waits for its queued rerun, not for a task retry.
    return error.transient and error.defer_s is None


def task_retry_delays(policy: RetryPolicy, retries: int) -> list[float]:
    """Jittered exponential delays for `retry_delay_seconds` (Prefect's own jitter is not trusted)."""
    return [round(backoff_delay(i, policy), 3) for i in range(1, retries + 1)]
