"""A run's reads in a process of its own, beside its validation and loads (docs/performance.md, eighth round).

In one process everything a run does in Python shares one core: the next batch's read (parse, map, pack the
source bytes) runs in a thread beside this batch's validation and load, and the GIL lets one of them run at a
time. The read is about half of that work. `ExtractProcess` moves it to a child process, forked once per run
after the connector is built and before the suite's preload thread starts. The child holds a copy of the
connector (its credentials, session and rate budget, with connections of its own) and of the dataset's
mapping, and reads batch after batch with the same code the thread runs (`tasks.extract.mapped_pages`). Each
page goes to the run's process as soon as it is mapped (its frame, packed source bytes and keys, pickled down a
pipe that blocks while full), where the run's extract task assembles the batch (`ExtractedBatch.add_page`):
the child holds a page or two, never a batch (returned whole, a batch cost both processes ~25 MB more at their
peak). What the child did besides comes back at the batch's end: its call metrics (`CallMetrics.hand_over`,
flushed by the run's process) and its log records (handled again in the run's extract task, so they reach the
Prefect UI as the thread's did).

Why a fork by hand, not a Prefect task runner: each batch's read continues on the connector the last one used
(keyset paging knows the next page from this one), and Prefect's process runners (`ProcessPoolTaskRunner`,
prefect-dask) start fresh interpreters (~2 s of imports each) and pickle each task's arguments, so the
connector would be rebuilt, and its Secret blocks read again, for every batch. The Prefect task stays: each
batch is still an `extract_batch` task run, with its retries; its body asks the process for the batch.

Used only where it can be (`wanted`): `extract_process = true` in the integration's configuration, a
platform that forks (Linux), a connector that reads over the network (an in-process sandbox's transport, and
the source's state with it, would be a copy in the child) and a mapped dataset. A partitioned read does not
use it: its partitions are processes already. Everywhere else the thread reads, as before.

The budget shared by the workers (hub/runtime/rate_limits.py, a Prefect global rate limit under a deployed
stack) is taken by the run's process on the child's behalf: each of the child's calls asks the run's process
for a slot down a second pipe and waits for the grant (`_SlotsFromParent`, `_grant_slots`). The slots go through
the Prefect client's event-loop thread, which exists only in the run's process (a forked child has the client's
objects but not its threads: a call taking a slot there waits for ever).

Fork safety: the child runs only the read. It never touches the parent's threads (Prefect's API client, the
metrics flusher), its database connections or its HTTP connections; the locks it takes (call metrics,
logging, the slot pipe's) are new in the child, and the fork happens before the suite's preload thread starts
importing. The child dies with the run's process (`_die_with_parent`): a run killed or cancelled leaves no reader.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.core import client as client_core
from connectors.core.errors import SyncFailed, classify_exception
from connectors.core.memory import release_free_memory
from connectors.core.metrics import METRICS, MetricsShare
from tasks.extract import ExtractedBatch, Mapper, finish_batch, mapped_pages

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    import pandas as pd

    from connectors.core.base import Connector, Stream
    from connectors.core.paging import PagePosition


def wanted(enabled: bool, connector: Connector, mapper: Mapper | None) -> bool:
    """Whether a run's reads go to a process of their own (see the module's docstring)."""
    client = getattr(connector, "client", None)
    return (
        enabled
        and mapper is not None
        and bool(getattr(client, "over_network", False))
        and sys.platform.startswith("linux")  # fork with threads is unsafe on macOS, absent on Windows
    )


@dataclass
class _Reader:
    connector: Connector
    stream: Stream
    mapper: Mapper
    record_column: str | None
    pages: Connection  # the child's end of the page pipe
    parents_end: Connection  # closed in the child: a parent that dies then ends the child's `send` (EPIPE)
    slots: Connection | None  # the child's end of the slot pipe, when a shared budget is installed
    parents_slots: Connection | None  # closed in the child
    parent: int  # the run's process id


# The child's switch interval (CPython's default: 5 ms). The child has two busy threads: one fetches and parses the
# next page while the other maps this one. A thread that reads a response gives up the GIL at every `recv` (a 3 MB
# page is ~50 of them) and then waits for a thread computing to drop it, which that thread does only every switch
# interval (the convoy effect). Measured here, one page fetched and parsed beside a computing thread: 42 ms alone,
# 143-157 ms at 5 ms, 51 ms at 0.2 ms; a 100k-partner sync took 1-24 % less time (docs/performance.md, ninth round).
CHILD_SWITCH_INTERVAL_S = 0.0002

# Set in the parent around the fork: the child finds its reader here, in the memory the fork copied.
_FORKING: _Reader | None = None
_READER: _Reader | None = None  # the child's


class _Records(logging.Handler):
    """The child's log records, kept to go back with the batch (the parent's handlers send them on)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.records and self.records[-1] is record:
            return  # one record seen by two loggers' handlers (this handler is on each)
        record.msg, record.args = record.getMessage(), None  # arguments need not pickle
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records


