"""Writes to the ERP `payments` table: record a created order, apply a payment update forward-only.

Every function works in the caller's transaction, so a webhook's effect commits together with its
inbox row being marked processed, and a reconciliation page commits together with its watermark.
The one exception is `confirm_checkout`, the ERP's checkout callback, which is a whole operation and
opens its own transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from connectors.core.errors import DataValidationFailed
from connectors.razorpay import PAYMENTS as PAYMENTS_STREAM
from data_mappings.payments import (
    AUTHORIZED,
    CAPTURED,
    PAYMENT_RANK,
    REFUNDED,
    Current,
    EventNotApplicable,
    PaymentUpdate,
    advances,
    latest,
    order_status_after,
    update_from_event,
    update_from_payment,
)
from hub.core.models import Payment
from hub.core.settings import get_settings
from hub.ingress.inbox import InboxEvent
from hub.ledger.retry_units import RAZORPAY_PAYMENTS_PAGE
from tasks.streams import ApplyContext, PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from connectors.core.base import Connector, Stream
    from connectors.razorpay import RazorpayConnector

log = logging.getLogger(__name__)

PAYMENTS = cast(Table, Payment.__table__)


def _insert(conn: Connection) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(PAYMENTS)


def record_order(conn: Connection, order: Mapping[str, Any]) -> None:
    """Store an order the hub created (before any payment exists); a known order is left as it is."""
    now = datetime.now(UTC)
    conn.execute(
        _insert(conn)
        .values(
            order_id=str(order["id"]),
            receipt=order.get("receipt"),
            amount_paise=order.get("amount"),
            currency=order.get("currency"),
            order_status=str(order.get("status") or "created"),
            payment_status="created",
            source="api",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )


def apply_update(conn: Connection, change: PaymentUpdate) -> str:
    """Apply one update under the row lock.

    Returns "applied" (the row changed), "unchanged" (it already said so), "stale" (an older or lower
    state, refused by the forward-only rule) or "duplicate" (this event id was the last one applied)."""
    now = datetime.now(UTC)
    if (change.event_at - now).total_seconds() > get_settings().webhook_max_future_skew_s:
        # No stored event time lies in the future: it would outrank every genuine later event.
        raise EventNotApplicable(f"{change.source} time {change.event_at.isoformat()} of order {change.order_id} is in the future")
    # The row exists before it is locked, so two workers applying events of one order serialise on it.
    conn.execute(
        _insert(conn)
        .values(order_id=change.order_id, order_status="created", payment_status="created", source=change.source, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    query = select(PAYMENTS).where(PAYMENTS.c.order_id == change.order_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one()
    if change.event_id is not None and row.last_event_id == change.event_id:
        return "duplicate"
    values: dict[str, Any] = {}
    for name in ("receipt", "amount_paise", "currency", "method"):
        if getattr(row, name) is None and getattr(change, name) is not None:
            values[name] = getattr(change, name)
    order_status = order_status_after(row.order_status, change.order_status)
    if order_status != row.order_status:
        values["order_status"] = order_status
    current = Current(row.payment_status, row.payment_id, row.last_event_at, row.order_status)
    moved = advances(current, change)
    if moved:
        values.update(
            payment_status=change.payment_status,
            payment_id=change.payment_id or row.payment_id,
            error_code=change.error_code,
            error_description=change.error_description,
            last_event_at=latest(row.last_event_at, change.event_at),
            source=change.source,
        )
        if change.method is not None:
            values["method"] = change.method
        if change.event_id is not None:
            values["last_event_id"] = change.event_id
        if change.payment_status == CAPTURED and row.captured_at is None:
            values["captured_at"] = change.event_at
    # The refunded amount only grows (a cumulative figure, so a repeated or late event cannot count twice).
    refunded = change.amount_refunded is not None and change.amount_refunded > (row.amount_refunded or 0)
    if refunded:
        values["amount_refunded"] = change.amount_refunded
        if change.event_id is not None:
            values["last_event_id"] = change.event_id
    values = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not values:
        # The same status again, not newer: it already says so. A lower status: refused as stale.
        return "unchanged" if moved or change.payment_status == row.payment_status else "stale"
    values["updated_at"] = now
    conn.execute(update(PAYMENTS).where(PAYMENTS.c.order_id == change.order_id).values(**values))
    return "applied" if moved or refunded else "stale"


def apply_razorpay_event(conn: Connection, event: InboxEvent) -> str:
    """One stored Razorpay webhook -> `payments`; "ignored" for events that move no payment state."""
    try:
        body = orjson.loads(event.body)
    except orjson.JSONDecodeError as exc:
        raise EventNotApplicable(f"event body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EventNotApplicable("event body is not a JSON object")
    change = update_from_event(body, event.event_id)
    if change is None:
        return "ignored"
    return apply_update(conn, change)


def get_payment(conn: Connection, order_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(PAYMENTS).where(PAYMENTS.c.order_id == order_id)).first()
    return dict(row._mapping) if row is not None else None


# --- the ERP's checkout callback (`drymix razorpay checkout-callback`, docs/payments.md) -----------------
#
# Razorpay Standard Checkout hands the browser razorpay_order_id, razorpay_payment_id and razorpay_signature
# = hex HMAC-SHA256(key secret, "order_id|payment_id") after a successful payment. Razorpay's guide makes the
# signature check, against the order id the merchant stored, the verification; the payment is then
# authorized, and its capture is confirmed by the `payment.captured` / `order.paid` webhooks (or the
# reconcile flow). Razorpay also advises not delivering goods before the payment is captured.

CHECKOUT_SOURCE = "checkout"
RECORDED = "recorded"  # genuine; the payments row moved forward (authorized, or what Razorpay answered)
DUPLICATE = "duplicate"  # genuine; this payment was already recorded (a replayed callback): nothing written
FURTHER_ALONG = "further_along"  # genuine; the order is already captured or refunded: nothing moves back
FORGED = "forged"  # the signature does not match our order: refused, recorded in integration_errors
UNKNOWN_ORDER = "unknown_order"  # no payments row for this order id: the hub never created it; nothing written


class CheckoutSignatureRefused(DataValidationFailed):
    """A checkout callback whose signature does not match the order we stored: data refused, never retried.

    DATA_VALIDATION_FAILED, not AUTHENTICATION_FAILED: our credentials were not refused by Razorpay; the data
    the ERP handed in (from the customer's browser) failed its integrity check. Authentication failures are
    escalated and paged at once as a credentials problem, which would let anyone page on-call by posting
    a made-up callback; this waits for review like any refused data, with its own remedy."""

    @property
    def remedy(self) -> str:
        return ("The checkout callback was refused and the customer must not be told 'paid'. Compare the payment in "
                "the Razorpay dashboard with the order; if every callback is refused, RAZORPAY_KEY_SECRET is not the "
                "secret of the key that created the orders (test vs live key pair). Otherwise treat it as tampering.")


@dataclass(frozen=True)
class CheckoutResult:
    """What a checkout callback came to; `verified` is what the ERP may tell the customer (payment received,
    capture pending unless `payment_status` already says captured)."""

    outcome: str
    order_id: str
    payment_id: str
    payment_status: str | None = None
    order_status: str | None = None
    error_id: int | None = None
    message: str = ""

    @property
    def verified(self) -> bool:
        return self.outcome in (RECORDED, DUPLICATE, FURTHER_ALONG)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verified": self.verified}


def _settled(row: Mapping[str, Any], order_id: str, payment_id: str) -> CheckoutResult | None:
    """The answer when the stored row already covers this callback (so nothing is written), else None."""
    status = str(row["payment_status"])
    if status in (CAPTURED, REFUNDED):
        return CheckoutResult(FURTHER_ALONG, order_id, payment_id, status, row["order_status"],
                              message=f"order already {status} (payment {row['payment_id']}); the callback changes nothing")
    if row["payment_id"] == payment_id and PAYMENT_RANK.get(status, 0) >= PAYMENT_RANK[AUTHORIZED]:
        return CheckoutResult(DUPLICATE, order_id, payment_id, status, row["order_status"], message="payment already recorded")
    return None


def _refuse(order_id: str, payment_id: str, signature: str, reason: str, code: str) -> CheckoutResult:
    """Record a refused callback in `integration_errors`: order and payment ids only, never the signature."""
    from hub.ledger.errors import record_error

    error = CheckoutSignatureRefused(
        f"checkout callback for order {order_id}, payment {payment_id} refused: {reason}", code=code,
        integration="razorpay", operation="checkout_callback",
        request_data={"order_id": order_id, "payment_id": payment_id, "signature_chars": len(signature)},
    )
    error_id = record_error(error, integration="razorpay", dataset="payments", unit={"order_id": order_id, "payment_id": payment_id})
    log.warning("checkout callback refused: order=%s payment=%s code=%s error_id=%s", order_id, payment_id, code, error_id)
    return CheckoutResult(FORGED, order_id, payment_id, error_id=error_id, message=reason)


def _default_connector() -> RazorpayConnector:
    """The configured connector; a missing key secret is a credentials error, not a forged callback (an empty
    key makes every signature check fail)."""
    from connectors.core.errors import AuthenticationFailed
    from hub.core.secrets import resolve_secret
    from hub.runtime.connections import build_razorpay_connector

    if not resolve_secret(get_settings().razorpay_key_secret, "razorpay-key-secret").get_secret_value():
        raise AuthenticationFailed("RAZORPAY_KEY_SECRET is not set (see .env.example): checkout signatures cannot be verified",
                                   integration="razorpay", operation="checkout_callback")
    return build_razorpay_connector()


def _verdict(row: Mapping[str, Any] | None, order_id: str, payment_id: str, signature: str,
             rzp: RazorpayConnector) -> CheckoutResult | None:
    """Unknown order, forged (its error row is written by the caller, outside the transaction), settled, or None: go on."""
    if row is None:
        return CheckoutResult(UNKNOWN_ORDER, order_id, payment_id,
                              message="no payments row for this order: the hub did not create it (reconciliation records genuine payments of it)")
    # The order id of OUR row (the lookup matched it exactly), never one only the callback vouches for.
    if not rzp.verify_payment_signature(str(row["order_id"]), payment_id, signature):
        return CheckoutResult(FORGED, order_id, payment_id, message="the signature does not match HMAC-SHA256(key secret, stored order id|payment id)")
    return _settled(row, order_id, payment_id)


def confirm_checkout(order_id: str, payment_id: str, signature: str, *, fetch: bool = False,
                     connector: RazorpayConnector | None = None, engine: Engine | None = None) -> CheckoutResult:
    """The ERP's checkout callback: verify it against the order WE stored and record the payment forward-only.

    The order must have a `payments` row (`record_order`); the signature is checked in constant time against
    that row's order id. A genuine payment is applied with `apply_update`, source "checkout": `authorized`
    and order `attempted`, as Razorpay's flow has it (the capture arrives by the `payment.captured` webhook or
    the reconcile flow). A replay, or an order already captured or refunded, writes nothing; a forged
    signature writes nothing to `payments` and is recorded in `integration_errors` (DATA_VALIDATION_FAILED,
    without the signature). One transaction under the row lock, so identical callbacks racing (the browser
    handler and the callback URL) record once.

    `fetch=True` also reads GET /payments/{id} (after the checks, before the lock) and records what Razorpay
    says (captured, with method and amount). Off by default: each callback would spend a token of Razorpay's
    API budget (`razorpay.rate_budget_per_s`, 100/s shared with order creation and reconciliation), which
    caps the callbacks at that rate, and the signature is already the proof. `connector`: the configured
    one when None (a missing key secret raises AuthenticationFailed rather than refusing every callback).
    """
    from hub.core.db import for_update, get_engine

    engine = engine or get_engine()
    owned = connector is None
    rzp = _default_connector() if connector is None else connector
    try:
        payment: dict[str, Any] | None = None
        if fetch:
            # Checked first, so neither a forged callback nor a replay spends the API budget; no network under the lock.
            with engine.connect() as conn:
                verdict = _verdict(get_payment(conn, order_id), order_id, payment_id, signature, rzp)
            if verdict is None:
                payment = rzp.fetch_payment(payment_id)
                if payment.get("order_id") != order_id:
                    return _refuse(order_id, payment_id, signature, f"Razorpay says payment {payment_id} belongs to order {payment.get('order_id')!r}",
                                   "PAYMENT_ORDER_MISMATCH")
        with engine.begin() as conn:
            # Identical callbacks racing take turns here (SQLite: the database's write lock), not after both read the row.
            found = conn.execute(for_update(conn, select(PAYMENTS).where(PAYMENTS.c.order_id == order_id))).first()
            row = dict(found._mapping) if found is not None else None
            verdict = _verdict(row, order_id, payment_id, signature, rzp)
            if verdict is None and row is not None:
                if payment is not None:
                    change = update_from_payment(payment, source=CHECKOUT_SOURCE)
                else:
                    # The payment's own time is unknown without the GET: the callback's arrival stands for it
                    # (a capture still outranks it: a higher status always wins).
                    change = PaymentUpdate(order_id=order_id, payment_status=AUTHORIZED, event_at=datetime.now(UTC),
                                           source=CHECKOUT_SOURCE, payment_id=payment_id, order_status="attempted")
                applied = apply_update(conn, change) == "applied"  # re-takes the lock this transaction holds
                order_status = order_status_after(row["order_status"], change.order_status)
    finally:
        if owned:
            rzp.close()
    if verdict is not None:
        return _refuse(order_id, payment_id, signature, verdict.message, "SIGNATURE_MISMATCH") if verdict.outcome == FORGED else verdict
    assert row is not None
    if not applied:
        # Refused by the forward-only rule (a state this callback cannot improve on): nothing moved back.
        return CheckoutResult(FURTHER_ALONG, order_id, payment_id, row["payment_status"], order_status,
                              message=f"the stored state ({row['payment_status']}) is not behind this callback: unchanged")
    return CheckoutResult(RECORDED, order_id, payment_id, change.payment_status, order_status,
                          message="signature verified; payment recorded" + ("" if change.payment_status == CAPTURED else ", capture pending"))


# --- reconciliation, as the sync engine runs it (flows/reconcile_razorpay.py) ------------------------
#
# Razorpay advises polling for business-critical flows and disables a webhook after 24 h of failures.
# Each run reads payments created in [watermark - overlap, now]: a fixed window, so payments created while
# paging cannot shift the count/skip offsets, and a failed page's unit (the window and the page's
# position) reruns exactly the rest of it. Each page applies with the webhooks' forward-only rule and
# commits with its rows; the watermark (`{"since": unix}`) is written with the last page and never moves back.

DEFAULT_OVERLAP_S = 3600
# First run without a watermark: look back this far (Razorpay replays webhooks for 15 days at most).
DEFAULT_LOOKBACK_S = 15 * 24 * 3600


def apply_payments(conn: Connection, records: list[dict[str, Any]], cursor: Mapping[str, Any] | None,
                   context: ApplyContext) -> dict[str, int]:
    """One page of payments (and, on the last page, the watermark unless it already stands later), in the caller's transaction."""
    from data_mappings.payments import update_from_payment
    from hub.ledger.loading import read_cursor, write_cursor

    counts = {"records": len(records), "applied": 0, "stale": 0, "skipped": 0}
    for payment in records:
        try:
            result = apply_update(conn, update_from_payment(payment, source="reconciliation"))
        except EventNotApplicable:
            # A payment without an order (payment links, ...) is not tracked in `payments`; one dated in the
            # future is not believed.
            counts["skipped"] += 1
            continue
        counts["applied" if result == "applied" else "stale"] += 1
    if cursor is not None:
        current = read_cursor(conn, "razorpay", "payments") or {}
        # A rerun of an older window finishes after a later run moved the watermark: leave it there.
        if current.get("since") is None or int(current["since"]) < int(cursor["since"]):
            write_cursor(conn, "razorpay", "payments", dict(cursor), flow_run_id=context.flow_run_id, rows_added=counts["applied"])
    return counts


