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
pushes nothing; a push pushes just those schedules and reads nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from connectors.core.errors import InvalidRequest, ResyncRequired, classify_exception
from connectors.core.metrics import METRICS
from connectors.google_workspace.connector import INTEGRATION, GoogleCalendarConnector
from data_mappings.google_events import PROVIDER, from_google_event, to_google_event
from data_mappings.schedules import CalendarEvent
from hub.core.db import get_engine, session_factory
from hub.core.models import Schedule, ScheduleCalendarLink
from hub.ledger.errors import record_error, record_validation_failure
from hub.ledger.loading import read_cursor, reset_cursor, write_cursor
from hub.ledger.retry_units import GOOGLE_CALENDAR_PULL, GOOGLE_SCHEDULES_PUSH, UnitFailed
from hub.monitoring.health import ensure_flusher
from hub.runtime.connections import build_google_workspace_connector
from hub.systems.calendars import (
    PullResult,
    PushResult,
    apply_remote_page,
    failed_push_error,
    failed_push_refs,
    push_pending,
)
from tasks.retry import retry_transient_only

DATASET = "calendar_events"


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
class CalendarSyncSummary:
    integration: str = INTEGRATION
    dataset: str = DATASET
    calendar_id: str = ""
    mode: str = "incremental"
    flow_run_id: str | None = None
    pages: int = 0
    pull: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    token_requests: int = 0
    seconds: float = 0.0
    error_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(name="apply_calendar_page", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_condition_fn=retry_transient_only)
def apply_calendar_page(
    items: list[dict[str, Any]], calendar_id: str, *, cursor: dict[str, Any] | None, reset: bool, run_id: str | None
) -> PullResult:
    """Map, validate and apply one page; its transaction writes the cursor when this is the last page."""
    events = [from_google_event(item, calendar_id) for item in items]
    with session_factory()() as session:
        if reset:
            reset_cursor(session.connection(), INTEGRATION, _cursor_dataset(calendar_id))
        result = apply_remote_page(
            session, provider=PROVIDER, calendar_id=calendar_id, integration=INTEGRATION, events=events, run_name=run_id
        )
        if cursor is not None:
            write_cursor(session.connection(), INTEGRATION, _cursor_dataset(calendar_id), cursor, flow_run_id=run_id, rows_added=result.pulled)
        session.commit()
    return result


@task(name="push_schedules", cache_policy=NO_CACHE, persist_result=False)
def push_schedules(connector: GoogleCalendarConnector, run_id: str | None, batch_size: int, only: list[str] | None = None) -> PushResult:
    """ERP -> Google for every pending schedule (of `only`, when given; failures stay pending and are recorded,
    never lost)."""
    return push_pending(
        session_factory(), GoogleCalendarRemote(connector), integration=INTEGRATION, batch_size=batch_size, run_name=run_id, only=only
    )


def _cursor_dataset(calendar_id: str) -> str:
    # One cursor per calendar: sync tokens belong to a calendar. sync_state.dataset holds 64 characters.
    return f"events:{calendar_id}"[:64]


@flow(name="sync-google-calendar", description="ERP schedules <-> Google Workspace calendar events, both ways.")
def sync_google_calendar(
    full_resync: bool = False, calendar_id: str | None = None, push_batch_size: int = 200, resume: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One two-way sync of the configured calendar: pull people's changes, then push the ERP's. With `resume`,
    only the failed unit: the pull, or the push (of the schedules it names)."""
    ensure_flusher()  # this process's connector calls reach call_metrics in batches (and at exit)
    logger = get_run_logger()
    started = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    retries_before = METRICS.total(INTEGRATION, "retries")
    kind = resume.get("kind") if resume is not None else None
    only: list[str] | None = list(resume["schedule_refs"]) if resume is not None and resume.get("schedule_refs") else None
    if resume is not None:
        calendar_id = resume.get("calendar_id") or calendar_id  # the calendar the failed run synced
        logger.info("Google calendar: rerun of integration_errors #%s (%s)%s", resume.get("error_id"), kind,
                    f" for {', '.join(only)}" if only else "")
    summary = CalendarSyncSummary(calendar_id=calendar_id or "", flow_run_id=run_id)
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
                saved = None if full_resync else read_cursor(conn, INTEGRATION, _cursor_dataset(connector.calendar_id))
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
                failed = {"kind": GOOGLE_SCHEDULES_PUSH, "calendar_id": connector.calendar_id, "stage": "push",
                          "schedule_refs": failed_push_refs(pushed)}
                if resume is not None:
                    raise UnitFailed(push_error, failed)
                summary.error_ids.append(record_error(push_error, integration=INTEGRATION, dataset="schedules", flow_run_id=run_id, unit=failed))
        quarantined = pulled.quarantined + pushed.quarantined
        if quarantined:
            summary.error_ids.append(
                record_validation_failure(
                    integration=INTEGRATION,
                    dataset="schedules",
                    flow_run_id=run_id,
                    rows_checked=pulled.validated + pushed.considered,
                    rows_quarantined=quarantined,
                    failures_by_expectation={
                        k: pulled.failure_counts.get(k, 0) + pushed.failure_counts.get(k, 0)
                        for k in {**pulled.failure_counts, **pushed.failure_counts}
                    },
                    sample=pulled.quarantine_sample + pushed.quarantine_sample,
                    report_path=None,
                )
            )
    except UnitFailed:
        raise
    except Exception as exc:
        error = classify_exception(exc, integration=INTEGRATION, operation=f"sync_calendar_{stage}")
        if resume is not None:
            # A rerun of a recorded unit: the retry workflow updates that row; no new row.
            logger.error("rerun of integration_errors #%s failed in the %s stage: %s", resume.get("error_id"), stage, error)
            raise UnitFailed(error) from exc
        unit = {"kind": GOOGLE_SCHEDULES_PUSH if stage == "push" else GOOGLE_CALENDAR_PULL, "calendar_id": summary.calendar_id,
                "stage": stage, "pages_committed": summary.pages}
        error_id = record_error(error, integration=INTEGRATION, dataset=DATASET, flow_run_id=run_id, unit=unit)
        logger.error(
            "Google calendar sync failed in the %s stage after %d committed page(s): %s. integration_errors #%d. %s "
            "`drymix errors retry %d` reruns just that stage (the cursor never passed what was committed).",
            stage, summary.pages, error, error_id, error.remedy, error_id,
        )
        if isinstance(exc, ResyncRequired) or error is exc:
            raise
        raise error from exc
    finally:
        if connector is not None:
            summary.token_requests = connector.auth.token_requests
            connector.close()
    summary.retries = METRICS.total(INTEGRATION, "retries") - retries_before
    summary.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "Google calendar %s: pulled %d, cancelled in ERP %d, conflicts %d; pushed created %d, updated %d, "
        "cancelled %d, failed %d; quarantined %d",
        summary.calendar_id, pulled.pulled, pulled.cancelled_in_erp, pulled.conflicts,
        summary.push.get("created", 0), summary.push.get("updated", 0), summary.push.get("cancelled", 0),
        len(summary.push.get("failed", [])), pulled.quarantined + summary.push.get("quarantined", 0),
    )
    return summary.as_dict()