_RECORDS = _Records()


class _SlotsFromParent:
    """The child's shared budget: each slot is asked of the run's process, which takes it from the installed
    limiter (a Prefect global rate limit), and waited for. One request at a time (the prefetch thread and the
    mapping thread may both call): the pipe carries one question and its answer."""

    def __init__(self, slots: Connection) -> None:
        self.slots = slots
        self.lock = threading.Lock()

    def __call__(self, integration: str) -> None:
        with self.lock:
            self.slots.send(integration)
            refused = self.slots.recv()
        if refused is not None:
            raise refused


def _grant_slots(slots: Connection, acquire: client_core.SharedAcquire) -> None:
    """In the run's process, a thread of the extract process: takes each slot the child asks for, then answers
    (None, or the classified error taking it raised). Ends when the child's end closes (it exited or died)."""
    while True:
        try:
            integration = slots.recv()
        except (EOFError, OSError):
            return
        answer: BaseException | None = None
        try:
            acquire(integration)
        except Exception as exc:  # noqa: BLE001 - the child's call fails with it, classified
            answer = classify_exception(exc)
        try:
            slots.send(answer)
        except OSError:
            return


def _die_with_parent(parent: int) -> None:
    """The kernel kills the child when the run's thread that forked it ends: the run's process killed (a cancelled
    flow run, `kill -9`, out of memory) would otherwise leave the child waiting for its next batch for ever (the
    executor's call queue never reports the parent gone: the fork gave the child that queue's writing end too)."""
    import ctypes

    pr_set_pdeathsig = 1  # linux/prctl.h; `wanted` keeps the process to Linux
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)  # the run's process died before the line above


def _child_started() -> None:
    """First thing in the forked child: its own metrics, log handling and connections."""
    global _READER
    _READER = _FORKING
    if _READER is not None:
        _die_with_parent(_READER.parent)
        _READER.parents_end.close()
    sys.setswitchinterval(CHILD_SWITCH_INTERVAL_S)  # the fetching thread gets the GIL back soon after each read
    METRICS.reset()  # what the parent counted is the parent's to flush; its lock may have been held at the fork
    # Every handler the parent had (Prefect's API handler needs the parent's threads) becomes the one collector.
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger) and logger.handlers:
            logger.handlers = [_RECORDS]
    if _READER is not None:
        if _READER.parents_slots is not None:
            _READER.parents_slots.close()
        # The shared budget the parent installed needs the parent's threads: its slots are asked of the parent.
        client_core.set_shared_rate_limiter(_SlotsFromParent(_READER.slots) if _READER.slots is not None else None)
        _READER.connector.after_fork()
    from hub.core.db import get_engine

    get_engine().dispose(close=False)  # the parent's database connections stay the parent's (SQLAlchemy's fork recipe)


