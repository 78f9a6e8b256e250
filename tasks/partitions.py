"""A full read split into key ranges, read in parallel processes: the engine's scale-out (docs/scaling.md).

`run_pull(spec, partitions=N)` on a full read asks the connector to cut the read into N key ranges
(`Connector.split`: SAP's keyset-paged OData reads, connectors/sap/connector.py) and runs one
`sync_partition` task per range on a Prefect task runner that uses processes: prefect-dask's
`DaskTaskRunner` on the Dask cluster whose scheduler address is given (`cluster="tcp://scheduler:8786"`), or on
a local Dask cluster of N worker processes when a Prefect server is configured; without a Prefect server (the ephemeral API), Prefect's own
`ProcessPoolTaskRunner`. Each partition is the engine's own read
(`read_all`: batches, mapping, Great Expectations, quarantine, upserts, its own `$count` and shortfall
check), minus the watermark.

- **The watermark commits only after every partition committed**: the run computes it from the partitions'
  high water and writes it (with a full read's reconcile) in one transaction once all of them succeeded.
- **A failed partition is its own unit**: it records one `integration_errors` row whose unit is the
  partition's position (its key range inside the `$filter`), and the others go on. The run then fails,
  naming each row; `drymix errors retry <id>` reruns that range from the batch that failed. The watermark
  the run would have written travels in the unit (`pending_cursor`); the rerun of the *last* open
  partition of that run writes it, never one before (tasks/engine.py `_load_mapped`).

Prefect's ephemeral API (no `PREFECT_API_URL`, as in `make demo` and the tests) lives in the parent process;
worker processes would each start their own (about 10 s apiece) and report nowhere the parent sees, so
the parent's address is handed to them for the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from connectors.core.errors import SyncFailed
from connectors.core.paging import PagePosition
from hub.core.db import get_engine
from hub.core.settings import integration_config
from hub.ledger.loading import write_cursor
from tasks.streams import PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

    from connectors.core.base import Connector
    from tasks.engine import DatasetRun, Read, RunSummary

class PartitionsFailed(SyncFailed):
    """Some partitions failed, each recorded as its own unit: the run fails without a unit of its own."""


# RunSummary counts a partition adds to the run's.
_ADDED = ("batches", "pages", "extracted", "distinct_read", "duplicates", "mapped", "valid", "quarantined", "refused", "upserted", "unchanged")


def run_partitioned(
    spec: PullStream, run: DatasetRun, summary: RunSummary, connector: Connector, read: Read, options: RunOptions, *,
    partitions: int, cluster: str | None = None,
) -> dict[str, Any]:
    """Read `read.plan` (a full read) as key-range partitions in parallel processes; then the watermark, once."""
    from tasks.engine import _watermark_label, finish_pull

    plan = read.plan
    assert plan is not None
    if not plan.mode.startswith("full"):
        raise ValueError(f"partitions split a full read; {spec.integration}.{spec.dataset} has a watermark: run it with full_refresh")
    split = getattr(connector, "split", None)
    if split is None:
        raise ValueError(f"{spec.integration}.{spec.dataset}: its connector cannot split a read into key ranges")
    starts: list[PagePosition] = split(spec.stream, plan.position, partitions)
    summary.read["partitions"] = len(starts)
    run.logger.info("%s %s: full read in %d partitions (%s)", spec.integration, spec.dataset, len(starts), cluster or "local processes")
    runner = task_runner(len(starts), cluster)
    with _api_for_workers():
        results = partitioned_read.with_options(task_runner=runner)(
            f"{spec.integration}.{spec.dataset}", [s.to_dict() for s in starts], options, read.batch_pages,
            read.read_started.isoformat(), spec.reconcile is not None,
        )
    from expectations.runner import import_run

    high_water = None
    keys = []
    for result in results:
        if run.run_id:
            import_run(run.run_id, result["report"])  # the run's one Data Docs report covers every partition's batches
        for name in _ADDED:
            setattr(summary, name, getattr(summary, name) + int(result["summary"].get(name) or 0))
        summary.source_count = (summary.source_count or 0) + int(result["summary"].get("source_count") or 0)
        for stage, seconds in result["summary"]["stage_seconds"].items():
            summary.stage_seconds[stage] = round(summary.stage_seconds.get(stage, 0.0) + seconds, 3)
        for stage, seconds in result["summary"]["stage_cpu_seconds"].items():
            summary.stage_cpu_seconds[stage] = round(summary.stage_cpu_seconds.get(stage, 0.0) + seconds, 3)
        for name, n in result["counts"].items():
            summary.counts[name] = summary.counts.get(name, 0) + int(n)
        for name, n in result["failures"].items():
            run.failures[name] = run.failures.get(name, 0) + n
        run.retries_elsewhere += int(result.get("retries") or 0)
        run.sample.extend(result["sample"][: max(0, 10 - len(run.sample))])
        if result["error_id"] is None and result["high_water"] is not None:
            high_water = result["high_water"] if high_water is None else max(high_water, result["high_water"])
        if result["keys"] is not None:
            keys.append(result["keys"])
    failed = [r for r in results if r["error_id"] is not None]
    new_cursor = spec.next_cursor(plan, high_water, read.read_started)
    if failed:
        ids = [int(r["error_id"]) for r in failed]
        _hold_watermark(ids, new_cursor)
        summary.error_ids.extend(ids)
        # The run's report and validation row, but no resolution of earlier errors: the run did not complete.
        run.finish(summary, rows_checked=summary.mapped, report=spec.suite is not None, resolve=())
        raise PartitionsFailed(
            f"{len(failed)} of {len(results)} partitions failed (integration_errors {', '.join(f'#{i}' for i in ids)}): the others "
            "loaded; the watermark waits until each failed one is rerun (`drymix errors retry <id>`)",
            code="PARTITIONS_FAILED",
        )
    with get_engine().begin() as conn:
        if spec.reconcile is not None and summary.source_count is not None:
            import numpy as np

            seen = frozenset(k.decode() for k in np.unique(np.concatenate(keys)).tolist()) if keys else frozenset()
            for name, n in spec.reconcile(conn, seen, run.run_id).items():
                summary.counts[name] = summary.counts.get(name, 0) + int(n)
        if new_cursor:
            write_cursor(conn, spec.integration, spec.dataset, new_cursor, flow_run_id=run.run_id, rows_added=summary.upserted)
            summary.watermark = _watermark_label(new_cursor)
    return finish_pull(spec, run, summary)


def task_runner(workers: int, cluster: str | None) -> TaskRunner[Any]:
    """The Dask cluster at `cluster` (a scheduler address); else, with a Prefect server, a local Dask cluster of
    `workers` processes; else (Prefect's ephemeral API, which a Dask worker cannot reach: it hangs starting its own)
    Prefect's own process pool."""
    if cluster or os.environ.get("PREFECT_API_URL"):
        from prefect_dask import DaskTaskRunner

        if cluster:
            return DaskTaskRunner(address=cluster)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
    from prefect.task_runners import ProcessPoolTaskRunner

    return ProcessPoolTaskRunner(max_workers=workers)


@contextmanager
def _api_for_workers() -> Iterator[None]:
    """Worker processes report to the parent's Prefect API, the ephemeral one included (see the module docstring)."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


@flow(name="partitioned-read", description="A full read's key-range partitions, each in its own process.")
def partitioned_read(
    dataset: str, starts: list[dict[str, Any]], options: RunOptions, batch_pages: int, read_started: str, keep_keys: bool,
) -> list[dict[str, Any]]:
    futures = [
        sync_partition.submit(dataset, index, len(starts), start, options, batch_pages, read_started, keep_keys)
        for index, start in enumerate(starts, 1)
    ]
    return [f.result() for f in futures]


@task(name="sync_partition", cache_policy=NO_CACHE, persist_result=False, task_run_name="{dataset}-partition-{index}-of-{of}")
def sync_partition(
    dataset: str, index: int, of: int, start: dict[str, Any], options: RunOptions, batch_pages: int, read_started: str, keep_keys: bool,
) -> dict[str, Any]:
    """One key range read, mapped, validated and loaded by the engine, without the watermark; a failure is recorded
    as this partition's unit and reported back, never raised (the other partitions go on)."""
    from hub.datasets import by_name
    from tasks.engine import DatasetRun, Read, RunSummary, read_all
    from tasks.retry import task_retries

    spec: PullStream = by_name(dataset).load_stream()
    run = DatasetRun(spec.integration, spec.dataset, spec.flow_name)
    task_retries_before = task_retries(run.run_id)  # this process may have run another partition of the run
    summary = RunSummary(integration=spec.integration, dataset=spec.dataset, flow_run_id=run.run_id, mode=f"full (partition {index} of {of})")
    position = PagePosition.from_dict(start)
    read = Read(cursor=None, batch_pages=batch_pages, first_batch=1, read_started=datetime.fromisoformat(read_started),
                plan=ReadPlan(position=position, mode="full"), position=position, commit=False)
    error_id: int | None = None
    connector = spec.connect(options)
    try:
        with _threads_for_nested_tasks():
            read_all(spec, run, summary, connector, read, options)
    except Exception as exc:
        if read.pending is not None:
            read.pending.wait()
        unit = {**read.unit(spec, summary), "partition": index, "partitions": of, "partition_run": run.run_id}
        error_id = run.unit_failed(exc, operation=spec.operation, what=f"{dataset} partition {index} of {of}", unit=unit,
                                   max_retries=integration_config(spec.integration).retry.max_retries,
                                   then="the other partitions go on; the watermark waits for this one")
    finally:
        connector.close()
    return {
        "index": index,
        "error_id": error_id,
        "summary": summary.as_dict(),
        "counts": dict(summary.counts),
        "high_water": read.high_water,
        "keys": read.read_keys.array() if keep_keys else None,
        "failures": dict(run.failures),
        "sample": list(run.sample),
        "report": _partition_report(run),
        # What retried in this process: the connector's HTTP retries and Prefect's task retries (a load riding out
        # a database outage); the run's summary and error rows count them with its own.
        "retries": run.retries + task_retries(run.run_id) - task_retries_before,
    }


@contextmanager
def _threads_for_nested_tasks() -> Iterator[None]:
    """The partition's own tasks (the next batch's extract beside this one's load) run on threads of its process.

    In a worker process the flow's task runner is the process pool again: a nested `.submit` would pickle the
    connector (its HTTP client, its locks) to yet another process.
    """
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    if context is None:
        yield
        return
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=2)
    with runner, context.model_copy(update={"task_runner": runner}):
        yield


