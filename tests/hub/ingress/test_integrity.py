"""The integrity properties of the webhook path, each proven through the real ingress and processing:
replay identity on signed bytes only, state that only moves forward, tokens that never lose an event,
no stored time in the future, no 500 on any body, bounded stored headers, and production warnings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, Payment, WebhookEvent, WebhookToken
from hub.ingress import inbox
from hub.ingress.app import create_app
from hub.ingress.inbox import PendingEvent, issue_token, list_events, token_hash, write_batch
from hub.ingress.security import allowlist_warnings
from hub.systems.razorpay import get_payment
from hub.systems.whatsapp import get_message
from tests.hub.ingress.conftest import (
    hub_settings,
    razorpay_headers,
    rejections,
    serving,
    stored_events,
    whatsapp_headers,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

ORDER = "order_Integrity00001"
PAY = "pay_Integrity000001"


def rzp_event(name: str, status: str, created_at: int, payment: str = PAY) -> bytes:
    entity = {"id": payment, "entity": "payment", "amount": 50000, "currency": "INR", "status": status,
              "order_id": ORDER, "method": "upi", "captured": status == "captured", "created_at": created_at - 5}
    return orjson.dumps({"entity": "event", "account_id": "acc_x", "event": name, "contains": ["payment"],
                         "payload": {"payment": {"entity": entity}}, "created_at": created_at})


@pytest.fixture
def ingress(db: str) -> Iterator[str]:
    with serving(create_app(hub_settings())) as base:
        yield base


def post(base: str, path: str, body: bytes, headers: dict[str, str], **params: str) -> httpx.Response:
    return httpx.post(f"{base}{path}", content=body, headers=headers, params=params, timeout=10)


def process() -> dict[str, Any]:
    from flows.process_webhooks import process_webhooks

    return process_webhooks()


def payment_row() -> dict[str, Any]:
    with get_engine().connect() as conn:
        row = get_payment(conn, ORDER)
    assert row is not None
    return row


def test_the_issue_attack_a_resent_delivery_with_new_event_ids_flips_nothing(ingress: str) -> None:
    """failed -> authorized (late authorisation) genuinely; then both captured bodies resent at will with new
    x-razorpay-event-id values and query strings: nothing is stored again and the payment stays authorized."""
    t0 = int(time.time()) - 120
    failed, authorized = rzp_event("payment.failed", "failed", t0), rzp_event("payment.authorized", "authorized", t0 + 60)
    assert post(ingress, "/webhooks/razorpay", failed, razorpay_headers(failed, event_id="evt_Genuine0000001")).status_code == 200
    assert post(ingress, "/webhooks/razorpay", authorized, razorpay_headers(authorized, event_id="evt_Genuine0000002")).status_code == 200
    assert process()["applied"] == 2
    assert payment_row()["payment_status"] == "authorized"
    for round_ in range(3):
        for body in (failed, authorized):
            replay = post(ingress, "/webhooks/razorpay", body, razorpay_headers(body, event_id=f"evt_Forged{round_:08d}"), attempt=str(round_))
            assert replay.status_code == 200  # acknowledged: a genuine retry must not be refused
        summary = process()
        assert summary["claimed"] == 0
        assert payment_row()["payment_status"] == "authorized"
    assert stored_events() == 2
    row = payment_row()
    assert row["last_event_id"] == f"payment.authorized:{PAY}:{t0 + 60}"  # the signed identity, never a forged header id
    assert row["last_event_at"] == datetime.fromtimestamp(t0 + 60, UTC)
    assert sorted(e.provider_event_id or "" for e in list_events(status=None)) == ["evt_Genuine0000001", "evt_Genuine0000002"]


def test_stored_replays_applied_again_in_any_order_never_move_a_payment_back(ingress: str) -> None:
    """Even when the inbox holds every lifecycle event and an operator replays them all, out of order, the
    payment ends at the highest state it reached and its event time never goes back."""
    from hub.ingress.inbox import replay_event

    t0 = int(time.time()) - 600
    bodies = [rzp_event("payment.failed", "failed", t0), rzp_event("payment.authorized", "authorized", t0 + 10),
              rzp_event("payment.captured", "captured", t0 + 20)]
    for body in reversed(bodies):
        assert post(ingress, "/webhooks/razorpay", body, razorpay_headers(body)).status_code == 200
    process()
    assert (payment_row()["payment_status"], payment_row()["last_event_at"]) == ("captured", datetime.fromtimestamp(t0 + 20, UTC))
    for event in list_events(status=None):
        replay_event(event.event_id, provider="razorpay")
    summary = process()
    assert summary["claimed"] == 3 and summary["applied"] == 0
    assert (payment_row()["payment_status"], payment_row()["last_event_at"]) == ("captured", datetime.fromtimestamp(t0 + 20, UTC))


def test_whatsapp_replays_with_other_headers_store_nothing_and_statuses_move_forward(ingress: str) -> None:
    ts = int(time.time()) - 60
    wamid = "wamid.IntegrityStatus1"

    def status(state: str, at: int) -> bytes:
        value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"},
                 "statuses": [{"id": wamid, "status": state, "timestamp": str(at), "recipient_id": "919811111111"}]}
        return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]})

    read, delivered = status("read", ts + 5), status("delivered", ts)
    for body in (read, delivered, read, delivered):
        headers = {**whatsapp_headers(body), "user-agent": f"meta-{len(body)}", "x-request-id": str(time.monotonic())}
        assert post(ingress, "/webhooks/whatsapp", body, headers, retry="1").status_code == 200
    assert stored_events() == 2
    process()
    with get_engine().connect() as conn:
        message = get_message(conn, wamid)
    assert message is not None and message["status"] == "read"


def test_a_failed_inbox_insert_leaves_the_token_usable_and_the_retry_is_stored(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = hub_settings(webhook_one_time_token_providers="razorpay")
    token = issue_token("razorpay")
    body = rzp_event("payment.captured", "captured", int(time.time()))
    real_write = inbox.write_batch
    failures = [OperationalError("INSERT", {}, Exception("the inbox is down"))]

    def failing_once(conn: Any, events: Any, rejected: Any) -> None:
        if failures:
            raise failures.pop()
        real_write(conn, events, rejected)

    monkeypatch.setattr(inbox, "write_batch", failing_once)
    with serving(create_app(settings)) as base:
        lost = post(base, "/webhooks/razorpay", body, razorpay_headers(body), token=token)
        assert lost.status_code == 503  # not durable, not acknowledged
        with get_engine().connect() as conn:
            used_at = conn.execute(select(WebhookToken.used_at).where(WebhookToken.token_hash == token_hash(token))).scalar_one()
        assert used_at is None  # the spend rolled back with the insert
        retry = post(base, "/webhooks/razorpay", body, razorpay_headers(body), token=token)
        assert retry.status_code == 200
        again = post(base, "/webhooks/razorpay", body, razorpay_headers(body), token=token)  # a retry after a lost 200
        assert again.status_code == 200
    assert stored_events() == 1 and rejections("token_replayed") == 0


def _store_raw(provider: str, event_id: str, event_type: str, body: bytes) -> None:
    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent(provider, event_id, event_type, body, {}, "127.0.0.1", datetime.now(UTC))], [])


def test_no_stored_event_time_lies_in_the_future(db: str) -> None:
    """Written past the ingress (an older inbox row, a restore): processing refuses it, classified, and the
    payment keeps no time ahead of the clock."""
    future = 4_102_444_800  # 2100-01-01
    _store_raw("razorpay", f"payment.captured:{PAY}:{future}", "payment.captured", rzp_event("payment.captured", "captured", future))
    summary = process()
    assert summary["failed"] == 1 and summary["applied"] == 0
    with get_engine().connect() as conn:
        assert conn.execute(select(Payment.order_id)).first() is None
        error = conn.execute(select(IntegrationErrorRow.error_type, IntegrationErrorRow.error_message)).one()
    assert error.error_type == "INVALID_REQUEST" and "in the future" in error.error_message
    assert [e.status for e in list_events(status=None)] == ["failed"]


@pytest.mark.parametrize(
    "value",
    [{"statuses": 7}, {"messages": "wamid.1"}, {"statuses": {"id": "wamid.1"}}, {"statuses": [{"id": "wamid.1", "status": "read", "timestamp": "x"}]}],
    ids=["statuses-int", "messages-str", "statuses-dict", "timestamp-not-a-number"],
)
def test_a_malformed_stored_whatsapp_body_fails_cleanly_with_a_classified_error(db: str, value: dict[str, Any]) -> None:
    body = orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]})
    event_id = "message:wamid.1" if "messages" in value else "status:wamid.1:read"
    _store_raw("whatsapp", event_id, "message" if "messages" in value else "status.read", body)
    summary = process()
    assert (summary["failed"], summary["applied"]) == (1, 0)
    with get_engine().connect() as conn:
        assert conn.execute(select(IntegrationErrorRow.error_type)).scalar_one() == "INVALID_REQUEST"
        assert conn.execute(select(WebhookEvent.status)).scalar_one() == "failed"


def test_stored_headers_are_bounded_in_number_and_size(db: str) -> None:
    settings = hub_settings(webhook_max_stored_headers=10, webhook_max_stored_header_chars=64)
    body = rzp_event("payment.captured", "captured", int(time.time()))
    headers = {**razorpay_headers(body), **{f"x-padding-{i:02d}": "v" * 2000 for i in range(30)}}
    with serving(create_app(settings)) as base:
        assert post(base, "/webhooks/razorpay", body, headers).status_code == 200
    [event] = list_events()
    assert len(event.headers) <= 10
    assert all(len(name) <= 64 and len(value) <= 64 for name, value in event.headers.items())
    assert event.headers["x-razorpay-signature"] == "***"


def test_an_empty_allowlist_in_production_is_a_warning_with_the_published_ranges_named(db: str) -> None:
    from hub.operations.stack import production_warnings

    production = hub_settings()  # secrets set, api.razorpay.com (not a local sandbox), no allowlist
    warnings = allowlist_warnings(production)
    assert [w.split(":")[0] for w in warnings] == ["razorpay", "whatsapp"]
    assert "RAZORPAY_WEBHOOK_ALLOWED_IPS" in warnings[0] and "razorpay.com/docs/security/whitelists" in warnings[0]
    assert "WHATSAPP_WEBHOOK_ALLOWED_IPS" in warnings[1] and "AS32934" in warnings[1]
    assert allowlist_warnings(hub_settings(razorpay_webhook_allowed_ips="198.51.100.0/24", whatsapp_webhook_allowed_ips="198.51.100.0/24")) == []
    assert allowlist_warnings(hub_settings(razorpay_webhook_secrets="", whatsapp_app_secrets="")) == []  # nothing accepted
    assert production_warnings(True) == []  # the sandbox stack


def test_smoke_reports_the_empty_allowlist_as_a_warning_not_a_failure(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import reset_settings_cache
    from hub.operations.smoke import webhook_allowlist_checks

    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRETS", "rzp-secret-for-smoke")
    monkeypatch.setenv("WHATSAPP_APP_SECRETS", "")
    monkeypatch.setenv("RAZORPAY_WEBHOOK_ALLOWED_IPS", "")
    reset_settings_cache()
    try:
        [check] = webhook_allowlist_checks()
        assert check.ok and check.warning and "razorpay" in check.detail
        monkeypatch.setenv("RAZORPAY_WEBHOOK_ALLOWED_IPS", "198.51.100.0/24")
        reset_settings_cache()
        [check] = webhook_allowlist_checks()
        assert check.ok and not check.warning
    finally:
        monkeypatch.undo()
        reset_settings_cache()
