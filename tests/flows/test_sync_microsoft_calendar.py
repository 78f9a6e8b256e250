"""sync-microsoft-calendar: ERP schedules to Outlook and people's moves and cancellations back, through the
Graph sandbox (batched idempotent creates, delta reads, expired delta token -> full resync)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connectors.core.client import use_transport
from connectors.microsoft365.connector import _TOKEN_CACHES
from hub.core.db import session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.core.settings import reset_settings_cache
from hub.systems.schedules import save_schedule
from sandbox.core import as_transport, running_server
from sandbox.microsoft365 import Microsoft365Sandbox
from tests.error_support import FailingRequests, error_rows, make_due, unit_of

pytestmark = pytest.mark.usefixtures("prefect_harness")
USER = "planning@drymix.example"
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)


def _plan(count: int, prefix: str = "DLV-2026") -> None:
    with session_factory()() as session:
        for i in range(count):
            start = BASE + timedelta(hours=3 * i)
            save_schedule(session, f"{prefix}-{i:06d}", by="erp:planner.ravi", kind="delivery" if i % 3 else "site_visit",
                          title=f"Delivery {prefix}-{i:06d}: 18 t tile adhesive", location="Prestige Lakeside, Whitefield",
                          description="Unload at gate 3; site contact Mr. Rao", starts_at=start, ends_at=start + timedelta(hours=2),
                          time_zone="Asia/Kolkata")
        session.commit()


def _schedules() -> dict[str, Schedule]:
    with session_factory()() as session:
        return {s.schedule_ref: s for s in session.scalars(select(Schedule))}


def _links() -> dict[int, ScheduleCalendarLink]:
    with session_factory()() as session:
        return {lk.schedule_id: lk for lk in session.scalars(select(ScheduleCalendarLink))}


@pytest.fixture
def graph(db: str) -> Iterator[Microsoft365Sandbox]:
    sim = Microsoft365Sandbox(seed=9)
    _TOKEN_CACHES.clear()
    with use_transport("microsoft365", as_transport(sim)):
        yield sim
    _TOKEN_CACHES.clear()


def test_erp_schedules_are_created_in_outlook_by_batch_and_only_once(graph: Microsoft365Sandbox) -> None:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    _plan(25)
    first = sync_microsoft_calendar()
    assert first["mode"] == "full" and first["batch_created"] == 25
    assert graph.stats["events_created"] == 25 and graph.stats["batch_requests"] == 2  # 20 + 5 per round trip
    links = _links()
    assert len(links) == 25 and all(lk.pushed_version == 1 and lk.etag for lk in links.values())
    created = graph.events[links[min(links)].event_id]
    assert created.start_zone == "India Standard Time" and created.transaction_id == "drymix.DLV-2026-000000.v1"

    second = sync_microsoft_calendar()
    assert second["mode"] == "incremental" and second["batch_created"] == 0 and second["push"]["created"] == 0
    assert second["pull"]["pulled"] == 0  # the echo of our own creates is not a change
    assert graph.stats["events_created"] == 25


def test_changes_on_both_sides_reach_the_other_side(graph: Microsoft365Sandbox) -> None:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    _plan(3)
    sync_microsoft_calendar()
    schedules, links = _schedules(), _links()
    moved = schedules["DLV-2026-000000"]
    cancelled = schedules["DLV-2026-000001"]
    replanned = schedules["DLV-2026-000002"]
    graph.person_edits(links[moved.id].event_id, "move", minutes=90)  # in Outlook
    graph.person_edits(links[cancelled.id].event_id, "cancel")
    with session_factory()() as session:  # in the ERP
        save_schedule(session, "DLV-2026-000002", by="erp:planner.ravi", title="Delivery DLV-2026-000002: 24 t (revised)")
        session.commit()

    summary = sync_microsoft_calendar()
    assert summary["mode"] == "incremental"
    assert (summary["pull"]["pulled"], summary["pull"]["cancelled_in_erp"], summary["push"]["updated"]) == (1, 1, 1)
    after = _schedules()
    assert after["DLV-2026-000000"].starts_at == moved.starts_at + timedelta(minutes=90)
    assert after["DLV-2026-000000"].updated_by == "microsoft365"
    assert after["DLV-2026-000001"].status == "cancelled"
    assert graph.events[links[replanned.id].event_id].subject == "Delivery DLV-2026-000002: 24 t (revised)"

    quiet = sync_microsoft_calendar()  # nothing changed anywhere since
    assert (quiet["pull"]["pulled"], quiet["pull"]["cancelled_in_erp"], quiet["push"]["updated"], quiet["push"]["cancelled"]) == (0, 0, 0, 0)


def test_expired_delta_token_runs_a_full_resync_that_misses_nothing(graph: Microsoft365Sandbox) -> None:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    _plan(4)
    sync_microsoft_calendar()
    schedules, links = _schedules(), _links()
    graph.person_edits(links[schedules["DLV-2026-000003"].id].event_id, "cancel")  # deleted while the token dies
    graph.person_edits(links[schedules["DLV-2026-000002"].id].event_id, "move", minutes=-60)
    graph.expire_delta_tokens()

    summary = sync_microsoft_calendar()
    assert summary["mode"] == "full (resync required)"
    assert summary["vanished_checked"] == 1  # the deletion no full read can show was looked up
    after = _schedules()
    assert after["DLV-2026-000003"].status == "cancelled"
    assert after["DLV-2026-000002"].starts_at == schedules["DLV-2026-000002"].starts_at - timedelta(minutes=60)
    assert graph.stats["events_created"] == 4  # the full read re-created nothing

    graph.switches.expired_delta_code = "resyncRequired"
    assert sync_microsoft_calendar()["mode"] == "incremental"  # the new deltaLink works


def test_calendar_sync_end_to_end_over_real_http_with_throttling(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar

    sim = Microsoft365Sandbox(seed=4)
    sim.switches.people_edits_per_delta = 2  # people keep editing between syncs
    _plan(6, prefix="SV-2026")
    _TOKEN_CACHES.clear()
    with running_server(sim) as url:
        monkeypatch.setenv("MICROSOFT365_BASE_URL", f"{url}/v1.0/")
        monkeypatch.setenv("MICROSOFT365_TOKEN_URL", url + "/{tenant}/oauth2/v2.0/token")
        reset_settings_cache()
        try:
            first = sync_microsoft_calendar()
            sim.faults.update({"rate_limit_next_n": 2, "retry_after_s": 1})  # the next two calls are throttled
            second = sync_microsoft_calendar()
        finally:
            reset_settings_cache()
            _TOKEN_CACHES.clear()
    assert first["batch_created"] == 6 and second["mode"] == "incremental"
    assert sim.faults.snapshot()["stats"]["fired"]["rate_limit"] == 2
    assert sim.stats["events_created"] == 6
    # What people did in Outlook to our events is in the ERP now.
    ours = {lk.event_id: lk.schedule_id for lk in _links().values()}
    touched = [e for e in sim.people_edits if e["event_id"] in ours]
    schedules = {s.id: s for s in _schedules().values()}
    for edit in touched:
        schedule = schedules[ours[edit["event_id"]]]
        if edit["action"] == "cancel":
            assert schedule.status == "cancelled"
        else:
            assert schedule.updated_by == "microsoft365"


def test_a_failed_pull_is_queued_and_its_rerun_applies_peoples_changes_without_pushing(graph: Microsoft365Sandbox) -> None:
    from connectors.core.errors import IntegrationError
    from flows.sync_microsoft_calendar import sync_microsoft_calendar
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    _plan(3)
    sync_microsoft_calendar()
    schedules, links = _schedules(), _links()
    moved = schedules["DLV-2026-000000"]
    graph.person_edits(links[moved.id].event_id, "move", minutes=90)  # in Outlook
    with session_factory()() as session:  # in the ERP
        save_schedule(session, "DLV-2026-000002", by="erp:planner.ravi", title="Delivery DLV-2026-000002: 24 t (revised)")
        session.commit()
    outlook = FailingRequests(graph, lambda request: request.method == "GET" and "/calendarView/delta" in request.url.path)
    with use_transport("microsoft365", outlook):
        with pytest.raises(IntegrationError):
            sync_microsoft_calendar()
        (error,) = error_rows("microsoft365", "calendar_events")
        unit = unit_of(error)  # the sync engine's unit: the read again from the failed run's delta link
        assert (unit["kind"], unit["calendar_id"], unit["batch"]) == ("microsoft365.calendar_events.pull", USER, 1)
        assert unit["cursor"] and unit["cursor"]["delta_link"]
        assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
        assert _schedules()["DLV-2026-000000"].starts_at == moved.starts_at

        outlook.failing = False
        make_due(error.id)
        outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["pull"]["pulled"] == 1
    assert _schedules()["DLV-2026-000000"].starts_at == moved.starts_at + timedelta(minutes=90)
    revised = graph.events[links[schedules["DLV-2026-000002"].id].event_id]
    assert revised.subject != "Delivery DLV-2026-000002: 24 t (revised)"  # the push is not the failed unit
    assert outlook.seen("PATCH", "/events/") == [] and outlook.seen("POST", "$batch") == []
    assert get_error(error.id).status == "resolved" and len(error_rows("microsoft365")) == 1
    assert sync_microsoft_calendar()["push"]["updated"] == 1  # the next scheduled sync pushes it


def test_failed_pushes_are_queued_and_their_rerun_pushes_only_those_schedules(graph: Microsoft365Sandbox) -> None:
    from flows.sync_microsoft_calendar import sync_microsoft_calendar
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    _plan(3)
    sync_microsoft_calendar()
    schedules, links = _schedules(), _links()
    stuck = links[schedules["DLV-2026-000000"].id].event_id
    with session_factory()() as session:
        for ref in ("DLV-2026-000000", "DLV-2026-000001"):
            save_schedule(session, ref, by="erp:planner.ravi", title=f"Delivery {ref}: moved to the second shift")
        session.commit()
    outlook = FailingRequests(graph, lambda request: request.method == "PATCH" and stuck in request.url.path)
    with use_transport("microsoft365", outlook):
        summary = sync_microsoft_calendar()
        assert summary["push"]["updated"] == 1 and [f["schedule_ref"] for f in summary["push"]["failed"]] == ["DLV-2026-000000"]
        (error,) = error_rows("microsoft365", "schedules")
        assert unit_of(error) == {"kind": "microsoft365.schedules.push", "calendar_id": USER, "stage": "push",
                                  "schedule_refs": ["DLV-2026-000000"]}
        assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
        with session_factory()() as session:  # the ERP changes another schedule meanwhile
            save_schedule(session, "DLV-2026-000002", by="erp:planner.ravi", title="Delivery DLV-2026-000002: changed later")
            session.commit()

        outlook.failing = False
        reads = len(outlook.seen("GET", "/calendarView/delta"))
        make_due(error.id)
        outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["push"]["updated"] == 1
    assert len(outlook.seen("GET", "/calendarView/delta")) == reads  # the rerun read nothing
    assert graph.events[stuck].subject == "Delivery DLV-2026-000000: moved to the second shift"
    assert graph.events[links[schedules["DLV-2026-000002"].id].event_id].subject != "Delivery DLV-2026-000002: changed later"
    assert get_error(error.id).status == "resolved" and len(error_rows("microsoft365")) == 1
