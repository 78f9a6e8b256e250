"""End to end over real HTTP: ERP schedules <-> the Google sandbox through the sync-google-calendar flow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from data_mappings.google_events import event_id_for
from hub.core.db import get_engine, session_scope
from hub.core.models import IntegrationErrorRow, QuarantinedRecord, Schedule, ScheduleCalendarLink
from hub.ledger.loading import read_cursor
from hub.systems.schedules import save_schedule
from sandbox.google_calendar import GoogleCalendarSandbox
from tests.error_support import FailingRequests, error_rows, make_due, unit_of
from tests.google_support import CALENDAR, served, write_key_file

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = (datetime.now(UTC) + timedelta(days=3)).replace(hour=4, minute=0, second=0, microsecond=0)


@pytest.fixture
def sandbox(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[GoogleCalendarSandbox]:
    sim = GoogleCalendarSandbox()
    with served(sim, monkeypatch):
        yield sim


def run() -> dict[str, Any]:
    from flows.sync_google_calendar import sync_google_calendar

    return sync_google_calendar()


def plan(ref: str, hours: int = 0, **kw: Any) -> None:
    fields: dict[str, Any] = dict(kind="delivery", title=f"Deliver {ref}", location="Site A",
                                  starts_at=START + timedelta(hours=hours), ends_at=START + timedelta(hours=hours + 2))
    fields.update(kw)
    with session_scope() as session:
        save_schedule(session, ref, by="erp:planner", **fields)


def after_the_erp_edit_of(ref: str) -> None:
    """Wait until a person's edit can be stamped after the ERP's last edit of `ref`. Google stamps `updated` to the
    millisecond, the ERP to the microsecond, and within one millisecond the rule gives the tie to the ERP
    (data_mappings/schedules.py `_later_writer`): a person who edits later does so in a later millisecond."""
    edited = schedule(ref).updated_at
    later = edited.replace(microsecond=edited.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
    while datetime.now(UTC) < later:
        time.sleep(0.0005)


def schedule(ref: str) -> Schedule:
    with session_scope() as session:
        row = session.scalars(select(Schedule).where(Schedule.schedule_ref == ref)).one()
        session.expunge(row)
        return row


def remote(sim: GoogleCalendarSandbox, ref: str) -> dict[str, Any]:
    return sim.calendar(CALENDAR).events[event_id_for(ref)]


def test_erp_schedules_reach_the_calendar_and_peoples_moves_and_cancellations_come_back(
    sandbox: GoogleCalendarSandbox,
) -> None:
    for n, ref in enumerate(("DLV-1", "DLV-2", "DLV-3")):
        plan(ref, hours=n * 3)
    sandbox.quota.reason, sandbox.quota.next_n = "userRateLimitExceeded", 1  # one quota hit on the way

    first = run()
    assert first["mode"] == "full" and first["push"]["created"] == 3 and not first["push"]["failed"]
    assert {e["id"] for e in sandbox.live_events(CALENDAR)} == {event_id_for(r) for r in ("DLV-1", "DLV-2", "DLV-3")}
    assert remote(sandbox, "DLV-1")["extendedProperties"]["private"]["drymixScheduleRef"] == "DLV-1"
    with get_engine().connect() as conn:
        cursor = read_cursor(conn, "google_workspace", f"events:{CALENDAR}")
    assert cursor and cursor["sync_token"]

    # A person moves DLV-1 by an hour and deletes DLV-2; the ERP retitles DLV-3.
    sandbox.person_edits(CALENDAR, event_id_for("DLV-1"), action="move", minutes=60)
    sandbox.person_edits(CALENDAR, event_id_for("DLV-2"), action="cancel")
    plan("DLV-3", hours=6, title="Deliver DLV-3 (2 trucks)")

    second = run()
    assert second["mode"] == "incremental"
    moved = schedule("DLV-1")
    assert moved.starts_at == START + timedelta(hours=1) and moved.ends_at == START + timedelta(hours=3)
    assert moved.updated_by == "google_workspace"
    assert schedule("DLV-2").status == "cancelled"
    assert remote(sandbox, "DLV-3")["summary"] == "Deliver DLV-3 (2 trucks)"
    assert second["pull"]["pulled"] == 1 and second["pull"]["cancelled_in_erp"] == 1 and second["push"]["updated"] == 1

    # Nothing changed anywhere: the third run pulls nothing and pushes nothing (our own echoes are recognised).
    third = run()
    assert third["pull"]["pulled"] == third["pull"]["cancelled_in_erp"] == 0
    assert third["push"]["considered"] == 0
    assert len(sandbox.calendar(CALENDAR).events) == 3


def test_conflict_times_from_the_later_mover_and_content_from_the_erp(sandbox: GoogleCalendarSandbox) -> None:
    plan("SV-9", kind="site_visit")
    run()
    plan("SV-9", kind="site_visit", title="Site visit: slab check")  # the ERP edits first...
    after_the_erp_edit_of("SV-9")
    sandbox.person_edits(CALENDAR, event_id_for("SV-9"), action="move", minutes=120)  # ...a person moves it later
    result = run()
    assert result["pull"]["conflicts"] == 1
    row = schedule("SV-9")
    assert row.title == "Site visit: slab check" and row.starts_at == START + timedelta(hours=2)
    event = remote(sandbox, "SV-9")
    assert event["summary"] == "Site visit: slab check"
    assert datetime.fromisoformat(event["start"]["dateTime"]) == START + timedelta(hours=2)


def test_an_expired_sync_token_clears_the_cursor_and_runs_a_full_sync(sandbox: GoogleCalendarSandbox) -> None:
    plan("MNT-1", kind="maintenance")
    run()
    with get_engine().connect() as conn:
        old = read_cursor(conn, "google_workspace", f"events:{CALENDAR}")
    sandbox.expire_sync_tokens()
    sandbox.person_edits(CALENDAR, event_id_for("MNT-1"), action="move", minutes=30)
    result = run()
    assert result["mode"] == "full (resync required)"
    assert schedule("MNT-1").starts_at == START + timedelta(minutes=30)
    with get_engine().connect() as conn:
        new = read_cursor(conn, "google_workspace", f"events:{CALENDAR}")
    assert new and old and new["sync_token"] != old["sync_token"]
    assert run()["mode"] == "incremental"


def test_a_bad_schedule_is_quarantined_and_the_rest_still_reach_the_calendar(sandbox: GoogleCalendarSandbox) -> None:
    plan("DLV-OK")
    plan("DLV-BAD", ends_at=START - timedelta(hours=1))  # ends before it starts
    result = run()
    assert result["push"]["created"] == 1 and result["push"]["quarantined"] == 1
    assert [e["id"] for e in sandbox.live_events(CALENDAR)] == [event_id_for("DLV-OK")]
    with session_scope() as session:
        quarantined = session.scalars(select(QuarantinedRecord)).all()
        assert [(q.dataset, q.record_key) for q in quarantined] == [("schedules", "DLV-BAD")]
        errors = session.scalars(select(IntegrationErrorRow)).all()
        assert [e.error_type for e in errors] == ["DATA_VALIDATION_FAILED"]
        links = session.scalars(select(ScheduleCalendarLink)).all()
        assert len(links) == 1
    # Fixed in the ERP, it goes out on the next run.
    plan("DLV-BAD", ends_at=START + timedelta(hours=1))
    assert run()["push"]["created"] == 1


def test_cursor_is_never_ahead_of_applied_changes_after_a_crash_mid_read(
    sandbox: GoogleCalendarSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.runtime.connections as connections
    import hub.systems.calendars as module
    from connectors.google_workspace.connector import GoogleCalendarConnector
    from hub.systems.calendars import apply_remote_page

    original = connections.build_google_workspace_connector

    def one_event_per_page(**kw: Any) -> GoogleCalendarConnector:
        connector = original(**kw)
        connector.page_size = 1
        return connector

    monkeypatch.setattr(connections, "build_google_workspace_connector", one_event_per_page)
    for n, ref in enumerate(("DLV-A", "DLV-B", "DLV-C")):
        plan(ref, hours=n * 3)
    run()
    with get_engine().connect() as conn:
        before = read_cursor(conn, "google_workspace", f"events:{CALENDAR}")
    for ref in ("DLV-A", "DLV-B", "DLV-C"):
        sandbox.person_edits(CALENDAR, event_id_for(ref), action="move", minutes=30)

    calls = {"n": 0}

    def crash_after_first_page(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("worker killed while loading page 2")
        return apply_remote_page(*args, **kwargs)

    monkeypatch.setattr(module, "apply_remote_page", crash_after_first_page)
    with pytest.raises(Exception, match="worker killed"):
        run()
    with get_engine().connect() as conn:
        assert read_cursor(conn, "google_workspace", f"events:{CALENDAR}") == before
    assert schedule("DLV-A").starts_at == START + timedelta(minutes=30)  # page 1 committed
    assert schedule("DLV-B").starts_at == START + timedelta(hours=3)  # page 2 rolled back
    with session_scope() as session:
        assert session.scalars(select(IntegrationErrorRow.error_type)).all() == ["SYNC_FAILED"]

    monkeypatch.setattr(module, "apply_remote_page", apply_remote_page)
    result = run()
    assert result["pull"]["pulled"] == 2  # page 1's change is seen again and recognised as already applied
    assert schedule("DLV-B").starts_at == START + timedelta(hours=3, minutes=30)
    assert schedule("DLV-C").starts_at == START + timedelta(hours=6, minutes=30)
    with get_engine().connect() as conn:
        assert read_cursor(conn, "google_workspace", f"events:{CALENDAR}") != before


def test_missing_service_account_key_fails_clearly_and_is_recorded(
    db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from connectors.core.errors import AuthenticationFailed
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT_FILE", str(tmp_path / "nowhere.json"))
    reset_settings_cache()
    try:
        with pytest.raises(AuthenticationFailed, match="cannot read the service-account key file"):
            run()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    with session_scope() as session:
        rows = session.scalars(select(IntegrationErrorRow)).all()
        assert [(r.integration, r.error_type, r.unit["kind"]) for r in rows] == [
            ("google_workspace", "AUTHENTICATION_FAILED", "google_workspace.calendar_events.pull")
        ]


@pytest.fixture
def in_process(db: str) -> Iterator[tuple[GoogleCalendarSandbox, FailingRequests]]:
    """The sandbox in-process under Google's real URLs, behind a transport that can fail chosen requests."""
    from connectors.core.client import use_transport
    from hub.core.settings import reset_settings_cache

    sim = GoogleCalendarSandbox()
    write_key_file(sim)
    reset_settings_cache()
    google = FailingRequests(sim, lambda request: False, failing=False)
    with use_transport("google_workspace", google):
        yield sim, google
    reset_settings_cache()


