"""The `integration_errors` ledger and its lifecycle: every failure that ended a unit of work becomes one row.

Lifecycle (every change writes one `integration_error_events` row: who, when, why)::

    pending ──(queued rerun starts)──> retrying ──(rerun succeeds)──> resolved
       │                                  │
       │                                  └─(attempts exhausted)──> escalated ──(manual resolve)──> resolved
       ├─(AUTHENTICATION_FAILED: at once)───────────────────────────> escalated
       └─(manual resolve / escalate, a later successful run)────────> resolved | escalated

SYNC_FAILED and the transient categories get a queued rerun of their failed unit (see hub/ledger/retry_units.py
and flows/retry_failed_units.py) when the unit has a registered rerun handler; authentication failures are
escalated at once; DATA_VALIDATION_FAILED waits for manual review (hub/ledger/quarantine.py).
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, func, select, update
from sqlalchemy.orm import Session

from connectors.core.errors import (
    MAX_MESSAGE,
    DataValidationFailed,
    ErrorCategory,
    IntegrationError,
    describe_exception,
    is_database_unavailable,
)
from connectors.core.redact import mask_known_secrets, redact_mapping, redact_text
from hub.core.db import for_update, get_engine, rows_for_update, session_scope
from hub.core.models import (
    ErrorEventAction,
    ErrorStatus,
    IntegrationErrorEvent,
    IntegrationErrorRow,
    QuarantinedRecord,
    QuarantineStatus,
)
from hub.core.settings import RetryPolicy, get_settings
from hub.ledger.loading import json_safe

log = logging.getLogger(__name__)

OPEN_STATUSES = (ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value, ErrorStatus.ESCALATED.value)
# Categories whose failed unit is rerun by the queue (the unit failed after the in-run retries gave up).
QUEUED_RETRY_CATEGORIES = frozenset(
    {ErrorCategory.SYNC_FAILED, ErrorCategory.SERVER_ERROR, ErrorCategory.TIMEOUT, ErrorCategory.RATE_LIMIT_EXCEEDED}
)
# Categories nobody should wait for: on-call is notified when the row is written.
ESCALATE_AT_ONCE = frozenset({ErrorCategory.AUTHENTICATION_FAILED})


class ErrorStateConflict(Exception):
    """The requested change does not fit the row's current status (e.g. resolving a resolved error)."""


class ErrorNotFound(LookupError):
    """No integration_errors row has that id."""


def default_actor() -> str:
    """Who is acting when nobody said: the OS user (the CLI's `--by` default)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def flow_actor(flow_name: str) -> str:
    return f"flow:{flow_name}"


def retry_command(error_id: int) -> str:
    return f"drymix errors retry {error_id}"


def queued_retry_policy() -> RetryPolicy:
    """The queue's backoff, in the shape connectors/core/retry.py computes delays for."""
    s = get_settings()
    return RetryPolicy(
        max_retries=s.error_retry_max_attempts,
        base_delay_ms=int(s.error_retry_base_delay_s * 1000),
        max_delay_ms=int(s.error_retry_max_delay_s * 1000),
        jitter_ratio=s.error_retry_jitter_ratio,
    )


def next_retry_delay(attempt: int) -> timedelta:
    """Delay before queued rerun number `attempt` (1-based): exponential, jittered, capped."""
    from connectors.core.retry import backoff_delay

    return timedelta(seconds=backoff_delay(attempt, queued_retry_policy()))


