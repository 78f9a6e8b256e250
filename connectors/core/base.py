"""The integration base every connector implements: its name and queued background work (`Integration`),
and for HTTP systems connect, test_connection and sync (`Connector`).

A system's endpoints are short typed declarations (`Stream`) on top of the shared core; code hooks
stay small and local to the system (SAP's CSRF dance, Graph upload sessions). Pushed webhooks are not a
connector's business: the ingress (hub/ingress/security.py) verifies each provider's signature, token and
timestamp before anything is stored, so the base has no webhook hook.

Background work (`queue_job`) goes to the `JobQueue` the runtime installs (`install_job_queue`): the hub
installs one that creates a Prefect flow run of the job's deployment with an idempotency key
(hub/runtime/jobs.py, docs/background-jobs.md). Connectors know nothing of Prefect; the queue is handed in,
as httpx takes a `transport=`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from connectors.core.client import IntegrationClient
from connectors.core.errors import IntegrationError, InvalidRequest, SyncFailed, classify_exception
from connectors.core.paging import ODataV2Paginator, Page, PagePosition, Paginator


@dataclass(frozen=True)
class Stream:
    """A dataset a connector can read: where it lives, its key, its cursor and how it pages."""

    name: str
    path: str
    primary_key: str
    cursor_field: str | None = None
    record_path: tuple[str, ...] = ("d", "results")
    select: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    paginator: Paginator = field(default_factory=ODataV2Paginator)
    # (field of the last page's body, cursor key): the source's own cursor for the next read, e.g.
    # ("nextSyncToken", "sync_token"); None when the cursor is a value of the records.
    end_cursor: tuple[str, str] | None = None


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    integration: str
    latency_ms: float
    detail: str
    error: IntegrationError | None = None


@dataclass(frozen=True)
class QueuedJob:
    """One piece of background work as the queue took it: `created` is False when the idempotency key
    matched work queued before (that run is answered, no second one is made)."""

    job: str
    key: str
    run_id: str
    run_name: str
    state: str
    created: bool
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "key": self.key, "run_id": self.run_id, "run_name": self.run_name,
                "state": self.state, "created": self.created, "url": self.url}


class JobQueue(Protocol):
    """Where background work goes; `key` makes a repeated request for the same work one job."""

    def enqueue(self, job: str, parameters: Mapping[str, Any], *, key: str) -> QueuedJob: ...


_installed_queue: JobQueue | None = None


def install_job_queue(queue: JobQueue | None) -> JobQueue | None:
    """Install the queue every integration's `queue_job` uses (None removes it); returns the previous one."""
    global _installed_queue
    previous, _installed_queue = _installed_queue, queue
    return previous


def installed_job_queue() -> JobQueue | None:
    return _installed_queue


class Integration:
    """What every integration offers the hub, whatever it speaks (HTTP, OPC UA, a drop folder)."""

    integration: ClassVar[str]
    #: This instance's queue; None: the installed one (`install_job_queue`).
    job_queue: JobQueue | None = None

    def queue_job(self, job: str, parameters: Mapping[str, Any] | None = None, *, key: str) -> QueuedJob:
        """Queue `job` (`<integration>.<what>`, e.g. `microsoft365.documents.upload`) to run in the background.

        `key` names this piece of work (a document's key and version, an outbox fingerprint): queueing the
        same job with the same key again answers the first job instead of running it twice.
        """
        if not job.startswith(f"{self.integration}."):
            raise InvalidRequest(f"{self.integration} cannot queue {job!r}: its jobs are named {self.integration}.<what>",
                                 integration=self.integration, operation="queue_job")
        if not key.strip():
            raise InvalidRequest("a queued job needs a non-empty idempotency key", integration=self.integration, operation="queue_job")
        queue = self.job_queue or _installed_queue
        if queue is None:
            raise SyncFailed(f"no job queue is installed: {job} cannot be queued (the hub installs one: hub/runtime/jobs.py)",
                             integration=self.integration, operation="queue_job")
        return queue.enqueue(job, dict(parameters or {}), key=key)


class Connector(Integration, abc.ABC):
    """The HTTP integration base; knows nothing of Prefect so it runs and tests without it."""

    def __init__(self, client: IntegrationClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def after_fork(self) -> None:
        """In a forked process that reads through this connector: connections of its own (`IntegrationClient.after_fork`)."""
        self.client.after_fork()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def connect(self) -> None:
        """Prove the credentials and reachability; raises a classified error otherwise."""

    def test_connection(self) -> ConnectionCheck:
        started = time.perf_counter()
        try:
            self.connect()
        except Exception as exc:  # noqa: BLE001 - the check reports every failure, classified
            error = classify_exception(exc, integration=self.integration, operation="test_connection")
            return ConnectionCheck(False, self.integration, (time.perf_counter() - started) * 1000, str(error), error)
        return ConnectionCheck(True, self.integration, (time.perf_counter() - started) * 1000, "connected")

    @abc.abstractmethod
    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        """The URL of the first page of an (incremental, when `cursor` is given) read of `stream`."""

    def start(self, stream: Stream, cursor: Mapping[str, Any] | None) -> PagePosition:
        return stream.paginator.start(self.first_url(stream, cursor))

    def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
        body = self.client.get_json(position.url, operation=f"read_{stream.name}")
        records = body
        for key in stream.record_path:
            records = records.get(key) if isinstance(records, dict) else None
        if not isinstance(records, list):
            raise classify_exception(
                ValueError(f"page has no record list at {'/'.join(stream.record_path)}"),
                integration=self.integration,
                operation=f"read_{stream.name}",
            )
        following = stream.paginator.next_position(position, body, records)
        end_cursor = None
        if following is None and stream.end_cursor is not None and isinstance(body, dict) and body.get(stream.end_cursor[0]):
            end_cursor = {stream.end_cursor[1]: body[stream.end_cursor[0]]}
        return Page(position=position, records=records, next=following, end_cursor=end_cursor)

    def sync(
        self, stream: Stream, cursor: Mapping[str, Any] | None = None, *, start: PagePosition | None = None
    ) -> Iterator[Page]:
        """Every page of `stream` from `start` (a resumed unit) or from the cursor."""
        position: PagePosition | None = start or self.start(stream, cursor)
        while position is not None:
            page = self.fetch_page(stream, position)
            yield page
            position = page.next
