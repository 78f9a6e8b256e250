"""Shared set-up for the queued-rerun tests: real faults (a database that refuses writes, a sandbox answering 503
to chosen requests), and a queued rerun made due now instead of in a minute."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from hub.core.db import get_engine, session_scope
from hub.core.models import IntegrationErrorRow
from sandbox.core import Simulator, as_transport


def make_due(error_id: int) -> None:
    with session_scope() as session:
        session.execute(
            update(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id).values(next_retry_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def error_rows(integration: str, dataset: str | None = None) -> list[IntegrationErrorRow]:
    with session_scope() as session:
        query = select(IntegrationErrorRow).where(IntegrationErrorRow.integration == integration).order_by(IntegrationErrorRow.id)
        if dataset is not None:
            query = query.where(IntegrationErrorRow.dataset == dataset)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


@contextmanager
def refused_inserts(table: str, message: str, when: str | None = None) -> Iterator[None]:
    """Until the block ends, the database refuses INSERTs into `table` (those matching the SQL condition `when`,
    e.g. "NEW.file_name = 'x.csv'"): a trigger, the same real error on SQLite and PostgreSQL."""
    name = f"refuse_insert_{table}"
    text = message.replace("'", "''")
    with get_engine().begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{text}'; END $$")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW {f'WHEN ({when}) ' if when else ''}EXECUTE FUNCTION {name}()"
            )
        else:
            conn.exec_driver_sql(f"CREATE TRIGGER {name} BEFORE INSERT ON {table} {f'WHEN {when} ' if when else ''}BEGIN SELECT RAISE(ABORT, '{text}'); END")
    try:
        yield
    finally:
        with get_engine().begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if conn.dialect.name == "postgresql" else ""))
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")


class FailingRequests(httpx.BaseTransport):
    """A sandbox in-process; while `failing`, every request `when` picks gets the sandbox's own 503 fault switch
    (so retries fail too). Records every request it saw."""

    def __init__(self, sandbox: Simulator, when: Callable[[httpx.Request], bool], *, failing: bool = True) -> None:
        self.sandbox = sandbox
        self.inner = as_transport(sandbox)
        self.when = when
        self.failing = failing
        self.failed = 0
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failing and self.when(request):
            self.failed += 1
            self.sandbox.faults.update({"error_5xx_next_n": 1, "error_5xx_status": 503})
        return self.inner.handle_request(request)

    def seen(self, method: str, path_part: str) -> list[str]:
        return [str(r.url) for r in self.requests if r.method == method and path_part in r.url.path]


def unit_of(row: IntegrationErrorRow) -> dict[str, Any]:
    assert row.unit is not None, f"integration_errors #{row.id} has no unit"
    return dict(row.unit)