def _reconcile_plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    import time

    overlap_s = int(options.parameters.get("overlap_s", DEFAULT_OVERLAP_S))
    until = int(time.time())
    known = cursor is not None and cursor.get("since") is not None
    since = max(0, int(cursor["since"]) - overlap_s) if cursor is not None and known else until - DEFAULT_LOOKBACK_S
    return ReadPlan(
        position=connector.start(stream, {"from": since, "to": until}),
        mode="incremental" if known else "full",
        since=since,
        state={"until": until},
    )


def _connect_razorpay(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_razorpay_connector

    return build_razorpay_connector(page_size=options.page_size)


RECONCILIATION = PullStream(
    integration="razorpay",
    dataset="payments",
    flow_name="reconcile-razorpay",
    unit_kind=RAZORPAY_PAYMENTS_PAGE,
    operation="reconcile_payments",
    stream=PAYMENTS_STREAM,
    connect=_connect_razorpay,
    plan=_reconcile_plan,
    next_cursor=lambda plan, high_water, started: {"since": plan.state["until"]},
    apply=apply_payments,
    batch_pages=1,  # each page commits with its rows
    keep_cursor_on_resume=False,  # apply_payments never moves the watermark back instead
    resolve=("SERVER_ERROR", "TIMEOUT", "RATE_LIMIT_EXCEEDED"),
)
