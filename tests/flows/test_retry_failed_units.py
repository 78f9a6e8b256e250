"""Queued reruns rerun only the failed unit: one SAP batch, one webhook event; a failed run names its error row."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from hub.core.db import get_engine, session_scope
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord, WebhookEvent
from hub.ledger.errors import error_events, get_error
from hub.ledger.loading import read_cursor
from sandbox.core import as_transport
from sandbox.sap import SapSandbox
from tests.error_support import error_rows, refused_inserts

pytestmark = pytest.mark.usefixtures("prefect_harness")

PARTNERS = 1200  # 200-row pages (the server's cap), 2 pages a batch: batches of 400, three of them


@pytest.fixture
def sap(db: str) -> Iterator[SapSandbox]:
    yield SapSandbox(partners=PARTNERS, seed=11, max_page_size=200)


class CountingTransport(httpx.BaseTransport):
    """The sandbox in-process, counting API requests; from request `fail_from` on, the sandbox's own fault
    switch answers 503 to everything (the outage that ends the run in the middle of a batch)."""

    def __init__(self, sandbox: SapSandbox, fail_from: int | None = None) -> None:
        self.sandbox = sandbox
        self.inner = as_transport(sandbox)
        self.fail_from = fail_from
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        if self.fail_from is not None and len(self.urls) == self.fail_from:
            self.sandbox.faults.update({"error_5xx_every_n": 1, "error_5xx_status": 503})
        return self.inner.handle_request(request)


def customers() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


def quarantine_keys() -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(QuarantinedRecord.record_key).where(QuarantinedRecord.status == "quarantined")).scalars())


def make_due(error_id: int) -> None:
    with session_scope() as session:
        session.execute(update(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id).values(next_retry_at=datetime.now(UTC) - timedelta(seconds=1)))


def test_retry_flow_reruns_only_the_failed_sap_batch_and_duplicates_nothing(sap: SapSandbox) -> None:
    from flows.retry_failed_units import retry_failed_units
    from flows.sync_sap_customers import sync_sap_customers

    # Request 1 is the $count, requests 2-5 are batches 1 and 2; batch 3 starts at request 6.
    failing = CountingTransport(sap, fail_from=6)
    with use_transport("sap", failing), pytest.raises(Exception, match="SERVER_ERROR") as raised:
        sync_sap_customers(batch_pages=2)
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_type == "SERVER_ERROR")).all()
    # The failed run names its error row and the command that reruns it (Prefect's state message is str(exc)).
    assert f"integration_errors #{row.id}" in str(raised.value) and f"drymix errors retry {row.id}" in str(raised.value)
    assert row.unit is not None and row.unit["kind"] == "sap.customers.batch" and row.unit["batch"] == 3
    assert row.status == "pending" and row.next_retry_at is not None and row.max_attempts > 0
    loaded_before = customers()
    quarantined_before = quarantine_keys()
    assert 0 < loaded_before < PARTNERS
    with get_engine().connect() as conn:
        assert read_cursor(conn, "sap", "customers") is None  # the watermark never runs ahead of the data

    # SAP recovers; the queued rerun comes due.
    sap.faults.update({"error_5xx_every_n": 0})
    make_due(row.id)
    recovered = CountingTransport(sap)
    with use_transport("sap", recovered):
        summary = retry_failed_units()
    assert (summary["due"], summary["resolved"]) == (1, 1)
    [outcome] = summary["outcomes"]
    # Only batch 3 was read again (after the $count of what remains): its two pages, nothing of batches 1 and 2.
    assert len(recovered.urls) == 3 and "/$count" in recovered.urls[0]
    assert outcome["summary"]["extracted"] == 400 and outcome["summary"]["batches"] == 1
    assert outcome["summary"]["source_count"] == 400 == outcome["summary"]["distinct_read"]
    assert recovered.urls[1] == failing.urls[5]  # the rerun starts where batch 3 started

    # Everything is loaded once: each partner is either a customer or one open quarantine row.
    after_keys = quarantine_keys()
    assert len(after_keys) == len(set(after_keys))
    assert set(quarantined_before) <= set(after_keys)
    assert customers() + len(after_keys) == PARTNERS
    assert customers() == loaded_before + outcome["summary"]["valid"]
    with get_engine().connect() as conn:
        assert read_cursor(conn, "sap", "customers") == {"last_change_date": outcome["summary"]["watermark"]}
    resolved = get_error(row.id)
    assert resolved.status == "resolved" and resolved.attempts == 1
    assert [e.action for e in error_events(row.id)][:3] == ["recorded", "retry_scheduled", "retry_started"]
    assert error_events(row.id)[-1].action == "resolved"

    # Nothing is due any more: the next scheduled run of the retry flow does nothing.
    assert retry_failed_units()["due"] == 0


def test_a_rerun_that_fails_again_keeps_one_error_row_and_reschedules(sap: SapSandbox) -> None:
    from flows.retry_failed_units import retry_failed_units
    from flows.sync_sap_customers import sync_sap_customers

    with use_transport("sap", CountingTransport(sap, fail_from=5)), pytest.raises(Exception, match="SERVER_ERROR"):
        sync_sap_customers(batch_pages=2)
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow)).all()
    make_due(row.id)
    with use_transport("sap", CountingTransport(sap)):  # the 503 switch is still on
        summary = retry_failed_units()
    assert (summary["due"], summary["rescheduled"]) == (1, 1)
    with Session(get_engine()) as session:
        rows = session.scalars(select(IntegrationErrorRow)).all()
    assert len(rows) == 1  # the rerun's failure updates the row, it does not add one
    again = get_error(row.id)
    assert again.status == "retrying" and again.attempts == 1 and again.next_retry_at is not None
    assert again.next_retry_at > datetime.now(UTC)
    assert [e.action for e in error_events(row.id)][-2:] == ["retry_started", "retry_failed"]


def test_failed_sap_run_state_and_artifact_name_the_error_row(sap: SapSandbox) -> None:
    from prefect.client.orchestration import get_client

    from flows.sync_sap_customers import sync_sap_customers

    sap.faults.update({"expire_tokens": True})
    with use_transport("sap", as_transport(sap)):
        state = sync_sap_customers(return_state=True)
    assert state.is_failed()
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow)).all()
    assert row.error_type == "AUTHENTICATION_FAILED" and row.status == "escalated"
    assert f"integration_errors #{row.id}" in (state.message or "")
    assert f"drymix errors retry {row.id}" in (state.message or "")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    failure = [a for a in artifacts if a.key == "sap-customers-failure" and a.flow_run_id == state.state_details.flow_run_id]
    assert failure and f"integration_errors #{row.id}" in str(failure[0].data)
    assert "sandbox-secret" not in str(failure[0].data)


def _store(event_id: str, body: bytes) -> None:
    from hub.ingress.inbox import PendingEvent, write_batch

    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent("razorpay", event_id, "payment.captured", body, {}, "127.0.0.1", datetime.now(UTC))], [])


def test_retry_flow_reapplies_just_the_failed_webhook_event(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.process_webhooks as pw
    from flows.retry_failed_units import retry_failed_units
    from tests.flows.test_process_webhooks import event_body, payment

    _store("evt_ok", event_body("payment.authorized", status="authorized", created_at=1_764_000_100, order="order_Other000000001", payment="pay_Other0000000001"))
    _store("evt_boom", event_body("payment.captured", status="captured", created_at=1_764_000_200))
    real_apply = pw.APPLIERS["razorpay"]
    applied: list[str] = []
    broken = {"trigger": True}

    def flaky(conn: Any, event: Any) -> str:
        applied.append(event.event_id)
        if event.event_id == "evt_boom" and broken["trigger"]:
            raise RuntimeError("deadlock in a trigger of the payments table")
        return real_apply[1](conn, event)

    monkeypatch.setitem(pw.APPLIERS, "razorpay", (real_apply[0], flaky))
    summary = pw.process_webhooks()
    assert (summary["applied"], summary["failed"]) == (1, 1)
    [error_id] = summary["error_ids"]
    row = get_error(error_id)
    assert row.error_type == "SYNC_FAILED" and row.unit is not None
    assert (row.unit["kind"], row.unit["event_id"]) == ("webhooks.event", "evt_boom")
    assert row.status == "pending" and row.next_retry_at is not None

    broken["trigger"] = False  # the DBA fixed the trigger
    make_due(error_id)
    applied.clear()
    result = retry_failed_units()
    assert result["resolved"] == 1
    assert applied == ["evt_boom"]  # only the failed event, not the whole inbox
    assert payment()["payment_status"] == "captured"
    with get_engine().connect() as conn:
        statuses = dict(conn.execute(select(WebhookEvent.event_id, WebhookEvent.status)).all())
    assert statuses == {"evt_ok": "processed", "evt_boom": "processed"}
    assert get_error(error_id).status == "resolved"


def test_a_failed_webhook_drain_names_its_error_row_and_the_next_good_run_resolves_it(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.process_webhooks as pw

    real = pw.apply_batch

    def broken(batch_size: int) -> Any:
        raise RuntimeError("relation webhook_events is locked by a migration")

    monkeypatch.setattr(pw, "apply_batch", broken)
    state = pw.process_webhooks(return_state=True)
    assert state.is_failed()
    with Session(get_engine()) as session:
        [row] = session.scalars(select(IntegrationErrorRow)).all()
    assert (row.integration, row.dataset, row.error_type) == ("webhooks", "webhook_events", "SYNC_FAILED")
    assert f"integration_errors #{row.id}" in (state.message or "") and "drymix webhooks process" in (state.message or "")
    assert row.next_retry_at is None  # the schedule (every minute) is its retry, not the queue

    monkeypatch.setattr(pw, "apply_batch", real)
    pw.process_webhooks()
    resolved = get_error(row.id)
    assert resolved.status == "resolved" and resolved.resolved_by == "flow:process-webhooks"


def test_a_replayed_event_that_now_applies_resolves_its_error_row(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.process_webhooks as pw
    from hub.ingress.inbox import replay_event
    from tests.flows.test_process_webhooks import event_body

    _store("evt_fix", event_body("payment.captured", status="captured", created_at=1_764_000_300))
    real_apply = pw.APPLIERS["razorpay"]

    def refuse(conn: Any, event: Any) -> str:
        raise ValueError("unknown payment method 'emi_cardless'")  # refused as INVALID_REQUEST: not queued

    monkeypatch.setitem(pw.APPLIERS, "razorpay", (real_apply[0], refuse))
    [error_id] = pw.process_webhooks()["error_ids"]
    assert get_error(error_id).error_type == "INVALID_REQUEST" and get_error(error_id).next_retry_at is None

    monkeypatch.setitem(pw.APPLIERS, "razorpay", real_apply)  # the mapping learnt the method
    assert replay_event("evt_fix", provider="razorpay") == 1
    assert pw.process_webhooks()["applied"] == 1
    row = get_error(error_id)
    assert row.status == "resolved" and row.resolved_by == "flow:process-webhooks"


@pytest.fixture
def two_attempts(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("ERROR_RETRY_MAX_ATTEMPTS", "2")
    reset_settings_cache()
    yield
    monkeypatch.undo()
    reset_settings_cache()


def test_a_unit_that_keeps_failing_is_escalated_when_its_reruns_are_exhausted(two_attempts: None, tmp_path: Path) -> None:
    """Shared by every kind: the rerun's failure updates the one row, backs off, then escalates and notifies."""
    from flows.collect_lab_results import collect_lab_results
    from flows.retry_failed_units import retry_failed_units
    from hub.ledger.errors import due_error_ids
    from hub.ledger.retry_units import rerun
    from sandbox.lab import LabSandbox

    drop = tmp_path / "lab_drop"
    drop.mkdir()
    session = LabSandbox(drop_dir=drop, seed=51).test_session()
    past = time.time() - 30
    os.utime(drop / session.file_name, (past, past))  # settled
    with refused_inserts("lab_exports", "lab_exports: tablespace full"):
        with pytest.raises(Exception, match="1 lab export"):
            collect_lab_results(drop_dir=str(drop))
        (row,) = error_rows("lab")
        assert (row.unit or {}).get("kind") == "lab.lab_results.file" and row.max_attempts == 2
        for attempt, status in ((1, "retrying"), (2, "escalated")):
            make_due(row.id)
            summary = retry_failed_units()
            [outcome] = summary["outcomes"]
            assert (outcome["attempt"], outcome["status"]) == (attempt, status) and "tablespace full" in outcome["error"]
    escalated = get_error(row.id)
    assert escalated.status == "escalated" and escalated.next_retry_at is None and escalated.attempts == 2
    assert len(error_rows("lab")) == 1  # each failed rerun updated the row; none added one
    reasons = [(e.action, e.reason or "") for e in error_events(row.id)]
    assert [a for a, _ in reasons][-3:] == ["retry_failed", "escalated", "notified"]
    assert "retries exhausted (2 of 2)" in reasons[-2][1]
    assert due_error_ids() == []  # the queue leaves an escalated unit to a person

    # On-call fixed the database: a manual rerun of the same unit loads the file and closes the error.
    assert rerun(row.id, by="asha", manual=True).status == "resolved"
    assert (drop / "processed" / session.file_name).exists() and get_error(row.id).resolved_by == "asha"
