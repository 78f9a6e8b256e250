"""Background jobs: one way to queue work, a Prefect flow run of the job's deployment with an idempotency key.

`queue_job(job, parameters, key=...)` creates a flow run of the deployment the job names (prefect.yaml, on the
`drymix-process` work pool) with `run_deployment(..., timeout=0, idempotency_key=...)` and returns at once.
The run is a row in the Prefect server's database in state Scheduled: it is in the UI from that moment,
a worker of the pool picks it up when one polls (a job queued while every worker is stopped runs when
one starts), and the same job with the same key queued again answers the first run instead of making a
second one. Why this and not background tasks (`task.delay()`): docs/background-jobs.md.

The integration base reaches it through `install()` (connectors/core/base.py `Integration.queue_job`);
the CLI and the flows call `queue_job` here or a connector's `queue_job`, never `run_deployment` directly.
Prefect is imported inside the functions: the CLI imports this module before it decides to queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.core.base import Integration, JobQueue, QueuedJob, install_job_queue

QUEUED_TAG = "queued"  # every queued run carries it: the UI's and `prefect flow-run ls`'s filter for background work


@dataclass(frozen=True)
class JobSpec:
    """A job: the deployment whose flow does it and the flow parameters a caller may set."""

    name: str  # `<integration>.<what>`: the integration's `queue_job` only queues its own
    deployment: str  # a deployment of prefect.yaml (hub/operations/deploy.py renders it from the registry)
    parameters: tuple[str, ...]
    description: str

    @property
    def integration(self) -> str:
        return self.name.split(".", 1)[0]


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("hub.errors.retry", "retry-failed-units", ("error_ids",),
                "rerun the failed units of the given integration_errors rows now (as `drymix errors retry`)"),
        JobSpec("sap.customers.push", "push-sap-customers", ("max_pages",),
                "push the pending customer_outbox rows to SAP"),
        JobSpec("microsoft365.documents.upload", "upload-documents", ("max_pages",),
                "upload the pending document_outbox rows to SharePoint"),
        JobSpec("whatsapp.messages.send", "send-whatsapp-messages", ("messages",),
                "send WhatsApp texts or templates and record them in whatsapp_messages"),
    )
}


class JobNotQueued(RuntimeError):
    """The job could not be queued (no Prefect server, an unknown job or parameter, no such deployment)."""


def job_spec(job: str) -> JobSpec:
    try:
        return JOBS[job]
    except KeyError:
        raise JobNotQueued(f"no job {job!r}: the hub queues {', '.join(sorted(JOBS))}") from None


def prefect_api_url() -> str:
    """PREFECT_API_URL (a worker has it; the CLI finds the local stack's, hub/cli/errors.py `queue_from_cli`).

    Never Prefect's temporary server: a run queued there is lost when this process exits, and no worker sees it.
    """
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()  # the setting: profiles, temporary_settings
    if not url:
        raise JobNotQueued("no Prefect server to queue on: start the stack (`make up`) or set PREFECT_API_URL")
    return url


def deployment_full_name(spec: JobSpec) -> str:
    """`<flow name>/<deployment name>` of the job's deployment, as prefect.yaml declares it."""
    from hub.operations.deploy import declared_deployments

    for deployment in declared_deployments():
        if deployment.name == spec.deployment:
            return deployment.full_name
    raise JobNotQueued(f"{spec.name}: deployment {spec.deployment!r} is not in prefect.yaml (`drymix deploy render`)")


def idempotency_key(job: str, key: str) -> str:
    """The key Prefect keeps per deployment: the job's name and the caller's key for this piece of work."""
    return f"{job}:{key}"


def fingerprint(rows: Iterable[Iterable[Any]]) -> str:
    """A short stable digest of rows (ids, attempts, update times): the key of "push what is pending now"
    jobs, so that queueing twice with nothing changed in between is one run, and any change is a new one."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(list(row), default=str, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def queue_job(job: str, parameters: Mapping[str, Any] | None = None, *, key: str, api_url: str | None = None) -> QueuedJob:
    """Queue `job` as a flow run of its deployment and return at once (the run is Scheduled; a worker runs it)."""
    spec = job_spec(job)
    params = dict(parameters or {})
    unknown = sorted(set(params) - set(spec.parameters))
    if unknown:
        raise JobNotQueued(f"{job} takes {', '.join(spec.parameters) or 'no parameters'}, not {', '.join(unknown)}")
    if not key.strip():
        raise JobNotQueued(f"{job}: a queued job needs a non-empty idempotency key")
    url = api_url or prefect_api_url()
    name = deployment_full_name(spec)

    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The run's name carries this request's nonce: when Prefect answers a run of the same key made
    # before, the name says so (the server keeps that run's name, its tags, its parameters).
    run_name = f"{job} {key} ({uuid.uuid4().hex[:8]})"
    with temporary_settings({PREFECT_API_URL: url}):
        try:
            flow_run: Any = run_deployment(
                name,
                parameters=params,
                idempotency_key=idempotency_key(job, key),
                timeout=0,  # queue and return; the run is the worker's
                as_subflow=False,  # a job queued by a flow outlives it; it is not a step of that flow
                tags=[QUEUED_TAG, spec.integration, job],
                flow_run_name=run_name,
            )
        except ObjectNotFound:
            raise JobNotQueued(f"{job}: deployment {name} is not registered on {url} (`drymix deploy apply`)") from None
    state = flow_run.state.type.value if flow_run.state is not None else "UNKNOWN"
    return QueuedJob(job=job, key=key, run_id=str(flow_run.id), run_name=flow_run.name, state=state,
                     created=flow_run.name == run_name, url=f"{url.removesuffix('/api')}/runs/flow-run/{flow_run.id}")


class PrefectJobQueue:
    """The `JobQueue` the hub installs for the integration base: `queue_job` above."""

    def __init__(self, api_url: str | None = None) -> None:
        self.api_url = api_url

    def enqueue(self, job: str, parameters: Mapping[str, Any], *, key: str) -> QueuedJob:
        return queue_job(job, parameters, key=key, api_url=self.api_url)


def install(api_url: str | None = None) -> JobQueue | None:
    """Make every integration's `queue_job` queue through Prefect; returns the queue it replaced."""
    return install_job_queue(PrefectJobQueue(api_url))


def retry_job_key(error_id: int, created_at: datetime, attempts: int | None) -> str:
    """The idempotency key of a queued rerun: one run per attempt (asking twice before it ran is one run; after
    it ran, the next attempt is a new one), of this error row. The id alone is not the row: ids start again in a
    new or restored database that the Prefect server outlived, and Prefect would answer with the old error's run
    (already finished) instead of queueing this one."""
    return f"{error_id}@{created_at:%Y%m%dT%H%M%S%f}/attempt-{(attempts or 0) + 1}"


def outbox_key(model: Any, done: str) -> str:
    """The key of a "push what is pending now" job: a fingerprint of the outbox rows not yet `done` (their
    id, status, attempts and last change). Nothing changed since the last queueing: the same key, one run."""
    from sqlalchemy import select

    from hub.core.db import get_engine

    query = (select(model.id, model.status, model.attempts, model.updated_at)
             .where(model.status != done).order_by(model.id))
    with get_engine().connect() as conn:
        rows = conn.execute(query).all()
    return f"outbox-{len(rows)}-{fingerprint(tuple(r) for r in rows)}"


def follow_up(integration: Integration, job: str, parameters: Mapping[str, Any], run_id: str | None, logger: Any) -> QueuedJob | None:
    """Queue the rest of a bounded run's work through the integration's `queue_job`, keyed by this run (a
    retried run queues one follow-up, not two). Not queued (no server: a CLI run on Prefect's temporary one)
    is logged, not a failure: the next scheduled run takes the rest."""
    from connectors.core.errors import IntegrationError

    try:
        queued = integration.queue_job(job, parameters, key=f"after-{run_id or uuid.uuid4().hex}")
    except (JobNotQueued, IntegrationError) as exc:
        logger.warning("%s: the rest is left to the next scheduled run (%s)", job, exc)
        return None
    logger.info("%s: the rest is queued as flow run %s", job, queued.run_name)
    return queued
