"""Reconciliation fills what webhooks missed, forward-only, with its watermark written with the rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from connectors.razorpay import RazorpayConnector, build_razorpay_connector
from data_mappings.payments import update_from_payment
from hub.db import get_engine
from hub.loading import read_cursor
from hub.models import IntegrationErrorRow
from hub.payments import apply_update, get_payment, record_order
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def razorpay(db: str) -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox()  # no webhook URL: nothing is delivered, as when Razorpay gave up
    with use_transport("razorpay", as_transport(sim)):
        yield sim
    sim.close()


def reconcile(**params: Any) -> dict[str, Any]:
    from flows.reconcile_razorpay import reconcile_razorpay

    return reconcile_razorpay(**params)


def new_order(receipt: str, amount: int = 25_000) -> dict[str, Any]:
    with build_razorpay_connector() as conn:
        assert isinstance(conn, RazorpayConnector)
        order = conn.create_order(amount, receipt)
    with get_engine().begin() as db:
        record_order(db, order)
    return order


def row(order_id: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        found = get_payment(conn, order_id)
    assert found is not None
    return found


def test_reconciliation_fills_a_dropped_webhook_and_writes_the_watermark(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-1")
    assert row(order["id"])["payment_status"] == "created"
    paid = razorpay.pay(order["id"], "captured")
    assert razorpay.wait_for_deliveries(5)
    summary = reconcile(page_size=2)
    assert summary["applied"] == 1
    stored = row(order["id"])
    assert (stored["payment_status"], stored["order_status"], stored["source"]) == ("captured", "paid", "reconciliation")
    assert stored["payment_id"] == paid["razorpay_payment_id"] and stored["receipt"] == "INV-R-1"
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") == {"since": summary["until"]}
    again = reconcile(overlap_s=3600)
    assert again["since"] == summary["until"] - 3600
    assert (again["records"], again["applied"], again["stale"]) == (1, 0, 1)


def test_reconciliation_never_moves_a_row_back(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-2")
    paid = razorpay.pay(order["id"], "authorized")
    captured = dict(paid["payment"], status="captured", captured=True)
    with get_engine().begin() as conn:
        # The webhook already said captured; the API snapshot still says authorized.
        apply_update(conn, update_from_payment(captured, source="webhook", event_id="evt_cap"))
    reconcile()
    stored = row(order["id"])
    assert (stored["payment_status"], stored["source"], stored["last_event_id"]) == ("captured", "webhook", "evt_cap")


def test_many_payments_over_several_pages(razorpay: RazorpaySandbox) -> None:
    orders = [new_order(f"INV-P-{i}", 1000 + i) for i in range(5)]
    for order in orders:
        razorpay.pay(order["id"], "failed")
    summary = reconcile(page_size=2)
    assert (summary["pages"], summary["records"], summary["applied"]) == (3, 5, 5)
    assert {row(o["id"])["payment_status"] for o in orders} == {"failed"}
    assert row(orders[0]["id"])["error_code"] == "BAD_REQUEST_ERROR"


def test_a_failed_run_records_the_error_and_keeps_the_watermark(razorpay: RazorpaySandbox) -> None:
    razorpay.faults.update({"expire_tokens": True})
    with pytest.raises(Exception, match="Authentication failed"):
        reconcile()
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") is None
    with Session(get_engine()) as session:
        errors = list(session.scalars(select(IntegrationErrorRow)))
    assert [(e.integration, e.dataset, e.error_type) for e in errors] == [("razorpay", "payments", "AUTHENTICATION_FAILED")]


def test_reconciliation_records_refunds_the_webhooks_missed_partial_then_full(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-REF", amount=20_000)
    payment_id = razorpay.pay(order["id"], "captured")["razorpay_payment_id"]
    with build_razorpay_connector() as conn:
        assert isinstance(conn, RazorpayConnector)
        conn.refund_payment(payment_id, 5_000)
        reconcile()
        assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("captured", 5_000)
        conn.refund_payment(payment_id)
    reconcile()
    assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("refunded", 20_000)
    # An older picture of the payment (captured, nothing refunded) cannot take the refund back.
    stale = {**razorpay.payments[payment_id], "status": "captured", "amount_refunded": 0, "refund_status": None}
    with get_engine().begin() as db:
        assert apply_update(db, update_from_payment(stale, source="reconciliation")) == "stale"
    assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("refunded", 20_000)
