"""End to end over real HTTP: order through the connector, payment in the sandbox, signed webhooks into the
ingress, the processing flow, and the ERP payment captured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from connectors.razorpay import RazorpayConnector
from hub.core.db import get_engine
from hub.core.models import WebhookEvent
from hub.core.settings import reset_settings_cache
from hub.ingress.app import create_app
from hub.runtime.connections import build_razorpay_connector
from hub.systems.razorpay import get_payment, record_order
from sandbox.core import running_server
from sandbox.razorpay import RazorpaySandbox
from tests.hub.ingress.conftest import hub_settings, serving

pytestmark = pytest.mark.usefixtures("prefect_harness")

WEBHOOK_SECRET = "sandbox-webhook-secret"


@pytest.fixture
def wired(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RazorpaySandbox, str]]:
    """The ingress and the Razorpay sandbox on real sockets, the sandbox delivering to the ingress."""
    app = create_app(hub_settings(razorpay_webhook_secrets=WEBHOOK_SECRET))
    sandbox = RazorpaySandbox(webhook_secret=WEBHOOK_SECRET)
    try:
        with serving(app) as ingress, running_server(sandbox) as api:
            sandbox.webhooks.url = f"{ingress}/webhooks/razorpay"
            monkeypatch.setenv("RAZORPAY_BASE_URL", f"{api}/v1/")
            reset_settings_cache()
            yield sandbox, api
    finally:
        monkeypatch.delenv("RAZORPAY_BASE_URL", raising=False)
        reset_settings_cache()
        sandbox.close()


def test_order_paid_in_the_sandbox_is_captured_in_the_erp(wired: tuple[RazorpaySandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, api = wired
    with build_razorpay_connector() as connector:
        assert isinstance(connector, RazorpayConnector)
        order = connector.create_order(75_000, "INV-E2E-1", notes={"customer": "1000042"})
        with get_engine().begin() as conn:
            record_order(conn, order)
        # The customer pays at checkout; the sandbox answers with the checkout callback fields.
        with httpx.Client(base_url=api) as control:
            paid = control.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "captured"}).json()
            assert control.post("/_sandbox/razorpay/deliveries/wait", json={"timeout_s": 10}).json() == {"done": True}
        assert connector.verify_payment_signature(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"])
        assert not connector.verify_payment_signature(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"][::-1])

    assert [d.state for d in sandbox.deliveries] == ["delivered"] * 3
    with get_engine().connect() as conn:
        stored = dict(conn.execute(select(WebhookEvent.event_type, WebhookEvent.status)).all())
    assert stored == {"payment.authorized": "received", "payment.captured": "received", "order.paid": "received"}

    summary = process_webhooks()
    assert (summary["claimed"], summary["failed"]) == (3, 0)
    with get_engine().connect() as conn:
        payment = get_payment(conn, order["id"])
    assert payment is not None
    assert (payment["payment_status"], payment["order_status"], payment["payment_id"]) == ("captured", "paid", paid["razorpay_payment_id"])
    assert (payment["amount_paise"], payment["receipt"], payment["method"], payment["source"]) == (75_000, "INV-E2E-1", "upi", "webhook")
    assert payment["captured_at"] is not None


def test_duplicated_out_of_order_deliveries_still_end_captured_once(wired: tuple[RazorpaySandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, _ = wired
    sandbox.webhooks.duplicate = True
    sandbox.webhooks.out_of_order = True
    with build_razorpay_connector() as connector:
        assert isinstance(connector, RazorpayConnector)
        order = connector.create_order(12_000, "INV-E2E-2")
    sandbox.pay(order["id"], "captured")
    assert sandbox.wait_for_deliveries(10)
    with get_engine().connect() as conn:
        assert len(conn.execute(select(WebhookEvent.id)).all()) == 3  # six deliveries, three events
    summary = process_webhooks()
    # order.paid arrives first and captures; payment.captured only confirms it, payment.authorized is refused.
    assert (summary["claimed"], summary["stale"], summary["failed"]) == (3, 1, 0)
    with get_engine().connect() as conn:
        payment = get_payment(conn, order["id"])
    assert payment is not None and payment["payment_status"] == "captured" and payment["order_status"] == "paid"


def _paid_order(connector: RazorpayConnector, sandbox: RazorpaySandbox, amount: int, receipt: str) -> tuple[str, str]:
    """An order created through the connector and recorded, paid and captured in the sandbox, webhooks in."""
    order = connector.create_order(amount, receipt)
    with get_engine().begin() as conn:
        record_order(conn, order)
    payment_id = sandbox.pay(order["id"], "captured")["razorpay_payment_id"]
    assert sandbox.wait_for_deliveries(10)
    return order["id"], payment_id


def test_refund_processed_through_the_ingress_marks_the_erp_payment_refunded(wired: tuple[RazorpaySandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, _ = wired
    with build_razorpay_connector() as connector:
        assert isinstance(connector, RazorpayConnector)
        order_id, payment_id = _paid_order(connector, sandbox, 60_000, "INV-E2E-R1")
        assert process_webhooks()["applied"] >= 1
        with get_engine().connect() as conn:
            captured = get_payment(conn, order_id)
        assert captured is not None and (captured["payment_status"], captured["amount_refunded"]) == ("captured", None)

        refund = connector.refund_payment(payment_id, notes={"reason": "order cancelled"})
    assert sandbox.wait_for_deliveries(10)
    assert [d.state for d in sandbox.deliveries[-2:]] == ["delivered", "delivered"]
    with get_engine().connect() as conn:
        stored = conn.execute(select(WebhookEvent.event_type, WebhookEvent.status).where(WebhookEvent.event_type.like("refund.%"))).all()
    assert sorted(stored) == [("refund.created", "received"), ("refund.processed", "received")]

    summary = process_webhooks()
    # refund.created moves nothing (a refund may still fail); refund.processed refunds the payment.
    assert (summary["claimed"], summary["applied"], summary["ignored"], summary["failed"]) == (2, 1, 1, 0)
    with get_engine().connect() as conn:
        payment = get_payment(conn, order_id)
    assert payment is not None
    assert (payment["payment_status"], payment["amount_refunded"], payment["order_status"]) == ("refunded", 60_000, "paid")
    with get_engine().connect() as conn:
        applied = conn.execute(
            select(WebhookEvent.event_id, WebhookEvent.provider_event_id).where(WebhookEvent.event_type == "refund.processed")
        ).one()
    # The row names the event by what its signature covers; Razorpay's unsigned id stays with the inbox row.
    assert payment["last_event_id"] == applied.event_id == f"refund.processed:{refund['id']}:{applied.event_id.rsplit(':', 1)[1]}"
    assert applied.provider_event_id == sandbox.deliveries[-1].event_id and refund["amount"] == 60_000


def test_partial_refunds_record_the_amount_and_refund_only_when_full(wired: tuple[RazorpaySandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, _ = wired
    with build_razorpay_connector() as connector:
        assert isinstance(connector, RazorpayConnector)
        order_id, payment_id = _paid_order(connector, sandbox, 50_000, "INV-E2E-R2")
        connector.refund_payment(payment_id, 20_000)
        assert sandbox.wait_for_deliveries(10)
        process_webhooks()
        with get_engine().connect() as conn:
            partial = get_payment(conn, order_id)
        assert partial is not None and (partial["payment_status"], partial["amount_refunded"]) == ("captured", 20_000)

        connector.refund_payment(payment_id, 30_000)
        assert sandbox.wait_for_deliveries(10)
    process_webhooks()
    with get_engine().connect() as conn:
        full = get_payment(conn, order_id)
    assert full is not None and (full["payment_status"], full["amount_refunded"]) == ("refunded", 50_000)


def test_duplicated_and_reordered_refund_deliveries_count_the_refund_once(wired: tuple[RazorpaySandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks
    from hub.ingress.inbox import replay_event

    sandbox, _ = wired
    with build_razorpay_connector() as connector:
        assert isinstance(connector, RazorpayConnector)
        order_id, payment_id = _paid_order(connector, sandbox, 40_000, "INV-E2E-R3")
        process_webhooks()
        sandbox.webhooks.duplicate = True
        sandbox.webhooks.out_of_order = True
        connector.refund_payment(payment_id, 15_000)
        assert sandbox.wait_for_deliveries(10)
    processed = [d for d in sandbox.deliveries if d.event == "refund.processed"]
    assert len(processed) == 1 and processed[0].attempts == 2  # delivered twice, same event id
    with get_engine().connect() as conn:
        rows = conn.execute(select(WebhookEvent.id).where(WebhookEvent.event_type == "refund.processed")).all()
    assert len(rows) == 1
    assert process_webhooks()["applied"] == 1
    # Replaying the stored event (an operator's `drymix webhooks replay`, here by Razorpay's own event id as the
    # dashboard shows it) does not count it again.
    assert replay_event(processed[0].event_id, provider="razorpay") == 1
    assert process_webhooks()["claimed"] == 1
    with get_engine().connect() as conn:
        payment = get_payment(conn, order_id)
    assert payment is not None and (payment["payment_status"], payment["amount_refunded"]) == ("captured", 15_000)
