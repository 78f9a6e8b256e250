"""Razorpay connector: orders, payments and checkout signatures, declared on the shared core.

Razorpay answers every error with `{"error": {"code", "description", "field", ...}}`; the status
decides the category (401 -> AUTHENTICATION_FAILED, 400/404 -> INVALID_REQUEST, 429 ->
RATE_LIMIT_EXCEEDED, 5xx -> SERVER_ERROR). Razorpay sends no Retry-After, so a 429 is retried on the
policy's exponential backoff with jitter.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from connectors.core.base import Connector, Stream
from connectors.core.client import IntegrationClient
from connectors.core.errors import InvalidRequest
from connectors.core.paging import CountSkipPaginator, Page, with_query

log = logging.getLogger(__name__)

MAX_COUNT = 100
MAX_RECEIPT = 40
MAX_NOTES = 15
MIN_REFUND = 100
# X-Refund-Idempotency: at least 10 letters, digits, hyphens or underscores (Razorpay Refunds API).
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")

# Payments by creation time, newest first, in count/skip pages inside a fixed from/to window.
PAYMENTS = Stream(
    name="payments",
    path="payments",
    primary_key="id",
    cursor_field="created_at",
    record_path=("items",),
    paginator=CountSkipPaginator(),
)


def parse_razorpay_error(body: Any) -> tuple[str | None, str | None]:
    """Razorpay's envelope -> (code, "description (field x)")."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        code = str(error["code"]) if error.get("code") else None
        description = str(error.get("description") or "") or None
        if description and error.get("field"):
            description = f"{description} (field {error['field']})"
        return code, description
    return None, None


def payment_signature(key_secret: str, order_id: str, payment_id: str) -> str:
    """hex HMAC-SHA256(key_secret, f"{order_id}|{payment_id}"), as razorpay-python computes it."""
    return hmac.new(key_secret.encode(), f"{order_id}|{payment_id}".encode(), hashlib.sha256).hexdigest()


def verify_payment_signature(key_secret: str, order_id: str, payment_id: str, signature: str) -> bool:
    """Constant-time check of a checkout callback; pass the order id WE stored, not the callback's."""
    if not key_secret or not signature:
        return False
    return hmac.compare_digest(payment_signature(key_secret, order_id, payment_id), signature.strip().lower())


class RazorpayConnector(Connector):
    """Create and read orders, read payments since a time, refund payments, verify checkout signatures."""

    integration = "razorpay"

    def __init__(self, client: IntegrationClient, *, key_secret: str, page_size: int | None = None) -> None:
        super().__init__(client)
        self._key_secret = key_secret
        self.page_size = min(MAX_COUNT, page_size or client.config.page_size)

    def connect(self) -> None:
        """One payment from the list: proves reachability and the key pair."""
        self.client.get_json("payments", params={"count": "1"}, operation="test_connection")

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        params: dict[str, Any] = {"count": self.page_size, "skip": 0}
        for name in ("from", "to"):
            if cursor and cursor.get(name) is not None:
                params[name] = int(cursor[name])
        return with_query(stream.path, **params)

    def create_order(
        self, amount_paise: int, receipt: str, *, currency: str = "INR", notes: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """POST /orders with `unique_receipt`, so a create retried after a lost answer returns the same order."""
        if isinstance(amount_paise, bool) or not isinstance(amount_paise, int) or amount_paise < 100:
            raise InvalidRequest("amount_paise must be an integer of at least 100 (INR 1.00)", integration=self.integration)
        if not receipt or len(receipt) > MAX_RECEIPT:
            raise InvalidRequest(f"receipt is required and at most {MAX_RECEIPT} characters", integration=self.integration)
        if notes and len(notes) > MAX_NOTES:
            raise InvalidRequest(f"at most {MAX_NOTES} notes", integration=self.integration)
        body = {"amount": amount_paise, "currency": currency, "receipt": receipt, "notes": dict(notes or {}), "unique_receipt": True}
        response = self.client.request("POST", "orders", json=body, operation="create_order")
        return dict(orjson.loads(response.content))

    def fetch_order(self, order_id: str) -> dict[str, Any]:
        return dict(self.client.get_json(f"orders/{quote(order_id, safe='')}", operation="fetch_order"))

    def fetch_order_payments(self, order_id: str) -> list[dict[str, Any]]:
        body = self.client.get_json(f"orders/{quote(order_id, safe='')}/payments", operation="fetch_order_payments")
        return list(body.get("items") or [])

    def fetch_payment(self, payment_id: str) -> dict[str, Any]:
        return dict(self.client.get_json(f"payments/{quote(payment_id, safe='')}", operation="fetch_payment"))

    def refund_payment(
        self,
        payment_id: str,
        amount: int | None = None,
        *,
        notes: Mapping[str, str] | None = None,
        receipt: str | None = None,
        speed: str = "normal",
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST /payments/{id}/refund: the whole captured amount, or `amount` paise of it.

        Razorpay makes a refund safe to retry with the `X-Refund-Idempotency` header (the same key and
        body return the first refund). Without a caller's key one is made per call, so the client's own
        retries after a lost answer cannot refund twice; pass a key derived from your own refund record
        (e.g. "refund-<invoice>-<n>") to make a retry of the whole operation safe as well."""
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < MIN_REFUND):
            raise InvalidRequest("amount must be an integer of at least 100 paise (INR 1.00), or None for a full refund", integration=self.integration)
        if receipt is not None and len(receipt) > MAX_RECEIPT:
            raise InvalidRequest(f"receipt is at most {MAX_RECEIPT} characters", integration=self.integration)
        if notes and len(notes) > MAX_NOTES:
            raise InvalidRequest(f"at most {MAX_NOTES} notes", integration=self.integration)
        key = idempotency_key or f"drymix-{uuid.uuid4().hex}"
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidRequest("idempotency_key must be at least 10 letters, digits, hyphens or underscores", integration=self.integration)
        body: dict[str, Any] = {"speed": speed}
        if amount is not None:
            body["amount"] = amount
        if notes:
            body["notes"] = dict(notes)
        if receipt is not None:
            body["receipt"] = receipt
        response = self.client.request(
            "POST", f"payments/{quote(payment_id, safe='')}/refund", json=body,
            headers={"X-Refund-Idempotency": key}, operation="refund_payment",
        )
        return dict(orjson.loads(response.content))

    def fetch_refunds(self, payment_id: str) -> list[dict[str, Any]]:
        """Every refund of a payment, newest first (count/skip pages of 100)."""
        refunds: list[dict[str, Any]] = []
        while True:
            body = self.client.get_json(
                f"payments/{quote(payment_id, safe='')}/refunds", params={"count": MAX_COUNT, "skip": len(refunds)},
                operation="fetch_refunds",
            )
            items = list(body.get("items") or [])
            refunds.extend(items)
            if len(items) < MAX_COUNT:
                return refunds

    def fetch_refund(self, refund_id: str) -> dict[str, Any]:
        return dict(self.client.get_json(f"refunds/{quote(refund_id, safe='')}", operation="fetch_refund"))

    def payments_since(self, since: int, until: int) -> Iterator[Page]:
        """Pages of payments created in [since, until] (unix seconds), newest first."""
        return self.sync(PAYMENTS, {"from": since, "to": until})

    def verify_payment_signature(self, order_id: str, payment_id: str, signature: str) -> bool:
        return verify_payment_signature(self._key_secret, order_id, payment_id, signature)
