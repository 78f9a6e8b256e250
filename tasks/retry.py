"""Prefect's outer retry net: only transient categories retry, with our own jittered delays."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from connectors.core.errors import classify_exception
from connectors.core.retry import backoff_delay
from hub.core.settings import RetryPolicy

_TASK_RETRIES: OrderedDict[str, int] = OrderedDict()
_TASK_RETRIES_KEPT = 1024  # flow runs remembered: a long-lived worker process must not grow without end
_lock = threading.Lock()


def task_retries(flow_run_id: str | None) -> int:
    """Prefect task retries made so far in this process for the tasks of one flow run (the error row's retry_count)."""
    if flow_run_id is None:
        return 0
    with _lock:
        return _TASK_RETRIES.get(str(flow_run_id), 0)


def _count_task_retry(task_run: Any) -> None:
    flow_run_id = getattr(task_run, "flow_run_id", None)
    if flow_run_id is None:
        return
    key = str(flow_run_id)
    with _lock:
        _TASK_RETRIES[key] = _TASK_RETRIES.get(key, 0) + 1
        _TASK_RETRIES.move_to_end(key)
        while len(_TASK_RETRIES) > _TASK_RETRIES_KEPT:
            _TASK_RETRIES.popitem(last=False)


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn`: never retry authentication, invalid-request or validation failures.

    Prefect asks it only while the task has retries left (prefect/task_engine.py `handle_retry`), so a True
    answer is a retry that happens: it is counted for the flow run (`task_retries`). Every task of the hub
    with `retries=` uses this condition, so the count covers them all."""
    retry = _should_retry(state)
    if retry:
        _count_task_retry(task_run)
    return retry


def _should_retry(state: Any) -> bool:
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
