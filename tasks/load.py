"""Generic load task: one batch (rows, quarantine, cursor) in one database transaction."""

from __future__ import annotations

import random

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.core.retry import backoff_delay
from hub.core.db import get_engine
from hub.core.settings import RetryPolicy, get_settings
from hub.ledger.loading import BatchLoad, LoadResult, load_batch
from tasks.retry import retry_transient_only

# 1 s, 2 s, 4 s, 8 s, then 15 s apart, each plus up to half again of jitter (retries of many runs spread out).
# Prefect takes at most 50 delays: a window of up to about 12 minutes.
MAX_LOAD_RETRIES = 50
LOAD_RETRY_POLICY = RetryPolicy(max_retries=20, base_delay_ms=1000, max_delay_ms=15_000, jitter_ratio=0.5)


def load_retry_delays(window_s: float, policy: RetryPolicy = LOAD_RETRY_POLICY, rng: random.Random | None = None) -> list[float]:
    """Jittered exponential delays between load attempts that add up to `window_s` (the last one is cut short):
    a batch load rides out a database restart or failover of about that long before the run fails."""
    delays: list[float] = []
    total = 0.0
    while total < window_s and len(delays) < MAX_LOAD_RETRIES:
        delay = min(backoff_delay(len(delays) + 1, policy, rng=rng), window_s - total)
        delays.append(round(delay, 3))
        total += delay
    return delays


_DELAYS = load_retry_delays(get_settings().database_retry_window_s)


@task(
    name="load_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=len(_DELAYS),
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=retry_transient_only,
    task_run_name="load-{batch.dataset}",
)
def load_batch_task(batch: BatchLoad) -> LoadResult:
    """Commit the batch's rows, its quarantined rows and (on the last batch) the watermark together.

    A transient failure (the database unavailable: refused, dropped, silent past its timeouts) is retried
    for DATABASE_RETRY_WINDOW_S with jittered exponential backoff; then the run fails with DATABASE_UNAVAILABLE.
    """
    with get_engine().begin() as conn:
        return load_batch(conn, batch)
