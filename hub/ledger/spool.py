"""The error spool: failures that could not be written to `integration_errors` because the database was down.

`record_error` writes its row in its own transaction. When that write fails because the database is
unavailable (classified DATABASE_UNAVAILABLE: refused, dropped, silent past the timeouts, locked), the
row's values (already redacted and JSON-safe) wait here, in the plant's durable on-disk buffer
(hub/ledger/buffer.py: SQLite, fsync'd on append), one file per database under ERROR_SPOOL_DIR. `drain_spool`
writes them to `integration_errors` when the database answers again, oldest first, each with its original
time and an audit entry saying that it was spooled; its queued rerun and escalation follow as if it had
been written at once.

Drained (docs/troubleshooting.md) at the start of every flow run from the CLI, at the start of every
retry-failed-units run, by `drymix errors list`, and after any later `record_error` that succeeds.

Exactly once: an entry is removed only after its row has committed; a drainer that dies between the two
leaves the entry, and the next drain finds the row by the entry's spool id (kept in its RECORDED audit
entry) and only removes the entry. Two drainers of one spool never run at once (a lock file).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.core.errors import describe_exception, is_database_unavailable
from connectors.core.redact import redact_text, redact_url
from hub.core.settings import get_settings
from hub.ledger.buffer import DurableBuffer

log = logging.getLogger(__name__)

KIND = "integration_error"
DATABASE_META = "database"


@dataclass(frozen=True)
class SpoolReceipt:
    """Where a spooled failure waits."""

    path: Path
    seq: int
    spool_id: str


@dataclass
class DrainResult:
    """What a drain did: the integration_errors ids written, what still waits, and why it stopped."""

    written: list[int] = field(default_factory=list)
    already_written: int = 0
    waiting: int = 0
    error: str | None = None
    path: Path | None = None


def spool_path(database_url: str | None = None) -> Path:
    """The spool file of a database: one per database, so a failure is never written to another one."""
    url = redact_url(database_url or get_settings().database_url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(get_settings().error_spool_dir) / f"errors-{digest}.sqlite3"


def open_spool(database_url: str | None = None) -> DurableBuffer:
    return DurableBuffer(spool_path(database_url))


def spool_error(recorded: Mapping[str, Any], *, cause: str) -> SpoolReceipt:
    """Keep a failure on local disk (durable when this returns) until the database takes it."""
    url = get_settings().database_url
    spool = open_spool(url)
    spool_id = str(uuid.uuid4())
    entry = {**recorded, "spool_id": spool_id, "spool_cause": redact_text(cause)[:1000]}
    spool.append([(KIND, entry)], meta={DATABASE_META: redact_url(url)})
    span = spool.span()
    assert span is not None
    log.warning("integration_errors unavailable (%s): failure kept in the error spool %s", redact_text(cause), spool.path)
    return SpoolReceipt(path=spool.path, seq=span[1], spool_id=spool_id)


def waiting(database_url: str | None = None) -> int:
    """Spooled failures waiting for this database (0 without opening anything when there is no spool file)."""
    path = spool_path(database_url)
    if not path.exists():
        return 0
    return DurableBuffer(path).count()


@contextmanager
def _drain_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock per spool (released by the OS if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def drain_spool(database_url: str | None = None, *, chunk: int = 100) -> DrainResult:
    """Write every spooled failure of this database to integration_errors, oldest first.

    Stops at the first entry the database does not take (it is down again, or refuses the row) and
    reports why; what was written stays written and the rest waits for the next drain.
    """
    from hub.ledger.errors import spooled_error_id, write_spooled_error

    path = spool_path(database_url)
    result = DrainResult(path=path)
    if not path.exists():
        return result
    spool = DurableBuffer(path)
    with _drain_lock(path) as locked:
        if not locked:
            result.waiting = spool.count()
            return result
        while entries := spool.pending(chunk):
            for entry in entries:
                try:
                    existing = spooled_error_id(entry.payload)
                    if existing is None:
                        result.written.append(write_spooled_error(entry.payload))
                    else:
                        result.already_written += 1
                except Exception as exc:  # noqa: BLE001 - the entry stays spooled; the caller is told why
                    result.error = describe_exception(exc) if is_database_unavailable(exc) else f"{describe_exception(exc)} (entry {entry.seq})"
                    result.waiting = spool.count()
                    return result
                spool.remove_through(entry.seq)
    result.waiting = spool.count()
    return result


def drain_spool_quietly(database_url: str | None = None) -> DrainResult:
    """`drain_spool` for callers that must go on whatever happens (flow starts, the CLI): logs, never raises."""
    try:
        result = drain_spool(database_url)
    except Exception as exc:  # noqa: BLE001 - a broken spool must not stop the run that tried to drain it
        log.exception("could not drain the error spool")
        return DrainResult(error=describe_exception(exc), path=spool_path(database_url))
    if result.written:
        log.warning(
            "wrote %d spooled failure(s) to integration_errors (#%s)", len(result.written), ", #".join(map(str, result.written))
        )
    if result.waiting:
        log.warning("%d failure(s) still wait in the error spool %s: %s", result.waiting, result.path, result.error or "another process is draining it")
    return result
