"""ERP schedules <-> calendar events: the provider-neutral event shape and the two-way sync rule.

Pure functions, no I/O: both calendar syncs (Google Workspace, Microsoft 365) map their provider's event to
`CalendarEvent`, then ask `decide()` what to do with each (schedule, link, remote event) triple. The rule is
written down in docs/calendar-sync.md; the tests in tests/data_mappings/test_schedules.py pin it.

Change detection, the same for both providers:
- the ERP changed since the last sync when `schedule.version > link.pushed_version` (every ERP-side change bumps
  `version`; a change pulled from a calendar bumps it too and sets `pushed_version` to the new version);
- the calendar changed when the remote event's etag differs from `link.etag` (our own pushes store the etag
  the provider answered, so the echo of our push in the next incremental read is not a change).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

KINDS: tuple[str, ...] = ("delivery", "site_visit", "maintenance")
STATUSES: tuple[str, ...] = ("scheduled", "cancelled")
OWNERS: tuple[str, ...] = ("erp", "calendar")
PROVIDERS: tuple[str, ...] = ("microsoft365", "google_workspace")
MAX_DURATION = timedelta(days=7)
"""Longest plausible schedule (a plant shutdown for maintenance); longer is a data error."""

SCHEDULE_COLUMNS: list[str] = [
    "schedule_ref",
    "kind",
    "title",
    "description",
    "location",
    "starts_at",
    "ends_at",
    "time_zone",
    "status",
    "owner",
]
"""Columns of `schedules` a sync may write (id, version, timestamps are the loader's)."""

CONTENT_FIELDS: tuple[str, ...] = ("title", "description", "location")
TIME_FIELDS: tuple[str, ...] = ("starts_at", "ends_at")


class ScheduleLike(Protocol):
    """What the rule reads of a schedule: a `hub.core.models.Schedule` row or a `ScheduleSnapshot`."""

    schedule_ref: str
    kind: str
    title: str
    description: str | None
    location: str | None
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    status: str
    owner: str
    version: int
    updated_at: datetime


class LinkLike(Protocol):
    """What the rule reads of a link: a `hub.core.models.ScheduleCalendarLink` row or a `LinkSnapshot`."""

    event_id: str
    etag: str | None
    pushed_version: int | None
    remote_status: str | None
    remote_updated_at: datetime | None


@dataclass
class ScheduleSnapshot:
    """A schedule outside the database (tests, dry runs); same attribute names as the ORM row."""

    schedule_ref: str
    kind: str
    title: str
    starts_at: datetime
    ends_at: datetime
    description: str | None = None
    location: str | None = None
    time_zone: str = "Asia/Kolkata"
    status: str = "scheduled"
    owner: str = "erp"
    version: int = 1
    updated_at: datetime = field(kw_only=True)  # handed in: a mapping never reads the clock


@dataclass
class LinkSnapshot:
    event_id: str
    etag: str | None = None
    pushed_version: int | None = None
    remote_status: str | None = None
    remote_updated_at: datetime | None = None


@dataclass(frozen=True)
class CalendarEvent:
    """One calendar event in provider-neutral form.

    `status` is normalised to "confirmed" | "tentative" | "cancelled"; a deleted event (Google `status:
    cancelled`, Graph `@removed`, or 404 on read) is "cancelled". For a deleted event only `event_id`, `status`
    and maybe `etag`/`updated_at` are known: the other fields are None. `schedule_ref` is the ERP key we put
    on events we create (Google private extended property, Graph single-value extended property / transactionId).
    """

    provider: str
    calendar_id: str
    event_id: str
    status: str
    schedule_ref: str | None = None
    title: str | None = None
    description: str | None = None
    location: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    time_zone: str | None = None
    etag: str | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


class Action(enum.StrEnum):
    NOTHING = "nothing"
    CREATE = "create"  # no remote event yet: insert it
    PUSH = "push"  # write the ERP's state over the remote event (patch)
    CANCEL_REMOTE = "cancel_remote"  # the ERP cancelled: delete / cancel the remote event
    PULL = "pull"  # take the remote change into the ERP (see Decision.fields)
    CANCEL_IN_ERP = "cancel_in_erp"  # a person cancelled / deleted the event: cancel the schedule
    RECREATE = "recreate"  # the remote event was deleted but the ERP re-planned later: create it again
    IGNORE = "ignore"  # a remote event that is not ours (no schedule for it)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    conflict: bool = False  # both sides changed since the last sync
    winner: str | None = None  # "erp" | "calendar" when conflict
    fields: tuple[str, ...] = ()  # PULL: which schedule fields to take from the remote event
    push_after: bool = False  # PULL: then push the ERP's content back (it differs from the remote)


def erp_changed(schedule: ScheduleLike, link: LinkLike | None) -> bool:
    return link is None or link.pushed_version is None or schedule.version > link.pushed_version


def remote_changed(link: LinkLike | None, remote: CalendarEvent | None) -> bool:
    """A remote event changed since the last sync: its etag moved (absent = not in this incremental read)."""
    if link is None or remote is None:
        return False
    if remote.etag is not None and link.etag is not None:
        return remote.etag != link.etag
    # No etag to compare (a bare deletion): compare state and time.
    if remote.cancelled != (link.remote_status == "cancelled"):
        return True
    return remote.updated_at is not None and (link.remote_updated_at is None or remote.updated_at > link.remote_updated_at)


def _differs(schedule: ScheduleLike, remote: CalendarEvent, names: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for name in names:
        mine, theirs = getattr(schedule, name), getattr(remote, name)
        if isinstance(mine, str) or isinstance(theirs, str) or mine is None or theirs is None:
            if (mine or None) != (theirs or None):
                out.append(name)
        elif mine != theirs:
            out.append(name)
    return tuple(out)


def _later_writer(schedule: ScheduleLike, remote: CalendarEvent) -> str:
    """Who changed last; a tie or an unknown remote time goes to the ERP (it planned the work)."""
    if remote.updated_at is not None and remote.updated_at > schedule.updated_at:
        return "calendar"
    return "erp"


def decide(schedule: ScheduleLike | None, link: LinkLike | None, remote: CalendarEvent | None) -> Decision:
    """What one sync does for one schedule, given its link to a calendar and the remote event seen now.

    `remote` is None when this read did not return the event (unchanged since the last sync token, or not
    looked at); a deleted event is a `CalendarEvent` with status "cancelled". See docs/calendar-sync.md.
    """
    if schedule is None:
        return Decision(Action.IGNORE, "remote event has no ERP schedule")
    cancelled_in_erp = schedule.status == "cancelled"

    if link is None:
        if remote is not None:
            # Our event exists but its link was lost (insert answered after a crash): adopt it, then judge it.
            return decide(schedule, _adopted(remote), remote)
        if cancelled_in_erp:
            return Decision(Action.NOTHING, "cancelled before it ever reached the calendar")
        return Decision(Action.CREATE, "schedule not in the calendar yet")

    e_changed = erp_changed(schedule, link)
    r_changed = remote_changed(link, remote)

    if not e_changed and not r_changed:
        return Decision(Action.NOTHING, "neither side changed since the last sync")

    if e_changed and not r_changed:
        if cancelled_in_erp:
            if link.remote_status == "cancelled":
                return Decision(Action.NOTHING, "cancelled on both sides")
            return Decision(Action.CANCEL_REMOTE, "cancelled in the ERP")
        if link.remote_status == "cancelled":
            return Decision(Action.RECREATE, "re-planned in the ERP after the calendar event was deleted")
        return Decision(Action.PUSH, "changed in the ERP")

    assert remote is not None  # r_changed implies a remote event
    if not e_changed:
        return _pull(schedule, remote, conflict=False)

    # Both sides changed since the last sync.
    if cancelled_in_erp:
        if remote.cancelled:
            return Decision(Action.NOTHING, "cancelled on both sides", conflict=True, winner="erp")
        return Decision(Action.CANCEL_REMOTE, "cancelled in the ERP: an ERP cancellation is final", True, "erp")
    if remote.cancelled:
        if _later_writer(schedule, remote) == "erp":
            return Decision(Action.RECREATE, "the ERP re-planned after the person cancelled", True, "erp")
        return Decision(Action.CANCEL_IN_ERP, "cancelled in the calendar after the ERP's change", True, "calendar")
    if schedule.owner == "calendar":
        return _pull(schedule, remote, conflict=True)
    # ERP-owned, both live: content is the ERP's; the times go to whoever moved them last.
    if _later_writer(schedule, remote) == "calendar" and _differs(schedule, remote, TIME_FIELDS):
        return Decision(
            Action.PULL,
            "moved in the calendar after the ERP's change: times from the calendar, content from the ERP",
            conflict=True,
            winner="calendar",
            fields=_differs(schedule, remote, TIME_FIELDS),
            push_after=True,
        )
    return Decision(Action.PUSH, "changed in the ERP after the calendar's change: the ERP wins", True, "erp")


def _pull(schedule: ScheduleLike, remote: CalendarEvent, *, conflict: bool) -> Decision:
    winner = "calendar" if conflict else None
    if remote.cancelled:
        if schedule.status == "cancelled":
            return Decision(Action.NOTHING, "cancelled on both sides", conflict, winner)
        return Decision(Action.CANCEL_IN_ERP, "cancelled or deleted in the calendar", conflict, winner)
    if schedule.status == "cancelled":
        # A person edited an event whose schedule the ERP had cancelled (and the cancellation reached the
        # calendar earlier): the event is live again, so the person restored it.
        names = TIME_FIELDS + CONTENT_FIELDS if schedule.owner == "calendar" else TIME_FIELDS
        return Decision(Action.PULL, "restored in the calendar", conflict, winner, fields=names + ("status",))
    if schedule.owner == "calendar":
        names = _differs(schedule, remote, TIME_FIELDS + CONTENT_FIELDS)
        return Decision(Action.PULL, "changed in the calendar (calendar-owned)", conflict, winner, fields=names)
    names = _differs(schedule, remote, TIME_FIELDS)
    content = _differs(schedule, remote, CONTENT_FIELDS)
    if not names and not content:
        return Decision(Action.PULL, "remote touched without a change that matters", conflict, winner)
    return Decision(
        Action.PULL,
        "moved in the calendar" if names else "content edited in the calendar: the ERP's content is restored",
        conflict,
        winner,
        fields=names,
        push_after=bool(content),
    )


def _adopted(remote: CalendarEvent) -> LinkSnapshot:
    # The event we find is the one we created: treat its current state as the last synced one, version unknown.
    return LinkSnapshot(
        event_id=remote.event_id,
        etag=remote.etag,
        pushed_version=None,
        remote_status=remote.status,
        remote_updated_at=remote.updated_at,
    )


def remote_changes(remote: CalendarEvent, decision: Decision) -> dict[str, Any]:
    """The schedule column values a PULL or CANCEL_IN_ERP writes (the caller bumps `version`)."""
    if decision.action is Action.CANCEL_IN_ERP:
        return {"status": "cancelled"}
    if decision.action is not Action.PULL:
        return {}
    out: dict[str, Any] = {}
    for name in decision.fields:
        out[name] = "scheduled" if name == "status" else getattr(remote, name)
    if "starts_at" in out and remote.time_zone:
        out["time_zone"] = remote.time_zone
    return out


def schedule_payload(schedule: ScheduleLike) -> dict[str, Any]:
    """The ERP's side of an event, provider-neutral: what CREATE / PUSH / RECREATE send."""
    return {
        "schedule_ref": schedule.schedule_ref,
        "kind": schedule.kind,
        "title": schedule.title,
        "description": schedule.description,
        "location": schedule.location,
        "starts_at": schedule.starts_at,
        "ends_at": schedule.ends_at,
        "time_zone": schedule.time_zone,
        "cancelled": schedule.status == "cancelled",
    }


FRAME_COLUMNS: list[str] = [
    "record_key",
    "schedule_ref",
    "kind",
    "title",
    "location",
    "starts_at",
    "ends_at",
    "duration_minutes",
    "status",
]
"""The frame expectations/schedules.py validates: ERP schedules before a push, remote events before a pull.
`record_key` is the event id (pull) or the schedule_ref (push): what a quarantine row is keyed by."""


def schedules_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows with FRAME_COLUMNS' source fields (duration is computed) -> the frame the suite validates."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=[c for c in FRAME_COLUMNS if c != "duration_minutes"])
    for name in ("starts_at", "ends_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame["duration_minutes"] = (frame["ends_at"] - frame["starts_at"]).dt.total_seconds() / 60.0
    return frame[FRAME_COLUMNS]


def schedule_row(schedule: ScheduleLike) -> dict[str, Any]:
    """One ERP schedule as a frame row (push side)."""
    return {
        "record_key": schedule.schedule_ref,
        "schedule_ref": schedule.schedule_ref,
        "kind": schedule.kind,
        "title": schedule.title,
        "location": schedule.location,
        "starts_at": schedule.starts_at,
        "ends_at": schedule.ends_at,
        "status": "cancelled" if schedule.status == "cancelled" else "confirmed",
    }


def event_row(event: CalendarEvent, kind: str | None) -> dict[str, Any]:
    """One remote event as a frame row (pull side); `kind` comes from its ERP schedule."""
    return {
        "record_key": event.event_id,
        "schedule_ref": event.schedule_ref,
        "kind": kind,
        "title": event.title,
        "location": event.location,
        "starts_at": event.starts_at,
        "ends_at": event.ends_at,
        "status": event.status,
    }
