"""Database outage drills: the ledger survives its database, and a dead or silent database fails a run in bounded
time, classified DATABASE_UNAVAILABLE. PostgreSQL is reached through a TCP proxy that refuses or goes silent;
SQLite's outage is a held write lock (tests/db_outage.py)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from sqlalchemy import select, text

from connectors.core.errors import ServerError, SyncFailed, classify_exception
from connectors.core.redact import register_secret
from hub.core.db import get_engine, session_scope
from hub.core.models import Customer, IntegrationErrorRow
from hub.core.settings import get_settings
from hub.ledger.errors import ErrorSpooled, error_events, record_error, write_spooled_error
from hub.ledger.retry_units import SAP_CUSTOMERS_BATCH
from hub.ledger.spool import drain_spool, open_spool, spool_path, waiting
from sandbox.core import running_server
from sandbox.sap import SapSandbox
from tasks.load import LOAD_RETRY_POLICY, load_retry_delays
from tests.db_outage import SILENT_BOUND_S, database_outage
from tests.hub.cli.test_cli import drymix

SECRET = "spool-must-not-keep-this-4711"
UNIT = {"kind": SAP_CUSTOMERS_BATCH, "batch": 3, "position": None, "mode": "full", "cursor": None, "batch_pages": 2}


def error_rows() -> list[IntegrationErrorRow]:
    with session_scope() as session:
        rows = list(session.scalars(select(IntegrationErrorRow).order_by(IntegrationErrorRow.id)))
        session.expunge_all()
        return rows


def test_load_retries_span_the_configured_window_with_growing_jittered_delays() -> None:
    delays = load_retry_delays(60.0, rng=random.Random(7))
    assert sum(delays) == pytest.approx(60.0, abs=0.01)
    assert delays[:4] == sorted(delays[:4]) and delays[0] >= 1.0 and delays[1] >= 2.0  # 1 s, 2 s, 4 s ... plus jitter
    assert max(delays) <= LOAD_RETRY_POLICY.max_delay_ms / 1000
    assert load_retry_delays(60.0, rng=random.Random(8)) != delays  # jittered: runs that failed together spread out
    assert load_retry_delays(0.0) == []


def test_connections_carry_the_configured_timeouts(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with database_outage(db, monkeypatch) as outage, get_engine().connect() as conn:
        if outage.backend == "postgresql":
            shown = {name: conn.execute(text(f"SHOW {name}")).scalar_one() for name in ("statement_timeout", "tcp_user_timeout", "tcp_keepalives_idle")}
            assert shown["statement_timeout"] == "1s"
            info = conn.connection.dbapi_connection.info  # type: ignore[union-attr]
            params = info.get_parameters()
            assert params["connect_timeout"] == "2" and params["keepalives"] == "1" and params["tcp_user_timeout"] == "2000"
            assert params["keepalives_idle"] == "1" and params["keepalives_interval"] == "1" and params["keepalives_count"] == "2"
            # statement_timeout: the server cancels a statement that runs too long, classified DATABASE_UNAVAILABLE.
            with pytest.raises(Exception) as cancelled:
                conn.execute(text("SELECT pg_sleep(3)"))
            assert type(cancelled.value.orig).__name__ == "QueryCanceled"  # type: ignore[attr-defined]
            assert classify_exception(cancelled.value).code == "DATABASE_UNAVAILABLE"
        else:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 500


def test_a_silent_database_fails_within_the_timeout_and_the_failure_waits_in_the_spool_until_it_is_back(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_secret(SECRET)
    with database_outage(db, monkeypatch) as outage:
        with get_engine().connect() as conn:
            conn.execute(select(1))  # a pooled connection, established while the database answered
        outage.down("silent")
        started = time.monotonic()
        with pytest.raises(Exception) as silent:
            with get_engine().begin() as conn:
                conn.execute(IntegrationErrorRow.__table__.delete().where(IntegrationErrorRow.id == -1))
        assert time.monotonic() - started < SILENT_BOUND_S
        assert classify_exception(silent.value).code == "DATABASE_UNAVAILABLE"

        failed_at = time.monotonic()
        original = ServerError(f"load: the database is unavailable (password={SECRET})", code="DATABASE_UNAVAILABLE", operation="load")
        with pytest.raises(ErrorSpooled) as spooled:
            record_error(original, integration="sap", dataset="customers", flow_run_id="run-1", unit=UNIT, retry_count=2)
        assert time.monotonic() - failed_at < SILENT_BOUND_S
        assert spooled.value.category == original.category and spooled.value.code == "DATABASE_UNAVAILABLE"
        assert "error spool" in spooled.value.explain() and str(spool_path()) in spooled.value.explain()
        assert waiting() == 1
        on_disk = spool_path().read_bytes()
        assert SECRET.encode() not in on_disk and b"sap.customers.batch" in on_disk

        outage.up()
        listed = drymix("errors", "list", "--json", env={"DATABASE_URL": outage.url, "COLUMNS": "240"})
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert "written from the error spool" in listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        assert [(r["error_type"], r["error_code"], r["unit"]["kind"], r["flow_run_id"]) for r in rows] == [
            ("SERVER_ERROR", "DATABASE_UNAVAILABLE", SAP_CUSTOMERS_BATCH, "run-1")
        ]
        assert rows[0]["next_retry_at"] is not None and rows[0]["max_attempts"] == get_settings().error_retry_max_attempts
        events = error_events(rows[0]["id"])
        assert [e.action for e in events] == ["recorded", "retry_scheduled"]
        assert events[0].details is not None and events[0].details["spooled"]["spool_id"]
        assert SECRET not in json.dumps(rows) and waiting() == 0


def test_a_refused_database_is_retried_across_the_window_then_the_load_fails_classified(
    db: str, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    import pandas as pd
    from prefect import flow

    from hub.ledger.loading import BatchLoad
    from tasks.load import load_batch_task

    @flow(name="load-during-an-outage")
    def load_one() -> Any:
        return load_batch_task(
            # No rows, but a watermark to write: a write transaction (the one SQLite's held lock refuses).
            BatchLoad(integration="sap", dataset="customers", table=Customer.__table__, key=["customer_id"], rows=pd.DataFrame(),  # type: ignore[arg-type]
                      cursor={"last_change_date": "2026-01-01"})
        )

    window = get_settings().database_retry_window_s
    with database_outage(db, monkeypatch) as outage:
        outage.down("refuse")
        before = outage.proxy.accepted if outage.proxy else 0
        started = time.monotonic()
        with pytest.raises(Exception) as failed:
            load_one()
        elapsed = time.monotonic() - started
    assert classify_exception(failed.value).code == "DATABASE_UNAVAILABLE"
    assert window <= elapsed < window + 3 * SILENT_BOUND_S
    if outage.proxy is not None:
        assert outage.proxy.accepted - before >= 1 + len(load_retry_delays(window))  # the first attempt and every retry


def test_a_spooled_failure_is_written_once_even_when_a_drainer_died_before_removing_it(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database_outage(db, monkeypatch) as outage:
        outage.down("refuse" if outage.proxy else "silent")
        with pytest.raises(ErrorSpooled):
            record_error(SyncFailed("first"), integration="sap", dataset="customers", unit=UNIT)
        with pytest.raises(ErrorSpooled):
            record_error(SyncFailed("second"), integration="sap", dataset="customers")
        outage.up()
        first = open_spool().pending(1)[0]
        written = write_spooled_error(first.payload)  # committed, then the drainer died before removing the entry
        result = drain_spool()
        assert result.already_written == 1 and len(result.written) == 1 and result.waiting == 0 and result.error is None
        rows = error_rows()
        assert [r.error_message for r in rows] == ["first", "second"] and rows[0].id == written
        # A failure recorded when the database is back writes what is still spooled too.
        outage.down("refuse" if outage.proxy else "silent")
        with pytest.raises(ErrorSpooled):
            record_error(SyncFailed("third"), integration="sap", dataset="customers")
        outage.up()
        record_error(SyncFailed("fourth"), integration="sap", dataset="customers")
        assert [r.error_message for r in error_rows()] == ["first", "second", "fourth", "third"] and waiting() == 0


def test_sap_sync_cli_when_the_database_goes_silent_mid_run_says_where_the_failure_is_and_it_reaches_the_ledger(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drill end to end: `drymix sync sap-customers` in its own process; the database goes silent when SAP is
    first asked for partners. The run fails in bounded time with DATABASE_UNAVAILABLE, the CLI says the failure
    is in the error spool (not in `drymix errors list`), and `drymix errors list` writes it once the database is back."""
    sandbox = SapSandbox(partners=300, seed=11, max_page_size=100)
    with database_outage(db, monkeypatch) as outage, running_server(sandbox) as base:
        dispatch = sandbox.dispatch

        def down_at_first_read(req: Any) -> Any:
            if "A_BusinessPartner" in req.path and not getattr(sandbox, "_outage_started", False):
                sandbox._outage_started = True  # type: ignore[attr-defined]
                outage.down("silent")
            return dispatch(req)

        sandbox.dispatch = down_at_first_read  # type: ignore[method-assign]
        env = {"SAP_BASE_URL": f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/", "DATABASE_URL": outage.url, "COLUMNS": "240"}
        started = time.monotonic()
        failed = drymix("sync", "sap-customers", env=env, timeout=180)
        elapsed = time.monotonic() - started
        assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-3000:]
        assert "DATABASE_UNAVAILABLE" in failed.stderr
        assert "error spool" in failed.stderr and "for the recorded error" not in failed.stderr
        assert elapsed < 120
        assert waiting() == 1

        outage.up()
        listed = drymix("errors", "list", "--json", env={"DATABASE_URL": outage.url, "COLUMNS": "240"})
        assert listed.returncode == 0, listed.stderr[-2000:]
        rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        assert len(rows) == 1 and rows[0]["error_code"] == "DATABASE_UNAVAILABLE" and rows[0]["unit"]["kind"] == SAP_CUSTOMERS_BATCH
        assert rows[0]["unit"]["batch"] == 1 and rows[0]["next_retry_at"] is not None
        assert waiting() == 0
