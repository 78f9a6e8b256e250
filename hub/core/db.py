"""Engine and sessions for the ERP database (SQLite embedded default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hub.core.settings import ROOT, HubSettings, get_settings


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (a fresh checkout has no var/)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def postgres_connect_args(settings: HubSettings) -> dict[str, Any]:
    """libpq parameters that bound every wait on the network: a dead or silent database fails, never hangs.

    connect_timeout bounds opening a connection; keepalives notice a peer that vanished while we wait for
    it; tcp_user_timeout drops a connection whose sent data is never acknowledged; statement_timeout makes
    the server cancel a statement that runs too long. A database that acknowledges but never answers is
    caught by the client-side deadline of `DeadlineConnection`.
    """
    args: dict[str, Any] = {
        "connect_timeout": max(1, round(settings.database_connect_timeout_s)),
        "keepalives": 1,
        "keepalives_idle": settings.database_keepalives_idle_s,
        "keepalives_interval": settings.database_keepalives_interval_s,
        "keepalives_count": settings.database_keepalives_count,
    }
    if settings.database_tcp_user_timeout_s > 0:
        args["tcp_user_timeout"] = int(settings.database_tcp_user_timeout_s * 1000)
    if settings.database_statement_timeout_s > 0:
        args["options"] = f"-c statement_timeout={int(settings.database_statement_timeout_s * 1000)}"
    return args


def answer_deadline_s(settings: HubSettings) -> float | None:
    """How long the client waits for any one answer of the server: the server's own statement timeout
    (which cancels a slow statement cleanly) plus the connect timeout as grace; None without a statement timeout."""
    if settings.database_statement_timeout_s <= 0:
        return None
    return settings.database_statement_timeout_s + settings.database_connect_timeout_s


def _deadline_connection_class(deadline_s: float) -> type[Any]:
    import psycopg
    from psycopg import errors

    class DeadlineConnection(psycopg.Connection[Any]):
        """A psycopg connection that stops waiting for the server after `deadline_s` and closes itself.

        Every exchange with the server (execute, fetch, commit, rollback, the pool's ping) goes through
        `wait`; a server that accepts our packets but never answers (a hung host, a proxy that stopped
        forwarding) would otherwise block the run forever, since TCP keepalives see a healthy peer.
        """

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            try:
                return super().wait(gen, interval=interval, timeout=deadline_s if timeout is None else timeout)
            except errors._WaitTimeout:
                self.pgconn.finish()  # the protocol state is unknown: this connection is finished, the pool replaces it
                raise psycopg.OperationalError(
                    f"no answer from the database within {deadline_s:g} s "
                    "(DATABASE_STATEMENT_TIMEOUT_S + DATABASE_CONNECT_TIMEOUT_S): connection closed"
                ) from None

    return DeadlineConnection


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    ensure_sqlite_dir(url)
    settings = get_settings()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": settings.database_sqlite_busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets the CLI read while a flow writes; synchronous=NORMAL is still crash-safe in WAL.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if not url.startswith("postgresql+psycopg"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args=postgres_connect_args(settings),
    )
    deadline = answer_deadline_s(settings)
    if deadline is not None:
        connection_class = _deadline_connection_class(deadline)

        @event.listens_for(engine, "do_connect")
        def _connect_with_deadline(_dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
            return connection_class.connect(*cargs, **cparams)

    return engine


def lock_for_write(conn: Connection) -> None:
    """Serialise a read-then-write transaction, as `SELECT ... FOR UPDATE` of its row does on PostgreSQL.

    SQLite has no row locks, and Python's sqlite3 starts a transaction only at its first write: two
    transactions can read the same row before either writes, and both act on what they read. On SQLite this
    takes the database's write lock at once (`BEGIN IMMEDIATE`, the transaction's first statement), so a
    concurrent one waits (the busy timeout) and then reads what this one committed. Nothing on PostgreSQL:
    lock the row there (`with_for_update()`).
    """
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_Query = TypeVar("_Query", bound=Select[Any])


def for_update(conn: Connection, query: _Query, *, skip_locked: bool = False) -> _Query:
    """`query`, its rows locked for the rest of the transaction: `FOR UPDATE` on PostgreSQL (`SKIP LOCKED` with
    `skip_locked`: concurrent callers take different rows); on SQLite, which has no row locks, the database's write
    lock taken now (`lock_for_write`): a concurrent caller waits for this transaction and reads what it committed."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=skip_locked)
    lock_for_write(conn)
    return query


def rows_for_update(session: Session, query: Select[Any], *, skip_locked: bool = False) -> list[Any]:
    """The ORM rows `query` finds, locked for the rest of the transaction and read as last committed.

    PostgreSQL: `FOR UPDATE` (`SKIP LOCKED` with `skip_locked`: a row another transaction holds is left to it).
    SQLite has no row locks: the query first runs without one, and only when it finds rows is the database's
    write lock taken (`lock_for_write`) and the rows read again under it, so a concurrent writer's commit is
    what they are decided on. A caller with nothing to change (a successful run with no open error, the
    common case) then neither waits for another process's write transaction nor holds one up.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return list(session.scalars(query.with_for_update(skip_locked=skip_locked).execution_options(populate_existing=True)))
    if session.scalars(query).first() is None:
        return []
    lock_for_write(conn)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def get_engine() -> Engine:
    return engine_for(get_settings().database_url)


def session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    # Called from the CLI and flows: keep their logging as it is (alembic.ini's is for `alembic` itself).
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(revision: str = "heads", url: str | None = None) -> None:
    """Apply the Alembic migrations up to `revision`."""
    from alembic import command

    ensure_sqlite_dir(url or get_settings().database_url)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The database's revision; every head, comma-separated, while branches await their merge."""
    from alembic.runtime.migration import MigrationContext

    with engine_for(url or get_settings().database_url).connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) if heads else None
