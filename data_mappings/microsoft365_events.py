"""Microsoft Graph events <-> the provider-neutral `CalendarEvent` and ERP schedules (pure, no I/O).

Our events carry the ERP key in `transactionId` ("drymix.<schedule_ref>.v<version>"): Graph's idempotency
key for creates (a retried POST returns the event of the first attempt), unique per schedule version so a
re-created event (after a person deleted it) is a new create, and readable back to adopt an event whose
create answer was lost. Times go out in the schedule's zone (Windows zone names where Outlook has one,
else the IANA name) and are read back as aware UTC; `@odata.etag` is the change marker the rule compares.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from data_mappings.schedules import CalendarEvent, ScheduleLike, schedule_payload

PROVIDER = "microsoft365"
TRANSACTION_PREFIX = "drymix."
CATEGORY = "DryMix ERP"

# Outlook's Windows zone names for the zones our schedules use; any other IANA name is sent as it is.
IANA_TO_WINDOWS: dict[str, str] = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "Asia/Kolkata": "India Standard Time",
    "Asia/Calcutta": "India Standard Time",
    "Asia/Dubai": "Arabian Standard Time",
    "Asia/Singapore": "Singapore Standard Time",
    "Europe/London": "GMT Standard Time",
    "Europe/Berlin": "W. Europe Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
}
WINDOWS_TO_IANA: dict[str, str] = {w: i for i, w in IANA_TO_WINDOWS.items() if i not in ("Etc/UTC", "Asia/Calcutta")}
_TAGS = re.compile(r"<[^>]+>")
_FRACTION = re.compile(r"(\.\d{6})\d+$")


def transaction_id(schedule_ref: str, version: int) -> str:
    """Graph `transactionId` for creating a schedule's event at one version (stable across retries)."""
    return f"{TRANSACTION_PREFIX}{schedule_ref}.v{version}"


def schedule_ref_from_transaction(value: Any) -> str | None:
    """The schedule_ref in one of our transactionIds; None for events people made."""
    if not isinstance(value, str) or not value.startswith(TRANSACTION_PREFIX):
        return None
    body = value[len(TRANSACTION_PREFIX) :]
    ref, dot, version = body.rpartition(".v")
    return ref if dot and ref and version.isdigit() else None


def graph_zone(zone: str) -> str:
    return IANA_TO_WINDOWS.get(zone, zone)


def iana_zone(zone: str | None) -> str | None:
    if not zone:
        return None
    name = WINDOWS_TO_IANA.get(zone, zone)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def _local(moment: datetime, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz, zone = ZoneInfo("UTC"), "UTC"
    return moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")


def to_graph_event(schedule: ScheduleLike, *, for_create: bool = True, version: int | None = None) -> dict[str, Any]:
    """The POST (with `transactionId`) or PATCH body of a schedule's event."""
    payload = schedule_payload(schedule)
    zone = payload["time_zone"] or "UTC"
    body: dict[str, Any] = {
        "subject": payload["title"],
        "body": {"contentType": "text", "content": payload["description"] or ""},
        "start": {"dateTime": _local(payload["starts_at"], zone), "timeZone": graph_zone(zone)},
        "end": {"dateTime": _local(payload["ends_at"], zone), "timeZone": graph_zone(zone)},
        "location": {"displayName": payload["location"] or ""},
        "categories": [CATEGORY, payload["kind"]],
        "showAs": "busy",
    }
    if for_create:
        body["transactionId"] = transaction_id(payload["schedule_ref"], version if version is not None else schedule.version)
    return body


def _when(part: Any) -> tuple[datetime | None, str | None]:
    if not isinstance(part, Mapping) or not part.get("dateTime"):
        return None, None
    zone = str(part.get("timeZone") or "UTC")
    text = _FRACTION.sub(r"\1", str(part["dateTime"]).rstrip("Z"))
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(iana_zone(zone) or "UTC"))
    return moment.astimezone(UTC), zone


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _text(body: Any) -> str | None:
    if not isinstance(body, Mapping) or not body.get("content"):
        return None
    content = str(body["content"])
    if str(body.get("contentType", "text")).lower() == "html":
        content = html.unescape(_TAGS.sub(" ", content))
        content = re.sub(r"\s+", " ", content)
    return content.strip() or None


def from_graph_event(item: Mapping[str, Any], calendar_id: str) -> CalendarEvent:
    """A Graph event (or the `@removed` stub of a deletion in a delta read) -> CalendarEvent."""
    event_id = str(item["id"])
    if "@removed" in item:
        return CalendarEvent(PROVIDER, calendar_id, event_id, status="cancelled", raw=item)
    starts_at, _ = _when(item.get("start"))
    ends_at, _ = _when(item.get("end"))
    location = item.get("location") if isinstance(item.get("location"), Mapping) else {}
    status = "cancelled" if item.get("isCancelled") else ("tentative" if item.get("showAs") == "tentative" else "confirmed")
    return CalendarEvent(
        provider=PROVIDER,
        calendar_id=calendar_id,
        event_id=event_id,
        status=status,
        schedule_ref=schedule_ref_from_transaction(item.get("transactionId")),
        title=item.get("subject"),
        description=_text(item.get("body")),
        location=(location or {}).get("displayName") or None,
        starts_at=starts_at,
        ends_at=ends_at,
        time_zone=iana_zone(item.get("originalStartTimeZone")),
        etag=item.get("@odata.etag") or (f'W/"{item["changeKey"]}"' if item.get("changeKey") else None),
        updated_at=_time(item.get("lastModifiedDateTime")),
        raw=item,
    )
