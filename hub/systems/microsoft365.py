"""Outlook calendar events through Microsoft Graph, as the sync engine pulls them (flows/sync_microsoft_calendar.py,
docs/calendar-sync.md).

`CALENDAR_EVENTS`: the calendar view's changes since the saved `@odata.deltaLink` (connectors/microsoft365
`CALENDAR_DELTA`, whose last page hands back the deltaLink), each page applied by the shared conflict rule
(hub/systems/calendars.py `calendar_apply`) in one transaction, the new deltaLink and its window with the last, under
one `sync_state` row per mailbox. A first read, a window about to run out or an expired token (410
`syncStateNotFound` / `resyncRequired`) reads a fresh window in full; the old cursor stays until the new one commits.
`vanished_events` then looks up the linked events such a full read did not return (deleted meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from connectors.core.errors import InvalidRequest
from connectors.microsoft365.connector import CALENDAR_DELTA, INTEGRATION
from data_mappings.microsoft365_events import PROVIDER, from_graph_event
from data_mappings.schedules import CalendarEvent
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.retry_units import OUTLOOK_CALENDAR_PULL
from hub.systems.calendars import PullResult, apply_remote_page, calendar_apply, cursor_dataset
from tasks.streams import PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from connectors.core.base import Connector, Stream
    from connectors.microsoft365.connector import Microsoft365Connector

log = logging.getLogger(__name__)


def calendar_user(options: RunOptions | None = None) -> str:
    """The mailbox whose calendar is synced: a failed unit's, else the configured one."""
    from hub.core.settings import get_settings

    return str((options.parameters.get("calendar_id") if options else None) or get_settings().microsoft365_calendar_user or "")


def _connect(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_microsoft365_connector

    connector = build_microsoft365_connector()
    wanted = options.parameters.get("calendar_id")
    try:
        if not connector.calendar_user:
            raise InvalidRequest("MICROSOFT365_CALENDAR_USER is not set (see .env.example)", integration=INTEGRATION)
        if wanted not in (None, connector.calendar_user):
            raise InvalidRequest(f"the failed unit belongs to the calendar of {wanted}, not {connector.calendar_user}: "
                                 "rerun it with that MICROSOFT365_CALENDAR_USER", integration=INTEGRATION)
    except InvalidRequest:
        connector.close()
        raise
    return connector


def _plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    graph: Microsoft365Connector = connector  # type: ignore[assignment]
    calendar = graph.calendar
    now = datetime.now(UTC)
    link = (cursor or {}).get("delta_link")
    saved_start, saved_end = ((datetime.fromisoformat(cursor[k]) if cursor and cursor.get(k) else None) for k in ("window_start", "window_end"))
    mode = "incremental" if link else "full"
    if link and saved_end is not None and saved_end - now < timedelta(days=calendar.window_future_days / 2):
        log.info("delta window ends %s: re-reading a fresh window", saved_end.isoformat())
        link, mode = None, "full (window rolled)"
    if link:
        window = (saved_start, saved_end) if saved_start and saved_end else _window(now, graph)
        position = graph.start(stream, {"delta_link": link})
    else:
        window = _window(now, graph)
        position = graph.start(stream, {"start": window[0], "end": window[1]})
    return ReadPlan(position=position, mode=mode, state={
        "calendar_id": graph.calendar_user, "window_start": window[0].isoformat(), "window_end": window[1].isoformat(),
        "full_read": not link,  # a full read cannot show deletions: `vanished_events` looks them up afterwards
    })


def _window(now: datetime, connector: Microsoft365Connector) -> tuple[datetime, datetime]:
    options = connector.calendar
    return now - timedelta(days=options.window_past_days), now + timedelta(days=options.window_future_days)


def _next_cursor(plan: ReadPlan, end_cursor: Any, started: datetime) -> dict[str, Any] | None:
    if not end_cursor:
        return None
    return {"delta_link": end_cursor["delta_link"], "window_start": plan.state["window_start"], "window_end": plan.state["window_end"]}


CALENDAR_EVENTS = PullStream(
    integration=INTEGRATION,
    dataset="calendar_events",
    flow_name="sync-microsoft-calendar",
    unit_kind=OUTLOOK_CALENDAR_PULL,
    operation="sync_calendar_pull",
    stream=CALENDAR_DELTA,
    connect=_connect,
    plan=_plan,
    next_cursor=_next_cursor,
    apply=calendar_apply(PROVIDER, INTEGRATION, from_graph_event),
    cursor_key=lambda options: cursor_dataset(calendar_user(options)),
    resync=True,
    batch_pages=1,  # each page commits with its changes
    # A nextLink belongs to the read that made it: a rerun reads again from the failed run's delta link
    # (pages that committed apply again as no-ops).
    resumable=lambda position: False,
    resolve=(),  # errors are resolved by their reruns: a later run may have read another mailbox's calendar
)


def vanished_events(session_factory: Callable[[], Session], connector: Microsoft365Connector, pull: Mapping[str, Any],
                    since: datetime, run_name: str | None) -> tuple[int, PullResult]:
    """After a full read: linked, live events in its window that it did not return (their link not seen `since` the
    read started) were deleted meanwhile, or not: each is looked up, then all are applied in one transaction."""
    calendar_id = connector.calendar_user
    start, end = datetime.fromisoformat(pull["window_start"]), datetime.fromisoformat(pull["window_end"])
    with session_factory() as session:
        candidates = list(session.scalars(
            select(ScheduleCalendarLink.event_id)
            .join(Schedule, Schedule.id == ScheduleCalendarLink.schedule_id)
            .where(ScheduleCalendarLink.provider == PROVIDER, ScheduleCalendarLink.calendar_id == calendar_id,
                   ScheduleCalendarLink.remote_status != "cancelled", ScheduleCalendarLink.synced_at < since,
                   Schedule.starts_at < end, Schedule.ends_at > start)
        ))
    gone: list[CalendarEvent] = []
    for event_id in candidates:
        item = connector.get_event(event_id)
        gone.append(CalendarEvent(PROVIDER, calendar_id, event_id, status="cancelled") if item is None else from_graph_event(item, calendar_id))
    if not gone:
        return len(candidates), PullResult()
    with session_factory() as session:
        result = apply_remote_page(session, provider=PROVIDER, calendar_id=calendar_id, integration=INTEGRATION, events=gone, run_name=run_name)
        session.commit()
    return len(candidates), result
