"""Generic load task: one batch (rows, quarantine, cursor) in one database transaction."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from hub.db import get_engine
from hub.loading import BatchLoad, LoadResult, load_batch
from tasks.retry import retry_transient_only


@task(
    name="load_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[1.0, 4.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="load-{batch.dataset}",
)
def load_batch_task(batch: BatchLoad) -> LoadResult:
    """Commit the batch's rows, its quarantined rows and (on the last batch) the watermark together."""
    with get_engine().begin() as conn:
        return load_batch(conn, batch)
