"""Graph events <-> CalendarEvent and ERP schedules."""

from __future__ import annotations

from datetime import UTC, datetime

from data_mappings.microsoft365_events import (
    from_graph_event,
    schedule_ref_from_transaction,
    to_graph_event,
    transaction_id,
)
from data_mappings.schedules import ScheduleSnapshot

IST_NINE = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)  # 09:00 in Kolkata


def test_schedule_goes_out_in_its_zone_with_a_versioned_transaction_id() -> None:
    schedule = ScheduleSnapshot(schedule_ref="DLV-2026-000042", kind="delivery", title="Delivery 42", starts_at=IST_NINE,
                                ends_at=IST_NINE.replace(hour=5), location="Whitefield", description="Gate 3", version=3,
                                updated_at=IST_NINE)
    body = to_graph_event(schedule)
    assert body["start"] == {"dateTime": "2026-12-01T09:00:00", "timeZone": "India Standard Time"}
    assert body["transactionId"] == "drymix.DLV-2026-000042.v3"
    assert "transactionId" not in to_graph_event(schedule, for_create=False)
    assert schedule_ref_from_transaction(transaction_id("SV.2026/7", 12)) == "SV.2026/7"
    assert schedule_ref_from_transaction("someone-elses-id") is None


def test_graph_event_maps_to_utc_with_etag_and_our_ref() -> None:
    event = from_graph_event({
        "@odata.etag": 'W/"abc"', "id": "AAMk1", "subject": "Delivery 42", "transactionId": "drymix.DLV-2026-000042.v3",
        "start": {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "India Standard Time"},
        "end": {"dateTime": "2026-12-01T03:30:00.0000000Z", "timeZone": "UTC"},
        "originalStartTimeZone": "India Standard Time", "lastModifiedDateTime": "2026-11-30T08:00:00Z",
        "body": {"contentType": "html", "content": "<html><body><p>Gate&nbsp;3</p></body></html>"},
        "location": {"displayName": "Whitefield"},
    }, "planning@drymix.example")
    assert event.starts_at == IST_NINE and event.ends_at == IST_NINE
    assert (event.etag, event.schedule_ref, event.time_zone, event.status) == ('W/"abc"', "DLV-2026-000042", "Asia/Kolkata", "confirmed")
    assert event.description == "Gate 3" and event.location == "Whitefield"


def test_removed_and_cancelled_events_are_cancellations() -> None:
    removed = from_graph_event({"@odata.type": "#microsoft.graph.event", "id": "AAMk2", "@removed": {"reason": "deleted"}}, "u")
    assert removed.cancelled and removed.title is None
    cancelled = from_graph_event({"id": "AAMk3", "isCancelled": True, "subject": "x"}, "u")
    assert cancelled.cancelled
