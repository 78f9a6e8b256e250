"""The two halves of a calendar sync, shared by Google Workspace and Microsoft 365 (no Prefect here).

- `apply_remote_page`: one page of remote changes (already mapped to `CalendarEvent`) -> validate the live ones,
  decide per event with data_mappings.schedules.decide, write people's moves and cancellations into the ERP,
  remember what was seen; the caller's cursor goes in the same transaction (on the last page).
- `push_pending`: ERP schedules changed since their last push -> validate -> create / update / cancel the remote
  event through a `CalendarRemote` -> record the link; one transaction per batch, failures recorded per schedule
  (the schedule stays pending and the next run retries it).
- `calendar_apply`: the pull as the sync engine runs it (tasks/engine.py `run_pull`, declared in hub/systems/google.py
  and hub/systems/microsoft365.py): each page mapped by the provider's mapping and applied by `apply_remote_page` in
  the engine's transaction, with the source's cursor (sync token, delta link) on the last page.
- `CalendarSyncSummary` and `CalendarUnits`: what a two-way run reports, and the units its failures are queued
  as (the flows run them through tasks/engine.py `DatasetRun`).

Rule and reasons: docs/calendar-sync.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from connectors.core.errors import AuthenticationFailed, IntegrationError, classify_exception
from data_mappings.schedules import (
    Action,
    CalendarEvent,
    decide,
    event_row,
    schedule_row,
    schedules_frame,
)
from hub.core.models import Schedule, ScheduleCalendarLink, utcnow
from hub.ledger.loading import QuarantineRow, count_failures, json_safe, quarantine_rows, upsert_quarantine
from hub.systems.schedules import (
    adopt_link,
    apply_pull,
    links_for_events,
    record_push,
    record_remote_seen,
    schedules_by_ref,
    schedules_to_push,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from tasks.streams import ApplyContext

log = logging.getLogger(__name__)

EVENTS_DATASET = "calendar_events"
SCHEDULES_DATASET = "schedules"


class CalendarRemote(Protocol):
    """One provider's calendar, as the push half needs it. Every method is idempotent."""

    provider: str
    calendar_id: str

    def create(self, schedule: Schedule) -> CalendarEvent:
        """Create the schedule's event (a retry after a lost answer must not create a second one)."""
        ...

    def update(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        """Write the ERP's state over the event; a deleted event is brought back (RECREATE)."""
        ...

    def cancel(self, schedule: Schedule, link: ScheduleCalendarLink) -> CalendarEvent:
        """Cancel / delete the event; already gone counts as done."""
        ...


@dataclass
class PullResult:
    seen: int = 0
    validated: int = 0
    quarantined: int = 0
    pulled: int = 0  # schedules changed from the calendar (moves, restores)
    cancelled_in_erp: int = 0
    conflicts: int = 0
    ignored: int = 0  # events that are not ours
    adopted: int = 0  # our events found without a link (an insert whose answer was lost)
    actions: dict[str, int] = field(default_factory=dict)
    failure_counts: dict[str, int] = field(default_factory=dict)  # failure name (rule id) -> failures
    quarantine_sample: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: PullResult) -> None:
        for name in ("seen", "validated", "quarantined", "pulled", "cancelled_in_erp", "conflicts", "ignored", "adopted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.actions.items():
            self.actions[key] = self.actions.get(key, 0) + value
        _merge_counts(self.failure_counts, other.failure_counts)
        self.quarantine_sample.extend(other.quarantine_sample[: max(0, 10 - len(self.quarantine_sample))])


@dataclass
class PushResult:
    considered: int = 0
    quarantined: int = 0
    created: int = 0
    updated: int = 0
    recreated: int = 0
    cancelled: int = 0
    already_existed: int = 0  # creates answered "already exists": a retry that created nothing twice
    unchanged: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    failure_counts: dict[str, int] = field(default_factory=dict)
    quarantine_sample: list[dict[str, Any]] = field(default_factory=list)


def _merge_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value


def _validate(rows: list[dict[str, Any]], run_name: str | None) -> tuple[set[str], list[QuarantineRow]]:
    """Keys of rows that pass the schedules suite, and quarantine rows for the others."""
    if not rows:
        return set(), []
    from expectations.runner import validate_frame

    frame = schedules_frame(rows)
    outcome = validate_frame(SCHEDULES_DATASET, frame, run_name=run_name)

    def raw_of(label: Any) -> dict[str, Any]:
        row = rows[int(label)]
        return dict(json_safe(row.get("_raw") or {k: v for k, v in row.items() if not k.startswith("_")}))

    bad = quarantine_rows(outcome, frame, raw_of=raw_of, key_of=lambda label: str(rows[int(label)]["record_key"]))
    good = {str(rows[int(label)]["record_key"]) for label in outcome.valid.index}
    return good, bad


def apply_remote_page(
    session: Session,
    *,
    provider: str,
    calendar_id: str,
    integration: str,
    events: Sequence[CalendarEvent],
    run_name: str | None = None,
) -> PullResult:
    """Decide and apply one page of remote changes; the caller commits (with its cursor on the last page)."""
    result = PullResult(seen=len(events))
    # The last state of each event in the page wins (an event can change twice during a long read).
    latest = {e.event_id: e for e in events}
    linked = links_for_events(session, provider, calendar_id, latest)
    missing_refs = {e.schedule_ref for e in latest.values() if e.event_id not in linked and e.schedule_ref}
    by_ref = schedules_by_ref(session, missing_refs) if missing_refs else {}

    pairs: dict[str, tuple[Schedule | None, ScheduleCalendarLink | None, CalendarEvent]] = {}
    for event in latest.values():
        if event.event_id in linked:
            known, known_link = linked[event.event_id]
            pairs[event.event_id] = (known, known_link, event)
        else:
            pairs[event.event_id] = (by_ref.get(event.schedule_ref or ""), None, event)

    # Only live events of ours carry data worth validating; a cancellation is just an id.
    rows = [
        {**event_row(event, schedule.kind), "_raw": dict(event.raw or {})}
        for schedule, _, event in pairs.values()
        if schedule is not None and not event.cancelled
    ]
    good, bad = _validate(rows, run_name)
    result.validated = len(rows)
    result.quarantined = len(bad)
    if bad:
        upsert_quarantine(session.connection(), integration, EVENTS_DATASET, bad, run_name)
        result.quarantine_sample = [{"record_key": q.record_key, "failed": q.failed_expectations[:3]} for q in bad[:10]]
        result.failure_counts = count_failures(bad)

    for event_id, (schedule, link, event) in pairs.items():
        if schedule is not None and not event.cancelled and event_id not in good:
            continue  # quarantined: the person's change waits until the event is fixed
        if schedule is not None and link is None:
            link = adopt_link(session, schedule, provider=provider, calendar_id=calendar_id, remote=event)
            session.flush()
            result.adopted += 1
        decision = decide(schedule, link, event)
        result.actions[decision.action.value] = result.actions.get(decision.action.value, 0) + 1
        result.conflicts += int(decision.conflict)
        if decision.conflict:
            log.info("conflict on %s: %s (%s wins)", event_id, decision.reason, decision.winner)
        if decision.action is Action.IGNORE or schedule is None or link is None:
            result.ignored += 1
            continue
        if decision.action in (Action.PULL, Action.CANCEL_IN_ERP):
            changes = apply_pull(session, schedule, link, event, decision, provider=provider)
            if decision.action is Action.CANCEL_IN_ERP:
                result.cancelled_in_erp += int(bool(changes))
            elif changes:
                result.pulled += 1
        else:
            # NOTHING, or an ERP-side action the push half carries out (version > pushed_version says so).
            record_remote_seen(link, event)
    session.flush()
    return result


def push_pending(
    session_factory: Callable[[], Session],
    remote: CalendarRemote,
    *,
    integration: str,
    batch_size: int = 200,
    lookback: timedelta = timedelta(days=7),
    run_name: str | None = None,
    now: datetime | None = None,
    only: Collection[str] | None = None,
) -> PushResult:
    """Push every pending ERP schedule to `remote` (only those named in `only` when given: the rerun of failed
    pushes), batch by batch (each batch commits on its own)."""
    result = PushResult()
    since = (now or utcnow()) - lookback
    skip: set[int] = set()  # failed or quarantined in this run: not retried until the next run
    while True:
        with session_factory() as session:
            pending = [
                (s, lk)
                for s, lk in schedules_to_push(
                    session, remote.provider, remote.calendar_id, since=since, limit=batch_size + len(skip), refs=only
                )
                if s.id not in skip
            ][:batch_size]
            if not pending:
                break
            rows = [schedule_row(s) for s, _ in pending]
            good, bad = _validate(rows, run_name)
            if bad:
                upsert_quarantine(session.connection(), integration, SCHEDULES_DATASET, bad, run_name)
                result.quarantined += len(bad)
                _merge_counts(result.failure_counts, count_failures(bad))
                result.quarantine_sample.extend(
                    {"record_key": q.record_key, "failed": q.failed_expectations[:3]} for q in bad[: 10 - len(result.quarantine_sample)]
                )
            for schedule, link in pending:
                result.considered += 1
                if schedule.schedule_ref not in good:
                    skip.add(schedule.id)
                    continue
                try:
                    _push_one(session, remote, schedule, link, result)
                except Exception as exc:  # noqa: BLE001 - classified; the schedule stays pending for the next run
                    error = classify_exception(exc, integration=integration, operation="push_schedule")
                    if isinstance(error, AuthenticationFailed):
                        session.commit()  # keep what this batch already pushed
                        raise error from exc
                    skip.add(schedule.id)
                    result.failed.append(
                        {"schedule_ref": schedule.schedule_ref, "error": str(error), "category": error.category.value}
                    )
                    log.warning("push of %s failed: %s", schedule.schedule_ref, error)
            session.commit()
    return result


def _push_one(
    session: Session, remote: CalendarRemote, schedule: Schedule, link: ScheduleCalendarLink | None, result: PushResult
) -> None:
    decision = decide(schedule, link, None)
    action = decision.action
    if action is Action.CREATE:
        event = remote.create(schedule)
        already = bool(event.raw and event.raw.get("_already_existed"))
        result.already_existed += int(already)
        result.created += int(not already)
    elif action is Action.PUSH:
        assert link is not None
        event = remote.update(schedule, link)
        result.updated += 1
    elif action is Action.RECREATE:
        assert link is not None
        event = remote.update(schedule, link)
        result.recreated += 1
    elif action is Action.CANCEL_REMOTE:
        assert link is not None
        event = remote.cancel(schedule, link)
        result.cancelled += 1
    else:
        # NOTHING (e.g. cancelled on both sides): mark the version as synced so it is not looked at again.
        if link is not None:
            link.pushed_version = schedule.version
            link.synced_at = utcnow()
        result.unchanged += 1
        return
    record_push(
        session,
        schedule,
        link,
        provider=remote.provider,
        calendar_id=remote.calendar_id,
        event_id=event.event_id,
        etag=event.etag,
        remote_status=event.status,
        remote_updated_at=event.updated_at,
    )
    session.flush()


# --- the pull, as the sync engine runs it -------------------------------------------------------------

REFUSED = "refused: "  # prefix of a pull's counts of refused events by rule (what the validation-failure row holds)


def calendar_apply(
    provider: str, integration: str, to_event: Callable[[dict[str, Any], str], CalendarEvent]
) -> Callable[[Connection, list[dict[str, Any]], Mapping[str, Any] | None, ApplyContext], dict[str, int]]:
    """A `PullStream.apply` for one provider's calendar: its events mapped by `to_event`, decided and applied in the
    engine's transaction, the source's cursor written under the run's cursor key with the last page."""

    def apply(conn: Connection, records: list[dict[str, Any]], cursor: Mapping[str, Any] | None, context: ApplyContext) -> dict[str, int]:
        from hub.ledger.loading import write_cursor

        calendar_id = str(context.plan.state["calendar_id"])
        events = [to_event(item, calendar_id) for item in records]
        with Session(bind=conn) as session:
            result = apply_remote_page(session, provider=provider, calendar_id=calendar_id, integration=integration,
                                       events=events, run_name=context.flow_run_id)
        if cursor is not None:
            write_cursor(conn, integration, context.cursor_key, dict(cursor), flow_run_id=context.flow_run_id, rows_added=result.pulled)
        return pull_counts(result)

    return apply


def pull_counts(result: PullResult) -> dict[str, int]:
    """A page's outcome as the engine sums it into the run's counts (refused events by rule under `REFUSED`)."""
    counts = {name: int(getattr(result, name)) for name in
              ("seen", "validated", "quarantined", "pulled", "cancelled_in_erp", "conflicts", "ignored", "adopted")}
    counts.update({f"{REFUSED}{name}": n for name, n in result.failure_counts.items()})
    return counts


def pulled_refusals(pull: Mapping[str, Any]) -> dict[str, int]:
    """The refused events by rule of a pull's summary (`pull_counts`)."""
    return {key.removeprefix(REFUSED): int(n) for key, n in pull.items() if key.startswith(REFUSED)}


def cursor_dataset(calendar_id: str) -> str:
    """The `sync_state` name of one calendar's read position (delta link, sync token): one per calendar, as a
    provider's change token belongs to one calendar. sync_state.dataset holds 64 characters."""
    return f"events:{calendar_id}"[:64]


def failed_push_refs(result: PushResult) -> list[str]:
    """The schedules whose push failed in this run (they stay pending): the unit a rerun pushes again."""
    return sorted({str(f["schedule_ref"]) for f in result.failed})


def failed_push_error(result: PushResult, integration: str) -> IntegrationError | None:
    """One error for the ledger when some schedules could not be pushed (they are retried next run)."""
    if not result.failed:
        return None
    from connectors.core.errors import ErrorCategory, make_error

    categories = {f["category"] for f in result.failed}
    category = ErrorCategory(categories.pop()) if len(categories) == 1 else ErrorCategory.SYNC_FAILED
    return make_error(
        category,
        f"{len(result.failed)} schedule(s) could not be pushed to the calendar; they stay pending and the next "
        f"run retries them. First: {result.failed[0]['schedule_ref']}: {result.failed[0]['error']}",
        code="PUSH_FAILED",
        integration=integration,
        operation="push_schedules",
        response_data={"failed": result.failed[:50]},
    )


# --- what a two-way run reports, and the units its failures are queued as -----------------------------


@dataclass
class CalendarSyncSummary:
    """One two-way run: the flow's return value and its run summary (tasks/engine.py `DatasetRun.finish`)."""

    integration: str = ""
    dataset: str = EVENTS_DATASET
    calendar_id: str = ""
    mode: str = "incremental"
    flow_run_id: str | None = None
    pages: int = 0
    pull: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)
    quarantined: int = 0
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)

    def written(self) -> int:
        """Schedules the pull changed in the ERP and events the push wrote to the calendar."""
        pull, push = self.pull, self.push
        return (pull.get("pulled", 0) + pull.get("cancelled_in_erp", 0) + push.get("created", 0) + push.get("updated", 0)
                + push.get("recreated", 0) + push.get("cancelled", 0))

    def outcome(self) -> str:
        """One line for the run's log."""
        pull, push = self.pull, self.push
        return (f"pulled {pull.get('pulled', 0)}, cancelled in ERP {pull.get('cancelled_in_erp', 0)}, conflicts "
                f"{pull.get('conflicts', 0)}; pushed created {push.get('created', 0)}, updated {push.get('updated', 0)}, "
                f"cancelled {push.get('cancelled', 0)}, failed {len(push.get('failed', []))}; quarantined {self.quarantined}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "upserted": self.written()}


def refused_in_run(pull: Mapping[str, Any], pushed: PushResult) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The rows both halves refused, by rule (the pull's from its summary, `pull_counts`), and the push's sample:
    what the run's DATA_VALIDATION_FAILED row holds."""
    counts = pulled_refusals(pull)
    _merge_counts(counts, pushed.failure_counts)
    return counts, list(pushed.quarantine_sample)


@dataclass(frozen=True)
class CalendarUnits:
    """The two units of one provider's calendar run a rerun takes (hub/ledger/retry_units.py)."""

    pull: str
    push: str

    def of_stage(self, stage: str, calendar_id: str, pages_committed: int) -> dict[str, Any]:
        """The stage that stopped the run: the pull (also when it stopped before, connecting), or the whole push."""
        return {"kind": self.push if stage == "push" else self.pull, "calendar_id": calendar_id, "stage": stage,
                "pages_committed": pages_committed}

    def of_failed_pushes(self, calendar_id: str, result: PushResult) -> dict[str, Any]:
        """The schedules whose push failed while the others went out."""
        return {"kind": self.push, "calendar_id": calendar_id, "stage": "push", "schedule_refs": failed_push_refs(result)}
