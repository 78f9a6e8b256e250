"""Razorpay events and payment entities -> ERP `payments` changes, and the forward-only state rule.

Pure: no I/O, no Prefect. `hub/systems/razorpay.py` reads the current row, asks `decide` and writes.

State rule (Razorpay gives no ordering guarantee, resends old events, and reconciliation may read an
older picture): a payment follows Razorpay's lifecycle and never moves back along it.

- lifecycle rank: created < failed < authorized < captured < refunded. `failed` is the terminal branch
  before capture: it is taken only from `created` (an authorized, captured or refunded payment is never
  "failed" by a late, replayed or other attempt's `payment.failed`). From `failed`, the only way on is
  forward: Razorpay's late authorisation (`failed` -> `authorized`, the same payment) or a new attempt
  (another payment id) that is authorized or captured. Razorpay's S2S guide: "Move states forward
  only; accept failed -> authorized".
- a higher rank always wins, a lower one never does, so any order of the same events ends in the same
  state (the highest one reached).
- the same status again only refreshes details when it is newer by the payload's own time.
- the stored `last_event_at` only moves forward (the latest payload time applied).
- `order.paid` implies `captured`; the order status has its own rank: created < attempted < paid.
- refunds: `amount_refunded` (paise) only grows, to the largest figure any event or poll reported
  (Razorpay's cumulative `payment.amount_refunded`, so a late, repeated or replayed event cannot
  count a refund twice). The status is `refunded` only when the refunded amount reaches the payment
  amount; a partial refund keeps `captured` and records the amount. `refund.created` moves nothing
  (the refund may still fail); `refund.processed` and a polled payment do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CREATED = "created"
AUTHORIZED = "authorized"
CAPTURED = "captured"
FAILED = "failed"
REFUNDED = "refunded"

PAYMENT_RANK: dict[str, int] = {CREATED: 0, FAILED: 1, AUTHORIZED: 2, CAPTURED: 3, REFUNDED: 4}
ORDER_RANK: dict[str, int] = {"created": 0, "attempted": 1, "paid": 2}

# Event -> the payment status it proves. Other Razorpay events (refund.created, ...) change nothing here.
EVENT_STATUS: dict[str, str] = {
    "payment.authorized": AUTHORIZED,
    "payment.captured": CAPTURED,
    "payment.failed": FAILED,
    "order.paid": CAPTURED,
    "refund.processed": REFUNDED,
}


class EventNotApplicable(ValueError):
    """The event lacks what it needs to be applied (no payment entity, no order id)."""


@dataclass(frozen=True)
class PaymentUpdate:
    """What one event or one polled payment says about an order's payment."""

    order_id: str
    payment_status: str
    event_at: datetime
    source: str
    payment_id: str | None = None
    order_status: str | None = None
    receipt: str | None = None
    amount_paise: int | None = None
    currency: str | None = None
    method: str | None = None
    error_code: str | None = None
    error_description: str | None = None
    event_id: str | None = None
    amount_refunded: int | None = None


@dataclass(frozen=True)
class Current:
    """The parts of a stored row the rule looks at."""

    payment_status: str
    payment_id: str | None
    last_event_at: datetime | None
    order_status: str


