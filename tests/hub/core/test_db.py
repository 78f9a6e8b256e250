"""hub/core/db.py: `lock_for_write` serialises read-then-write transactions on SQLite as a row lock does on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from hub.core.db import lock_for_write


def test_a_second_writer_waits_for_the_first_and_reads_what_it_committed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'lock.db'}", connect_args={"timeout": 30})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (0)")
    first_holds = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def increment(hold: bool) -> None:
        with engine.begin() as conn:
            lock_for_write(conn)
            n = conn.execute(text("SELECT n FROM counter")).scalar_one()
            if hold:
                first_holds.set()
                release.wait(10)
            seen.append(n)
            conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    first = threading.Thread(target=increment, args=(True,))
    first.start()
    assert first_holds.wait(10)
    second = threading.Thread(target=increment, args=(False,))
    second.start()
    time.sleep(0.5)
    assert seen == []  # the second has not read: it waits for the first's write lock
    release.set()
    first.join(10)
    second.join(10)
    assert seen == [0, 1]  # without the lock both would read 0 and one increment would be lost
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 2
    engine.dispose()


def test_inside_a_transaction_that_already_wrote_it_does_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        lock_for_write(conn)  # the transaction holds the write lock already: no second BEGIN
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()


def test_for_update_locks_rows_on_postgresql_and_the_database_on_sqlite(db: str) -> None:
    from sqlalchemy import select

    from hub.core.db import for_update, get_engine
    from hub.core.models import WebhookEvent

    with get_engine().begin() as conn:
        query = for_update(conn, select(WebhookEvent.id), skip_locked=True)
        sql = str(query.compile(dialect=conn.dialect))
        if conn.dialect.name == "postgresql":
            assert "FOR UPDATE SKIP LOCKED" in sql
        else:
            assert "FOR UPDATE" not in sql  # SQLite has no such clause: the transaction holds the write lock instead
            assert conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        conn.execute(query).all()


def test_a_write_lock_held_past_the_busy_timeout_is_a_database_outage_and_changes_nothing(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock too long: the waiting transaction fails as DATABASE_UNAVAILABLE
    (retried like any outage) before it read or wrote anything."""
    from sqlalchemy.exc import OperationalError

    from connectors.core.errors import is_database_unavailable

    engine = create_engine(f"sqlite:///{tmp_path / 'lock.db'}", connect_args={"timeout": 0.2})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (0)")
    with engine.connect() as holder:
        holder.exec_driver_sql("BEGIN IMMEDIATE")  # the other writer, holding on
        try:
            with engine.begin() as conn:
                lock_for_write(conn)
                conn.execute(text("UPDATE counter SET n = n + 1"))
        except OperationalError as exc:
            assert is_database_unavailable(exc) and "locked" in str(exc)
        else:
            raise AssertionError("the write lock was taken while another transaction held it")
        holder.exec_driver_sql("ROLLBACK")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 0
    engine.dispose()
