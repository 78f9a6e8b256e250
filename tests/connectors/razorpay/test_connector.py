"""The Razorpay connector against the sandbox: orders, paged payments, errors, checkout signatures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.core.config import RetryPolicy
from connectors.core.errors import AuthenticationFailed, ErrorCategory, IntegrationError, InvalidRequest
from connectors.core.metrics import METRICS
from connectors.razorpay import (
    RazorpayConnector,
    parse_razorpay_error,
    verify_payment_signature,
)
from hub.core.settings import integration_config, reset_settings_cache
from hub.runtime.connections import build_razorpay_connector
from sandbox.core import as_transport, running_server
from sandbox.razorpay import RazorpaySandbox

FAST = RetryPolicy(max_retries=3, base_delay_ms=1, max_delay_ms=5, jitter_ratio=0.0)


@pytest.fixture
def sandbox() -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox()
    yield sim
    sim.close()


@pytest.fixture
def connector(sandbox: RazorpaySandbox) -> Iterator[RazorpayConnector]:
    with build_razorpay_connector(transport=as_transport(sandbox), retry=FAST) as conn:
        assert isinstance(conn, RazorpayConnector)
        yield conn


def test_base_url_defaults_to_the_real_api_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert integration_config("razorpay").base_url == "https://api.razorpay.com/v1/"
    monkeypatch.setenv("RAZORPAY_BASE_URL", "http://127.0.0.1:8402/v1/")
    reset_settings_cache()
    try:
        assert integration_config("razorpay").base_url == "http://127.0.0.1:8402/v1/"
    finally:
        monkeypatch.delenv("RAZORPAY_BASE_URL")
        reset_settings_cache()


def test_create_fetch_and_order_payments(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    order = connector.create_order(125_000, "INV-2026-0001", notes={"customer": "1000042"})
    assert order["status"] == "created" and order["amount"] == 125_000
    assert connector.fetch_order(order["id"])["receipt"] == "INV-2026-0001"
    paid = sandbox.pay(order["id"], "captured")
    payments = connector.fetch_order_payments(order["id"])
    assert [p["id"] for p in payments] == [paid["razorpay_payment_id"]]
    assert connector.fetch_payment(paid["razorpay_payment_id"])["status"] == "captured"
    assert connector.test_connection().ok


def test_a_create_retried_after_a_server_error_returns_the_same_order(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    # The drop fault hits after the sandbox stored the order: the retry must not create a second one.
    sandbox.faults.update({"drop_connection_next_n": 1, "drop_after_fraction": 0.0})
    order = connector.create_order(50_000, "INV-RETRY-1")
    assert len(sandbox.orders) == 1 and next(iter(sandbox.orders)) == order["id"]


def test_rate_limit_is_retried_with_backoff_without_retry_after(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    sandbox.faults.update({"rate_limit_next_n": 2})
    before = METRICS.total("razorpay", "retries")
    connector.connect()
    assert METRICS.total("razorpay", "retries") - before == 2


def test_errors_are_classified_with_the_razorpay_code_and_description(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    with pytest.raises(InvalidRequest) as missing:
        connector.fetch_order("order_missing0000000")
    assert missing.value.code == "BAD_REQUEST_ERROR" and "does not exist (field id)" in missing.value.message
    sandbox.faults.update({"rate_limit_every_n": 1})
    with pytest.raises(IntegrationError) as limited:
        connector.connect()
    assert limited.value.category is ErrorCategory.RATE_LIMIT_EXCEEDED and limited.value.retry_after_s is None
    sandbox.faults.update({"rate_limit_every_n": 0, "expire_tokens": True})
    with pytest.raises(AuthenticationFailed):
        connector.fetch_order("order_x")
    assert parse_razorpay_error({"error": {"code": "SERVER_ERROR", "description": "boom"}}) == ("SERVER_ERROR", "boom")
    assert parse_razorpay_error("not json") == (None, None)


def test_invalid_order_input_is_refused_before_sending(connector: RazorpayConnector) -> None:
    with pytest.raises(InvalidRequest):
        connector.create_order(99, "r")
    with pytest.raises(InvalidRequest):
        connector.create_order(100, "r" * 41)


def test_payments_since_pages_with_count_and_skip(sandbox: RazorpaySandbox) -> None:
    clock = [1_700_000_000.0]
    sandbox._clock = lambda: clock[0]
    with build_razorpay_connector(transport=as_transport(sandbox), retry=FAST, page_size=2) as conn:
        assert isinstance(conn, RazorpayConnector)
        for i in range(5):
            sandbox.pay(conn.create_order(1000 + i, f"R{i}")["id"], "authorized")
            clock[0] += 1
        pages = list(conn.payments_since(1_700_000_001, 1_700_000_010))
    assert [len(p.records) for p in pages] == [2, 2, 0]
    assert sorted(r["amount"] for p in pages for r in p.records) == [1001, 1002, 1003, 1004]


def test_checkout_signature_verifies_in_constant_time_and_refuses_tampering(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    order = connector.create_order(5000, "SIG-1")
    paid = sandbox.pay(order["id"], "captured")
    assert connector.verify_payment_signature(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"])
    assert not connector.verify_payment_signature("order_other00000000", paid["razorpay_payment_id"], paid["razorpay_signature"])
    assert not connector.verify_payment_signature(order["id"], paid["razorpay_payment_id"], "0" * 64)
    assert not verify_payment_signature("", order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"])


def test_over_real_http(sandbox: RazorpaySandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(sandbox) as base:
        monkeypatch.setenv("RAZORPAY_BASE_URL", f"{base}/v1/")
        reset_settings_cache()
        try:
            with build_razorpay_connector(retry=FAST) as conn:
                assert isinstance(conn, RazorpayConnector)
                order = conn.create_order(10_000, "HTTP-1")
                assert conn.create_order(10_000, "HTTP-1")["id"] == order["id"]
                assert conn.fetch_order(order["id"])["amount_due"] == 10_000
        finally:
            monkeypatch.delenv("RAZORPAY_BASE_URL")
            reset_settings_cache()


def test_refund_full_and_partial_and_fetch_refunds(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    order = connector.create_order(40_000, "REF-1")
    payment_id = sandbox.pay(order["id"], "captured")["razorpay_payment_id"]
    partial = connector.refund_payment(payment_id, 15_000, notes={"reason": "two bags short"}, receipt="CN-1")
    assert (partial["amount"], partial["payment_id"], partial["status"], partial["receipt"]) == (15_000, payment_id, "processed", "CN-1")
    assert connector.fetch_payment(payment_id)["amount_refunded"] == 15_000
    rest = connector.refund_payment(payment_id)  # no amount: the rest of the captured amount
    assert rest["amount"] == 25_000
    assert connector.fetch_payment(payment_id)["status"] == "refunded"
    assert [r["id"] for r in connector.fetch_refunds(payment_id)] == [rest["id"], partial["id"]]
    assert connector.fetch_refund(partial["id"]) == partial


def test_over_refund_is_refused_with_razorpays_description(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    order = connector.create_order(10_000, "REF-2")
    payment_id = sandbox.pay(order["id"], "captured")["razorpay_payment_id"]
    with pytest.raises(InvalidRequest) as refused:
        connector.refund_payment(payment_id, 10_001)
    assert refused.value.code == "BAD_REQUEST_ERROR" and "greater than amount captured (field amount)" in refused.value.message
    with pytest.raises(InvalidRequest):
        connector.refund_payment(payment_id, 99)  # refused before sending
    assert sandbox.refunds == {}


def test_a_refund_retried_after_a_lost_answer_refunds_once(connector: RazorpayConnector, sandbox: RazorpaySandbox) -> None:
    order = connector.create_order(30_000, "REF-3")
    payment_id = sandbox.pay(order["id"], "captured")["razorpay_payment_id"]
    # The drop hits after the sandbox made the refund: the retry carries the same idempotency key.
    sandbox.faults.update({"drop_connection_next_n": 1, "drop_after_fraction": 0.0})
    refund = connector.refund_payment(payment_id, 10_000)
    assert list(sandbox.refunds) == [refund["id"]]
    assert connector.fetch_payment(payment_id)["amount_refunded"] == 10_000
    # A caller's own key makes a repeat of the whole operation safe too.
    first = connector.refund_payment(payment_id, 5_000, idempotency_key="refund-REF-3-2")
    assert connector.refund_payment(payment_id, 5_000, idempotency_key="refund-REF-3-2")["id"] == first["id"]
    assert connector.fetch_payment(payment_id)["amount_refunded"] == 15_000