def _event(
    session: Session,
    row: IntegrationErrorRow,
    action: ErrorEventAction,
    *,
    actor: str,
    reason: str | None = None,
    from_status: str | None = None,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    session.add(
        IntegrationErrorEvent(
            error_id=row.id,
            at=at or datetime.now(UTC),
            actor=actor[:128],
            action=action.value,
            from_status=from_status,
            to_status=row.status,
            reason=redact_text(reason)[:4000] if reason else None,
            details=json_safe(redact_mapping(dict(details))) if details else None,
        )
    )


# What a row keeps of a traceback: the innermost frames and the exception chain's last lines are where the
# failure is; the outer frames (Prefect's engine, the flow) are the same for every row. 8 KB holds ~40 frames.
STACK_TRACE_MAX = 8 * 1024
# Formatted text redacted at most: a runaway chain (recursion) is cut before the regexes see it.
_STACK_TRACE_SCAN = 64 * 1024


def format_stack_trace(exc: BaseException | None, *, limit: int = STACK_TRACE_MAX) -> str | None:
    """The exception's traceback with its cause chain (no locals), redacted, then cut to its last `limit` characters.

    An error built but never raised (`run.fail(InvalidRequest(...))` in an `except` block) is told as Python would
    once raised there: the exception being handled, then it. None when there is no traceback at all. Redaction runs
    before the final cut, and every cut drops the partial line it lands in, so a secret split by a cut is never
    stored in part.
    """
    if exc is None:
        return None
    if not _raised(exc):
        handled = sys.exception()
        if handled is None or handled is exc or not _raised(handled):
            return None
        text = "".join([*traceback.format_exception(handled), "\nDuring handling of the above exception, another exception occurred:\n\n",
                        *traceback.format_exception_only(exc)])
    else:
        text = "".join(traceback.format_exception(exc))
    text = redact_text(_tail(text, _STACK_TRACE_SCAN))
    if len(text) <= limit:
        return text
    kept = _tail(text, limit - 80)
    return f"... {len(text) - len(kept)} characters of outer frames cut ...\n{kept}"


def _raised(exc: BaseException) -> bool:
    """True when the exception or one in its cause/context chain carries a traceback."""
    chain = [exc]
    while len(chain) < 50 and (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return any(e.__traceback__ is not None for e in chain)


def _tail(text: str, size: int) -> str:
    """The last `size` characters of `text`, starting at a line boundary."""
    if len(text) <= size:
        return text
    tail = text[-size:]
    newline = tail.find("\n")
    return tail[newline + 1 :] if newline >= 0 else tail


def safe_unit(unit: Mapping[str, Any]) -> dict[str, Any]:
    """The unit as stored: JSON-safe, registered secrets masked, but opaque paging tokens kept (it must rerun)."""
    return cast(dict[str, Any], json.loads(mask_known_secrets(json.dumps(json_safe(dict(unit))))))


def record_error(
    error: IntegrationError,
    *,
    integration: str,
    dataset: str | None = None,
    flow_run_id: str | None = None,
    unit: Mapping[str, Any] | None = None,
    retry_count: int = 0,
    max_retries: int = 0,
    next_retry_in: timedelta | None = None,
    actor: str | None = None,
    exc: BaseException | None = None,
) -> int:
    """Write one error row (and its audit entry) in its own transaction; the failed unit's has rolled back.

    `retry_count` is the retries made in the run before it gave up (HTTP and Prefect task retries: the
    caller says which); the stack trace is formatted from `exc` (the raised exception the error was
    classified from), else from `error` when it was raised itself. A unit with a registered rerun handler
    is queued for a rerun when the category allows it; an authentication failure is escalated and
    notified at once.
    """
    from hub.ledger.retry_units import has_rerun_handler

    now = datetime.now(UTC)
    who = actor or (f"flow-run:{flow_run_id}" if flow_run_id else "hub")
    category = error.category
    queue = category in QUEUED_RETRY_CATEGORIES and unit is not None and has_rerun_handler(unit)
    max_attempts = get_settings().error_retry_max_attempts if queue else 0
    if queue and next_retry_in is None and max_attempts > 0:
        next_retry_in = next_retry_delay(1)
    if queue and error.defer_s is not None:
        # The server asked for a longer wait than the in-process retries allow: rerun no earlier.
        next_retry_in = max(next_retry_in or timedelta(0), timedelta(seconds=error.defer_s))
    next_retry_at = (now + next_retry_in) if next_retry_in is not None else None
    # Everything the row and its audit entries need, redacted and JSON-safe: written now, or spooled on
    # local disk when the database is unavailable and written by the same code when it is back.
    recorded: dict[str, Any] = {
        "row": {
            "org_id": get_settings().org_id,
            "integration": integration,
            "dataset": dataset,
            "operation": error.operation,
            "error_code": error.code,
            "error_message": redact_text(str(error.message))[:4000],
            "error_type": category.value,
            "severity": (error.severity.value if error.severity else "high"),
            "transient": error.transient,
            "http_status": error.status_code,
            "request_data": json_safe(redact_mapping(error.request_data)) or None,
            "response_data": json_safe(redact_mapping(error.response_data)) or None,
            "unit": safe_unit(unit) if unit else None,
            "remedy": error.remedy,
            "retry_count": retry_count,
            "max_retries": max_retries,
            "stack_trace": format_stack_trace(exc if exc is not None else error),
            "max_attempts": max_attempts,
            "flow_run_id": flow_run_id,
            "next_retry_at": next_retry_at.isoformat() if next_retry_at is not None else None,
            "created_at": now.isoformat(),
        },
        "actor": who,
        "reason": redact_text(str(error)),
        "escalate": category in ESCALATE_AT_ONCE,
    }
    try:
        error_id = _write_recorded(recorded)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        from hub.ledger.spool import spool_error

        cause = describe_exception(exc)
        receipt = spool_error(recorded, cause=cause)
        raise ErrorSpooled(error, spool_path=str(receipt.path), spool_seq=receipt.seq, cause=cause) from exc
    _drain_after_write()
    return error_id


class ErrorSpooled(IntegrationError):
    """The failure could not be written to integration_errors (the database is unavailable): it waits in the
    local error spool (hub/ledger/spool.py) and is written when the database is back. It keeps the failure's
    own category and code, so a run that raises it is still classified by what went wrong."""

    def __init__(self, error: IntegrationError, *, spool_path: str, spool_seq: int, cause: str) -> None:
        note = f" [not in integration_errors yet: kept in the error spool, entry {spool_seq}]"
        super().__init__(
            error.message[: MAX_MESSAGE - len(note) - 20] + note,
            error.category,
            code=error.code,
            status_code=error.status_code,
            retry_after_s=error.retry_after_s,
            severity=error.severity,
            request_data=error.request_data,
            response_data=error.response_data,
            integration=error.integration,
            operation=error.operation,
        )
        self.spool_path = spool_path
        self.spool_seq = spool_seq
        self.cause = cause

    def explain(self) -> str:
        """What a person should know: where the failure is, and when it reaches integration_errors."""
        return (
            f"The database is unavailable ({self.cause}), so this failure is not in integration_errors yet: it is kept "
            f"in the local error spool {self.spool_path} (entry {self.spool_seq}) and written to integration_errors when "
            "the database is back (the next CLI flow run, retry-failed-units run or `drymix errors list` writes it)."
        )


def _write_recorded(recorded: Mapping[str, Any], *, spooled: Mapping[str, Any] | None = None) -> int:
    """Write the error row and its audit entries in one transaction, then notify an escalation."""
    values = dict(recorded["row"])
    for name in ("next_retry_at", "created_at"):
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    now: datetime = values["created_at"]
    who = str(recorded["actor"])
    row = IntegrationErrorRow(**values, attempts=0, status=ErrorStatus.PENDING.value, updated_at=now)
    details: dict[str, Any] = {}
    if values.get("unit"):
        details["unit"] = values["unit"]
    if spooled:
        details["spooled"] = dict(spooled)
    escalate = bool(recorded.get("escalate"))
    with session_scope() as session:
        session.add(row)
        session.flush()
        _event(session, row, ErrorEventAction.RECORDED, actor=who, reason=str(recorded["reason"]), details=details or None, at=now)
        if row.next_retry_at is not None:
            _event(
                session,
                row,
                ErrorEventAction.RETRY_SCHEDULED,
                actor=who,
                from_status=row.status,
                reason=f"queued rerun 1 of {row.max_attempts} at {row.next_retry_at.isoformat(timespec='seconds')}",
                at=now,
            )
        if escalate:
            _escalate(session, row, actor=who, reason=f"{row.error_type} is escalated at once: {row.remedy}", now=now)
        error_id = int(row.id)
    if escalate:
        notify_escalation(error_id, actor=who)
    return error_id


def write_spooled_error(entry: Mapping[str, Any]) -> int:
    """Write a spooled failure (hub/ledger/spool.py) as it would have been written at the time it happened."""
    spooled = {
        "spool_id": entry["spool_id"],
        "cause": entry.get("spool_cause"),
        "written_at": datetime.now(UTC).isoformat(),
    }
    return _write_recorded(entry, spooled=spooled)


def spooled_error_id(entry: Mapping[str, Any]) -> int | None:
    """The integration_errors row already written for a spooled entry (a drainer died before removing it)."""
    created_at = datetime.fromisoformat(entry["row"]["created_at"])
    with session_scope() as session:
        candidates = session.execute(
            select(IntegrationErrorEvent.error_id, IntegrationErrorEvent.details)
            .join(IntegrationErrorRow, IntegrationErrorRow.id == IntegrationErrorEvent.error_id)
            .where(
                IntegrationErrorRow.created_at == created_at,
                IntegrationErrorRow.integration == entry["row"]["integration"],
                IntegrationErrorEvent.action == ErrorEventAction.RECORDED.value,
            )
        ).all()
    for error_id, details in candidates:
        if isinstance(details, dict) and (details.get("spooled") or {}).get("spool_id") == entry["spool_id"]:
            return int(error_id)
    return None


def _drain_after_write() -> None:
    """The database took a row: failures spooled while it was away go in now too (a stat when there are none)."""
    from hub.ledger.spool import drain_spool_quietly, waiting

    if waiting():
        drain_spool_quietly()


def record_validation_failure(
    *,
    integration: str,
    dataset: str,
    flow_run_id: str | None,
    rows_checked: int,
    rows_quarantined: int,
    failures_by_expectation: Mapping[str, int],
    sample: list[dict[str, Any]],
    report_path: str | None,
) -> int:
    """One open DATA_VALIDATION_FAILED row per dataset, linked to the quarantine rows the runs refused.

    The dataset's open (pending or retrying) row takes this run's counts, sample and report, with a
    `recurred` audit entry; only when none is open is a new row recorded. Rows refused again by every
    run of a day are one error, not one per run; it resolves when its quarantine rows are all closed.
    """
    summary = ", ".join(f"{name}: {count}" for name, count in sorted(failures_by_expectation.items()))
    error = DataValidationFailed(
        f"{rows_quarantined} of {rows_checked} {dataset} rows failed validation and were quarantined ({summary})",
        code="EXPECTATIONS_FAILED",
        response_data={
            "rows_checked": rows_checked,
            "rows_quarantined": rows_quarantined,
            "failures_by_expectation": dict(failures_by_expectation),
            "sample": sample[:10],
            "report_path": report_path,
        },
        operation="validate",
    )
    error_id = _recur_open_validation_failure(error, integration=integration, dataset=dataset, flow_run_id=flow_run_id)
    if error_id is None:
        error_id = record_error(error, integration=integration, dataset=dataset, flow_run_id=flow_run_id)
    if flow_run_id:
        link_quarantine(error_id, integration=integration, dataset=dataset, flow_run_id=flow_run_id)
    return error_id


def _recur_open_validation_failure(error: IntegrationError, *, integration: str, dataset: str, flow_run_id: str | None) -> int | None:
    """Update the dataset's open DATA_VALIDATION_FAILED row with this run's failure; None when none is open."""
    now = datetime.now(UTC)
    with session_scope() as session:
        query = (
            select(IntegrationErrorRow)
            .where(
                IntegrationErrorRow.integration == integration,
                IntegrationErrorRow.dataset == dataset,
                IntegrationErrorRow.error_type == ErrorCategory.DATA_VALIDATION_FAILED.value,
                IntegrationErrorRow.status.in_([ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value]),
            )
            .order_by(IntegrationErrorRow.id.desc())
            .limit(1)
        )
        found = rows_for_update(session, query)  # two runs' failures recorded at once: one updates it after the other
        if not found:
            return None
        row = found[0]
        before = row.response_data or {}
        runs = int(before.get("runs") or 1) + 1
        row.error_message = redact_text(str(error.message))[:4000]
        row.response_data = {
            **(json_safe(redact_mapping(error.response_data)) or {}),
            "runs": runs,
            "first_flow_run_id": before.get("first_flow_run_id", row.flow_run_id),
        }
        row.flow_run_id = flow_run_id
        row.updated_at = now
        who = f"flow-run:{flow_run_id}" if flow_run_id else "hub"
        _event(session, row, ErrorEventAction.RECURRED, actor=who, from_status=row.status, reason=str(error.message), details={"runs": runs}, at=now)
        return int(row.id)


def link_quarantine(error_id: int, *, integration: str, dataset: str, flow_run_id: str) -> int:
    """Point the open quarantine rows this run refused (or saw again) at its error row.

    A record refused again by a later run moves to the later error; an earlier DATA_VALIDATION_FAILED
    error left with no open rows is resolved as superseded, with an audit entry.
    """
    now = datetime.now(UTC)
    with session_scope() as session:
        previous = set(
            session.scalars(
                select(QuarantinedRecord.error_id).where(
                    QuarantinedRecord.integration == integration,
                    QuarantinedRecord.dataset == dataset,
                    QuarantinedRecord.flow_run_id == flow_run_id,
                    QuarantinedRecord.status == QuarantineStatus.QUARANTINED.value,
                    QuarantinedRecord.error_id.is_not(None),
                    QuarantinedRecord.error_id != error_id,
                )
            )
        )
        linked = cast(CursorResult[Any], session.execute(
            update(QuarantinedRecord)
            .where(
                QuarantinedRecord.integration == integration,
                QuarantinedRecord.dataset == dataset,
                QuarantinedRecord.flow_run_id == flow_run_id,
                QuarantinedRecord.status == QuarantineStatus.QUARANTINED.value,
            )
            .values(error_id=error_id)
        )).rowcount
        for old_id in previous:
            if old_id is None:
                continue
            resolve_if_quarantine_closed(
                session,
                int(old_id),
                actor="hub",
                reason=f"superseded: its open quarantined rows were refused again by run {flow_run_id} (integration_errors #{error_id})",
                now=now,
            )
    return int(linked or 0)


def resolve_if_quarantine_closed(session: Session, error_id: int, *, actor: str, reason: str, now: datetime) -> bool:
    """Resolve a DATA_VALIDATION_FAILED error once none of its quarantine rows is open any more."""
    still_open = session.scalar(
        select(QuarantinedRecord.id)
        .where(QuarantinedRecord.error_id == error_id, QuarantinedRecord.status == QuarantineStatus.QUARANTINED.value)
        .limit(1)
    )
    if still_open is not None:
        return False
    found = rows_for_update(session, select(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id))
    row = found[0] if found else None
    if row is None or row.status == ErrorStatus.RESOLVED.value:
        return False
    _resolve(session, row, actor=actor, reason=reason, now=now)
    return True


# --- reading ------------------------------------------------------------------------------------------


def parse_age(value: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d`, `1w` -> timedelta (for `--since`)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.strip().lower())
    if not match:
        raise ValueError(f"age {value!r}: use a number and a unit (s, m, h, d, w), e.g. 2h or 30m")
    amount, unit = float(match.group(1)), match.group(2)
    return timedelta(seconds=amount * units[unit])


def list_errors(
    *,
    status: str | Sequence[str] | None = None,
    integration: str | None = None,
    dataset: str | None = None,
    category: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[IntegrationErrorRow]:
    """Errors newest first, filtered by status (one or several), integration, dataset, category and age."""
    with session_scope() as session:
        query = select(IntegrationErrorRow).order_by(IntegrationErrorRow.id.desc()).limit(limit)
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(IntegrationErrorRow.status.in_(statuses))
        if integration:
            query = query.where(IntegrationErrorRow.integration == integration)
        if dataset:
            query = query.where(IntegrationErrorRow.dataset == dataset)
        if category:
            query = query.where(IntegrationErrorRow.error_type == category.upper())
        if since:
            query = query.where(IntegrationErrorRow.created_at >= since)
        return list(session.scalars(query))


def get_error(error_id: int) -> IntegrationErrorRow:
    with session_scope() as session:
        row = session.get(IntegrationErrorRow, error_id)
        if row is None:
            raise ErrorNotFound(f"no integration_errors row #{error_id}")
        return row


def error_events(error_id: int) -> list[IntegrationErrorEvent]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(IntegrationErrorEvent).where(IntegrationErrorEvent.error_id == error_id).order_by(IntegrationErrorEvent.id)
            )
        )


def open_quarantine_count(error_id: int) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(QuarantinedRecord)
                .where(QuarantinedRecord.error_id == error_id, QuarantinedRecord.status == QuarantineStatus.QUARANTINED.value)
            )
            or 0
        )


def error_as_dict(row: IntegrationErrorRow) -> dict[str, Any]:
    data: dict[str, Any] = {c.name: getattr(row, c.name) for c in IntegrationErrorRow.__table__.columns}
    return json_safe(data)  # type: ignore[no-any-return]


def event_as_dict(event: IntegrationErrorEvent) -> dict[str, Any]:
    data: dict[str, Any] = {c.name: getattr(event, c.name) for c in IntegrationErrorEvent.__table__.columns}
    return json_safe(data)  # type: ignore[no-any-return]


# --- transitions --------------------------------------------------------------------------------------


def _locked(session: Session, error_id: int) -> IntegrationErrorRow:
    # Two claims of one due error take turns (SQLite: the database's write lock): the second sees the first's lease.
    query = for_update(session.connection(), select(IntegrationErrorRow).where(IntegrationErrorRow.id == error_id))
    row = session.scalars(query).first()
    if row is None:
        raise ErrorNotFound(f"no integration_errors row #{error_id}")
    return row


def _resolve(session: Session, row: IntegrationErrorRow, *, actor: str, reason: str, now: datetime, details: Mapping[str, Any] | None = None) -> None:
    before = row.status
    row.status = ErrorStatus.RESOLVED.value
    row.resolved_at = now
    row.resolved_by = actor[:128]
    row.resolution_note = reason
    row.next_retry_at = None
    row.updated_at = now
    _event(session, row, ErrorEventAction.RESOLVED, actor=actor, reason=reason, from_status=before, details=details, at=now)


def _escalate(session: Session, row: IntegrationErrorRow, *, actor: str, reason: str, now: datetime) -> None:
    before = row.status
    row.status = ErrorStatus.ESCALATED.value
    row.escalated_at = now
    row.next_retry_at = None
    row.updated_at = now
    _event(session, row, ErrorEventAction.ESCALATED, actor=actor, reason=reason, from_status=before, at=now)


def resolve_error(error_id: int, *, by: str, reason: str) -> IntegrationErrorRow:
    """A person (or a flow) closes the error; resolving a resolved error is a conflict, not a no-op."""
    now = datetime.now(UTC)
    with session_scope() as session:
        row = _locked(session, error_id)
        if row.status == ErrorStatus.RESOLVED.value:
            raise ErrorStateConflict(f"integration_errors #{error_id} is already resolved ({row.resolution_note})")
        _resolve(session, row, actor=by, reason=reason, now=now)
        return row


def escalate_error(error_id: int, *, by: str, reason: str, notify: bool = True) -> IntegrationErrorRow:
    """Hand the error to a person now: status escalated, queued reruns stop, on-call is notified."""
    now = datetime.now(UTC)
    with session_scope() as session:
        row = _locked(session, error_id)
        if row.status in (ErrorStatus.RESOLVED.value, ErrorStatus.ESCALATED.value):
            raise ErrorStateConflict(f"integration_errors #{error_id} is already {row.status}")
        _escalate(session, row, actor=by, reason=reason, now=now)
    if notify:
        notify_escalation(error_id, actor=by, reason=reason)
    return get_error(error_id)


def resolve_open_errors(integration: str, dataset: str, *, note: str, categories: tuple[str, ...], actor: str = "hub") -> int:
    """Resolve open errors of the given categories (a later successful run fixed them), each audited."""
    now = datetime.now(UTC)
    with session_scope() as session:
        query = select(IntegrationErrorRow).where(
            IntegrationErrorRow.integration == integration,
            IntegrationErrorRow.dataset == dataset,
            IntegrationErrorRow.status.in_([ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value]),
            IntegrationErrorRow.error_type.in_(categories),
        )
        # A row another run is resolving is left to it (PostgreSQL), or read again once it committed (SQLite).
        rows = rows_for_update(session, query, skip_locked=True)
        for row in rows:
            _resolve(session, row, actor=actor, reason=note, now=now)
        return len(rows)


def resolve_event_errors(events: Sequence[tuple[str, str]], *, note: str, actor: str) -> int:
    """Resolve the open errors of webhook events (provider, event id) that have now been applied."""
    now = datetime.now(UTC)
    by_provider: dict[str, list[str]] = {}
    for provider, event_id in events:
        by_provider.setdefault(provider, []).append(event_id)
    resolved = 0
    with session_scope() as session:
        for provider, event_ids in by_provider.items():
            rows = session.scalars(
                select(IntegrationErrorRow).where(
                    IntegrationErrorRow.integration == provider,
                    IntegrationErrorRow.status.in_(OPEN_STATUSES),
                    IntegrationErrorRow.unit["event_id"].as_string().in_(event_ids),
                )
            ).all()
            for row in rows:
                _resolve(session, row, actor=actor, reason=note, now=now)
                resolved += 1
    return resolved


# --- queued reruns ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedUnit:
    """An error row claimed for one rerun of its unit: what the rerun handler needs, detached from the session."""

    error_id: int
    integration: str
    dataset: str | None
    category: str
    unit: dict[str, Any]
    attempt: int
    max_attempts: int
    previous_status: str


def due_error_ids(*, now: datetime | None = None, limit: int = 20) -> list[int]:
    """Pending or retrying errors whose next_retry_at has come, oldest first."""
    now = now or datetime.now(UTC)
    with get_engine().connect() as conn:
        table = IntegrationErrorRow.__table__
        assert isinstance(table, Table)
        rows = conn.execute(
            select(table.c.id)
            .where(
                table.c.status.in_([ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value]),
                table.c.next_retry_at.is_not(None),
                table.c.next_retry_at <= now,
                table.c.unit.is_not(None),
            )
            .order_by(table.c.next_retry_at, table.c.id)
            .limit(limit)
        )
        return [int(r[0]) for r in rows]


def claim_for_rerun(error_id: int, *, by: str, manual: bool = False, now: datetime | None = None) -> ClaimedUnit | None:
    """Take the error for one rerun (status retrying, attempts + 1, leased); None when it is not due any more.

    A queued claim needs the row pending/retrying and due; a manual one (`drymix errors retry`) takes any
    open row, escalated included (on-call fixed the cause). The lease (next_retry_at pushed ahead) keeps
    a concurrent retry run from taking the same row; a worker that dies mid-rerun frees it when it ends.
    """
    now = now or datetime.now(UTC)
    with session_scope() as session:
        row = _locked(session, error_id)
        if row.status == ErrorStatus.RESOLVED.value:
            if manual:
                raise ErrorStateConflict(f"integration_errors #{error_id} is already resolved ({row.resolution_note})")
            return None
        from hub.ledger.retry_units import has_rerun_handler

        if not row.unit or not has_rerun_handler(row.unit):
            if not manual:
                return None
            raise ErrorStateConflict(
                f"integration_errors #{error_id} has no rerunnable unit recorded "
                f"({'unit kind ' + repr(row.unit.get('kind')) + ' has no rerun handler' if row.unit else 'no unit'}): rerun its flow instead"
            )
        if not manual:
            if row.status == ErrorStatus.ESCALATED.value or row.next_retry_at is None or row.next_retry_at > now:
                return None
        before = row.status
        row.attempts = (row.attempts or 0) + 1
        row.last_attempt_at = now
        row.next_retry_at = now + timedelta(seconds=get_settings().error_retry_lease_s)
        if before != ErrorStatus.ESCALATED.value:
            row.status = ErrorStatus.RETRYING.value
        row.updated_at = now
        kind = "manual" if manual else "queued"
        _event(
            session,
            row,
            ErrorEventAction.RETRY_STARTED,
            actor=by,
            from_status=before,
            reason=f"{kind} rerun {row.attempts}" + (f" of {row.max_attempts}" if row.max_attempts else "") + " of the failed unit",
            details={"unit": row.unit},
            at=now,
        )
        return ClaimedUnit(
            error_id=int(row.id),
            integration=row.integration,
            dataset=row.dataset,
            category=row.error_type,
            unit=dict(row.unit),
            attempt=int(row.attempts),
            max_attempts=int(row.max_attempts or 0),
            previous_status=before,
        )


def finish_rerun_success(claim: ClaimedUnit, *, by: str, outcome: Mapping[str, Any] | None = None) -> None:
    """The rerun of the unit succeeded: the error is resolved (if a later run had not already)."""
    now = datetime.now(UTC)
    with session_scope() as session:
        row = _locked(session, claim.error_id)
        if row.status == ErrorStatus.RESOLVED.value:
            return
        _resolve(session, row, actor=by, reason=f"rerun {claim.attempt} of the failed unit succeeded", now=now, details=dict(outcome or {}))


def finish_rerun_failure(
    claim: ClaimedUnit,
    error: IntegrationError,
    *,
    by: str,
    unit: Mapping[str, Any] | None = None,
    manual: bool = False,
    exc: BaseException | None = None,
) -> str:
    """The rerun failed: schedule the next one with backoff, or escalate when attempts are exhausted.

    `unit` replaces the recorded unit when the rerun got further (e.g. batch 3 loaded, batch 4 failed);
    the rerun's traceback (from `exc`, the raised failure) replaces the row's, like its message.
    Returns the row's new status. A failure that should not be retried (authentication, invalid request)
    is escalated at once.
    """
    now = datetime.now(UTC)
    escalated = False
    with session_scope() as session:
        row = _locked(session, claim.error_id)
        before = row.status
        if unit is not None:
            row.unit = safe_unit(unit)
        row.error_message = redact_text(str(error.message))[:4000]
        row.stack_trace = format_stack_trace(exc if exc is not None else error) or row.stack_trace
        row.updated_at = now
        retryable = error.category in QUEUED_RETRY_CATEGORIES
        exhausted = row.attempts >= (row.max_attempts or 0)
        details = {"category": error.category.value, "code": error.code, "http_status": error.status_code, "unit": row.unit}
        queued = bool(row.max_attempts)
        if before == ErrorStatus.ESCALATED.value or (manual and not queued and error.category not in ESCALATE_AT_ONCE):
            # Escalated stays escalated; a manual rerun of an error the queue does not handle stays open for
            # the person who ran it (they saw it fail).
            row.next_retry_at = None
            if before != ErrorStatus.ESCALATED.value:
                row.status = ErrorStatus.PENDING.value
            _event(session, row, ErrorEventAction.RETRY_FAILED, actor=by, from_status=before, reason=str(error), details=details, at=now)
        elif retryable and queued and not exhausted:
            row.status = ErrorStatus.RETRYING.value
            row.next_retry_at = now + next_retry_delay(row.attempts + 1)
            _event(
                session,
                row,
                ErrorEventAction.RETRY_FAILED,
                actor=by,
                from_status=before,
                reason=f"{error}; next rerun at {row.next_retry_at.isoformat(timespec='seconds')}",
                details=details,
                at=now,
            )
        else:
            row.next_retry_at = None
            _event(session, row, ErrorEventAction.RETRY_FAILED, actor=by, from_status=before, reason=str(error), details=details, at=now)
            why = (
                f"retries exhausted ({row.attempts} of {row.max_attempts})"
                if retryable
                else f"the rerun failed with {error.category.value}, which is not retried"
            )
            _escalate(session, row, actor=by, reason=f"{why}: {error}", now=now)
            escalated = True
        status = row.status
    if escalated:
        notify_escalation(claim.error_id, actor=by)
    return status


# --- notification -------------------------------------------------------------------------------------


def escalation_message(row: IntegrationErrorRow, reason: str | None = None) -> tuple[str, str, str]:
    """(severity, title, body) of an escalation notification: what broke, what to do, which commands."""
    severity = "critical" if row.severity == "critical" or row.error_type in {c.value for c in ESCALATE_AT_ONCE} or row.attempts else "high"
    where = f"{row.integration}/{row.dataset}" if row.dataset else row.integration
    title = f"{where}: {row.error_type} escalated (integration_errors #{row.id})"
    lines = [
        f"{row.error_type} [{row.error_code or '-'}] in {where}, operation {row.operation or '-'}",
        f"message: {row.error_message[:600]}",
        *([f"why escalated: {reason[:600]}"] if reason else []),
        f"queued reruns: {row.attempts} of {row.max_attempts}" if row.max_attempts else "queued reruns: none",
        f"what to do: {row.remedy or '-'}",
        f"details: drymix errors show {row.id}",
    ]
    if row.unit:
        lines.append(f"rerun the failed unit after the fix: {retry_command(row.id)}")
    lines.append(f"close it: drymix errors resolve {row.id} --reason '...'")
    return severity, title, "\n".join(lines)


def notify_escalation(error_id: int, *, actor: str, reason: str | None = None) -> None:
    """Notify on-call through hub/monitoring/notify.py and keep what happened in the audit trail; never raises."""
    row = get_error(error_id)
    severity, title, body = escalation_message(row, reason)
    details: dict[str, Any]
    try:
        from hub.monitoring.notify import notify

        deliveries = notify(severity, title, body, dedupe_key=f"integration-error-{error_id}")
        details = {
            "severity": severity,
            "deliveries": [
                {"channel": d.channel, "ok": d.ok, "skipped": getattr(d, "skipped", False), "detail": d.detail}
                for d in deliveries
            ],
        }
        reason = f"notified ({severity}): " + (", ".join(f"{d.channel}={'ok' if d.ok else 'failed'}" for d in deliveries) or "no channel routed")
    except Exception as exc:  # noqa: BLE001 - the escalation stands even when nobody could be told
        log.exception("could not notify the escalation of integration_errors #%d", error_id)
        details = {"severity": severity, "error": f"{type(exc).__name__}: {exc}"}
        reason = f"notification failed: {type(exc).__name__}: {exc}"
    with session_scope() as session:
        fresh = session.get(IntegrationErrorRow, error_id)
        if fresh is not None:
            _event(session, fresh, ErrorEventAction.NOTIFIED, actor=actor, reason=reason, from_status=fresh.status, details=details)


def add_event(
    session: Session | None,
    error_id: int,
    action: ErrorEventAction,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """An audit entry that changes no status (e.g. quarantine rows replayed or discarded)."""
    def write(session: Session) -> None:
        row = session.get(IntegrationErrorRow, error_id)
        if row is not None:
            _event(session, row, action, actor=actor, reason=reason, from_status=row.status, details=details)

    if session is not None:
        write(session)
        return
    with session_scope() as own:
        write(own)
