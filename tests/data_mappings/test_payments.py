"""The forward-only payment state rule and the mapping of Razorpay events and payments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from data_mappings.payments import (
    Current,
    EventNotApplicable,
    PaymentUpdate,
    advances,
    order_status_after,
    update_from_event,
    update_from_payment,
)

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def change(status: str, payment_id: str = "pay_A", at: datetime = T0) -> PaymentUpdate:
    return PaymentUpdate(order_id="order_1", payment_status=status, event_at=at, source="webhook", payment_id=payment_id)


def current(status: str, payment_id: str | None = "pay_A", at: datetime | None = T0) -> Current:
    return Current(status, payment_id, at, "attempted")


@pytest.mark.parametrize(
    ("stored", "incoming", "moves"),
    [
        ("created", "authorized", True),
        ("authorized", "captured", True),
        ("captured", "refunded", True),
        ("captured", "authorized", False),
        ("refunded", "captured", False),
        ("captured", "failed", False),
        ("authorized", "failed", True),
        ("created", "failed", True),
    ],
)
def test_ranks_move_forward_only(stored: str, incoming: str, moves: bool) -> None:
    assert advances(current(stored), change(incoming)) is moves


def test_a_late_failure_of_an_older_attempt_does_not_undo_a_newer_authorization() -> None:
    stored = current("authorized", "pay_B", T0 + timedelta(minutes=5))
    assert not advances(stored, change("failed", "pay_A", T0))
    assert advances(stored, change("failed", "pay_B", T0 + timedelta(minutes=6)))


def test_a_new_attempt_after_a_failure_moves_on() -> None:
    assert advances(current("failed", "pay_A"), change("authorized", "pay_B", T0 + timedelta(minutes=1)))
    assert advances(current("failed", "pay_A"), change("captured", "pay_B", T0 - timedelta(minutes=1)))
    assert not advances(current("failed", "pay_A", T0), change("authorized", "pay_A", T0 - timedelta(seconds=1)))


def test_order_status_only_moves_up() -> None:
    assert order_status_after("paid", "attempted") == "paid"
    assert order_status_after("created", "attempted") == "attempted"
    assert order_status_after("attempted", None) == "attempted"


def test_order_paid_implies_captured_and_paid() -> None:
    event = {
        "event": "order.paid",
        "created_at": 1_764_000_000,
        "payload": {
            "payment": {"entity": {"id": "pay_A", "order_id": "order_1", "status": "captured", "method": "upi", "amount": 500, "currency": "INR", "created_at": 1}},
            "order": {"entity": {"id": "order_1", "status": "paid", "amount": 500, "receipt": "INV-1"}},
        },
    }
    update = update_from_event(event, "evt_1")
    assert update is not None
    assert (update.payment_status, update.order_status, update.receipt, update.event_id) == ("captured", "paid", "INV-1", "evt_1")
    assert update.event_at == datetime.fromtimestamp(1_764_000_000, UTC)


def test_events_that_move_nothing_and_events_that_cannot_apply() -> None:
    assert update_from_event({"event": "refund.created", "payload": {}}, "evt_2") is None
    with pytest.raises(EventNotApplicable):
        update_from_event({"event": "payment.captured", "created_at": 1, "payload": {}}, "evt_3")
    with pytest.raises(EventNotApplicable):
        update_from_payment({"id": "pay_X", "status": "captured", "created_at": 1}, source="reconciliation")
