"""WhatsApp webhook deliveries -> ERP `whatsapp_messages` changes, and the forward-only status rule.

Pure: no I/O, no Prefect. `hub/systems/whatsapp.py` reads the current row, asks `advances` and writes.

The ingress stores one inbox row per message (`message:<wamid>`) and per status
(`status:<wamid>:<status>`), each with the whole raw delivery body (Meta batches several entries in
one delivery); `status_from_delivery` / `inbound_from_delivery` pick the entry the row is about.

Status rule (Meta gives no ordering guarantee, and `delivered` may be skipped when a message is read
at once):

- rank: accepted < sent < delivered < read; a higher rank wins, a lower or equal one does not move
  the row (a `delivered` after `read` changes nothing);
- `failed` is taken only from accepted, sent or delivered (a message that was read cannot fail);
- nothing moves a `failed` or `read` message.

Every status also records its own time (`sent_at`, `delivered_at`, ...) the first time it is seen,
even when it arrives too late to move the status: the history stays complete.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ACCEPTED = "accepted"
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"
RECEIVED = "received"  # an inbound message: statuses never apply to it

STATUS_RANK: dict[str, int] = {ACCEPTED: 0, SENT: 1, DELIVERED: 2, READ: 3}
FAILABLE = frozenset({ACCEPTED, SENT, DELIVERED})
TIMESTAMP_COLUMN: dict[str, str] = {SENT: "sent_at", DELIVERED: "delivered_at", READ: "read_at", FAILED: "failed_at"}


class EventNotApplicable(ValueError):
    """The stored event lacks what it needs to be applied (no matching entry, bad timestamp, ...)."""


@dataclass(frozen=True)
class StatusUpdate:
    """One status of one message, as a status webhook reports it."""

    wamid: str
    status: str
    event_at: datetime
    event_id: str
    recipient: str | None = None
    error_code: int | None = None
    error_title: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A message a customer wrote to our number."""

    wamid: str
    sender: str
    recipient: str | None
    message_type: str
    body: str | None
    event_at: datetime
    event_id: str


def advances(current: str | None, new: str) -> bool:
    """True when a message in status `current` (None: unknown to the ERP) may move to `new`."""
    if new not in STATUS_RANK and new != FAILED:
        raise EventNotApplicable(f"unknown status {new!r}")
    if current is None:
        return True
    if new == FAILED:
        return current in FAILABLE
    if current not in STATUS_RANK:  # failed, or an inbound message
        return False
    return STATUS_RANK[new] > STATUS_RANK[current]


def _at(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(value)), UTC)
    except (TypeError, ValueError, OverflowError):
        raise EventNotApplicable(f"timestamp {value!r} is not a unix time") from None


def _values(body: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if body.get("object") != "whatsapp_business_account" or not isinstance(body.get("entry"), list):
        raise EventNotApplicable("not a whatsapp_business_account delivery")
    for entry in body["entry"]:
        for change in (entry.get("changes") if isinstance(entry, Mapping) else None) or []:
            if isinstance(change, Mapping) and change.get("field") == "messages" and isinstance(change.get("value"), Mapping):
                yield change["value"]


def _entries(value: Mapping[str, Any], key: str) -> list[Any]:
    """`value[key]` as a list ([] when absent); any other shape is a classified refusal, not a crash."""
    found = value.get(key)
    if found is None:
        return []
    if not isinstance(found, list):
        raise EventNotApplicable(f"{key} is a {type(found).__name__}, not a list")
    return found


def _phone_number_id(value: Mapping[str, Any]) -> str | None:
    metadata = value.get("metadata")
    pid = metadata.get("phone_number_id") if isinstance(metadata, Mapping) else None
    return str(pid) if pid else None


def split_event_id(event_id: str) -> tuple[str, str, str | None]:
    """`message:<wamid>` -> ("message", wamid, None); `status:<wamid>:<status>` -> ("status", wamid, status)."""
    kind, _, rest = event_id.partition(":")
    if kind == "message" and rest:
        return kind, rest, None
    if kind == "status":
        wamid, _, status = rest.rpartition(":")
        if wamid and status:
            return kind, wamid, status
    raise EventNotApplicable(f"event id {event_id!r} names no message or status")


def status_from_delivery(body: Mapping[str, Any], event_id: str) -> StatusUpdate:
    """The status entry of a delivery that the inbox row `status:<wamid>:<status>` stands for."""
    _, wamid, status = split_event_id(event_id)
    for value in _values(body):
        for entry in _entries(value, "statuses"):
            if isinstance(entry, Mapping) and entry.get("id") == wamid and entry.get("status") == status:
                errors = entry.get("errors")
                first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
                code = first.get("code")
                return StatusUpdate(
                    wamid=wamid,
                    status=str(status),
                    event_at=_at(entry.get("timestamp")),
                    event_id=event_id,
                    recipient=str(entry["recipient_id"]) if entry.get("recipient_id") else None,
                    error_code=int(code) if isinstance(code, int) and not isinstance(code, bool) else None,
                    error_title=str(first.get("title") or first.get("message") or "") or None,
                )
    raise EventNotApplicable(f"delivery carries no status {status!r} for {wamid}")


def _text_of(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    content = message.get(kind) if isinstance(kind, str) else None
    if not isinstance(content, Mapping):
        return None
    for key in ("body", "caption", "text"):
        if isinstance(content.get(key), str):
            return str(content[key])
    return None


def inbound_from_delivery(body: Mapping[str, Any], event_id: str) -> InboundMessage:
    """The message of a delivery that the inbox row `message:<wamid>` stands for."""
    _, wamid, _ = split_event_id(event_id)
    for value in _values(body):
        for message in _entries(value, "messages"):
            if isinstance(message, Mapping) and message.get("id") == wamid:
                sender = message.get("from")
                if not isinstance(sender, str) or not sender:
                    raise EventNotApplicable(f"message {wamid} has no sender")
                return InboundMessage(
                    wamid=wamid,
                    sender=sender,
                    recipient=_phone_number_id(value),
                    message_type=str(message.get("type") or "unknown"),
                    body=_text_of(message),
                    event_at=_at(message.get("timestamp")),
                    event_id=event_id,
                )
    raise EventNotApplicable(f"delivery carries no message {wamid}")
