"""The two-way calendar sync rule (docs/calendar-sync.md) and the Google event mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from data_mappings.google_events import (
    event_id_for,
    from_google_event,
    schedule_ref_from_event_id,
    to_google_event,
)
from data_mappings.schedules import (
    Action,
    CalendarEvent,
    LinkSnapshot,
    ScheduleSnapshot,
    decide,
    remote_changes,
    schedules_frame,
)

T0 = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
SYNCED = T0 - timedelta(days=1)


def schedule(**kw: object) -> ScheduleSnapshot:
    base: dict[str, object] = dict(
        schedule_ref="DLV-1", kind="delivery", title="Deliver 20 t tile adhesive", starts_at=T0,
        ends_at=T0 + timedelta(hours=2), location="Site A", version=3, updated_at=SYNCED,
    )
    base.update(kw)
    return ScheduleSnapshot(**base)  # type: ignore[arg-type]


def link(**kw: object) -> LinkSnapshot:
    base: dict[str, object] = dict(event_id="erp0abc", etag='"1"', pushed_version=3, remote_status="confirmed", remote_updated_at=SYNCED)
    base.update(kw)
    return LinkSnapshot(**base)  # type: ignore[arg-type]


def remote(**kw: object) -> CalendarEvent:
    base: dict[str, object] = dict(
        provider="google_workspace", calendar_id="cal", event_id="erp0abc", status="confirmed", schedule_ref="DLV-1",
        title="Deliver 20 t tile adhesive", location="Site A", starts_at=T0, ends_at=T0 + timedelta(hours=2),
        etag='"2"', updated_at=SYNCED + timedelta(hours=1),
    )
    base.update(kw)
    return CalendarEvent(**base)  # type: ignore[arg-type]


def test_new_erp_schedule_is_created_and_a_cancelled_one_never_reaches_the_calendar() -> None:
    assert decide(schedule(), None, None).action is Action.CREATE
    assert decide(schedule(status="cancelled"), None, None).action is Action.NOTHING


def test_nothing_happens_when_neither_side_changed_including_the_echo_of_our_own_push() -> None:
    assert decide(schedule(), link(), None).action is Action.NOTHING
    assert decide(schedule(), link(etag='"2"'), remote(etag='"2"')).action is Action.NOTHING


def test_erp_change_is_pushed_and_erp_cancellation_cancels_the_event() -> None:
    assert decide(schedule(version=4), link(), None).action is Action.PUSH
    assert decide(schedule(version=4, status="cancelled"), link(), None).action is Action.CANCEL_REMOTE
    assert decide(schedule(version=4, status="cancelled"), link(remote_status="cancelled"), None).action is Action.NOTHING


def test_a_person_moving_the_event_moves_the_schedule() -> None:
    moved = remote(starts_at=T0 + timedelta(hours=1), ends_at=T0 + timedelta(hours=3), time_zone="Asia/Kolkata")
    decision = decide(schedule(), link(), moved)
    assert decision.action is Action.PULL and not decision.conflict and not decision.push_after
    assert decision.fields == ("starts_at", "ends_at")
    assert remote_changes(moved, decision) == {
        "starts_at": T0 + timedelta(hours=1), "ends_at": T0 + timedelta(hours=3), "time_zone": "Asia/Kolkata"
    }


def test_a_person_cancelling_the_event_cancels_the_schedule() -> None:
    gone = remote(status="cancelled", title=None, starts_at=None, ends_at=None)
    decision = decide(schedule(), link(), gone)
    assert decision.action is Action.CANCEL_IN_ERP
    assert remote_changes(gone, decision) == {"status": "cancelled"}


def test_a_person_retitling_an_erp_owned_event_gets_the_erp_content_back() -> None:
    decision = decide(schedule(), link(), remote(title="lunch"))
    assert decision.action is Action.PULL and decision.fields == () and decision.push_after


def test_calendar_owned_schedule_takes_every_field_from_the_calendar() -> None:
    decision = decide(schedule(owner="calendar"), link(), remote(title="Kiln relining", location="Plant 2"))
    assert decision.action is Action.PULL and set(decision.fields) == {"title", "location"} and not decision.push_after


def test_both_changed_erp_cancellation_is_final() -> None:
    decision = decide(schedule(version=4, status="cancelled", updated_at=T0), link(), remote(starts_at=T0 + timedelta(hours=5)))
    assert decision.action is Action.CANCEL_REMOTE and decision.conflict and decision.winner == "erp"


def test_both_changed_a_later_person_cancellation_wins_an_earlier_erp_edit() -> None:
    erp_edit = SYNCED + timedelta(minutes=10)
    person_cancel = remote(status="cancelled", updated_at=SYNCED + timedelta(minutes=20))
    decision = decide(schedule(version=4, updated_at=erp_edit), link(), person_cancel)
    assert decision.action is Action.CANCEL_IN_ERP and decision.winner == "calendar"


def test_both_changed_an_erp_replan_after_the_person_cancelled_recreates_the_event() -> None:
    person_cancel = remote(status="cancelled", updated_at=SYNCED + timedelta(minutes=10))
    decision = decide(schedule(version=4, updated_at=SYNCED + timedelta(minutes=20)), link(), person_cancel)
    assert decision.action is Action.RECREATE and decision.winner == "erp"


def test_both_changed_times_go_to_the_later_writer_and_content_stays_with_the_erp() -> None:
    moved_later = remote(starts_at=T0 + timedelta(hours=1), ends_at=T0 + timedelta(hours=3), updated_at=SYNCED + timedelta(minutes=30))
    decision = decide(schedule(version=4, title="New title", updated_at=SYNCED + timedelta(minutes=10)), link(), moved_later)
    assert decision.action is Action.PULL and decision.conflict and decision.winner == "calendar"
    assert decision.fields == ("starts_at", "ends_at") and decision.push_after
    moved_earlier = remote(starts_at=T0 + timedelta(hours=1), updated_at=SYNCED + timedelta(minutes=5))
    decision = decide(schedule(version=4, updated_at=SYNCED + timedelta(minutes=10)), link(), moved_earlier)
    assert decision.action is Action.PUSH and decision.winner == "erp"


def test_a_tie_goes_to_the_erp() -> None:
    same = SYNCED + timedelta(minutes=10)
    decision = decide(schedule(version=4, updated_at=same), link(), remote(starts_at=T0 + timedelta(hours=1), updated_at=same))
    assert decision.action is Action.PUSH and decision.winner == "erp"


def test_replanned_in_the_erp_after_the_calendar_event_was_deleted_is_recreated() -> None:
    assert decide(schedule(version=5), link(remote_status="cancelled"), None).action is Action.RECREATE


def test_event_found_without_a_link_is_adopted_and_foreign_events_are_ignored() -> None:
    ours = remote(etag='"7"')
    decision = decide(schedule(), None, ours)
    assert decision.action is Action.PUSH  # adopted with an unknown version: the ERP's state is written over it
    assert decide(None, None, remote(schedule_ref=None)).action is Action.IGNORE


def test_google_event_ids_are_deterministic_valid_base32hex_and_reversible() -> None:
    import re

    for ref in ("DLV-2026-000123", "SV/7", "MNT_ÄÖ-1", "x" * 64):
        event_id = event_id_for(ref)
        assert event_id == event_id_for(ref)
        assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id)
        assert schedule_ref_from_event_id(event_id) == ref
    assert schedule_ref_from_event_id("abcdef123") is None
    with pytest.raises(ValueError):
        event_id_for("")


def test_google_event_round_trip_keeps_times_zone_and_ref() -> None:
    s = schedule(time_zone="Asia/Kolkata", description="Gate 3")
    body = to_google_event(s)
    assert body["start"] == {"dateTime": "2026-12-01T09:00:00+05:30", "timeZone": "Asia/Kolkata"}
    assert body["extendedProperties"]["private"] == {"drymixScheduleRef": "DLV-1", "drymixKind": "delivery"}
    event = from_google_event({**body, "etag": '"9"', "updated": "2026-11-30T10:00:00.000Z"}, "cal")
    assert (event.starts_at, event.ends_at, event.schedule_ref, event.time_zone) == (s.starts_at, s.ends_at, "DLV-1", "Asia/Kolkata")
    assert event.updated_at == datetime(2026, 11, 30, 10, tzinfo=UTC)
    deleted = from_google_event({"id": body["id"], "status": "cancelled"}, "cal")
    assert deleted.cancelled and deleted.schedule_ref == "DLV-1" and deleted.starts_at is None


def test_all_day_events_start_at_midnight_in_their_zone() -> None:
    event = from_google_event({"id": "abcde", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}}, "cal", calendar_zone="Asia/Kolkata")
    assert event.starts_at == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)


def test_schedules_frame_computes_the_duration() -> None:
    frame = schedules_frame([{"record_key": "a", "schedule_ref": "a", "kind": "delivery", "title": "t", "location": None,
                              "starts_at": T0, "ends_at": T0 + timedelta(minutes=90), "status": "confirmed"}])
    assert frame["duration_minutes"].tolist() == [90.0]