def _at(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventNotApplicable(f"created_at {value!r} is not a unix time")
    return datetime.fromtimestamp(value, UTC)


def _entity(payload: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    wrapper = payload.get(kind)
    entity = wrapper.get("entity") if isinstance(wrapper, Mapping) else None
    return dict(entity) if isinstance(entity, Mapping) else None


def _paise(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def status_after_refunds(status: str, amount: int | None, amount_refunded: int | None) -> str:
    """`refunded` only when the refunds cover the whole payment; a partial refund stays `captured`."""
    if status not in (CAPTURED, REFUNDED) or amount is None or amount_refunded is None:
        return status
    if status == REFUNDED and amount_refunded == 0:
        return status  # a refund event whose payment entity says nothing of amounts
    return REFUNDED if amount_refunded >= amount else CAPTURED


def update_from_payment(payment: Mapping[str, Any], *, status: str | None = None, event_at: datetime | None = None,
                        source: str, event_id: str | None = None, order: Mapping[str, Any] | None = None,
                        amount_refunded: int | None = None) -> PaymentUpdate:
    """A payment entity (webhook payload or `GET /payments`) as an update of its order's row."""
    order_id = payment.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise EventNotApplicable(f"payment {payment.get('id')!r} has no order_id: only order payments are tracked")
    status = status or str(payment.get("status") or "")
    if status not in PAYMENT_RANK:
        raise EventNotApplicable(f"unknown payment status {status!r}")
    figures = [n for n in (_paise(payment.get("amount_refunded")), amount_refunded) if n is not None]
    refunded = max(figures) if figures else None
    status = status_after_refunds(status, _paise(payment.get("amount")), refunded)
    order = order or {}
    order_status = order.get("status") if order.get("status") in ORDER_RANK else None
    if order_status is None:
        # Orders are created without partial payments, so a captured payment means a paid order.
        order_status = "paid" if status in (CAPTURED, REFUNDED) else "attempted"
    amount = order.get("amount", payment.get("amount"))
    return PaymentUpdate(
        order_id=order_id,
        payment_status=status,
        event_at=event_at or _at(payment.get("created_at")),
        source=source,
        payment_id=str(payment["id"]) if payment.get("id") else None,
        order_status=order_status,
        receipt=order.get("receipt") if isinstance(order.get("receipt"), str) else None,
        amount_paise=int(amount) if isinstance(amount, int) and not isinstance(amount, bool) else None,
        currency=str(payment.get("currency") or order.get("currency") or "") or None,
        method=str(payment["method"]) if payment.get("method") else None,
        error_code=str(payment["error_code"]) if payment.get("error_code") else None,
        error_description=str(payment["error_description"]) if payment.get("error_description") else None,
        event_id=event_id,
        amount_refunded=refunded if refunded else None,
    )


def update_from_event(event: Mapping[str, Any], event_id: str) -> PaymentUpdate | None:
    """A Razorpay webhook body as an update; None for an event that changes no payment state."""
    name = event.get("event")
    status = EVENT_STATUS.get(str(name))
    if status is None:
        return None
    payload = event.get("payload")
    if not isinstance(payload, Mapping):
        raise EventNotApplicable(f"{name} has no payload")
    payment = _entity(payload, "payment")
    if payment is None:
        raise EventNotApplicable(f"{name} carries no payment entity")
    order = _entity(payload, "order")
    if name == "order.paid" and order is None:
        order = {"status": "paid"}
    refunded: int | None = None
    if name == "refund.processed":
        refund = _entity(payload, "refund")
        if refund is None or refund.get("payment_id") not in (None, payment.get("id")):
            raise EventNotApplicable(f"{name} carries no refund entity of payment {payment.get('id')!r}")
        # The payment entity's cumulative figure covers every refund; the refund's own amount is a floor.
        refunded = _paise(refund.get("amount"))
    return update_from_payment(payment, status=status, event_at=_at(event.get("created_at")), source="webhook",
                               event_id=event_id, order=order, amount_refunded=refunded)


def advances(current: Current | None, update: PaymentUpdate) -> bool:
    """True when `update` may replace the stored payment state (the rule in the module docstring)."""
    if current is None or current.payment_status == CREATED:
        return True
    new, old = update.payment_status, current.payment_status
    if new == old:
        return current.last_event_at is None or update.event_at > current.last_event_at
    return PAYMENT_RANK[new] > PAYMENT_RANK[old]


def latest(current: datetime | None, proposed: datetime) -> datetime:
    """The stored payload time only moves forward."""
    return proposed if current is None or proposed > current else current


def order_status_after(current: str | None, proposed: str | None) -> str:
    """The order status only moves up its rank."""
    if proposed is None:
        return current or "created"
    if current is None:
        return proposed
    return proposed if ORDER_RANK.get(proposed, 0) > ORDER_RANK.get(current, 0) else current
