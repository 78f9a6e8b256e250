"""A database that goes away, for real: a TCP proxy in front of PostgreSQL, a held write lock on SQLite.

PostgreSQL: `TcpProxy` listens on 127.0.0.1 and forwards to the server. `refuse()` resets every connection
(RST) and every new one; `silent()` keeps accepting but forwards nothing, either way (a hung host or a
partition behind a middlebox: TCP is acknowledged, nothing answers); `forward()` heals it.
SQLite: "down" is another connection holding the write lock (`database is locked`), the outage SQLite has.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import make_url

from hub.core.settings import reset_settings_cache


class TcpProxy:
    """127.0.0.1:<port> -> target host:port, with switchable faults; counts the connections it accepted."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.mode = "forward"
        self.accepted = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, name="db-proxy-accept", daemon=True).start()

    def forward(self) -> None:
        with self._lock:
            self.mode = "forward"
        self._flowing.set()

    def silent(self) -> None:
        """Accept and acknowledge, answer nothing: established connections stop flowing, new ones hang."""
        with self._lock:
            self.mode = "silent"
        self._flowing.clear()

    def refuse(self) -> None:
        """Reset every open connection and every new one (the server went down, or a firewall rejects)."""
        with self._lock:
            self.mode = "refuse"
            sockets, self._sockets = self._sockets, []
        self._flowing.set()
        for sock in sockets:
            _reset(sock)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                mode = self.mode
            if mode == "refuse":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="db-proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()  # silent: stop reading; the kernel still acknowledges what arrives
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _reset(sock: socket.socket) -> None:
    """Close with an RST, not a FIN: what a crashed server's host answers."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


@dataclass
class DatabaseOutage:
    """The test's database behind a switch: `down()` makes it unavailable the way its backend fails, `up()` heals it."""

    url: str
    backend: str
    proxy: TcpProxy | None = None
    sqlite_path: str | None = None
    _holder: sqlite3.Connection | None = field(default=None, repr=False)

    def down(self, how: str = "silent") -> None:
        if self.proxy is not None:
            self.proxy.silent() if how == "silent" else self.proxy.refuse()
            return
        assert self.sqlite_path is not None
        self._holder = sqlite3.connect(self.sqlite_path, isolation_level=None, timeout=5, check_same_thread=False)
        self._holder.execute("BEGIN IMMEDIATE")  # the write lock: every other writer gets "database is locked"

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.forward()
            return
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None


# Short enough for a test, long enough that a healthy statement never hits them.
OUTAGE_SETTINGS = {
    "DATABASE_CONNECT_TIMEOUT_S": "2",
    "DATABASE_STATEMENT_TIMEOUT_S": "1",
    "DATABASE_TCP_USER_TIMEOUT_S": "2",
    "DATABASE_KEEPALIVES_IDLE_S": "1",
    "DATABASE_KEEPALIVES_INTERVAL_S": "1",
    "DATABASE_KEEPALIVES_COUNT": "2",
    "DATABASE_SQLITE_BUSY_TIMEOUT_S": "0.5",
}
# The most a silent database may hold one database call: connect (2 s) + the answer deadline (1 s + 2 s).
SILENT_BOUND_S = 5.0 + 2.0


@contextmanager
def database_outage(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseOutage]:
    """The migrated test database, reached through a switchable fault, with short database timeouts."""
    from hub.core.db import engine_for

    for name, value in OUTAGE_SETTINGS.items():
        monkeypatch.setenv(name, value)
    proxy = None
    if db_url.startswith("postgresql"):
        url = make_url(db_url)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        outage = DatabaseOutage(
            url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), backend="postgresql", proxy=proxy
        )
    else:
        outage = DatabaseOutage(url=db_url, backend="sqlite", sqlite_path=db_url.split("///", 1)[1])
    monkeypatch.setenv("DATABASE_URL", outage.url)
    reset_settings_cache()
    engine_for.cache_clear()  # engines are built from the settings: these timeouts
    try:
        yield outage
    finally:
        outage.up()
        engine_for(outage.url).dispose()
        engine_for.cache_clear()
        monkeypatch.undo()
        reset_settings_cache()
        if proxy is not None:
            proxy.close()
