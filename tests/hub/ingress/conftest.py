"""Webhook fixtures: signed deliveries and the real ingress served by uvicorn on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from hub.core.db import get_engine
from hub.core.models import WebhookEvent
from hub.core.settings import HubSettings
from hub.ingress.app import server_config
from hub.ingress.inbox import rejection_counts
from hub.ingress.security import sign

RZP_SECRET = "rzp-webhook-secret-current"
RZP_OLD_SECRET = "rzp-webhook-secret-previous"
WA_SECRET = "meta-app-secret-current"
VERIFY_TOKEN = "meta-verify-token-123"


def hub_settings(**overrides: Any) -> HubSettings:
    """Settings with webhook secrets configured (tests override what they are about)."""
    values: dict[str, Any] = {
        "razorpay_webhook_secrets": RZP_SECRET,
        "whatsapp_app_secrets": WA_SECRET,
        "whatsapp_verify_token": VERIFY_TOKEN,
        "webhook_max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return HubSettings(**values)


def razorpay_body(event: str = "payment.captured", payment_id: str = "pay_29QQoUBi66xm2f", created_at: int | None = None) -> bytes:
    """A Razorpay-shaped event (api-contracts section 4), serialised once: the bytes are what is signed.
    Dated now unless told otherwise (the ingress refuses stale and future payloads)."""
    payload = {
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": event,
        "contains": ["payment"],
        "payload": {"payment": {"entity": {"id": payment_id, "amount": 50000, "currency": "INR", "status": "captured", "order_id": "order_DaZlswtdcn9UNV", "method": "upi", "captured": True}}},
        "created_at": int(time.time()) if created_at is None else created_at,
    }
    return orjson.dumps(payload)


def razorpay_headers(body: bytes, *, secret: str = RZP_SECRET, event_id: str | None = None) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-razorpay-signature": sign(secret.encode(), body),
        "x-razorpay-event-id": event_id or f"evt_{uuid.uuid4().hex[:14]}",
    }


def whatsapp_body(
    statuses: list[tuple[str, str]] = (("wamid.HBgM1", "delivered"),),  # type: ignore[assignment]
    messages: list[str] = (),  # type: ignore[assignment]
    timestamp: int | None = None,
) -> bytes:
    """A WhatsApp Cloud API delivery (api-contracts section 5) dated now unless told otherwise."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "919800000000", "phone_number_id": "1234567890"}}
    if statuses:
        value["statuses"] = [{"id": w, "status": s, "timestamp": ts, "recipient_id": "919811111111"} for w, s in statuses]
    if messages:
        value["messages"] = [{"from": "919811111111", "id": m, "timestamp": ts, "type": "text", "text": {"body": "hi"}} for m in messages]
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": value}]}]})


def whatsapp_headers(body: bytes, *, secret: str = WA_SECRET) -> dict[str, str]:
    return {"content-type": "application/json", "x-hub-signature-256": "sha256=" + sign(secret.encode(), body)}


def stored_events() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WebhookEvent)).scalar_one())


def rejections(reason: str, provider: str | None = None) -> int:
    return rejection_counts(provider=provider).get(reason, 0)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve an app with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "ingress did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
