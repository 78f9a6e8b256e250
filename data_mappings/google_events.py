"""Google Calendar events <-> the provider-neutral `CalendarEvent` and ERP schedules (pure, no I/O).

Our events carry the ERP key twice: in the event id itself (base32hex of the schedule_ref, so a retried insert
hits 409 instead of creating a twin) and in `extendedProperties.private` (what a person cannot see or edit).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from data_mappings.schedules import CalendarEvent, ScheduleLike, schedule_payload

PROVIDER = "google_workspace"
EVENT_ID_PREFIX = "erp0"  # base32hex characters only (a-v, 0-9)
REF_PROPERTY = "drymixScheduleRef"
KIND_PROPERTY = "drymixKind"


def event_id_for(schedule_ref: str) -> str:
    """Deterministic Google event id of a schedule: "erp0" + lower-case base32hex of the key, unpadded.

    Reversible, 5..1024 characters of a-v0-9 as Google requires for client-supplied ids (schedule_ref <= 64
    characters gives at most 107).
    """
    if not schedule_ref:
        raise ValueError("schedule_ref is empty")
    encoded = base64.b32hexencode(schedule_ref.encode("utf-8")).decode("ascii").rstrip("=").lower()
    return EVENT_ID_PREFIX + encoded


def schedule_ref_from_event_id(event_id: str) -> str | None:
    """The schedule_ref an id of ours encodes; None for events we did not create."""
    if not event_id.startswith(EVENT_ID_PREFIX):
        return None
    body = event_id[len(EVENT_ID_PREFIX) :].upper()
    try:
        return base64.b32hexdecode(body + "=" * (-len(body) % 8)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _rfc3339_local(moment: datetime, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    return moment.astimezone(tz).isoformat()


def to_google_event(schedule: ScheduleLike, *, with_id: bool = True) -> dict[str, Any]:
    """The events.insert / events.patch body for a schedule (times local to its zone, with the offset)."""
    payload = schedule_payload(schedule)
    body: dict[str, Any] = {
        "summary": payload["title"],
        "description": payload["description"] or "",
        "location": payload["location"] or "",
        "start": {"dateTime": _rfc3339_local(payload["starts_at"], payload["time_zone"]), "timeZone": payload["time_zone"]},
        "end": {"dateTime": _rfc3339_local(payload["ends_at"], payload["time_zone"]), "timeZone": payload["time_zone"]},
        "status": "cancelled" if payload["cancelled"] else "confirmed",
        "extendedProperties": {"private": {REF_PROPERTY: payload["schedule_ref"], KIND_PROPERTY: payload["kind"]}},
    }
    if with_id:
        body["id"] = event_id_for(payload["schedule_ref"])
    return body


def _parse_when(part: Any, fallback_zone: str | None) -> tuple[datetime | None, str | None]:
    if not isinstance(part, Mapping):
        return None, None
    zone = part.get("timeZone") or fallback_zone
    if part.get("dateTime"):
        moment = datetime.fromisoformat(str(part["dateTime"]).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(zone) if zone else UTC)
        return moment.astimezone(UTC), zone
    if part.get("date"):
        # An all-day event: midnight in the calendar's zone.
        day = datetime.fromisoformat(str(part["date"])).date()
        tz = ZoneInfo(zone) if zone else UTC
        return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC), zone
    return None, zone


def _parse_updated(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def from_google_event(item: Mapping[str, Any], calendar_id: str, *, calendar_zone: str | None = None) -> CalendarEvent:
    """A Google Event resource (also the bare {id, status: cancelled} of a deletion) -> CalendarEvent."""
    event_id = str(item["id"])
    private = ((item.get("extendedProperties") or {}).get("private") or {}) if isinstance(item, Mapping) else {}
    ref = private.get(REF_PROPERTY) or schedule_ref_from_event_id(event_id)
    status = str(item.get("status") or "confirmed")
    starts_at, zone = _parse_when(item.get("start"), calendar_zone)
    ends_at, _ = _parse_when(item.get("end"), calendar_zone)
    return CalendarEvent(
        provider=PROVIDER,
        calendar_id=calendar_id,
        event_id=event_id,
        status=status if status in ("confirmed", "tentative", "cancelled") else "confirmed",
        schedule_ref=ref,
        title=item.get("summary"),
        description=item.get("description") or None,
        location=item.get("location") or None,
        starts_at=starts_at,
        ends_at=ends_at,
        time_zone=zone,
        etag=item.get("etag"),
        updated_at=_parse_updated(item.get("updated")),
        raw=item,
    )
