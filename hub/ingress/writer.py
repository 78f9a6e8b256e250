"""Group commit: one writer thread turns the events of many concurrent requests into one transaction.

A request puts its items on an asyncio queue with a future and waits. The writer takes everything
that has queued up (up to `max_batch`, waiting at most `max_wait_s` for more), commits it in ONE
transaction on a dedicated thread, and only then resolves the futures: no request is answered 2xx
before its own event is durable, yet the database sees one commit per batch instead of per event.
While a batch commits, the next one gathers, so batches grow with the load by themselves.

On PostgreSQL (psycopg) the writer commits on its own asynchronous connection, on the event loop itself
(`PostgresInboxWriter`): no thread, so nothing contends with the request handlers for the interpreter
lock and no hand-off between threads sits in every commit. Elsewhere (SQLite) the commit runs on one
dedicated thread through the hub's engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hub.core.db import get_engine
from hub.ingress.inbox import PendingEvent, PendingRejection, write_batch, write_batch_async

logger = logging.getLogger(__name__)

WriteFn = Callable[[Sequence[PendingEvent], Sequence[PendingRejection]], None]


def write_to_database(events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
    """Commit one batch on the hub's engine."""
    with get_engine().begin() as conn:
        write_batch(conn, events, rejections)


APPLICATION_NAME = "drymix-webhook-inbox"  # how the writer's session shows in pg_stat_activity


class PostgresInboxWriter:
    """The group commit's own psycopg `AsyncConnection` (opened on first use, reopened after a failure)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
        import psycopg

        loop = asyncio.get_running_loop()
        if self._conn is not None and (self._conn.closed or self._loop is not loop):
            self._conn = None  # closed, or opened on an event loop that has gone (a restarted app in tests)
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=10, application_name=APPLICATION_NAME
            )
            self._loop = loop
        try:
            await write_batch_async(self._conn, events, rejections)
        except psycopg.OperationalError:
            await self.aclose()  # a broken connection is not reused; the next batch opens a new one
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed and self._loop is asyncio.get_running_loop():
            await conn.close()


def default_async_write() -> PostgresInboxWriter | None:
    """The event-loop writer when the hub's database is PostgreSQL through psycopg, else None."""
    engine = get_engine()
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    return PostgresInboxWriter(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))


@dataclass
class _Job:
    events: list[PendingEvent]
    rejections: list[PendingRejection]
    done: asyncio.Future[None] = field(repr=False)


class GroupCommitWriter:
    """Batches writes from concurrent requests; `submit` returns once the caller's batch committed."""

    def __init__(
        self,
        write: WriteFn = write_to_database,
        *,
        max_batch: int = 500,
        max_wait_s: float = 0.0,
        postgres: PostgresInboxWriter | None = None,
    ) -> None:
        """`write` commits a batch on the writer thread; `postgres`, when given, commits on the event loop instead."""
        self._write = write
        self._postgres = postgres
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _ensure_started(self) -> asyncio.Queue[_Job | None]:
        # Started on first use in the running loop: ASGI test transports do not run lifespan events.
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            if self._postgres is None:  # the thread that commits when the event loop cannot
                self._executor = self._executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-inbox")
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue), name="webhook-inbox-writer")
        return self._queue

    async def submit(self, events: Sequence[PendingEvent] = (), rejections: Sequence[PendingRejection] = ()) -> None:
        """Queue writes and wait until the transaction that holds them committed (raises if it failed)."""
        queue = self._ensure_started()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Job(list(events), list(rejections), done))
        # A cancelled caller cancels only its own future: the writer skips done futures and still
        # commits the job, so neighbours in the batch are unaffected.
        await done

    async def _run(self, queue: asyncio.Queue[_Job | None]) -> None:
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.events) + len(first.rejections)
            stopping = self._drain(queue, batch, size)
            if not stopping and self._max_wait_s > 0 and len(batch) < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
                stopping = self._drain(queue, batch, sum(len(j.events) + len(j.rejections) for j in batch))
            await self._commit(batch)

    def _drain(self, queue: asyncio.Queue[_Job | None], batch: list[_Job], size: int) -> bool:
        """Move queued jobs into the batch up to the size limit; True when a stop was requested."""
        while size < self._max_batch:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if job is None:
                return True
            batch.append(job)
            size += len(job.events) + len(job.rejections)
        return False

    async def _commit(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        events = [e for job in batch for e in job.events]
        rejections = [r for job in batch for r in job.rejections]
        try:
            if self._postgres is not None:
                await self._postgres.write(events, rejections)
            else:
                await loop.run_in_executor(self._executor, self._write, events, rejections)
            for job in batch:
                if not job.done.done():
                    job.done.set_result(None)
            return
        except Exception as exc:  # noqa: BLE001 - isolate the failing request below
            if len(batch) == 1:
                logger.error("webhook inbox write failed: %s", exc)
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)
                return
        # One bad row must not fail its neighbours: retry each job in its own transaction.
        for job in batch:
            await self._commit([job])

    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer."""
        if self._queue is not None and self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task
        self._queue = None
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._postgres is not None:
            await self._postgres.aclose()
