"""ERP schedules <-> an Outlook calendar through Microsoft Graph, both ways (docs/calendar-sync.md, docs/microsoft365.md).

Top to bottom:
1-3. pull: the sync engine (tasks/engine.py `run_pull`) runs hub/systems/microsoft365.py `CALENDAR_EVENTS`: the
   calendar view's changes since the saved `@odata.deltaLink` (an expired token or a window about to run out
   turns the read into a full one over a fresh window), each page's Graph events mapped, validated and applied
   per the shared conflict rule in one transaction, the new deltaLink with the last. After a full read, linked
   events that did not come back are looked up one by one (deleted while the token was dead);
4. push: never-pushed schedules are created 20 per `$batch` round trip (each with its `transactionId`, so a
   retry creates nothing twice), then every other pending change (moves, cancellations, re-creations)
   goes through the shared push with one request each.

Failed units are queued for a rerun (hub/ledger/retry_units.py): the pull (`microsoft365.calendar_events.pull`,
recorded by the engine) and the push (`microsoft365.schedules.push`: the schedules whose push failed, or every
pending one when the push stage itself failed). `resume=` reruns exactly that unit: a pull reruns `run_pull` from
the failed run's delta link and pushes nothing; a push pushes just those schedules and reads nothing. The rest of
the run's bookkeeping (metrics, the error rows, the validation-failure row, the run summary) is tasks/engine.py
`DatasetRun`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from connectors.core.errors import InvalidRequest
from connectors.microsoft365 import Microsoft365Connector
from data_mappings.microsoft365_events import PROVIDER, from_graph_event, to_graph_event
from data_mappings.schedules import CalendarEvent, schedule_row, schedules_frame
from hub.core.db import session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.retry_units import OUTLOOK_CALENDAR_PULL, OUTLOOK_SCHEDULES_PUSH, UnitFailed
from hub.runtime.connections import build_microsoft365_connector
from hub.systems.calendars import (
    SCHEDULES_DATASET,
    CalendarSyncSummary,
    CalendarUnits,
    PullResult,
    PushResult,
    failed_push_error,
    pull_counts,
    push_pending,
    refused_in_run,
)
from hub.systems.microsoft365 import CALENDAR_EVENTS, calendar_user, vanished_events
from hub.systems.schedules import record_push, schedules_to_push
from tasks.engine import DatasetRun, run_pull
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


@task(name="check_vanished_events", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_condition_fn=retry_transient_only,
      task_run_name="check-vanished-events")
def check_vanished_events(connector: Microsoft365Connector, pull: dict[str, Any], since: datetime, run_id: str | None) -> tuple[int, PullResult]:
    """After a full read: linked, live events in its window that it did not return were deleted meanwhile."""
    return vanished_events(session_factory(), connector, pull, since, run_id)


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
    kind = resume.get("kind") if resume is not None else None
    started = datetime.now(UTC)
    pull: dict[str, Any] | None = None
    if kind in (None, OUTLOOK_CALENDAR_PULL):
        # 1-3. extract, map, validate, load: page by page; the deltaLink rides with the last page.
        pull = run_pull(CALENDAR_EVENTS, full_refresh=full_resync, resume=resume, calendar_id=(resume or {}).get("calendar_id"))
    # After a full read, the deletions it cannot show; then 4. push the ERP's changes.
    return check_and_push(pull, started, push=kind in (None, OUTLOOK_SCHEDULES_PUSH), push_batch_size=push_batch_size, resume=resume)


def check_and_push(pull: dict[str, Any] | None, started: datetime, *, push: bool, push_batch_size: int | None,
                   resume: dict[str, Any] | None) -> dict[str, Any]:
    """What follows the pull: the vanished-event check after a full read, and the push (creates batched, the rest
    one by one), with the pull's outcome in the run's summary."""
    run = DatasetRun(INTEGRATION, DATASET, "sync-microsoft-calendar", resume=resume)
    logger, run_id = run.logger, run.run_id
    calendar_id = str((resume or {}).get("calendar_id") or calendar_user())
    only: list[str] | None = list(resume["schedule_refs"]) if resume is not None and resume.get("schedule_refs") else None
    if resume is not None and push:
        logger.info("Outlook calendar: rerun of integration_errors #%s (push)%s", resume.get("error_id"), f" for {', '.join(only)}" if only else "")
    pull = dict(pull or {})
    summary = OutlookSyncSummary(calendar_id=calendar_id, flow_run_id=run_id, mode=pull.get("mode", "push rerun"), pages=pull.get("pages", 0))
    pushed = PushResult()
    stage = "pull"
    connector: Microsoft365Connector | None = None
    try:
        connector = build_microsoft365_connector() if push or pull.get("full_read") else None
        if connector is not None and pull.get("full_read"):
            summary.vanished_checked, vanished = check_vanished_events(quote(connector), pull, started, run_id)  # type: ignore[call-overload]
            for name, n in pull_counts(vanished).items():
                pull[name] = pull.get(name, 0) + n
        summary.pull = pull
        if connector is not None and push:
            stage = "push"
            if connector.calendar_user != calendar_id:
                raise InvalidRequest(f"the failed unit belongs to the calendar of {calendar_id}, not {connector.calendar_user}: "
                                     "rerun it with that MICROSOFT365_CALENDAR_USER", integration=INTEGRATION)
            options = connector.calendar
            summary.batch_created = create_events_batched(quote(connector), run_id, push_batch_size or options.push_page_size * 10, only)  # type: ignore[call-overload]
            pushed = push_outlook_schedules(quote(connector), run_id, push_batch_size or options.push_page_size, only)  # type: ignore[call-overload]
            summary.push = asdict(pushed)
            push_error = failed_push_error(pushed, INTEGRATION)
            if push_error is not None:
                failed = UNITS.of_failed_pushes(calendar_id, pushed)
                if resume is not None:
                    raise UnitFailed(push_error, failed)
                # Retry count (the engine's): the connector's HTTP retries of the run plus any Prefect task retries
                # (check_vanished_events); the push tasks have none.
                summary.error_ids.append(run.record_failure(push_error, unit=failed, dataset=SCHEDULES_DATASET))
    except UnitFailed:
        raise
    except Exception as exc:
        # A rerun that fails again leaves its unit as it was (the retry workflow updates that row).
        run.fail(exc, operation=f"sync_calendar_{stage}", unit=UNITS.of_stage(stage, calendar_id, summary.pages) if resume is None else None,
                 done=f"in the {stage} stage")
    finally:
        if connector is not None:
            connector.close()
    summary.quarantined = int(pull.get("quarantined", 0)) + pushed.quarantined
    run.failures, run.sample = refused_in_run(pull, pushed)
    logger.info("Outlook calendar %s (%s): %s; created %d by $batch", calendar_id, summary.mode, summary.outcome(), summary.batch_created)
    # Errors are resolved by their reruns: a later run may have read another mailbox's calendar.
    return run.finish(summary, rows_checked=int(pull.get("validated", 0)) + pushed.considered, report=bool(summary.quarantined), resolve=(),
                      validation_dataset=SCHEDULES_DATASET)