def test_a_failed_pull_is_queued_and_its_rerun_applies_the_changes_without_pushing(
    in_process: tuple[GoogleCalendarSandbox, FailingRequests],
) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    sim, google = in_process
    for n, ref in enumerate(("DLV-1", "DLV-2", "DLV-3")):
        plan(ref, hours=n * 3)
    run()
    sim.person_edits(CALENDAR, event_id_for("DLV-1"), action="move", minutes=60)
    plan("DLV-3", hours=6, title="Deliver DLV-3 (2 trucks)")
    google.when = lambda request: request.method == "GET" and request.url.path.endswith("/events")
    google.failing = True
    with pytest.raises(Exception, match="SERVER_ERROR"):
        run()
    (error,) = [r for r in error_rows("google_workspace") if r.error_type != "DATA_VALIDATION_FAILED"]
    unit = unit_of(error)  # the sync engine's unit: the read again from the failed run's sync token
    assert (unit["kind"], unit["calendar_id"], unit["batch"]) == ("google_workspace.calendar_events.pull", CALENDAR, 1)
    assert unit["cursor"] and unit["cursor"]["sync_token"]
    assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
    assert schedule("DLV-1").starts_at == START

    google.failing = False
    make_due(error.id)
    outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["pull"]["pulled"] == 1
    assert schedule("DLV-1").starts_at == START + timedelta(hours=1)
    assert remote(sim, "DLV-3")["summary"] == "Deliver DLV-3"  # the push is not the failed unit
    assert get_error(error.id).status == "resolved" and len(error_rows("google_workspace")) == 1
    assert run()["push"]["updated"] == 1 and remote(sim, "DLV-3")["summary"] == "Deliver DLV-3 (2 trucks)"


