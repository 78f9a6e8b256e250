"""ERP side of the calendar syncs: which schedules to push, and how pushes and pulls are written back.

Shared by the Google Workspace and Microsoft 365 flows. The decisions themselves are pure and live in
data_mappings/schedules.py; this module only reads and writes `schedules` and `schedule_calendar_links`.
Functions take an open Session and never commit: the caller commits, with its sync cursor, in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from data_mappings.schedules import CalendarEvent, Decision, remote_changes
from hub.core.models import Schedule, ScheduleCalendarLink, utcnow


def schedules_to_push(
    session: Session,
    provider: str,
    calendar_id: str,
    *,
    since: datetime | None = None,
    limit: int | None = None,
    refs: Collection[str] | None = None,
) -> list[tuple[Schedule, ScheduleCalendarLink | None]]:
    """Schedules whose ERP side changed since their last push to this calendar (or never pushed); only the
    schedules named in `refs` when given (the rerun of failed pushes).

    Never-pushed schedules already cancelled, or ended before `since`, are left out: nothing to show.
    """
    link = ScheduleCalendarLink
    stmt = (
        select(Schedule, link)
        .outerjoin(
            link,
            and_(link.schedule_id == Schedule.id, link.provider == provider, link.calendar_id == calendar_id),
        )
        .where(
            or_(
                and_(link.id.is_(None), Schedule.status == "scheduled"),
                link.pushed_version.is_(None),
                Schedule.version > link.pushed_version,
            )
        )
        .order_by(Schedule.id)
    )
    if since is not None:
        stmt = stmt.where(or_(link.id.is_not(None), Schedule.ends_at >= since))
    if refs is not None:
        stmt = stmt.where(Schedule.schedule_ref.in_(list(refs)))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(s, lk) for s, lk in session.execute(stmt).all()]


def links_for_events(
    session: Session, provider: str, calendar_id: str, event_ids: Iterable[str]
) -> dict[str, tuple[Schedule, ScheduleCalendarLink]]:
    """event_id -> (schedule, link) for the remote events of one incremental read."""
    ids = list(dict.fromkeys(event_ids))
    out: dict[str, tuple[Schedule, ScheduleCalendarLink]] = {}
    for start in range(0, len(ids), 500):
        stmt = (
            select(Schedule, ScheduleCalendarLink)
            .join(ScheduleCalendarLink, ScheduleCalendarLink.schedule_id == Schedule.id)
            .where(
                ScheduleCalendarLink.provider == provider,
                ScheduleCalendarLink.calendar_id == calendar_id,
                ScheduleCalendarLink.event_id.in_(ids[start : start + 500]),
            )
        )
        for schedule, link in session.execute(stmt).all():
            out[link.event_id] = (schedule, link)
    return out


def schedules_by_ref(session: Session, refs: Iterable[str]) -> dict[str, Schedule]:
    refs = list(dict.fromkeys(refs))
    out: dict[str, Schedule] = {}
    for start in range(0, len(refs), 500):
        stmt = select(Schedule).where(Schedule.schedule_ref.in_(refs[start : start + 500]))
        out.update({s.schedule_ref: s for s in session.scalars(stmt)})
    return out


def record_push(
    session: Session,
    schedule: Schedule,
    link: ScheduleCalendarLink | None,
    *,
    provider: str,
    calendar_id: str,
    event_id: str,
    etag: str | None,
    remote_status: str,
    remote_updated_at: datetime | None,
) -> ScheduleCalendarLink:
    """The remote event now matches `schedule.version`: create or update its link."""
    if link is None:
        link = ScheduleCalendarLink(schedule_id=schedule.id, provider=provider, calendar_id=calendar_id)
        session.add(link)
    link.event_id = event_id
    link.etag = etag
    link.pushed_version = schedule.version
    link.remote_status = remote_status
    link.remote_updated_at = remote_updated_at
    link.synced_at = utcnow()
    return link


def adopt_link(
    session: Session, schedule: Schedule, *, provider: str, calendar_id: str, remote: CalendarEvent
) -> ScheduleCalendarLink:
    """A link for an event of ours found without one (its insert's answer was lost): version unknown."""
    link = ScheduleCalendarLink(
        schedule_id=schedule.id,
        provider=provider,
        calendar_id=calendar_id,
        event_id=remote.event_id,
        etag=remote.etag,
        pushed_version=None,
        remote_status=remote.status,
        remote_updated_at=remote.updated_at,
        synced_at=utcnow(),
    )
    session.add(link)
    return link


def apply_pull(
    session: Session,
    schedule: Schedule,
    link: ScheduleCalendarLink,
    remote: CalendarEvent,
    decision: Decision,
    *,
    provider: str,
) -> dict[str, Any]:
    """Write a person's calendar change (PULL / CANCEL_IN_ERP) into the schedule; return the changed columns.

    The change bumps `version` and the link records that version as pushed, so it is not echoed back; with
    `decision.push_after` the caller pushes the ERP's content afterwards, which records the push again.
    """
    changes = {k: v for k, v in remote_changes(remote, decision).items() if getattr(schedule, k) != v}
    if changes:
        for name, value in changes.items():
            setattr(schedule, name, value)
        schedule.version += 1
        schedule.updated_by = provider
        schedule.updated_at = utcnow()
    link.etag = remote.etag
    link.remote_status = remote.status
    link.remote_updated_at = remote.updated_at
    link.pushed_version = schedule.version if not decision.push_after else link.pushed_version
    link.synced_at = utcnow()
    return changes


def record_remote_seen(link: ScheduleCalendarLink, remote: CalendarEvent) -> None:
    """The remote event changed but nothing needs doing: remember its state so it is not judged again."""
    link.etag = remote.etag
    link.remote_status = remote.status
    link.remote_updated_at = remote.updated_at
    link.synced_at = utcnow()


def save_schedule(session: Session, schedule_ref: str, *, by: str, **fields: Any) -> Schedule:
    """Create or change an ERP schedule the way the ERP must: every real change bumps `version`.

    `by` goes to `updated_by` (e.g. "erp:planner.ravi"); unknown field names are refused.
    """
    allowed = {"kind", "title", "description", "location", "starts_at", "ends_at", "time_zone", "status", "owner"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not schedule fields: {', '.join(sorted(unknown))}")
    schedule = session.scalars(select(Schedule).where(Schedule.schedule_ref == schedule_ref)).first()
    if schedule is None:
        schedule = Schedule(schedule_ref=schedule_ref, version=1, updated_by=by, **fields)
        session.add(schedule)
        session.flush()
        return schedule
    changed = {k: v for k, v in fields.items() if getattr(schedule, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(schedule, name, value)
        schedule.version += 1
        schedule.updated_by = by
        schedule.updated_at = utcnow()
        session.flush()
    return schedule
