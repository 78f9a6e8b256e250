"""`drymix errors` and `drymix quarantine` as on-call and analysts run them: a real process, a real database."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import update

from connectors.core.errors import InvalidRequest, SyncFailed
from hub.core.db import get_engine, session_scope
from hub.core.models import IntegrationErrorRow, WebhookEvent
from hub.ingress.inbox import PendingEvent, write_batch
from hub.ledger.errors import error_events, get_error, record_error, record_validation_failure
from hub.ledger.loading import QuarantineRow, upsert_quarantine
from tests.hub.cli.test_cli import drymix as run_drymix

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4


def drymix(*args: str) -> subprocess.CompletedProcess[str]:
    return run_drymix(*args, env={"COLUMNS": "240"})  # wide enough that Rich does not fold table cells


def json_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def seed() -> tuple[int, int]:
    old = record_error(SyncFailed("old failure", code="OLD"), integration="sap", dataset="customers", unit={"kind": "sap.customers.batch", "batch": 2, "position": None})
    with session_scope() as session:
        session.execute(update(IntegrationErrorRow).where(IntegrationErrorRow.id == old).values(created_at=datetime.now(UTC) - timedelta(hours=3)))
    new = record_error(InvalidRequest("bad filter literal", status_code=400, code="/IWBEP/CM_MGW_RT/022"), integration="razorpay", dataset="payments")
    return old, new


def test_errors_list_filters_and_json_lines(db: str) -> None:
    old, new = seed()
    everything = drymix("errors", "list", "--json")
    assert everything.returncode == 0, everything.stderr
    rows = json_lines(everything.stdout)
    assert [r["id"] for r in rows] == [new, old]
    assert rows[1]["unit"]["kind"] == "sap.customers.batch" and rows[1]["status"] == "pending" and rows[1]["max_attempts"] > 0
    recent = json_lines(drymix("errors", "list", "--json", "--since", "1h").stdout)
    assert [r["id"] for r in recent] == [new]
    sap = json_lines(drymix("errors", "list", "--json", "--integration", "sap", "--status", "pending,retrying").stdout)
    assert [r["id"] for r in sap] == [old]
    by_category = json_lines(drymix("errors", "list", "--json", "--category", "INVALID_REQUEST", "--dataset", "payments").stdout)
    assert [r["id"] for r in by_category] == [new]
    table = drymix("errors", "list", "--open")
    assert table.returncode == 0 and "integration_errors (2 shown)" in table.stdout and "SYNC_FAILED" in table.stdout
    bad_age = drymix("errors", "list", "--since", "yesterday")
    assert bad_age.returncode == EXIT_USAGE and "unit" in bad_age.stderr


def test_errors_show_resolve_and_escalate_with_audit_and_exit_codes(db: str) -> None:
    old, new = seed()
    shown = drymix("errors", "show", str(old))
    assert shown.returncode == 0, shown.stderr
    assert f"integration_errors #{old}" in shown.stdout and f"drymix errors retry {old}" in shown.stdout
    assert "audit trail" in shown.stdout and "retry_scheduled" in shown.stdout
    detail = json.loads(drymix("errors", "show", str(old), "--json").stdout)
    assert detail["error"]["id"] == old and [e["action"] for e in detail["events"]] == ["recorded", "retry_scheduled"]
    assert detail["rerun"] and "SAP customers" in detail["rerun"]
    assert drymix("errors", "show", "999999").returncode == EXIT_NOT_FOUND

    missing_reason = drymix("errors", "resolve", str(new))
    assert missing_reason.returncode == EXIT_USAGE
    resolved = drymix("errors", "resolve", str(new), "--reason", "filter fixed in config", "--by", "asha", "--json")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["status"] == "resolved"
    assert (error_events(new)[-1].actor, error_events(new)[-1].reason) == ("asha", "filter fixed in config")
    again = drymix("errors", "resolve", str(new), "--reason", "twice")
    assert again.returncode == EXIT_CONFLICT and "already resolved" in again.stderr

    escalated = drymix("errors", "escalate", str(old), "--reason", "SAP gateway down for a day", "--no-notify", "--json")
    assert escalated.returncode == 0, escalated.stderr
    assert json.loads(escalated.stdout)["error"]["status"] == "escalated"
    last = error_events(old)[-1]
    assert last.action == "escalated" and last.reason == "SAP gateway down for a day" and last.actor  # the OS user by default
    assert drymix("errors", "escalate", str(old), "--reason", "x", "--no-notify").returncode == EXIT_CONFLICT


def test_errors_retry_reruns_the_failed_webhook_event(db: str) -> None:
    from tests.flows.test_process_webhooks import event_body

    body = event_body("payment.captured", status="captured", created_at=1_764_000_100)
    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent("razorpay", "evt_cli", "payment.captured", body, {}, "127.0.0.1", datetime.now(UTC))], [])
        inbox_id = conn.execute(WebhookEvent.__table__.select()).first().id  # type: ignore[attr-defined,union-attr]
        conn.execute(update(WebhookEvent).values(status="failed", last_error="deadlock"))
    error_id = record_error(
        SyncFailed("apply_event: deadlock"),
        integration="razorpay",
        dataset="payments",
        unit={"kind": "webhooks.event", "provider": "razorpay", "event_id": "evt_cli", "inbox_id": inbox_id, "event_type": "payment.captured"},
    )
    result = drymix("errors", "retry", str(error_id), "--by", "asha", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "resolved" and outcome["summary"]["result"] == "applied"
    row = get_error(error_id)
    assert (row.status, row.resolved_by, row.attempts) == ("resolved", "asha", 1)
    assert drymix("errors", "retry", str(error_id)).returncode == EXIT_CONFLICT  # already resolved
    no_unit = record_error(SyncFailed("whole run"), integration="sap", dataset="customers")
    refused = drymix("errors", "retry", str(no_unit))
    assert refused.returncode == EXIT_CONFLICT and "no rerunnable unit" in refused.stderr


def test_quarantine_list_show_and_discard(db: str) -> None:
    raw = {"BusinessPartner": "1000042", "BusinessPartnerFullName": "Test Partner", "to_BusinessPartnerAddress": {"results": []}}
    failures = [{"expectation": "expect_column_values_to_match_regex", "column": "email", "kwargs": {"regex": "x"}, "value": "no-email"}]
    with get_engine().begin() as conn:
        upsert_quarantine(conn, "sap", "customers", [QuarantineRow("1000042", raw, {"customer_id": "1000042", "email": "no-email"}, failures)], "run-q")
    error_id = record_validation_failure(
        integration="sap", dataset="customers", flow_run_id="run-q", rows_checked=10, rows_quarantined=1,
        failures_by_expectation={"expect_column_values_to_match_regex(email)": 1}, sample=[], report_path=None,
    )
    listed = drymix("quarantine", "list", "--json", "--integration", "sap")
    assert listed.returncode == 0, listed.stderr
    [row] = json_lines(listed.stdout)
    assert row["record_key"] == "1000042" and row["error_id"] == error_id and row["failed_expectations"] == failures
    table = drymix("quarantine", "list", "--error", str(error_id))
    assert "1000042" in table.stdout and "match_regex(email)='no-email'" in table.stdout
    shown = drymix("quarantine", "show", str(row["id"]))
    assert shown.returncode == 0 and "Test Partner" in shown.stdout and "failed expectations" in shown.stdout
    assert drymix("quarantine", "show", "424242").returncode == EXIT_NOT_FOUND

    assert drymix("quarantine", "replay").returncode == EXIT_USAGE  # say which rows
    assert drymix("quarantine", "discard", str(row["id"])).returncode == EXIT_USAGE  # a reason is required
    discarded = drymix("quarantine", "discard", str(row["id"]), "--reason", "duplicate test partner", "--by", "priya", "--json")
    assert discarded.returncode == 0, discarded.stderr
    assert json.loads(discarded.stdout) == {"discarded": 1, "discarded_ids": [row["id"]], "errors_resolved": [error_id]}
    assert drymix("quarantine", "replay", "--error", str(error_id)).returncode == EXIT_NOT_FOUND  # nothing open any more
    kept = json_lines(drymix("quarantine", "list", "--json", "--status", "discarded").stdout)
    assert kept[0]["resolved_by"] == "priya" and "duplicate test partner" in kept[0]["resolution_note"]
    assert get_error(error_id).status == "resolved"
    assert orjson.loads(orjson.dumps(kept[0]["raw_record"])) == raw  # kept as it came


def test_a_queued_retry_is_keyed_by_the_error_row_and_its_attempt_not_by_the_id_alone() -> None:
    """Ids start again in a new or restored database the Prefect server outlived: error #1 of today is not error
    #1 of last month, whose queued rerun Prefect would otherwise answer with (already finished)."""
    from datetime import UTC, datetime

    from hub.runtime.jobs import retry_job_key

    then, now = datetime(2026, 11, 2, 8, 0, tzinfo=UTC), datetime(2026, 12, 5, 9, 30, 0, 123456, tzinfo=UTC)
    assert retry_job_key(1, now, 0) == "1@20261205T093000123456/attempt-1"
    assert retry_job_key(1, now, None) == retry_job_key(1, now, 0)  # asked twice before it ran: one run
    assert retry_job_key(1, now, 1) == "1@20261205T093000123456/attempt-2"  # after it ran, the next is new
    assert retry_job_key(1, then, 0) != retry_job_key(1, now, 0)
