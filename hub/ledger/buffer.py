"""A durable, ordered, local buffer: what was collected waits here until the database has committed it.

One SQLite file (the stdlib driver: atomic transactions and fsync without writing our own journal) with
``synchronous=FULL``: an ``append`` has reached the disk when it returns. Entries are read back in the order
they were appended (``seq``) and removed only by ``remove_through(seq)`` after the caller's database commit,
so a crash or a database outage between the two loses nothing; the next flush loads the same entries again
and the idempotent upserts make that harmless.

A small ``meta`` table keeps positions the collector needs when the database is away (e.g. the last batch
sequence number already buffered).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    buffered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_MAX_SEQ = 2**63 - 1  # SQLite's largest INTEGER: "no upper bound"


@dataclass(frozen=True)
class BufferedEntry:
    seq: int
    kind: str
    payload: dict[str, Any]


class DurableBuffer:
    """``append`` -> (database commit) -> ``remove_through``; safe to share between threads of a process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # every commit is fsync'd: buffered means on disk
            yield conn
        finally:
            conn.close()

    def append(self, entries: Iterable[tuple[str, Mapping[str, Any]]], meta: Mapping[str, Any] | None = None) -> int:
        """Append (kind, payload) entries and update meta values in one durable transaction."""
        now = datetime.now(UTC).isoformat()
        rows = [(kind, json.dumps(payload, separators=(",", ":")), now) for kind, payload in entries]
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO entries (kind, payload, buffered_at) VALUES (?, ?, ?)", rows)
                for name, value in (meta or {}).items():
                    conn.execute(
                        "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                        (name, json.dumps(value)),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def pending(self, limit: int, after_seq: int = 0, through_seq: int | None = None) -> list[BufferedEntry]:
        """The oldest entries (after ``after_seq``, up to ``through_seq`` when given), in append order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT seq, kind, payload FROM entries WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after_seq, through_seq if through_seq is not None else _MAX_SEQ, limit),
            ).fetchall()
        return [BufferedEntry(seq=int(seq), kind=str(kind), payload=json.loads(payload)) for seq, kind, payload in rows]

    def span(self, through_seq: int | None = None) -> tuple[int, int, int] | None:
        """(oldest seq, newest seq, entries) of what waits (up to ``through_seq``); None when nothing does."""
        with self._connect() as conn:
            first, last, count = conn.execute(
                "SELECT min(seq), max(seq), count(*) FROM entries WHERE seq <= ?",
                (through_seq if through_seq is not None else _MAX_SEQ,),
            ).fetchone()
        return (int(first), int(last), int(count)) if count else None

    def remove_through(self, seq: int) -> int:
        """Forget every entry up to and including ``seq`` (call only after the database commit)."""
        with self._lock, self._connect() as conn:
            cursor = conn.execute("DELETE FROM entries WHERE seq <= ?", (seq,))
            return int(cursor.rowcount)

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def counts_by_kind(self) -> dict[str, int]:
        with self._connect() as conn:
            return {str(k): int(n) for k, n in conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind ORDER BY kind")}

    def oldest_buffered_at(self) -> datetime | None:
        with self._connect() as conn:
            row = conn.execute("SELECT buffered_at FROM entries ORDER BY seq LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def get_meta(self, name: str) -> Any:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None
