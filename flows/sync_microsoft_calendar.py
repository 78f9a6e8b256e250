"""ERP schedules <-> an Outlook calendar through Microsoft Graph, both ways (docs/calendar-sync.md, docs/microsoft365.md).

Top to bottom:
1. extract: the calendar view's changes since the saved `@odata.deltaLink` (pages of `@odata.nextLink`);
   an expired delta token (410 `syncStateNotFound` / `resyncRequired`) or a window about to run out
   turns the read into a full one over a fresh window;
2. map + validate: each page's Graph events to the neutral shape (data_mappings/microsoft365_events.py),
   live ones through the `schedules` suite;
3. load: people's moves and cancellations into `schedules` per the shared conflict rule, one transaction per
   page; the LAST page's transaction also writes the new deltaLink to `sync_state`. After a full read,
   linked events that did not come back are looked up one by one (deleted while the token was dead);
4. push: never-pushed schedules are created 20 per `$batch` round trip (each with its `transactionId`, so a
   retry creates nothing twice), then every other pending change (moves, cancellations, re-creations)
   goes through the shared push with one request each.

Failed units are queued for a rerun (hub/ledger/retry_units.py): the pull (`microsoft365.calendar_events.pull`) and
the push (`microsoft365.schedules.push`: the schedules whose push failed, or every pending one when the push
stage itself failed). `resume=` reruns exactly that unit: a pull reruns from the saved delta link and pushes
nothing; a push pushes just those schedules and reads nothing. The run's bookkeeping (metrics, the error rows,
the validation-failure row, the run summary) is tasks/engine.py `DatasetRun`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote
from sqlalchemy import select

from connectors.core.errors import InvalidRequest, ResyncRequired
from connectors.microsoft365 import Microsoft365Connector
from data_mappings.microsoft365_events import PROVIDER, from_graph_event, to_graph_event
from data_mappings.schedules import CalendarEvent, schedule_row, schedules_frame
from hub.core.db import get_engine, session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.loading import read_cursor, reset_cursor, write_cursor
from hub.ledger.retry_units import OUTLOOK_CALENDAR_PULL, OUTLOOK_SCHEDULES_PUSH, UnitFailed
from hub.runtime.connections import build_microsoft365_connector
from hub.systems.calendars import (
    SCHEDULES_DATASET,
    CalendarSyncSummary,
    CalendarUnits,
    PullResult,
    PushResult,
    apply_remote_page,
    cursor_dataset,
    failed_push_error,
    push_pending,
    refused,
)
from hub.systems.schedules import record_push, schedules_to_push
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only

INTEGRATION = "microsoft365"
DATASET = "calendar_events"
UNITS = CalendarUnits(pull=OUTLOOK_CALENDAR_PULL, push=OUTLOOK_SCHEDULES_PUSH)


class GraphCalendarRemote:
    """The shared push's view of one Outlook calendar (hub.systems.calendars.CalendarRemote); every call idempotent."""

    provider = PROVIDER

    def __init__(self, connector: Microsoft365Connector) -> None:
        self.connector = connector
        self.calendar_id = connector.calendar_user

    def _event(self, item: dict[str, Any]) -> CalendarEvent:
        return from_graph_event(item, self.calendar_id)

    def create(self, schedule: Schedule) -> CalendarEvent:
        # transactionId: a create retried after a lost answer returns the first attempt's event.
        return self._event(self.connector.create_event(to_graph_event(schedule)))

    def update(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        try:
            return self._event(self.connector.update_event(link.event_id, to_graph_event(schedule, for_create=False)))
        except InvalidRequest as exc:
            if exc.status_code != 404:
                raise
        # A person deleted it and the ERP re-planned: a new event (a new transactionId, this version's).
        return self.create(schedule)

    def cancel(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        self.connector.delete_event(link.event_id)  # already gone counts as done
        return CalendarEvent(PROVIDER, self.calendar_id, link.event_id, status="cancelled", updated_at=datetime.now(UTC))


@dataclass
class OutlookSyncSummary(CalendarSyncSummary):
    integration: str = INTEGRATION
    vanished_checked: int = 0  # linked events a full read did not return, looked up one by one
    batch_created: int = 0  # events created by $batch (the rest of the push is in `push`)

    def written(self) -> int:
        return super().written() + self.batch_created


@task(name="apply_outlook_page", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_condition_fn=retry_transient_only,
      task_run_name="apply-outlook-page")
def apply_outlook_page(items: list[dict[str, Any]], calendar_id: str, *, cursor: dict[str, Any] | None, reset: bool,
                       run_id: str | None) -> PullResult:
    """Map, validate and apply one delta page; its transaction writes the cursor when this is the last page."""
    events = [from_graph_event(item, calendar_id) for item in items]
    with session_factory()() as session:
        if reset:
            reset_cursor(session.connection(), INTEGRATION, cursor_dataset(calendar_id))
        result = apply_remote_page(session, provider=PROVIDER, calendar_id=calendar_id, integration=INTEGRATION,
                                   events=events, run_name=run_id)
        if cursor is not None:
            write_cursor(session.connection(), INTEGRATION, cursor_dataset(calendar_id), cursor, flow_run_id=run_id,
                         rows_added=result.pulled)
        session.commit()
    return result


@task(name="check_vanished_events", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_condition_fn=retry_transient_only,
      task_run_name="check-vanished-events")
def check_vanished_events(connector: Microsoft365Connector, seen: list[str], window: tuple[datetime, datetime],
                          run_id: str | None) -> tuple[int, PullResult]:
    """After a full read: linked, live events in the window that did not come back were deleted meanwhile."""
    calendar_id = connector.calendar_user
    start, end = window
    with session_factory()() as session:
        stmt = (
            select(ScheduleCalendarLink.event_id)
            .join(Schedule, Schedule.id == ScheduleCalendarLink.schedule_id)
            .where(ScheduleCalendarLink.provider == PROVIDER, ScheduleCalendarLink.calendar_id == calendar_id,
                   ScheduleCalendarLink.remote_status != "cancelled", Schedule.starts_at < end, Schedule.ends_at > start)
        )
        returned = set(seen)
        candidates = [e for e in session.scalars(stmt) if e not in returned]
    gone: list[CalendarEvent] = []
    for event_id in candidates:
        item = connector.get_event(event_id)
        gone.append(CalendarEvent(PROVIDER, calendar_id, event_id, status="cancelled") if item is None else from_graph_event(item, calendar_id))
    if not gone:
        return len(candidates), PullResult()
    with session_factory()() as session:
        result = apply_remote_page(session, provider=PROVIDER, calendar_id=calendar_id, integration=INTEGRATION, events=gone, run_name=run_id)
        session.commit()
    return len(candidates), result


@task(name="create_events_batched", cache_policy=NO_CACHE, persist_result=False, task_run_name="create-events-batched")
def create_events_batched(connector: Microsoft365Connector, run_id: str | None, limit: int, only: list[str] | None = None) -> int:
    """Never-pushed, valid schedules (of `only`, when given) created 20 per $batch; what fails or is refused is
    left to the shared push (which retries it once on its own and records or quarantines it)."""
    from expectations.runner import validate_frame

    calendar_id = connector.calendar_user
    created = 0
    with session_factory()() as session:
        since = datetime.now(UTC) - timedelta(days=7)
        fresh = [(s, lk) for s, lk in schedules_to_push(session, PROVIDER, calendar_id, since=since, limit=limit, refs=only)
                 if lk is None and s.status == "scheduled"]
        if not fresh:
            return 0
        outcome = validate_frame("schedules", schedules_frame([schedule_row(s) for s, _ in fresh]), run_name=run_id)
        valid = [fresh[int(label)][0] for label in outcome.valid.index]
        for start in range(0, len(valid), 100):
            chunk = valid[start : start + 100]
            results = connector.create_events([to_graph_event(s) for s in chunk])
            for schedule, result in zip(chunk, results, strict=True):
                if not result.ok or not isinstance(result.body, dict):
                    continue
                event = from_graph_event(result.body, calendar_id)
                record_push(session, schedule, None, provider=PROVIDER, calendar_id=calendar_id, event_id=event.event_id,
                            etag=event.etag, remote_status=event.status, remote_updated_at=event.updated_at)
                created += 1
            session.commit()  # a batch's links are kept even if a later batch fails
    return created


@task(name="push_outlook_schedules", cache_policy=NO_CACHE, persist_result=False, task_run_name="push-outlook-schedules")
def push_outlook_schedules(connector: Microsoft365Connector, run_id: str | None, batch_size: int, only: list[str] | None = None) -> PushResult:
    """ERP -> Outlook for every other pending schedule (of `only`, when given; failures stay pending and are
    recorded, never lost)."""
    return push_pending(session_factory(), GraphCalendarRemote(connector), integration=INTEGRATION, batch_size=batch_size,
                        run_name=run_id, only=only)


@flow(name="sync-microsoft-calendar", description="ERP schedules <-> Outlook calendar events (Microsoft Graph), both ways.")
def sync_microsoft_calendar(full_resync: bool = False, push_batch_size: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """One two-way sync of the configured mailbox's calendar: pull people's changes, then push the ERP's. With
    `resume`, only the failed unit: the pull, or the push (of the schedules it names)."""
    run = DatasetRun(INTEGRATION, DATASET, "sync-microsoft-calendar", resume=resume)
    logger, run_id = run.logger, run.run_id
    connector = build_microsoft365_connector()
    options = connector.calendar
    calendar_id = connector.calendar_user
    summary = OutlookSyncSummary(calendar_id=calendar_id, flow_run_id=run_id)
    kind = resume.get("kind") if resume is not None else None
    only: list[str] | None = list(resume["schedule_refs"]) if resume is not None and resume.get("schedule_refs") else None
    if resume is not None:
        summary.mode = "push rerun" if kind == OUTLOOK_SCHEDULES_PUSH else summary.mode
        logger.info("Outlook calendar: rerun of integration_errors #%s (%s)%s", resume.get("error_id"), kind,
                    f" for {', '.join(only)}" if only else "")
    pulled = PullResult()
    pushed = PushResult()
    stage = "pull"
    try:
        if not calendar_id:
            raise InvalidRequest("MICROSOFT365_CALENDAR_USER is not set (see .env.example)", integration=INTEGRATION)
        if resume is not None and resume.get("calendar_id") not in (None, calendar_id):
            raise InvalidRequest(f"the failed unit belongs to the calendar of {resume['calendar_id']}, not {calendar_id}: "
                                 "rerun it with that MICROSOFT365_CALENDAR_USER", integration=INTEGRATION)
        if kind in (None, OUTLOOK_CALENDAR_PULL):
            with get_engine().connect() as conn:
                saved = None if full_resync else read_cursor(conn, INTEGRATION, cursor_dataset(calendar_id))
            now = datetime.now(UTC)
            link = (saved or {}).get("delta_link")
            window_end = datetime.fromisoformat(saved["window_end"]) if saved and saved.get("window_end") else None
            if link and window_end is not None and window_end - now < timedelta(days=options.window_future_days / 2):
                logger.info("delta window ends %s: re-reading a fresh window", window_end.isoformat())
                link, summary.mode = None, "full (window rolled)"
            if not link and summary.mode == "incremental":
                summary.mode = "full"

            # 1-3. extract, map, validate, load: page by page; the cursor rides with the last page.
            window = (now - timedelta(days=options.window_past_days), now + timedelta(days=options.window_future_days))
            reset = bool(saved)
            seen: list[str] = []
            pages = connector.read_delta(delta_link=link) if link else connector.read_delta(start=window[0], end=window[1])
            try:
                first = next(pages, None)
            except ResyncRequired as expired:
                logger.warning("delta token expired (%s): cursor cleared, running a full sync", expired.code)
                summary.mode = f"full ({expired.code})"
                link = None
                pages = connector.read_delta(start=window[0], end=window[1])
                first = next(pages, None)
            if link:
                saved_window = (datetime.fromisoformat(saved["window_start"]), window_end) if saved and saved.get("window_start") and window_end else window
                window = saved_window
            page = first
            while page is not None:
                following = next(pages, None)
                cursor = None
                if following is None:
                    cursor = {"delta_link": page.delta_link, "window_start": window[0].isoformat(), "window_end": window[1].isoformat()}
                if not link:
                    seen.extend(str(item["id"]) for item in page.records if "@removed" not in item)
                result = apply_outlook_page(quote(page.records), calendar_id, cursor=cursor,  # type: ignore[call-overload]
                                            reset=reset and not link and summary.pages == 0, run_id=run_id)
                pulled.add(result)
                summary.pages += 1
                page = following
            if not link:
                checked, vanished = check_vanished_events(quote(connector), seen, window, run_id)  # type: ignore[call-overload]
                summary.vanished_checked = checked
                pulled.add(vanished)
            summary.pull = asdict(pulled)

        # 4. push the ERP's changes: creates batched, the rest one by one.
        if kind in (None, OUTLOOK_SCHEDULES_PUSH):
            stage = "push"
            summary.batch_created = create_events_batched(quote(connector), run_id, push_batch_size or options.push_page_size * 10, only)  # type: ignore[call-overload]
            pushed = push_outlook_schedules(quote(connector), run_id, push_batch_size or options.push_page_size, only)  # type: ignore[call-overload]
            summary.push = asdict(pushed)
            push_error = failed_push_error(pushed, INTEGRATION)
            if push_error is not None:
                failed = UNITS.of_failed_pushes(calendar_id, pushed)
                if resume is not None:
                    raise UnitFailed(push_error, failed)
                summary.error_ids.append(run.record_failure(push_error, unit=failed, dataset=SCHEDULES_DATASET))
    except UnitFailed:
        raise
    except Exception as exc:
        # A rerun that fails again leaves its unit as it was (the retry workflow updates that row).
        run.fail(exc, operation=f"sync_calendar_{stage}", unit=UNITS.of_stage(stage, calendar_id, summary.pages) if resume is None else None,
                 done=f"in the {stage} stage after {summary.pages} committed page(s)")
    finally:
        connector.close()
    summary.quarantined = pulled.quarantined + pushed.quarantined
    run.failures, run.sample = refused(pulled, pushed)
    logger.info("Outlook calendar %s (%s): %s; created %d by $batch", calendar_id, summary.mode, summary.outcome(), summary.batch_created)
    # Errors are resolved by their reruns: a later run may have read another mailbox's calendar.
    return run.finish(summary, rows_checked=pulled.validated + pushed.considered, report=bool(summary.quarantined), resolve=(),
                      validation_dataset=SCHEDULES_DATASET)
