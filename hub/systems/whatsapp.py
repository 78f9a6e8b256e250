"""Writes to the ERP `whatsapp_messages` table: record a sent message, apply a status forward-only,
store an inbound message.

Every function works in the caller's transaction, so a webhook's effect commits together with its
inbox row being marked processed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from data_mappings.whatsapp import (
    ACCEPTED,
    FAILED,
    RECEIVED,
    TIMESTAMP_COLUMN,
    EventNotApplicable,
    StatusUpdate,
    advances,
    inbound_from_delivery,
    split_event_id,
    status_from_delivery,
)
from hub.core.models import WhatsAppMessage
from hub.core.settings import get_settings
from hub.ingress.inbox import InboxEvent

MESSAGES = cast(Table, WhatsAppMessage.__table__)


def _insert(conn: Connection) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(MESSAGES)


def record_sent(
    conn: Connection,
    answer: Mapping[str, Any],
    *,
    phone_number_id: str,
    message_type: str,
    template_name: str | None = None,
    body: str | None = None,
) -> str:
    """Store a message the hub sent (from the send answer); returns its wamid.

    A status webhook can be applied before this commits (the row then exists with its status):
    the send facts are filled in and the status is left alone."""
    wamid = str(answer["messages"][0]["id"])
    contacts = answer.get("contacts") or [{}]
    recipient = contacts[0].get("wa_id") or contacts[0].get("input")
    now = datetime.now(UTC)
    facts = {"sender": phone_number_id, "message_type": message_type, "template_name": template_name, "body": body}
    conn.execute(
        _insert(conn)
        .values(wamid=wamid, direction="outbound", recipient=recipient, status=ACCEPTED, created_at=now, updated_at=now, **facts)
        .on_conflict_do_update(index_elements=["wamid"], set_={**facts, "updated_at": now})
    )
    return wamid


def _not_in_the_future(event_at: datetime, what: str, now: datetime) -> None:
    """No stored event time lies in the future (it would sit in sent_at/read_at... as a lie)."""
    if (event_at - now).total_seconds() > get_settings().webhook_max_future_skew_s:
        raise EventNotApplicable(f"{what} time {event_at.isoformat()} is in the future")


def apply_status(conn: Connection, change: StatusUpdate) -> str:
    """Apply one status under the row lock.

    Returns "applied" (the status moved), "unchanged" (it already said so), "stale" (refused by the
    forward-only rule; its timestamp is still recorded) or "duplicate" (this event was the last applied)."""
    now = datetime.now(UTC)
    _not_in_the_future(change.event_at, f"status {change.status} of {change.wamid}", now)
    # The row exists before it is locked, so two workers applying statuses of one message serialise on it.
    conn.execute(
        _insert(conn)
        .values(wamid=change.wamid, direction="outbound", recipient=change.recipient, status=ACCEPTED, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["wamid"])
    )
    query = select(MESSAGES).where(MESSAGES.c.wamid == change.wamid)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one()
    if row.last_event_id == change.event_id:
        return "duplicate"
    if row.direction != "outbound":
        raise EventNotApplicable(f"status {change.status!r} for {change.wamid}, which is an inbound message")
    values: dict[str, Any] = {}
    column = TIMESTAMP_COLUMN[change.status]
    if getattr(row, column) is None:
        values[column] = change.event_at
    if row.recipient is None and change.recipient is not None:
        values["recipient"] = change.recipient
    moved = advances(row.status, change.status)
    if moved:
        values.update(status=change.status, last_event_id=change.event_id)
        if change.status == FAILED:
            values.update(error_code=change.error_code, error_title=change.error_title)
    if not values:
        return "unchanged" if moved else "stale"
    values["updated_at"] = now
    conn.execute(update(MESSAGES).where(MESSAGES.c.wamid == change.wamid).values(**values))
    return "applied" if moved else "stale"


def store_inbound(conn: Connection, event: InboxEvent, body: Mapping[str, Any]) -> str:
    """Store a customer's message once: "applied", or "duplicate" when the wamid is known."""
    message = inbound_from_delivery(body, event.event_id)
    now = datetime.now(UTC)
    _not_in_the_future(message.event_at, f"message {message.wamid}", now)
    result = conn.execute(
        _insert(conn)
        .values(
            wamid=message.wamid, direction="inbound", sender=message.sender, recipient=message.recipient,
            message_type=message.message_type, body=message.body, status=RECEIVED, last_event_id=message.event_id,
            created_at=now, updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["wamid"])
        .returning(MESSAGES.c.wamid)
    )
    # RETURNING names the inserted row; a known wamid inserts nothing (rowcount is not reliable here).
    return "applied" if result.first() is not None else "duplicate"


def apply_whatsapp_event(conn: Connection, event: InboxEvent) -> str:
    """One stored WhatsApp webhook row -> `whatsapp_messages`; "ignored" for account-level errors and other fields."""
    if event.event_type == "errors" or event.event_type.startswith("field."):
        return "ignored"
    try:
        body = orjson.loads(event.body)
    except orjson.JSONDecodeError as exc:
        raise EventNotApplicable(f"event body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EventNotApplicable("event body is not a JSON object")
    kind, _, _ = split_event_id(event.event_id)
    if kind == "message":
        return store_inbound(conn, event, body)
    return apply_status(conn, status_from_delivery(body, event.event_id))


def get_message(conn: Connection, wamid: str) -> dict[str, Any] | None:
    row = conn.execute(select(MESSAGES).where(MESSAGES.c.wamid == wamid)).first()
    return dict(row._mapping) if row is not None else None


# --- sending: one message through the connector, recorded (the CLI's `whatsapp send` and the queued job) ----


def send_one(connector: Any, to: str, text: str | None, template: str | None, lang: str, params: list[str]) -> dict[str, Any]:
    """Send one text or template through `connector` (a WhatsAppConnector), then record it (status `accepted`)
    in its own transaction."""
    import json

    from connectors.whatsapp import message_id
    from hub.core.db import get_engine

    if template is not None:
        answer = connector.send_template(to, template, lang, body_params=params)
        kind, body = "template", json.dumps(params) if params else None
    else:
        assert text is not None
        answer = connector.send_text(to, text)
        kind, body = "text", text
    wamid = message_id(answer)
    try:
        with get_engine().begin() as conn:
            record_sent(conn, answer, phone_number_id=connector.phone_number_id, message_type=kind, template_name=template, body=body)
    except Exception as exc:
        # The message went out: say which one, so it can be matched when its status webhooks arrive.
        raise RuntimeError(f"sent as {wamid}, but recording it in whatsapp_messages failed: {exc}") from exc
    return {"to": to, "wamid": wamid, "type": kind, "template": template}


def record_refused(error: Any, to: str, text: str | None, template: str | None, *, exc: BaseException | None = None,
                   retry_count: int = 0) -> dict[str, Any]:
    """Record a refused message (`error`: its IntegrationError) in `integration_errors`; the text itself is not stored there."""
    from hub.ledger.errors import record_error

    unit = {"to": to, "type": "template" if template else "text", "template": template, "text_chars": len(text) if text else None}
    error_id = record_error(error, integration="whatsapp", dataset="whatsapp_messages", unit=unit, retry_count=retry_count, exc=exc)
    return {
        "to": to,
        "category": error.category.value,
        "code": error.code,
        "http_status": error.status_code,
        "message": error.message,
        "remedy": error.remedy,
        "error_id": error_id,
    }