def _read(start: PagePosition, max_pages: int) -> tuple[BaseException | None, MetricsShare, list[logging.LogRecord]]:
    """In the child: one batch's pages, each sent down the page pipe as soon as it is mapped (so the child holds a
    page or two, never the batch), then None; returned: the error that ended the batch, the calls and log records."""
    reader = _READER
    assert reader is not None, "the extract process was forked without a reader"
    error: BaseException | None = None
    try:
        for page in mapped_pages(reader.connector, reader.stream, start, max_pages, reader.mapper, reader.record_column):
            reader.pages.send(page)  # blocks while the pipe is full: the child reads no further ahead than the run takes
            del page
    except Exception as exc:
        error = exc
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an error that cannot travel goes back classified, as text
            error = classify_exception(exc)
    reader.pages.send(None)
    release_free_memory()  # what the batch's pages left in the heap goes back to the OS while the child waits
    return error, METRICS.hand_over(), _RECORDS.take()


class ExtractProcess:
    """The child process that reads a run's batches; `read` is called from the run's `extract_batch` task."""

    def __init__(self, connector: Connector, stream: Stream, mapper: Mapper, record_column: str | None) -> None:
        global _FORKING
        context = multiprocessing.get_context("fork")
        self._pages, pages_out = context.Pipe(duplex=False)
        self.mapper, self.record_column = mapper, record_column
        self._abandoned = False
        acquire = client_core.shared_rate_limiter()
        self._slots: Connection | None = None
        slots_out: Connection | None = None
        if acquire is not None:
            self._slots, slots_out = context.Pipe()
        _FORKING = _Reader(connector, stream, mapper, record_column, pages_out, self._pages, slots_out, self._slots,
                           os.getpid())
        try:
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_child_started)
            self.pid = self._pool.submit(os.getpid).result()  # the fork happens here, from this thread
        finally:
            _FORKING = None
            # Only the child writes pages: once its end is closed here, a child that dies ends `recv` (EOFError).
            pages_out.close()
            if slots_out is not None:
                slots_out.close()  # likewise, the slot thread ends when the child does
        self._granter: threading.Thread | None = None
        if self._slots is not None and acquire is not None:
            self._granter = threading.Thread(target=_grant_slots, args=(self._slots, acquire),
                                             name=f"extract-slots-{self.pid}", daemon=True)
            self._granter.start()

    def read(self, start: PagePosition, max_pages: int) -> ExtractedBatch:
        """The batch from `start`, assembled here page by page as the child sends them (`ExtractedBatch.add_page`)."""
        batch = ExtractedBatch(start=start)
        frames: list[pd.DataFrame] = []
        try:
            done = self._pool.submit(_read, start, max_pages)
            while (page := self._pages.recv()) is not None:
                frames.append(batch.add_page(page, self.record_column))
            error, metrics, records = done.result()
        except (BrokenProcessPool, EOFError, OSError) as exc:
            self._abandoned = True
            raise SyncFailed(
                f"the run's extract process (pid {self.pid}) ended while reading a batch (killed, or out of memory?): "
                "the batches before it are loaded; rerun the unit",
                code="EXTRACT_PROCESS_LOST",
            ) from exc
        except BaseException:
            self._abandoned = True  # the child may be blocked sending a page nobody reads any more
            raise
        METRICS.absorb(metrics)
        for record in records:
            logging.getLogger(record.name).handle(record)
        if error is not None:
            raise error
        return finish_batch(batch, frames, self.mapper)

    def close(self) -> None:
        if self._abandoned:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # a batch left half read: nothing of the child's is wanted
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pages.close()
        if self._granter is not None:
            self._granter.join(timeout=30)  # the child has exited: its end of the slot pipe is closed
        if self._slots is not None:
            self._slots.close()

    def __enter__(self) -> ExtractProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start(enabled: bool, connector: Connector, stream: Stream, mapper: Mapper | None, record_column: str | None,
          logger: Any) -> ExtractProcess | None:
    """The run's extract process when it is `wanted`, else None (the thread reads)."""
    if mapper is None or not wanted(enabled, connector, mapper):
        return None
    process = ExtractProcess(connector, stream, mapper, record_column)
    logger.info("%s: pages are read and mapped in process %d, beside validation and loads", stream.name, process.pid)
    return process
