"""The integration_errors lifecycle: every path, each change audited, escalations notified over HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from connectors.core.errors import AuthenticationFailed, InvalidRequest, ServerError, SyncFailed
from hub.core.db import session_scope
from hub.core.models import IntegrationErrorRow
from hub.core.settings import reset_settings_cache
from hub.ledger.errors import (
    ErrorStateConflict,
    claim_for_rerun,
    due_error_ids,
    error_events,
    escalate_error,
    get_error,
    list_errors,
    parse_age,
    record_error,
    resolve_error,
)
from hub.ledger.retry_units import UnitFailed, register_rerun, rerun
from tests.hub.ledger.notify_sink import Sink, slack_sink

KIND = "test.widgets.page"
CALLS: list[dict[str, Any]] = []
BEHAVIOUR: dict[str, Any] = {"fail": None}


@register_rerun(KIND, description="test: rerun one page of widgets")
def _rerun_widgets_page(claim: Any) -> Mapping[str, Any]:
    CALLS.append(dict(claim.unit))
    failure = BEHAVIOUR["fail"]
    if failure is not None:
        raise failure
    return {"page": claim.unit["page"], "loaded": 10}


@pytest.fixture
def workflow(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    CALLS.clear()
    BEHAVIOUR["fail"] = None
    monkeypatch.setenv("ERROR_RETRY_MAX_ATTEMPTS", "3")
    reset_settings_cache()
    yield
    monkeypatch.undo()
    reset_settings_cache()


@pytest.fixture
def sink(workflow: None, tmp_path: Path) -> Iterator[Sink]:
    with slack_sink(tmp_path) as s:
        yield s


def make_due(error_id: int) -> None:
    with session_scope() as session:
        session.execute(
            update(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id).values(next_retry_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def actions(error_id: int) -> list[tuple[str, str | None, str | None]]:
    return [(e.action, e.from_status, e.to_status) for e in error_events(error_id)]


def failed_page(page: int = 7) -> int:
    return record_error(
        SyncFailed("widgets page could not be loaded", code="BOOM", operation="load"),
        integration="widgets",
        dataset="widgets",
        flow_run_id="run-1",
        unit={"kind": KIND, "page": page},
    )


def test_sync_failed_unit_is_queued_with_backoff_and_a_successful_rerun_resolves_it(workflow: None) -> None:
    error_id = failed_page()
    row = get_error(error_id)
    assert row.status == "pending" and row.max_attempts == 3 and row.attempts == 0
    assert row.next_retry_at is not None and row.next_retry_at > datetime.now(UTC) + timedelta(seconds=50)  # base 60 s
    assert due_error_ids() == []  # not due yet: nothing reruns early
    assert rerun(error_id, by="flow:retry-failed-units").status == "skipped" and CALLS == []

    make_due(error_id)
    assert due_error_ids() == [error_id]
    outcome = rerun(error_id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.attempt == 1
    assert CALLS == [{"kind": KIND, "page": 7}]  # exactly the failed unit, once
    row = get_error(error_id)
    assert (row.status, row.resolved_by, row.attempts, row.next_retry_at) == ("resolved", "flow:retry-failed-units", 1, None)
    assert actions(error_id) == [
        ("recorded", None, "pending"),
        ("retry_scheduled", "pending", "pending"),
        ("retry_started", "pending", "retrying"),
        ("resolved", "retrying", "resolved"),
    ]
    events = error_events(error_id)
    assert events[0].actor == "flow-run:run-1" and "BOOM" in (events[0].reason or "")
    assert events[-1].details == {"page": 7, "loaded": 10}


def test_failing_reruns_back_off_then_escalate_and_notify(sink: Sink) -> None:
    error_id = failed_page(3)
    BEHAVIOUR["fail"] = ServerError("still down", code="HTTP_503", status_code=503)
    delays = []
    for attempt in (1, 2):
        make_due(error_id)
        before = datetime.now(UTC)
        outcome = rerun(error_id, by="flow:retry-failed-units")
        assert (outcome.status, outcome.attempt) == ("retrying", attempt)
        row = get_error(error_id)
        assert row.next_retry_at is not None
        delays.append((row.next_retry_at - before).total_seconds())
    # base 60 s doubled per attempt (plus jitter up to half), capped at an hour
    assert 120 <= delays[0] <= 181 and 240 <= delays[1] <= 361
    assert sink.received == []  # nobody is paged while reruns may still fix it

    make_due(error_id)
    outcome = rerun(error_id, by="flow:retry-failed-units")
    assert (outcome.status, outcome.attempt) == ("escalated", 3)
    row = get_error(error_id)
    assert row.status == "escalated" and row.escalated_at is not None and row.next_retry_at is None
    assert due_error_ids() == []  # an escalated error is not rerun by the queue
    assert [a for a, _, _ in actions(error_id)] == [
        "recorded", "retry_scheduled",
        "retry_started", "retry_failed",
        "retry_started", "retry_failed",
        "retry_started", "retry_failed", "escalated", "notified",
    ]
    escalated = [e for e in error_events(error_id) if e.action == "escalated"][0]
    assert "retries exhausted (3 of 3)" in (escalated.reason or "")
    [message] = sink.texts()
    assert f"integration_errors #{error_id}" in message and "escalated" in message
    assert f"drymix errors retry {error_id}" in message and "still down" in message
    notified = [e for e in error_events(error_id) if e.action == "notified"][0]
    assert notified.details and notified.details["deliveries"][0]["channel"] == "slack" and notified.details["deliveries"][0]["ok"]


def test_a_rerun_that_gets_further_records_the_new_unit(workflow: None) -> None:
    error_id = failed_page(3)
    BEHAVIOUR["fail"] = UnitFailed(SyncFailed("page 5 broke"), {"kind": KIND, "page": 5})
    make_due(error_id)
    assert rerun(error_id, by="flow:retry-failed-units").status == "retrying"
    assert get_error(error_id).unit == {"kind": KIND, "page": 5}
    BEHAVIOUR["fail"] = None
    make_due(error_id)
    assert rerun(error_id, by="flow:retry-failed-units").status == "resolved"
    assert CALLS[-1] == {"kind": KIND, "page": 5}


def test_authentication_failure_is_escalated_and_notified_at_once(sink: Sink) -> None:
    error_id = record_error(
        AuthenticationFailed("read failed with HTTP 401: Unauthorized", status_code=401, operation="read_customers"),
        integration="widgets",
        dataset="widgets",
        unit={"kind": KIND, "page": 1},
    )
    row = get_error(error_id)
    assert row.status == "escalated" and row.severity == "critical" and row.next_retry_at is None
    assert [a for a, _, _ in actions(error_id)] == ["recorded", "escalated", "notified"]
    [message] = sink.texts()
    assert "AUTHENTICATION_FAILED" in message and "CRITICAL" in message and f"drymix errors retry {error_id}" in message

    # After on-call fixed the credentials, a manual rerun of the escalated unit resolves it.
    outcome = rerun(error_id, by="asha", manual=True)
    assert outcome.status == "resolved"
    assert [(a, f, t) for a, f, t in actions(error_id)][-2:] == [("retry_started", "escalated", "escalated"), ("resolved", "escalated", "resolved")]
    assert get_error(error_id).resolved_by == "asha"


def test_manual_resolve_is_audited_and_cannot_happen_twice(workflow: None) -> None:
    error_id = failed_page()
    row = resolve_error(error_id, by="asha", reason="the widget feed was retired")
    assert (row.status, row.resolved_by, row.resolution_note, row.next_retry_at) == ("resolved", "asha", "the widget feed was retired", None)
    last = error_events(error_id)[-1]
    assert (last.action, last.actor, last.from_status, last.to_status, last.reason) == ("resolved", "asha", "pending", "resolved", "the widget feed was retired")
    with pytest.raises(ErrorStateConflict, match="already resolved"):
        resolve_error(error_id, by="asha", reason="again")
    make_due(error_id)
    assert due_error_ids() == []


def test_manual_escalate_stops_reruns_and_notifies(sink: Sink) -> None:
    error_id = failed_page()
    row = escalate_error(error_id, by="ravi", reason="SAP basis team must look at the gateway")
    assert row.status == "escalated" and row.next_retry_at is None
    assert [(a, f, t) for a, f, t in actions(error_id)][-2:] == [("escalated", "pending", "escalated"), ("notified", "escalated", "escalated")]
    escalated = [e for e in error_events(error_id) if e.action == "escalated"][0]
    assert (escalated.actor, escalated.reason) == ("ravi", "SAP basis team must look at the gateway")
    [message] = sink.texts()
    assert f"#{error_id}" in message and "HIGH" in message  # a SYNC_FAILED escalated by hand is high, not critical
    with pytest.raises(ErrorStateConflict):
        escalate_error(error_id, by="ravi", reason="twice")
    assert resolve_error(error_id, by="ravi", reason="gateway fixed").status == "resolved"


def test_a_rerun_refused_as_invalid_is_escalated_not_retried(sink: Sink) -> None:
    error_id = failed_page()
    BEHAVIOUR["fail"] = InvalidRequest("the page no longer exists", status_code=404)
    make_due(error_id)
    assert rerun(error_id, by="flow:retry-failed-units").status == "escalated"
    escalated = [e for e in error_events(error_id) if e.action == "escalated"][0]
    assert "INVALID_REQUEST, which is not retried" in (escalated.reason or "")
    assert len(sink.received) == 1


def test_a_claimed_unit_is_not_taken_twice(workflow: None) -> None:
    error_id = failed_page()
    make_due(error_id)
    first = claim_for_rerun(error_id, by="worker-a")
    assert first is not None and first.attempt == 1
    assert claim_for_rerun(error_id, by="worker-b") is None  # leased: a concurrent retry run skips it
    assert due_error_ids() == []


def test_two_workers_claiming_at_once_take_the_unit_once(workflow: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row lock (PostgreSQL) or the database's write lock (SQLite) makes the second claim read the first's lease."""
    import threading
    import time

    import hub.ledger.retry_units as retry_units

    error_id = failed_page()
    make_due(error_id)
    real = retry_units.has_rerun_handler

    def slow_check(unit: Mapping[str, Any]) -> bool:
        time.sleep(0.3)  # inside the claim's transaction, after it read the row: the other worker runs meanwhile
        return real(unit)

    monkeypatch.setattr(retry_units, "has_rerun_handler", slow_check)
    start = threading.Barrier(2)
    claims: list[Any] = []

    def claim(worker: str) -> None:
        start.wait()
        claims.append(claim_for_rerun(error_id, by=worker))

    threads = [threading.Thread(target=claim, args=(worker,)) for worker in ("worker-a", "worker-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(claims) == 2 and sum(c is not None for c in claims) == 1
    assert get_error(error_id).attempts == 1


def test_a_run_resolving_errors_while_a_person_resolves_one_leaves_it_to_the_person(workflow: None) -> None:
    """Resolved once, by whoever committed first: the run reads the row again under the lock (SQLite: once the
    person's transaction committed) or leaves the locked row alone (PostgreSQL), not a second RESOLVED on top."""
    import threading
    import time

    from hub.ledger.errors import _locked, _resolve, resolve_open_errors

    error_id = failed_page()
    results: list[int] = []

    def later_run() -> None:
        results.append(resolve_open_errors("widgets", "widgets", note="a later run synced widgets", categories=("SYNC_FAILED",), actor="flow:widgets"))

    run = threading.Thread(target=later_run)
    with session_scope() as session:
        row = _locked(session, error_id)
        _resolve(session, row, actor="asha", reason="fixed by hand", now=datetime.now(UTC))
        session.flush()
        run.start()
        time.sleep(1.0)  # the run reads the row as still pending meanwhile (its committed state)
    run.join(30)
    assert results == [0]
    resolved = [e for e in error_events(error_id) if e.action == "resolved"]
    assert [(e.actor, e.reason) for e in resolved] == [("asha", "fixed by hand")]
    assert get_error(error_id).resolved_by == "asha"


def test_a_later_run_with_nothing_open_resolves_nothing_and_a_run_with_open_errors_resolves_them_once(workflow: None) -> None:
    from hub.ledger.errors import resolve_open_errors

    assert resolve_open_errors("widgets", "widgets", note="nothing open", categories=("SYNC_FAILED",)) == 0
    first, second = failed_page(1), failed_page(2)
    assert resolve_open_errors("widgets", "widgets", note="a later run synced widgets", categories=("SYNC_FAILED",)) == 2
    assert resolve_open_errors("widgets", "widgets", note="again", categories=("SYNC_FAILED",)) == 0
    for error_id in (first, second):
        assert [e.reason for e in error_events(error_id) if e.action == "resolved"] == ["a later run synced widgets"]


def test_errors_without_a_rerunnable_unit_are_not_queued(workflow: None) -> None:
    no_unit = record_error(SyncFailed("whole run failed"), integration="widgets", dataset="widgets")
    invalid = record_error(InvalidRequest("bad filter", status_code=400), integration="widgets", dataset="widgets", unit={"kind": KIND, "page": 1})
    unknown = record_error(SyncFailed("x"), integration="widgets", dataset="widgets", unit={"kind": "nobody.registered.this"})
    for error_id in (no_unit, invalid, unknown):
        row = get_error(error_id)
        assert (row.status, row.next_retry_at, row.max_attempts) == ("pending", None, 0)
    with pytest.raises(ErrorStateConflict, match="no rerunnable unit"):
        rerun(no_unit, by="asha", manual=True)
    # A manual rerun of an error the queue does not handle, failing again, stays pending for the person.
    BEHAVIOUR["fail"] = InvalidRequest("bad filter", status_code=400)
    assert rerun(invalid, by="asha", manual=True).status == "pending"


def test_list_filters_by_status_integration_category_and_age(workflow: None) -> None:
    old = failed_page()
    with session_scope() as session:
        session.execute(update(IntegrationErrorRow).where(IntegrationErrorRow.id == old).values(created_at=datetime.now(UTC) - timedelta(hours=5)))
    new = record_error(InvalidRequest("bad"), integration="gadgets", dataset="gadgets")
    resolve_error(new, by="asha", reason="done")
    assert [r.id for r in list_errors(since=datetime.now(UTC) - parse_age("2h"))] == [new]
    assert [r.id for r in list_errors(status=["pending", "retrying", "escalated"])] == [old]
    assert [r.id for r in list_errors(integration="gadgets", category="invalid_request")] == [new]
    assert parse_age("90s") == timedelta(seconds=90) and parse_age("1w") == timedelta(days=7)
    with pytest.raises(ValueError, match="unit"):
        parse_age("2 hours")
