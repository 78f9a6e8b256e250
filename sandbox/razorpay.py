"""Simulator of the Razorpay Orders/Payments API subset the hub uses, with signed webhook delivery.

API (HTTP Basic ``key_id:key_secret``, api-contracts section 4)::

    POST /v1/orders                     create (``unique_receipt: true`` makes a repeated receipt return the same order)
    GET  /v1/orders/{id}                fetch an order
    GET  /v1/orders/{id}/payments       the order's payments (collection)
    GET  /v1/payments?from&to&count&skip  payments by created_at, newest first (collection, count <= 100)
    GET  /v1/payments/{id}              fetch a payment
    POST /v1/payments/{id}/refund       refund a captured payment, in full or in part (``X-Refund-Idempotency``)
    GET  /v1/payments/{id}/refunds      the payment's refunds (collection)
    GET  /v1/payments/{id}/refunds/{rid}  one refund of the payment
    GET  /v1/refunds/{id}               fetch a refund

Every error uses Razorpay's envelope ``{"error": {"code", "description", "source", "step", "reason",
"metadata", "field"}}``; 429 carries no ``Retry-After`` because Razorpay sends none.

Control routes (``/_sandbox/razorpay/...``) pay an order the way a customer at checkout would, which
creates the payment, moves the order, and delivers webhooks (``payment.authorized``,
``payment.captured`` or ``payment.failed``, ``order.paid``; ``refund.created`` and ``refund.processed``
after a refund) signed with the webhook secret to the
configured URL from a background thread, retrying non-2xx answers with a bounded backoff.
Delivery switches: duplicate every delivery, reverse the order of one payment's events, and drop the
next N events (so reconciliation has something to find).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.core import (
    FaultSwitches,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    WebhookDeliveryWorker,
    control_json_body,
    serve_main,
    server_parser,
)

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"
MAX_COUNT = 100
DEFAULT_COUNT = 10
MAX_RECEIPT = 40
MAX_NOTES = 15
MAX_NOTE_VALUE = 256
OUTCOMES = ("captured", "failed", "authorized")
REFUND_SPEEDS = ("normal", "optimum")
MIN_REFUND = 100
# X-Refund-Idempotency: at least 10 characters of letters, digits, hyphens and underscores.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")
_ID_CHARS = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A Razorpay-shaped id: prefix, underscore, 14 alphanumerics."""
    return f"{prefix}_{''.join(secrets.choice(_ID_CHARS) for _ in range(14))}"


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-Razorpay-Signature``: lower-case hex HMAC-SHA256 of the raw body with the webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def checkout_signature(key_secret: str, order_id: str, payment_id: str) -> str:
    """``razorpay_signature`` of the checkout callback: hex HMAC-SHA256 of ``order_id|payment_id``."""
    return hmac.new(key_secret.encode(), f"{order_id}|{payment_id}".encode(), hashlib.sha256).hexdigest()


class RazorpayError(Exception):
    """An API error answered with Razorpay's envelope."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        code: str = "BAD_REQUEST_ERROR",
        field: str | None = None,
        source: str = "business",
        step: str = "payment_initiation",
        reason: str = "input_validation_failed",
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.field = field
        self.source = source
        self.step = step
        self.reason = reason

    def response(self) -> SandboxResponse:
        return error_response(
            self.status, self.code, self.description, field=self.field, source=self.source, step=self.step, reason=self.reason
        )


def error_response(
    status: int,
    code: str,
    description: str,
    *,
    field: str | None = None,
    source: str = "NA",
    step: str = "NA",
    reason: str = "NA",
) -> SandboxResponse:
    """Razorpay's error envelope (section 4); unknown URLs and auth failures use ``NA`` parts."""
    error: dict[str, Any] = {
        "code": code,
        "description": description,
        "source": source,
        "step": step,
        "reason": reason,
        "metadata": {},
    }
    if field is not None:
        error["field"] = field
    return SandboxResponse.json(status, {"error": error})


def _bad(description: str, field: str | None = None) -> RazorpayError:
    return RazorpayError(400, description, field=field)


