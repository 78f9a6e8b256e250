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
        # failed is the terminal branch before capture, taken only from created: Razorpay never fails an
        # authorized payment (it auto-refunds it), so a late or replayed payment.failed cannot undo one.
        ("authorized", "failed", False),
        ("refunded", "failed", False),
        ("created", "failed", True),
        # Razorpay's late authorisation: failed -> authorized is forward ("accept failed -> authorized").
        ("failed", "authorized", True),
        ("failed", "captured", True),
    ],
)
def test_ranks_move_forward_only(stored: str, incoming: str, moves: bool) -> None:
    assert advances(current(stored), change(incoming)) is moves


def test_a_failure_never_undoes_an_authorization_whatever_its_time_or_attempt() -> None:
    stored = current("authorized", "pay_B", T0 + timedelta(minutes=5))
    assert not advances(stored, change("failed", "pay_A", T0))
    assert not advances(stored, change("failed", "pay_B", T0 + timedelta(minutes=6)))


def test_a_new_attempt_or_a_late_authorisation_after_a_failure_moves_on() -> None:
    assert advances(current("failed", "pay_A"), change("authorized", "pay_B", T0 + timedelta(minutes=1)))
    assert advances(current("failed", "pay_A"), change("captured", "pay_B", T0 - timedelta(minutes=1)))
    assert advances(current("failed", "pay_A", T0), change("authorized", "pay_A", T0 + timedelta(minutes=30)))


def test_the_same_status_refreshes_only_when_newer_by_the_payload_time() -> None:
    assert advances(current("authorized", "pay_A", T0), change("authorized", "pay_A", T0 + timedelta(seconds=1)))
    assert not advances(current("authorized", "pay_A", T0), change("authorized", "pay_A", T0))
    assert not advances(current("authorized", "pay_A", T0), change("authorized", "pay_A", T0 - timedelta(seconds=1)))


LIFECYCLE = ("created", "failed", "authorized", "captured", "refunded")


@pytest.mark.parametrize("seed", range(25))
def test_any_order_of_the_same_events_ends_in_the_highest_state_reached(seed: int) -> None:
    """The attack of the issue (failed -> authorized -> failed -> authorized ...) and any other order: the
    state is a running maximum of the lifecycle, so a replayed or late event never moves a payment back."""
    import random

    rng = random.Random(seed)
    events = [change(rng.choice(LIFECYCLE[1:]), rng.choice(("pay_A", "pay_B")), T0 + timedelta(seconds=rng.randint(0, 60)))
              for _ in range(rng.randint(1, 12))]
    stored: Current | None = None
    highest = 0
    for event in events:
        before = LIFECYCLE.index(stored.payment_status) if stored else 0
        if advances(stored, event):
            stored = Current(event.payment_status, event.payment_id, event.event_at, "attempted")
        after = LIFECYCLE.index(stored.payment_status) if stored else 0
        assert after >= before  # never back along the lifecycle
        highest = max(highest, LIFECYCLE.index(event.payment_status))
    assert stored is not None and LIFECYCLE.index(stored.payment_status) == highest


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


def refund_event(amount: int, amount_refunded: int, status: str = "captured", payment_amount: int = 30_000) -> dict[str, object]:
    payment = {"id": "pay_A", "order_id": "order_1", "amount": payment_amount, "currency": "INR", "status": status,
               "amount_refunded": amount_refunded, "created_at": 1_764_000_000}
    refund = {"id": "rfnd_1", "entity": "refund", "amount": amount, "payment_id": "pay_A", "status": "processed"}
    return {"event": "refund.processed", "contains": ["refund", "payment"], "created_at": 1_764_000_100,
            "payload": {"refund": {"entity": refund}, "payment": {"entity": payment}}}


def test_a_partial_refund_keeps_captured_and_carries_the_refunded_amount() -> None:
    update = update_from_event(refund_event(10_000, 10_000), "evt_r1")
    assert update is not None
    assert (update.payment_status, update.amount_refunded, update.order_status) == ("captured", 10_000, "paid")


def test_a_refund_covering_the_payment_is_refunded() -> None:
    update = update_from_event(refund_event(20_000, 30_000, status="refunded"), "evt_r2")
    assert update is not None and (update.payment_status, update.amount_refunded) == ("refunded", 30_000)


def test_the_refund_amount_is_a_floor_when_the_payment_entity_lags() -> None:
    update = update_from_event(refund_event(30_000, 0), "evt_r3")
    assert update is not None and (update.payment_status, update.amount_refunded) == ("refunded", 30_000)


def test_a_refund_event_of_another_payment_or_without_refund_is_not_applicable() -> None:
    event = refund_event(1_000, 1_000)
    event["payload"]["refund"]["entity"]["payment_id"] = "pay_OTHER"  # type: ignore[index]
    with pytest.raises(EventNotApplicable):
        update_from_event(event, "evt_r4")
    del event["payload"]["refund"]  # type: ignore[attr-defined]
    with pytest.raises(EventNotApplicable):
        update_from_event(event, "evt_r5")


def test_a_polled_payment_says_refunded_only_when_fully_refunded() -> None:
    base = {"id": "pay_A", "order_id": "order_1", "amount": 30_000, "created_at": 1_764_000_000}
    partial = update_from_payment({**base, "status": "captured", "amount_refunded": 5_000}, source="reconciliation")
    full = update_from_payment({**base, "status": "refunded", "amount_refunded": 30_000}, source="reconciliation")
    never = update_from_payment({**base, "status": "captured", "amount_refunded": 0}, source="reconciliation")
    assert (partial.payment_status, partial.amount_refunded) == ("captured", 5_000)
    assert (full.payment_status, full.amount_refunded) == ("refunded", 30_000)
    assert (never.payment_status, never.amount_refunded) == ("captured", None)
