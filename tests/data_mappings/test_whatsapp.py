"""The forward-only WhatsApp status rule and picking one entry out of a batched delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from data_mappings.whatsapp import (
    EventNotApplicable,
    advances,
    inbound_from_delivery,
    split_event_id,
    status_from_delivery,
)


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        (None, "read", True),
        ("accepted", "sent", True),
        ("sent", "delivered", True),
        ("sent", "read", True),  # a skipped delivered is fine
        ("delivered", "read", True),
        ("read", "delivered", False),  # delivered after read does not move it back
        ("read", "sent", False),
        ("delivered", "delivered", False),
        ("accepted", "failed", True),
        ("sent", "failed", True),
        ("delivered", "failed", True),
        ("read", "failed", False),
        ("failed", "read", False),
        ("failed", "sent", False),
        ("received", "read", False),  # statuses never apply to an inbound message
    ],
)
def test_forward_only_rank(current: str | None, new: str, moves: bool) -> None:
    assert advances(current, new) is moves


def test_unknown_status_is_not_applicable() -> None:
    with pytest.raises(EventNotApplicable):
        advances("sent", "deleted")


def delivery() -> dict[str, object]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "919800000001", "phone_number_id": "100000000000001"},
        "contacts": [{"profile": {"name": "Asha"}, "wa_id": "919811111111"}],
        "messages": [{"from": "919811111111", "id": "wamid.IN1", "timestamp": "1800000000", "type": "text", "text": {"body": "hello"}}],
        "statuses": [
            {"id": "wamid.A", "status": "delivered", "timestamp": "1800000010", "recipient_id": "919811111111"},
            {"id": "wamid.A", "status": "failed", "timestamp": "1800000020", "recipient_id": "919811111111",
             "errors": [{"code": 131026, "title": "Message undeliverable"}]},
        ],
    }
    return orjson.loads(orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]}))


def test_status_picks_the_entry_the_event_id_names() -> None:
    update = status_from_delivery(delivery(), "status:wamid.A:failed")
    assert (update.wamid, update.status, update.error_code, update.error_title) == ("wamid.A", "failed", 131026, "Message undeliverable")
    assert update.event_at == datetime.fromtimestamp(1_800_000_020, UTC) and update.recipient == "919811111111"
    assert status_from_delivery(delivery(), "status:wamid.A:delivered").error_code is None
    with pytest.raises(EventNotApplicable):
        status_from_delivery(delivery(), "status:wamid.A:read")


def test_inbound_message() -> None:
    message = inbound_from_delivery(delivery(), "message:wamid.IN1")
    assert (message.sender, message.recipient, message.message_type, message.body) == ("919811111111", "100000000000001", "text", "hello")


def test_event_ids() -> None:
    assert split_event_id("status:wamid.HBg=:x:read") == ("status", "wamid.HBg=:x", "read")
    assert split_event_id("message:wamid.1") == ("message", "wamid.1", None)
    with pytest.raises(EventNotApplicable):
        split_event_id("errors:abc")