@dataclass
class WebhookSwitches:
    """How the sandbox delivers webhooks; changed with ``POST /_sandbox/razorpay/webhooks``."""

    url: str | None = None
    duplicate: bool = False  # deliver every event twice (same event id), as Razorpay may
    out_of_order: bool = False  # deliver one payment's events newest first
    drop_next_n: int = 0  # never deliver the next N events (a webhook Razorpay gave up on)
    max_attempts: int = 5  # bounded: the real 24 h schedule is compressed for tests and drills
    backoff_s: float = 0.05  # first retry delay; doubled per attempt

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "duplicate": self.duplicate,
            "out_of_order": self.out_of_order,
            "drop_next_n": self.drop_next_n,
            "max_attempts": self.max_attempts,
            "backoff_s": self.backoff_s,
        }


@dataclass
class Delivery:
    """One webhook event and what happened to it (``GET /_sandbox/razorpay/deliveries``)."""

    event_id: str
    event: str
    body: bytes
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    state: str = "pending"  # pending | delivered | failed | dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event": self.event,
            "attempts": self.attempts,
            "statuses": list(self.statuses),
            "state": self.state,
        }


class RazorpaySandbox(WebhookDeliveryWorker, Simulator):
    _worker_name = "razorpay-webhooks"

    """Orders and payments in memory, the real request/response shapes, and webhook delivery."""

    name = "razorpay"

    def __init__(
        self,
        key_id: str = "rzp_test_drymix",
        key_secret: str = "sandbox-key-secret",
        webhook_secret: str = "sandbox-webhook-secret",
        *,
        webhook_url: str | None = None,
        webhook_transport: httpx.BaseTransport | None = None,
        account_id: str = "acc_DrymixSandbox01",
        clock: Callable[[], float] = time.time,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(faults=faults)
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.account_id = account_id
        self.webhooks = WebhookSwitches(url=webhook_url)
        self._clock = clock
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self._receipts: dict[str, str] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        # idempotency key -> (request body it came with, refund id)
        self._refund_keys: dict[str, tuple[dict[str, Any], str]] = {}
        self._seq = 0
        self._payment_seq: dict[str, int] = {}
        self.deliveries: list[Delivery] = []
        self._init_delivery(webhook_transport)

    def now(self) -> int:
        return int(self._clock())

    # -- API -----------------------------------------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        return error_response(401, "BAD_REQUEST_ERROR", "Authentication failed")

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        # Razorpay documents no Retry-After: the switch's value is ignored on purpose.
        return error_response(429, "BAD_REQUEST_ERROR", "Too many requests")

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        code = {502: "GATEWAY_ERROR", 503: "SERVICE_UNAVAILABLE"}.get(status, "SERVER_ERROR")
        return error_response(
            status, code, "The server encountered an error. The incident has been reported to admins."
        )

    def _authorized(self, req: SandboxRequest) -> bool:
        header = req.headers.get("authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.key_id) and hmac.compare_digest(password, self.key_secret)

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        path = req.path.rstrip("/")
        if not path.startswith(API_PREFIX + "/"):
            return error_response(404, "BAD_REQUEST_ERROR", "The requested URL was not found on the server.")
        if not self._authorized(req):
            return self.unauthorized_response(req)
        parts = path[len(API_PREFIX) + 1 :].split("/")
        try:
            if parts == ["orders"] and req.method == "POST":
                return SandboxResponse.json(200, self.create_order(self._body(req)))
            if req.method == "GET" and parts[0] == "orders" and len(parts) == 2:
                return SandboxResponse.json(200, self._order(parts[1]))
            if req.method == "GET" and parts[0] == "orders" and len(parts) == 3 and parts[2] == "payments":
                order = self._order(parts[1])
                items = [p for p in self._newest_first() if p["order_id"] == order["id"]]
                return SandboxResponse.json(200, {"entity": "collection", "count": len(items), "items": items})
            if req.method == "GET" and parts == ["payments"]:
                return SandboxResponse.json(200, self.list_payments(req))
            if req.method == "GET" and parts[0] == "payments" and len(parts) == 2:
                return SandboxResponse.json(200, self._payment(parts[1]))
            if req.method == "POST" and parts[0] == "payments" and len(parts) == 3 and parts[2] == "refund":
                return SandboxResponse.json(200, self.refund(parts[1], self._body(req), req.headers.get("x-refund-idempotency")))
            if req.method == "GET" and parts[0] == "payments" and len(parts) == 3 and parts[2] == "refunds":
                return SandboxResponse.json(200, self.list_refunds(self._payment(parts[1])["id"], req))
            if req.method == "GET" and parts[0] == "payments" and len(parts) == 4 and parts[2] == "refunds":
                refund = self._refund(parts[3])
                if refund["payment_id"] != self._payment(parts[1])["id"]:
                    raise _bad("The id provided does not exist", "id")
                return SandboxResponse.json(200, refund)
            if req.method == "GET" and parts[0] == "refunds" and len(parts) == 2:
                return SandboxResponse.json(200, self._refund(parts[1]))
        except RazorpayError as error:
            return error.response()
        return error_response(404, "BAD_REQUEST_ERROR", "The requested URL was not found on the server.")

    @staticmethod
    def _body(req: SandboxRequest) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            raise _bad("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object")
        return body

    def _payment(self, payment_id: str) -> dict[str, Any]:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise _bad("The id provided does not exist", "id")
        return payment

    def _refund(self, refund_id: str) -> dict[str, Any]:
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise _bad("The id provided does not exist", "id")
        return refund

    def _order(self, order_id: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise _bad("The id provided does not exist", "id")
        return order

    def create_order(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate like Razorpay and store; with ``unique_receipt`` a known receipt returns its order."""
        amount = body.get("amount")
        if amount is None:
            raise _bad("The amount field is required.", "amount")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise _bad("The amount must be an integer.", "amount")
        if amount < 100:
            raise _bad("The amount must be at least INR 1.00", "amount")
        currency = body.get("currency", "INR")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise _bad("The currency is invalid.", "currency")
        receipt = body.get("receipt")
        if receipt is not None and (not isinstance(receipt, str) or len(receipt) > MAX_RECEIPT):
            raise _bad(f"The receipt may not be greater than {MAX_RECEIPT} characters.", "receipt")
        notes = self._notes(body.get("notes", {}))
        if body.get("unique_receipt") is True and receipt:
            known = self._receipts.get(receipt)
            if known is not None:
                order = self.orders[known]
                if order["amount"] != amount or order["currency"] != currency:
                    raise _bad("An order with this receipt already exists with a different amount or currency", "receipt")
                return order
        order = {
            "id": new_id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": currency,
            "receipt": receipt,
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": notes,
            "created_at": self.now(),
        }
        self.orders[order["id"]] = order
        if receipt:
            self._receipts.setdefault(receipt, order["id"])
        return order

    @staticmethod
    def _notes(notes: Any) -> dict[str, Any]:
        """``notes``: at most 15 key/value pairs of at most 256 characters (orders and refunds alike)."""
        if notes in ([], None):
            return {}
        if not isinstance(notes, dict):
            raise _bad("The notes must be an object.", "notes")
        if len(notes) > MAX_NOTES:
            raise _bad(f"Number of fields in notes should be less than or equal to {MAX_NOTES}", "notes")
        if any(not isinstance(v, str | int | float) or len(str(v)) > MAX_NOTE_VALUE for v in notes.values()):
            raise _bad(f"Each note value may not be greater than {MAX_NOTE_VALUE} characters.", "notes")
        return dict(notes)

    def _newest_first(self) -> list[dict[str, Any]]:
        return sorted(self.payments.values(), key=lambda p: (p["created_at"], self._payment_seq[p["id"]]), reverse=True)

    def list_payments(self, req: SandboxRequest) -> dict[str, Any]:
        """``GET /v1/payments``: created_at in [from, to], newest first, ``count`` (<= 100) from ``skip``."""
        values = self._window(req)
        matching = [p for p in self._newest_first() if values["from"] <= p["created_at"] <= values["to"]]
        items = matching[values["skip"] : values["skip"] + values["count"]]
        return {"entity": "collection", "count": len(items), "items": items}

    @staticmethod
    def _window(req: SandboxRequest) -> dict[str, int]:
        """``from``/``to``/``count``/``skip`` of a list call, validated like Razorpay."""
        values: dict[str, int] = {}
        for name, default in (("from", 0), ("to", 2**62), ("count", DEFAULT_COUNT), ("skip", 0)):
            raw = req.query_get(name)
            if raw is None or raw == "":
                values[name] = default
                continue
            if not raw.isdigit():
                raise _bad(f"The {name} must be an integer.", name)
            values[name] = int(raw)
        if values["count"] > MAX_COUNT:
            raise _bad(f"The count may not be greater than {MAX_COUNT}.", "count")
        if values["count"] < 1:
            raise _bad("The count must be at least 1.", "count")
        return values

    # -- refunds -------------------------------------------------------------------------------

    def refund(self, payment_id: str, body: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/payments/{id}/refund``: a normal refund of a captured payment, full unless ``amount``.

        The refund is processed at once (the sandbox has no bank): the answer says ``processed`` and
        ``refund.created`` then ``refund.processed`` are queued, each carrying the refund and the payment.
        With ``X-Refund-Idempotency`` a repeated request returns the refund already made for that key;
        the same key with a different body is refused, as Razorpay documents."""
        unknown = set(body) - {"amount", "speed", "notes", "receipt"}
        if unknown:
            raise _bad(f"{sorted(unknown)[0]} is/are not required and should not be sent", sorted(unknown)[0])
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise _bad("The idempotency key must be at least 10 characters of letters, digits, hyphens and underscores")
        with self.lock:
            payment = self._payment(payment_id)
            if idempotency_key is not None and idempotency_key in self._refund_keys:
                first_body, refund_id = self._refund_keys[idempotency_key]
                if first_body != dict(body):
                    raise _bad("The request body differs from the earlier request with this idempotency key")
                return self.refunds[refund_id]
            if payment["status"] not in ("captured", "refunded"):
                raise _bad("The payment has not been captured, so it cannot be refunded", "id")
            refundable = payment["amount"] - payment["amount_refunded"]
            if refundable <= 0:
                raise _bad("The payment has been fully refunded already", "id")
            amount = body.get("amount", refundable)
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise _bad("The amount must be an integer.", "amount")
            if amount < MIN_REFUND:
                raise _bad("The amount must be at least INR 1.00", "amount")
            speed = body.get("speed", "normal")
            if speed not in REFUND_SPEEDS:
                raise _bad("The selected speed is invalid.", "speed")
            receipt = body.get("receipt")
            if receipt is not None and (not isinstance(receipt, str) or len(receipt) > MAX_RECEIPT):
                raise _bad(f"The receipt may not be greater than {MAX_RECEIPT} characters.", "receipt")
            notes = self._notes(body.get("notes", {}))
            if amount > refundable:
                raise _bad("The refund amount provided is greater than amount captured", "amount")
            now = self.now()
            self._seq += 1
            refund: dict[str, Any] = {
                "id": new_id("rfnd"),
                "entity": "refund",
                "amount": amount,
                "currency": payment["currency"],
                "payment_id": payment["id"],
                "notes": notes,
                "receipt": receipt,
                "acquirer_data": {"arn": None},
                "created_at": now,
                "batch_id": None,
                "status": "pending",
                "speed_processed": "normal",
                "speed_requested": speed,
            }
            self._payment_seq[refund["id"]] = self._seq
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] == payment["amount"]
            payment["refund_status"] = "full" if full else "partial"
            if full:
                payment["status"] = "refunded"
            events = [("refund.created", {"refund": dict(refund), "payment": dict(payment)})]
            refund.update(status="processed", acquirer_data={"arn": f"{self._seq:014d}"})
            events.append(("refund.processed", {"refund": dict(refund), "payment": dict(payment)}))
            self.refunds[refund["id"]] = refund
            if idempotency_key is not None:
                self._refund_keys[idempotency_key] = (dict(body), refund["id"])
            deliveries = [self._event(name, entities, now) for name, entities in events]
        self._enqueue(deliveries)
        return refund

    def list_refunds(self, payment_id: str, req: SandboxRequest) -> dict[str, Any]:
        """``GET /v1/payments/{id}/refunds``: the payment's refunds, newest first, ``count``/``skip``."""
        window = self._window(req)
        matching = sorted(
            (r for r in self.refunds.values() if r["payment_id"] == payment_id and window["from"] <= r["created_at"] <= window["to"]),
            key=lambda r: (r["created_at"], self._payment_seq[r["id"]]),
            reverse=True,
        )
        items = matching[window["skip"] : window["skip"] + window["count"]]
        return {"entity": "collection", "count": len(items), "items": items}

    # -- paying an order (what checkout would do) --------------------------------------------

    def pay(self, order_id: str, outcome: str = "captured", *, method: str = "upi") -> dict[str, Any]:
        """Create a payment for an order with an outcome, move the order, and queue the webhooks."""
        if outcome not in OUTCOMES:
            raise _bad(f"outcome must be one of {', '.join(OUTCOMES)}", "outcome")
        with self.lock:
            order = self._order(order_id)
            if order["status"] == "paid":
                raise _bad("Order has already been paid", "order_id")
            now = self.now()
            self._seq += 1
            payment: dict[str, Any] = {
                "id": new_id("pay"),
                "entity": "payment",
                "amount": order["amount"],
                "currency": order["currency"],
                "status": "authorized",
                "order_id": order["id"],
                "invoice_id": None,
                "international": False,
                "method": method,
                "amount_refunded": 0,
                "refund_status": None,
                "captured": False,
                "description": None,
                "card_id": None,
                "bank": None,
                "wallet": None,
                "vpa": "customer@okdrymix" if method == "upi" else None,
                "email": "buyer@example.com",
                "contact": "+919800000000",
                "notes": order["notes"],
                "fee": None,
                "tax": None,
                "error_code": None,
                "error_description": None,
                "error_source": None,
                "error_step": None,
                "error_reason": None,
                "acquirer_data": {},
                "created_at": now,
            }
            self._payment_seq[payment["id"]] = self._seq
            order["attempts"] += 1
            events: list[tuple[str, dict[str, Any]]] = []
            if outcome == "failed":
                payment.update(
                    status="failed",
                    error_code="BAD_REQUEST_ERROR",
                    error_description="Payment failed because the customer cancelled it at the bank page",
                    error_source="customer",
                    error_step="payment_authentication",
                    error_reason="payment_cancelled",
                )
                order["status"] = "attempted"
                events.append(("payment.failed", {"payment": dict(payment)}))
            else:
                order["status"] = "attempted"
                events.append(("payment.authorized", {"payment": dict(payment)}))
                if outcome == "captured":
                    fee = round(payment["amount"] * 0.02)
                    payment.update(status="captured", captured=True, fee=fee, tax=round(fee * 0.18))
                    order.update(status="paid", amount_paid=order["amount"], amount_due=0)
                    events.append(("payment.captured", {"payment": dict(payment)}))
                    events.append(("order.paid", {"payment": dict(payment), "order": dict(order)}))
            self.payments[payment["id"]] = payment
            deliveries = [self._event(name, entities, now) for name, entities in events]
        self._enqueue(deliveries)
        return {
            "razorpay_payment_id": payment["id"],
            "razorpay_order_id": order["id"],
            "razorpay_signature": checkout_signature(self.key_secret, order["id"], payment["id"]),
            "payment": payment,
            "order": order,
            "events": [d.event_id for d in deliveries],
        }

    def _event(self, name: str, entities: Mapping[str, dict[str, Any]], now: int) -> Delivery:
        payload = {
            "entity": "event",
            "account_id": self.account_id,
            "event": name,
            "contains": list(entities),
            "payload": {kind: {"entity": entity} for kind, entity in entities.items()},
            "created_at": now,
        }
        # Serialised once: these exact bytes are signed and sent on every attempt.
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = Delivery(event_id=new_id("evt"), event=name, body=body)
        self.deliveries.append(delivery)
        return delivery

    # -- webhook delivery ---------------------------------------------------------------------

    def _enqueue(self, deliveries: list[Delivery]) -> None:
        with self.lock:
            switches = WebhookSwitches(**self.webhooks.to_dict())
            kept: list[Delivery] = []
            for delivery in deliveries:
                if self.webhooks.drop_next_n > 0:
                    self.webhooks.drop_next_n -= 1
                    delivery.state = "dropped"
                else:
                    kept.append(delivery)
        if switches.out_of_order:
            kept.reverse()
        if switches.duplicate:
            kept = [d for d in kept for _ in (0, 1)]
        if not kept:
            return
        self._queue_batch(kept)

    def _deliver(self, delivery: Delivery) -> None:
        """POST one event, retrying non-2xx and transport errors with a doubling, bounded backoff."""
        with self.lock:
            switches = WebhookSwitches(**self.webhooks.to_dict())
        headers = {
            "content-type": "application/json",
            "x-razorpay-signature": webhook_signature(self.webhook_secret, delivery.body),
            "x-razorpay-event-id": delivery.event_id,
            "user-agent": "Razorpay-Webhook/v1",
        }
        if self._post_with_retries(delivery, switches.url, headers, switches.max_attempts, switches.backoff_s):
            return
        if switches.url:
            logger.warning("razorpay sandbox: webhook %s %s not delivered after %d attempts", delivery.event, delivery.event_id, delivery.attempts)

    # -- control routes -----------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        return [
            'POST /_sandbox/razorpay/pay {"order_id": id, "outcome": "captured" | "failed" | "authorized", "method": optional}',
            'POST /_sandbox/razorpay/webhooks {"url", "duplicate", "out_of_order", "drop_next_n", "max_attempts", "backoff_s"}',
            "GET /_sandbox/razorpay/webhooks",
            "GET /_sandbox/razorpay/deliveries",
            'POST /_sandbox/razorpay/deliveries/wait {"timeout_s": seconds}',
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        route = req.path.rstrip("/")
        prefix = "/_sandbox/razorpay/"
        if not route.startswith(prefix):
            return None
        action = route[len(prefix) :]
        if req.method == "GET" and action == "webhooks":
            return SandboxResponse.json(200, self.webhooks.to_dict())
        if req.method == "GET" and action == "deliveries":
            return SandboxResponse.json(200, {"deliveries": [d.to_dict() for d in self.deliveries]})
        if req.method != "POST" or action not in ("pay", "webhooks", "deliveries/wait"):
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        if action == "pay":
            try:
                # The pay route runs under the control lock; delivery happens on the worker thread.
                return SandboxResponse.json(
                    200, self.pay(str(body.get("order_id", "")), str(body.get("outcome", "captured")), method=str(body.get("method", "upi")))
                )
            except RazorpayError as exc:
                return exc.response()
        if action == "deliveries/wait":
            # Waiting must not hold the simulator lock the worker needs.
            self.lock.release()
            try:
                done = self.wait_for_deliveries(float(body.get("timeout_s", 10.0)))
            finally:
                self.lock.acquire()
            return SandboxResponse.json(200 if done else 504, {"done": done})
        return self._set_webhooks(body)

    def _set_webhooks(self, body: Mapping[str, Any]) -> SandboxResponse:
        allowed = set(WebhookSwitches().to_dict())
        unknown = set(body) - allowed
        if unknown:
            return SandboxResponse.json(422, {"error": f"unknown webhook switches: {', '.join(sorted(unknown))}"})
        merged = {**self.webhooks.to_dict(), **body}
        try:
            switches = WebhookSwitches(
                url=None if merged["url"] in (None, "") else str(merged["url"]),
                duplicate=bool(merged["duplicate"]),
                out_of_order=bool(merged["out_of_order"]),
                drop_next_n=int(merged["drop_next_n"]),
                max_attempts=int(merged["max_attempts"]),
                backoff_s=float(merged["backoff_s"]),
            )
        except (TypeError, ValueError) as exc:
            return SandboxResponse.json(422, {"error": f"invalid webhook switches: {exc}"})
        if switches.drop_next_n < 0 or not 1 <= switches.max_attempts <= 20 or not 0 <= switches.backoff_s <= 60:
            return SandboxResponse.json(422, {"error": "drop_next_n >= 0, 1 <= max_attempts <= 20, 0 <= backoff_s <= 60"})
        self.webhooks = switches
        return SandboxResponse.json(200, switches.to_dict())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox razorpay [options]``: serve the Razorpay sandbox."""
    parser = server_parser("razorpay", "Serve the Razorpay sandbox.", 8402)
    parser.add_argument("--webhook-url", default=None, help="where signed webhooks are delivered")
    return serve_main(parser, argv, lambda args, faults: RazorpaySandbox(webhook_url=args.webhook_url, faults=faults))

if __name__ == "__main__":
    sys.exit(main())