def test_failed_pushes_are_queued_and_their_rerun_pushes_only_those_schedules(
    in_process: tuple[GoogleCalendarSandbox, FailingRequests],
) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    sim, google = in_process
    for n, ref in enumerate(("DLV-1", "DLV-2", "DLV-3")):
        plan(ref, hours=n * 3)
    run()
    plan("DLV-1", title="Deliver DLV-1 (second shift)")
    plan("DLV-2", hours=3, title="Deliver DLV-2 (second shift)")
    google.when = lambda request: request.method == "PATCH" and event_id_for("DLV-1") in request.url.path
    google.failing = True
    summary = run()
    assert summary["push"]["updated"] == 1 and [f["schedule_ref"] for f in summary["push"]["failed"]] == ["DLV-1"]
    (error,) = error_rows("google_workspace", "schedules")
    assert unit_of(error) == {"kind": "google_workspace.schedules.push", "calendar_id": CALENDAR, "stage": "push", "schedule_refs": ["DLV-1"]}
    assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
    plan("DLV-3", hours=6, title="Deliver DLV-3 (changed later)")  # the ERP changes another schedule meanwhile

    google.failing = False
    lists = len(google.seen("GET", "/events"))
    make_due(error.id)
    outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["push"]["updated"] == 1
    assert len(google.seen("GET", "/events")) == lists  # the rerun read nothing
    assert remote(sim, "DLV-1")["summary"] == "Deliver DLV-1 (second shift)"
    assert remote(sim, "DLV-3")["summary"] == "Deliver DLV-3"
    assert get_error(error.id).status == "resolved" and len(error_rows("google_workspace")) == 1