def _partition_report(run: DatasetRun) -> Any:
    """This process's validation results of the run, for the run's one Data Docs report (built by the parent)."""
    from expectations.runner import export_run

    return export_run(run.run_id)


def _hold_watermark(error_ids: list[int], cursor: Mapping[str, Any] | None) -> None:
    """Give each failed partition's unit the watermark the run would have written: the last one rerun writes it."""
    from sqlalchemy import select

    from hub.core.models import IntegrationErrorRow

    with get_engine().begin() as conn:
        for row_id, unit in conn.execute(select(IntegrationErrorRow.id, IntegrationErrorRow.unit).where(IntegrationErrorRow.id.in_(error_ids))):
            conn.execute(
                IntegrationErrorRow.__table__.update().where(IntegrationErrorRow.id == row_id)  # type: ignore[attr-defined]
                .values(unit={**(unit or {}), "pending_cursor": dict(cursor) if cursor else None})
            )


def last_open_partition(integration: str, dataset: str, partition_run: str, error_id: Any) -> bool:
    """True when no other partition of the run `partition_run` still waits for its rerun (its error row open)."""
    from sqlalchemy import select

    from hub.core.models import IntegrationErrorRow

    with get_engine().connect() as conn:
        rows = conn.execute(
            select(IntegrationErrorRow.id, IntegrationErrorRow.unit).where(
                IntegrationErrorRow.integration == integration, IntegrationErrorRow.dataset == dataset,
                IntegrationErrorRow.resolved_at.is_(None),
            )
        ).all()
    return not any(
        (unit or {}).get("partition_run") == partition_run and str(row_id) != str(error_id) for row_id, unit in rows
    )
