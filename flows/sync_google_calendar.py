"""ERP schedules <-> a Google Workspace calendar, both ways (docs/calendar-sync.md, docs/google-workspace.md).

Top to bottom:
1-3. pull: the sync engine (tasks/engine.py `run_pull`) runs hub/systems/google.py `CALENDAR_EVENTS`: the
   calendar's changes since the saved `syncToken` (a 410 turns the read into a full one), each page's events
   mapped, validated and applied per the conflict rule in one transaction, the new `nextSyncToken` with the last;
4. push: ERP schedules changed since their last push (including ERP-won conflicts) to the calendar, with our
   deterministic event ids, one transaction per batch.

Failed units are queued for a rerun (hub/ledger/retry_units.py): the pull (`google_workspace.calendar_events.pull`,
recorded by the engine) and the push (`google_workspace.schedules.push`: the schedules whose push failed, or every
pending one when the push stage itself failed). `resume=` reruns exactly that unit: a pull reruns `run_pull` from
the failed run's sync token and pushes nothing; a push pushes just those schedules and reads nothing. The push's
bookkeeping (metrics, the error rows, the validation-failure row, the run summary) is tasks/engine.py `DatasetRun`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from connectors.core.errors import InvalidRequest
from connectors.google_workspace.connector import INTEGRATION, GoogleCalendarConnector
from data_mappings.google_events import PROVIDER, from_google_event, to_google_event
from data_mappings.schedules import CalendarEvent
from hub.core.db import session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.retry_units import GOOGLE_CALENDAR_PULL, GOOGLE_SCHEDULES_PUSH, UnitFailed
from hub.runtime.connections import build_google_workspace_connector, google_calendar_id
from hub.systems.calendars import (
    SCHEDULES_DATASET,
    CalendarSyncSummary,
    CalendarUnits,
    PushResult,
    failed_push_error,
    push_pending,
    refused_in_run,
)
from hub.systems.google import CALENDAR_EVENTS
from tasks.engine import DatasetRun, run_pull

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
    kind = resume.get("kind") if resume is not None else None
    calendar_id = google_calendar_id((resume or {}).get("calendar_id") or calendar_id)  # a rerun: the failed run's calendar
    pull: dict[str, Any] | None = None
    if kind in (None, GOOGLE_CALENDAR_PULL):
        # 1-3. extract, map, validate, load: page by page; the sync token rides with the last page.
        pull = run_pull(CALENDAR_EVENTS, full_refresh=full_resync, resume=resume, calendar_id=calendar_id)
    if kind == GOOGLE_CALENDAR_PULL:
        return {**pull, "pull": pull} if pull is not None else {}
    # 4. push the ERP's changes.
    return push_to_calendar(calendar_id, push_batch_size, pull=pull, resume=resume)


def push_to_calendar(calendar_id: str, batch_size: int, *, pull: dict[str, Any] | None, resume: dict[str, Any] | None) -> dict[str, Any]:
    """The push stage (of the schedules a push unit names, on its rerun), with the pull's outcome in its summary."""
    run = DatasetRun(INTEGRATION, DATASET, "sync-google-calendar", resume=resume)
    logger, run_id = run.logger, run.run_id
    only: list[str] | None = list(resume["schedule_refs"]) if resume is not None and resume.get("schedule_refs") else None
    if resume is not None:
        logger.info("Google calendar: rerun of integration_errors #%s (push)%s", resume.get("error_id"), f" for {', '.join(only)}" if only else "")
    summary = GoogleSyncSummary(calendar_id=calendar_id, flow_run_id=run_id, mode=pull["mode"] if pull else "push rerun",
                                pages=pull["pages"] if pull else 0, pull=pull or {})
    pushed = PushResult()
    connector: GoogleCalendarConnector | None = None
    try:
        connector = build_google_workspace_connector(calendar_id=calendar_id)
        pushed = push_schedules(connector, run_id, batch_size, only)
        summary.push = asdict(pushed)
        push_error = failed_push_error(pushed, INTEGRATION)
        if push_error is not None:
            failed = UNITS.of_failed_pushes(calendar_id, pushed)
            if resume is not None:
                raise UnitFailed(push_error, failed)
            # Retry count (the engine's): the connector's HTTP retries of the run; push_schedules has no Prefect retry.
            summary.error_ids.append(run.record_failure(push_error, unit=failed, dataset=SCHEDULES_DATASET))
    except UnitFailed:
        raise
    except Exception as exc:
        # A rerun that fails again leaves its unit as it was (the retry workflow updates that row).
        run.fail(exc, operation="sync_calendar_push", unit=UNITS.of_stage("push", calendar_id, summary.pages) if resume is None else None,
                 done="in the push stage")
    finally:
        if connector is not None:
            summary.token_requests = connector.auth.token_requests
            connector.close()
    summary.quarantined = int((pull or {}).get("quarantined", 0)) + pushed.quarantined
    run.failures, run.sample = refused_in_run(pull or {}, pushed)
    logger.info("Google calendar %s (%s): %s", summary.calendar_id, summary.mode, summary.outcome())
    # Errors are resolved by their reruns: a later run may have read another calendar.
    return run.finish(summary, rows_checked=int((pull or {}).get("validated", 0)) + pushed.considered, report=bool(summary.quarantined),
                      resolve=(), validation_dataset=SCHEDULES_DATASET)
