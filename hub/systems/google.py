"""Google Workspace calendar events, as the sync engine pulls them (flows/sync_google_calendar.py, docs/calendar-sync.md).

`CALENDAR_EVENTS`: the calendar's changes since the saved `syncToken` (connectors/google_workspace `EVENTS`, whose
last page hands back `nextSyncToken`), each page applied by the shared conflict rule (hub/systems/calendars.py
`calendar_apply`) in one transaction, the new token with the last page, under one `sync_state` row per calendar.
A 410 on the token is a full read again (showDeleted); the old token stays until the new one commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connectors.google_workspace.connector import EVENTS, INTEGRATION
from data_mappings.google_events import PROVIDER, from_google_event
from hub.ledger.retry_units import GOOGLE_CALENDAR_PULL
from hub.systems.calendars import calendar_apply, cursor_dataset
from tasks.streams import PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from connectors.core.base import Connector, Stream


def _calendar(options: RunOptions) -> str:
    from hub.runtime.connections import google_calendar_id

    return google_calendar_id(options.parameters.get("calendar_id"))


def _connect(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_google_workspace_connector

    connector = build_google_workspace_connector(calendar_id=_calendar(options))
    if options.page_size:
        connector.page_size = options.page_size
    return connector


def _plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    token = (cursor or {}).get("sync_token")
    return ReadPlan(
        position=connector.start(stream, {"sync_token": token} if token else None),
        mode="incremental" if token else "full",
        state={"calendar_id": _calendar(options)},
    )


def _next_cursor(plan: ReadPlan, end_cursor: Any, started: datetime) -> dict[str, Any] | None:
    return dict(end_cursor) if end_cursor else None


CALENDAR_EVENTS = PullStream(
    integration=INTEGRATION,
    dataset="calendar_events",
    flow_name="sync-google-calendar",
    unit_kind=GOOGLE_CALENDAR_PULL,
    operation="sync_calendar_pull",
    stream=EVENTS,
    connect=_connect,
    plan=_plan,
    next_cursor=_next_cursor,
    apply=calendar_apply(PROVIDER, INTEGRATION, from_google_event),
    cursor_key=lambda options: cursor_dataset(_calendar(options)),
    resync=True,
    batch_pages=1,  # each page commits with its changes
    # A page token belongs to the read that made it: a rerun reads again from the failed run's sync token
    # (pages that committed apply again as no-ops).
    resumable=lambda position: False,
    resolve=(),  # errors are resolved by their reruns: a later run may have read another calendar
)
