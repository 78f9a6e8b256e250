"""ERP schedules <-> a Google Workspace calendar, both ways (docs/calendar-sync.md, docs/google-workspace.md).

Top to bottom:
1. extract: the calendar's changes since the saved `syncToken` (a 410 turns the read into a full sync);
2. map + validate: each page's events to the neutral shape, live ones through the `schedules` suite;
3. load: people's moves and cancellations into `schedules` per the conflict rule, one transaction per page;
   the LAST page's transaction also writes the new `nextSyncToken` to `sync_state`;
4. push: ERP schedules changed since their last push (including ERP-won conflicts) to the calendar, with our
   deterministic event ids, one transaction per batch.

Failed units are queued for a rerun (hub/ledger/retry_units.py): the pull (`google_workspace.calendar_events.pull`)
and the push (`google_workspace.schedules.push`: the schedules whose push failed, or every pending one when the
push stage itself failed). `resume=` reruns exactly that unit: a pull reruns from the saved sync token and
pushes nothing; a push pushes just those schedules and reads nothing. The run's bookkeeping (metrics, the error
rows, the validation-failure row, the run summary) is tasks/engine.py `DatasetRun`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from connectors.core.errors import InvalidRequest
from connectors.google_workspace.connector import INTEGRATION, GoogleCalendarConnector
from data_mappings.google_events import PROVIDER, from_google_event, to_google_event
from data_mappings.schedules import CalendarEvent
from hub.core.db import get_engine, session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.loading import read_cursor, reset_cursor, write_cursor
from hub.ledger.retry_units import GOOGLE_CALENDAR_PULL, GOOGLE_SCHEDULES_PUSH, UnitFailed
from hub.runtime.connections import build_google_workspace_connector
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
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only

DATASET = "calendar_events"
UNITS = CalendarUnits(pull=GOOGLE_CALENDAR_PULL, push=GOOGLE_SCHEDULES_PUSH)


class GoogleCalendarRemote:
    """The push half's view of one Google calendar (hub.systems.calendars.CalendarRemote)."""

    provider = PROVIDER

    def __init__(self, connector: GoogleCalendarConnector) -> None:
        self.connector = connector
        self.calendar_id = connector.calendar_id

    def _event(self, item: dict[str, Any], *, already: bool = False) -> CalendarEvent:
        if already:
            item = {**item, "_already_existed": True}
        return from_google_event(item, self.calendar_id)

    def create(self, schedule: Schedule) -> CalendarEvent:
        body = to_google_event(schedule)
        result = self.connector.insert_event(body)
        if result.created:
            return self._event(result.event)
        # Our id already existed: an earlier attempt got through. Make sure it shows this version.
        patched = self.connector.patch_event(body["id"], {k: v for k, v in body.items() if k != "id"})
        return self._event(patched, already=True)

    def update(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        body = to_google_event(schedule, with_id=False)
        try:
            return self._event(self.connector.patch_event(link.event_id, body))
        except InvalidRequest as exc:
            if exc.status_code != 404:
                raise
        # Gone altogether (not even kept as cancelled): create it again under our id.
        return self.create(schedule)

    def cancel(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        item = self.connector.cancel_event(link.event_id)
        if item is None:
            return CalendarEvent(PROVIDER, self.calendar_id, link.event_id, status="cancelled")
        return self._event(item)


@dataclass
class GoogleSyncSummary(CalendarSyncSummary):
    integration: str = INTEGRATION
    token_requests: int = 0  # access tokens the run asked for (a signed JWT each)


@task(name="apply_calendar_page", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_condition_fn=retry_transient_only)
def apply_calendar_page(
    items: list[dict[str, Any]], calendar_id: str, *, cursor: dict[str, Any] | None, reset: bool, run_id: str | None
) -> PullResult:
    """Map, validate and apply one page; its transaction writes the cursor when this is the last page."""
    events = [from_google_event(item, calendar_id) for item in items]
    with session_factory()() as session:
        if reset:
            reset_cursor(session.connection(), INTEGRATION, cursor_dataset(calendar_id))
        result = apply_remote_page(
            session, provider=PROVIDER, calendar_id=calendar_id, integration=INTEGRATION, events=events, run_name=run_id
        )
        if cursor is not None:
            write_cursor(session.connection(), INTEGRATION, cursor_dataset(calendar_id), cursor, flow_run_id=run_id, rows_added=result.pulled)
        session.commit()
    return result


@task(name="push_schedules", cache_policy=NO_CACHE, persist_result=False)
def push_schedules(connector: GoogleCalendarConnector, run_id: str | None, batch_size: int, only: list[str] | None = None) -> PushResult:
    """ERP -> Google for every pending schedule (of `only`, when given; failures stay pending and are recorded,
    never lost)."""
    return push_pending(
        session_factory(), GoogleCalendarRemote(connector), integration=INTEGRATION, batch_size=batch_size, run_name=run_id, only=only
    )


@flow(name="sync-google-calendar", description="ERP schedules <-> Google Workspace calendar events, both ways.")
def sync_google_calendar(
    full_resync: bool = False, calendar_id: str | None = None, push_batch_size: int = 200, resume: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One two-way sync of the configured calendar: pull people's changes, then push the ERP's. With `resume`,
    only the failed unit: the pull, or the push (of the schedules it names)."""
    run = DatasetRun(INTEGRATION, DATASET, "sync-google-calendar", resume=resume)
    logger, run_id = run.logger, run.run_id
    kind = resume.get("kind") if resume is not None else None
    only: list[str] | None = list(resume["schedule_refs"]) if resume is not None and resume.get("schedule_refs") else None
    if resume is not None:
        calendar_id = resume.get("calendar_id") or calendar_id  # the calendar the failed run synced
        logger.info("Google calendar: rerun of integration_errors #%s (%s)%s", resume.get("error_id"), kind,
                    f" for {', '.join(only)}" if only else "")
    summary = GoogleSyncSummary(calendar_id=calendar_id or "", flow_run_id=run_id)
    pulled = PullResult()
    pushed = PushResult()
    stage = "connect"
    connector: GoogleCalendarConnector | None = None
    try:
        connector = build_google_workspace_connector(calendar_id=calendar_id)
        summary.calendar_id = connector.calendar_id
        if kind in (None, GOOGLE_CALENDAR_PULL):
            stage = "pull"
            with get_engine().connect() as conn:
                saved = None if full_resync else read_cursor(conn, INTEGRATION, cursor_dataset(connector.calendar_id))
            token = (saved or {}).get("sync_token")
            summary.mode = "incremental" if token else "full"
            logger.info("Google calendar %s: %s sync", connector.calendar_id, summary.mode)

            # 1-3. extract, map, validate, load: page by page; the cursor rides with the last page.
            reset_done = False
            for page in connector.read_events(token):
                if page.full_sync and token and not reset_done:
                    logger.warning("sync token expired (410): cursor cleared, running a full sync")
                    summary.mode = "full (sync token expired)"
                cursor = {"sync_token": page.next_sync_token} if page.next_sync_token else None
                result = apply_calendar_page(  # type: ignore[call-overload]
                    quote(page.items),
                    connector.calendar_id,
                    cursor=cursor,
                    reset=bool(page.full_sync and token and not reset_done),
                    run_id=run_id,
                )
                reset_done = reset_done or page.full_sync
                pulled.add(result)
                summary.pages += 1
            summary.pull = asdict(pulled)
        else:
            summary.mode = "push rerun"

        # 4. push the ERP's changes.
        if kind in (None, GOOGLE_SCHEDULES_PUSH):
            stage = "push"
            pushed = push_schedules(connector, run_id, push_batch_size, only)
            summary.push = asdict(pushed)
            push_error = failed_push_error(pushed, INTEGRATION)
            if push_error is not None:
                failed = UNITS.of_failed_pushes(connector.calendar_id, pushed)
                if resume is not None:
                    raise UnitFailed(push_error, failed)
                summary.error_ids.append(run.record_failure(push_error, unit=failed, dataset=SCHEDULES_DATASET))
    except UnitFailed:
        raise
    except Exception as exc:
        # A rerun that fails again leaves its unit as it was (the retry workflow updates that row).
        run.fail(exc, operation=f"sync_calendar_{stage}",
                 unit=UNITS.of_stage(stage, summary.calendar_id, summary.pages) if resume is None else None,
                 done=f"in the {stage} stage after {summary.pages} committed page(s)")
    finally:
        if connector is not None:
            summary.token_requests = connector.auth.token_requests
            connector.close()
    summary.quarantined = pulled.quarantined + pushed.quarantined
    run.failures, run.sample = refused(pulled, pushed)
    logger.info("Google calendar %s (%s): %s", summary.calendar_id, summary.mode, summary.outcome())
    # Errors are resolved by their reruns: a later run may have read another calendar.
    return run.finish(summary, rows_checked=pulled.validated + pushed.considered, report=bool(summary.quarantined), resolve=(),
                      validation_dataset=SCHEDULES_DATASET)
