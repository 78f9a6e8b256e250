"""A job queued while no worker runs is run when a worker starts (issue 18, item 5: surviving a worker restart).

The session's Prefect test server stands in for the stack's: the retry job's deployment is registered on the
hub's process pool, a rerun is queued with no worker polling, it waits Scheduled, then a real
`prefect worker start --run-once` (a subprocess, as the stack's worker) picks it up and the flow reruns the
failed unit in the ERP database. Slow (a worker and a flow-run process): `-m deploy`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.core.errors import ServerError
from hub.core.settings import ROOT
from hub.operations.deploy import WORK_POOL, declared_deployments, ensure_work_pool
from hub.runtime.jobs import JOBS, queue_job

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(600)]


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_a_rerun_queued_while_no_worker_runs_is_run_when_a_worker_starts(db: str, prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    from hub.ledger.errors import get_error, record_error
    from hub.ledger.retry_units import WEBHOOK_EVENT
    from hub.runtime.jobs import retry_job_key

    # A failed unit whose rerun fails again (its inbox event does not exist): the rerun shows in the row.
    error_id = record_error(ServerError("webhook apply failed", integration="razorpay"), integration="razorpay",
                            dataset="webhook_events", unit={"kind": WEBHOOK_EVENT, "inbox_id": 987_654})
    spec = JOBS["hub.errors.retry"]
    deployment = next(d for d in declared_deployments() if d.name == spec.deployment)
    with _client() as client:
        ensure_work_pool(client)
        client.create_deployment(flow_id=client.create_flow_from_name(deployment.flow_name), name=deployment.name,
                                 entrypoint=deployment.entrypoint, path=str(ROOT), work_pool_name=WORK_POOL)

    # The key `drymix errors retry --queue` gives: error ids start again in each test's database, and the Prefect
    # server outlives them (a run of another test's error #1 in another pool would be answered instead).
    queued = queue_job("hub.errors.retry", {"error_ids": [error_id]}, key=retry_job_key(error_id, get_error(error_id).created_at, 0))
    time.sleep(3)
    with _client() as client:
        assert client.read_flow_run(queued.run_id).state.type.value == "SCHEDULED"  # type: ignore[arg-type, union-attr]
    assert get_error(error_id).attempts == 0  # nothing ran it

    api_url = str(PREFECT_API_URL.value())
    env = {**os.environ, "PREFECT_API_URL": api_url, "DRYMIX_HOME": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    # A polling worker, stopped once the run ends: `--run-once` polls a single time and gives up when that one
    # attempt to reach a busy API fails (seen on a loaded machine), which a real worker retries.
    with tempfile.TemporaryFile("w+") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 420
            with _client() as client:
                state = client.read_flow_run(queued.run_id).state  # type: ignore[arg-type]
                while (state is None or not state.is_final()) and time.monotonic() < deadline and worker.poll() is None:
                    time.sleep(1)
                    state = client.read_flow_run(queued.run_id).state  # type: ignore[arg-type]
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        log.seek(0)
        output = log.read()
    assert state is not None and state.type.value == "COMPLETED", output[-6000:]
    row = get_error(error_id)
    assert row.attempts == 1 and row.status != "resolved"  # the worker reran the unit once; it failed again, recorded
