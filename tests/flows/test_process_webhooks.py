"""Processing the inbox applies each Razorpay event once, forward-only, and records what it cannot apply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, WebhookEvent
from hub.ingress.inbox import PendingEvent, list_events, replay_event, write_batch
from hub.systems.razorpay import get_payment

pytestmark = pytest.mark.usefixtures("prefect_harness")

ORDER = "order_Flow0000000001"
PAY = "pay_Flow00000000001"


def event_body(name: str, *, status: str, created_at: int, order: str = ORDER, payment: str = PAY) -> bytes:
    entities: dict[str, Any] = {
        "payment": {"entity": {"id": payment, "entity": "payment", "amount": 50000, "currency": "INR", "status": status,
                               "order_id": order, "method": "upi", "captured": status == "captured", "created_at": created_at - 5}}
    }
    if name == "order.paid":
        entities["order"] = {"entity": {"id": order, "entity": "order", "amount": 50000, "status": "paid", "receipt": "INV-7"}}
    return orjson.dumps({"entity": "event", "account_id": "acc_x", "event": name, "contains": list(entities),
                         "payload": entities, "created_at": created_at})


def store(*items: tuple[str, str, bytes], provider: str = "razorpay") -> None:
    now = datetime.now(UTC)
    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent(provider, event_id, name, body, {}, "127.0.0.1", now) for event_id, name, body in items], [])


def process(**params: Any) -> dict[str, Any]:
    from flows.process_webhooks import process_webhooks

    return process_webhooks(**params)


def payment(order: str = ORDER) -> dict[str, Any]:
    with get_engine().connect() as conn:
        row = get_payment(conn, order)
    assert row is not None
    return row


def statuses() -> dict[str, str]:
    with get_engine().connect() as conn:
        return {r.event_id: r.status for r in conn.execute(select(WebhookEvent.event_id, WebhookEvent.status))}


def test_captured_event_is_applied_and_marked_processed(db: str) -> None:
    store(("evt_1", "payment.captured", event_body("payment.captured", status="captured", created_at=1_764_000_100)))
    summary = process()
    assert (summary["claimed"], summary["applied"], summary["failed"]) == (1, 1, 0)
    row = payment()
    assert (row["payment_status"], row["payment_id"], row["order_status"], row["source"]) == ("captured", PAY, "paid", "webhook")
    assert row["captured_at"] == datetime.fromtimestamp(1_764_000_100, UTC) and row["last_event_id"] == "evt_1"
    assert statuses() == {"evt_1": "processed"}


def test_captured_then_authorized_stays_captured(db: str) -> None:
    store(("evt_c", "payment.captured", event_body("payment.captured", status="captured", created_at=1_764_000_200)))
    process()
    store(("evt_a", "payment.authorized", event_body("payment.authorized", status="authorized", created_at=1_764_000_100)))
    summary = process()
    assert (summary["applied"], summary["stale"]) == (0, 1)
    row = payment()
    assert row["payment_status"] == "captured" and row["last_event_id"] == "evt_c"
    assert statuses() == {"evt_c": "processed", "evt_a": "processed"}


def test_duplicate_delivery_is_stored_and_applied_once_and_replay_changes_nothing(db: str) -> None:
    body = event_body("order.paid", status="captured", created_at=1_764_000_300)
    store(("evt_d", "order.paid", body), ("evt_d", "order.paid", body))
    store(("evt_d", "order.paid", body))
    assert process()["applied"] == 1
    before = payment()
    assert before["receipt"] == "INV-7" and before["order_status"] == "paid"
    assert replay_event("evt_d", provider="razorpay") == 1
    summary = process()
    assert (summary["claimed"], summary["applied"], summary["duplicate"]) == (1, 0, 1)
    after = payment()
    assert after == before


def test_a_broken_event_is_marked_failed_recorded_and_replayable(db: str) -> None:
    broken = orjson.dumps({"event": "payment.captured", "created_at": 1_764_000_400, "payload": {"payment": {"entity": {"id": PAY, "status": "captured", "created_at": 1}}}})
    good = event_body("payment.authorized", status="authorized", created_at=1_764_000_100)
    store(("evt_bad", "payment.captured", broken), ("evt_ok", "payment.authorized", good))
    summary = process()
    assert (summary["applied"], summary["failed"]) == (1, 1)
    assert statuses() == {"evt_bad": "failed", "evt_ok": "processed"}
    with Session(get_engine()) as session:
        errors = list(session.scalars(select(IntegrationErrorRow)))
    assert len(errors) == 1
    error = errors[0]
    assert (error.integration, error.dataset, error.error_type) == ("razorpay", "payments", "INVALID_REQUEST")
    assert error.unit is not None and error.unit["event_id"] == "evt_bad" and "order_id" in error.error_message
    failed = list_events(status="failed")
    assert failed[0].event_id == "evt_bad" and failed[0].attempts == 1
    # Replaying the event as it is fails again (same ledger behaviour), and does not disturb the good one.
    assert replay_event("evt_bad") == 1
    assert process()["failed"] == 1
    assert payment()["payment_status"] == "authorized"


def test_whatsapp_events_are_claimed_too_and_a_broken_one_is_recorded_under_whatsapp(db: str) -> None:
    store(("status:wamid.1:read", "status.read", b'{"object":"whatsapp_business_account"}'), provider="whatsapp")
    store(("evt_r", "payment.authorized", event_body("payment.authorized", status="authorized", created_at=1_764_000_100)))
    summary = process()
    assert (summary["claimed"], summary["applied"], summary["failed"]) == (2, 1, 1)
    assert statuses() == {"status:wamid.1:read": "failed", "evt_r": "processed"}
    with Session(get_engine()) as session:
        error = session.scalars(select(IntegrationErrorRow)).one()
    assert (error.integration, error.dataset, error.error_type) == ("whatsapp", "whatsapp_messages", "INVALID_REQUEST")


def test_drains_in_batches_until_empty(db: str) -> None:
    store(*[
        (f"evt_{i}", "payment.authorized", event_body("payment.authorized", status="authorized", created_at=1_764_000_000 + i,
                                                      order=f"order_Batch{i:09d}", payment=f"pay_Batch{i:011d}"))
        for i in range(7)
    ])
    summary = process(batch_size=3)
    assert (summary["batches"], summary["claimed"], summary["applied"]) == (3, 7, 7)
    assert set(statuses().values()) == {"processed"}


def test_replay_of_an_unknown_event_resets_nothing(db: str) -> None:
    assert replay_event("evt_never_seen") == 0
