"""Processing the inbox applies each WhatsApp status once, forward-only, and stores inbound messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from hub.core.db import get_engine
from hub.core.models import WebhookEvent
from hub.ingress.inbox import PendingEvent, replay_event, write_batch
from hub.ingress.security import whatsapp_events
from hub.systems.whatsapp import get_message, record_sent

pytestmark = pytest.mark.usefixtures("prefect_harness")

WAMID = "wamid.HBgMOTE5ODExMTExMTExFQIAERgSQUJD"
PHONE_ID = "100000000000001"


def delivery(statuses: list[tuple[str, str, int]] = (), messages: list[str] = (), errors: dict[str, Any] | None = None) -> bytes:  # type: ignore[assignment]
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "919800000001", "phone_number_id": PHONE_ID}}
    if statuses:
        value["statuses"] = []
        for wamid, status, ts in statuses:
            entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": "919811111111"}
            if status == "failed":
                entry["errors"] = [errors or {"code": 131026, "title": "Message undeliverable"}]
            value["statuses"].append(entry)
    if messages:
        value["contacts"] = [{"profile": {"name": "Asha"}, "wa_id": "919811111111"}]
        value["messages"] = [{"from": "919811111111", "id": m, "timestamp": "1790000000", "type": "text", "text": {"body": "Is my order shipped?"}} for m in messages]
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})


def store(*bodies: bytes) -> None:
    """Store deliveries the way the ingress does: one inbox row per message and per status."""
    now = datetime.now(UTC)
    pending = []
    for body in bodies:
        for item in whatsapp_events(orjson.loads(body), {}):
            pending.append(PendingEvent("whatsapp", item.event_id, item.event_type, body, {}, "127.0.0.1", now))
    with get_engine().begin() as conn:
        write_batch(conn, pending, [])


def process() -> dict[str, Any]:
    from flows.process_webhooks import process_webhooks

    return process_webhooks()


def message(wamid: str = WAMID) -> dict[str, Any]:
    with get_engine().connect() as conn:
        row = get_message(conn, wamid)
    assert row is not None
    return row


def sent_template() -> None:
    answer = {"messaging_product": "whatsapp", "contacts": [{"input": "+919811111111", "wa_id": "919811111111"}], "messages": [{"id": WAMID}]}
    with get_engine().begin() as conn:
        record_sent(conn, answer, phone_number_id=PHONE_ID, message_type="template", template_name="order_update", body="SO-4711")


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_statuses_are_applied_in_order(db: str) -> None:
    sent_template()
    assert message()["status"] == "accepted"
    store(delivery([(WAMID, "sent", 1_790_000_001)]), delivery([(WAMID, "delivered", 1_790_000_002)]), delivery([(WAMID, "read", 1_790_000_003)]))
    summary = process()
    assert (summary["claimed"], summary["applied"], summary["failed"]) == (3, 3, 0)
    row = message()
    assert (row["status"], row["direction"], row["recipient"], row["sender"]) == ("read", "outbound", "919811111111", PHONE_ID)
    assert (row["message_type"], row["template_name"], row["body"]) == ("template", "order_update", "SO-4711")
    assert (row["sent_at"], row["delivered_at"], row["read_at"]) == (at(1_790_000_001), at(1_790_000_002), at(1_790_000_003))
    assert row["last_event_id"] == f"status:{WAMID}:read"


def test_out_of_order_delivered_after_read_stays_read_but_keeps_its_time(db: str) -> None:
    sent_template()
    store(delivery([(WAMID, "read", 1_790_000_003)]))
    process()
    store(delivery([(WAMID, "delivered", 1_790_000_002)]), delivery([(WAMID, "sent", 1_790_000_001)]))
    summary = process()
    assert (summary["applied"], summary["stale"]) == (0, 2)
    row = message()
    assert row["status"] == "read" and row["last_event_id"] == f"status:{WAMID}:read"
    assert (row["sent_at"], row["delivered_at"], row["read_at"]) == (at(1_790_000_001), at(1_790_000_002), at(1_790_000_003))


def test_read_then_failed_stays_read_and_failed_from_sent_records_the_error(db: str) -> None:
    sent_template()
    store(delivery([(WAMID, "read", 1_790_000_003)]), delivery([(WAMID, "failed", 1_790_000_004)]))
    process()
    assert message()["status"] == "read" and message()["error_code"] is None
    other = "wamid.OTHER"
    store(delivery([(other, "sent", 1_790_000_001), (other, "failed", 1_790_000_005)], errors={"code": 131049, "title": "per-user marketing limit"}))
    summary = process()
    assert (summary["claimed"], summary["applied"]) == (2, 2)
    failed = message(other)
    assert (failed["status"], failed["error_code"], failed["error_title"], failed["failed_at"]) == ("failed", 131049, "per-user marketing limit", at(1_790_000_005))


def test_duplicate_delivery_is_stored_and_applied_once_and_replay_changes_nothing(db: str) -> None:
    sent_template()
    body = delivery([(WAMID, "delivered", 1_790_000_002)])
    store(body, body)
    store(body)
    with get_engine().connect() as conn:
        assert len(conn.execute(select(WebhookEvent.id)).all()) == 1
    assert process()["applied"] == 1
    before = message()
    assert replay_event(f"status:{WAMID}:delivered", provider="whatsapp") == 1
    summary = process()
    assert (summary["claimed"], summary["applied"], summary["duplicate"]) == (1, 0, 1)
    assert message() == before


def test_a_status_before_the_send_is_recorded_keeps_its_status(db: str) -> None:
    store(delivery([(WAMID, "delivered", 1_790_000_002)]))
    process()
    sent_template()
    row = message()
    assert (row["status"], row["template_name"], row["recipient"]) == ("delivered", "order_update", "919811111111")


def test_inbound_message_is_stored_once(db: str) -> None:
    body = delivery(messages=["wamid.IN1"])
    store(body)
    assert process()["applied"] == 1
    row = message("wamid.IN1")
    assert (row["direction"], row["sender"], row["recipient"], row["status"], row["body"]) == ("inbound", "919811111111", PHONE_ID, "received", "Is my order shipped?")
    assert replay_event("message:wamid.IN1") == 1
    replayed = process()
    assert replayed["duplicate"] == 1, replayed
    # A status naming an inbound message is refused, not applied.
    store(delivery([("wamid.IN1", "read", 1_790_000_009)]))
    assert process()["failed"] == 1
    assert message("wamid.IN1")["status"] == "received"
