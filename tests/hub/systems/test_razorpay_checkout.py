"""The ERP's checkout callback (`confirm_checkout`) against the in-process Razorpay sandbox and a real database:
genuine signatures come from the sandbox's checkout (`/_sandbox/razorpay/pay`), never from the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.core.client import use_transport
from connectors.core.errors import AuthenticationFailed
from connectors.razorpay import RazorpayConnector
from data_mappings.payments import update_from_payment
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow
from hub.core.settings import reset_settings_cache
from hub.runtime.connections import build_razorpay_connector
from hub.systems.razorpay import (
    DUPLICATE,
    FORGED,
    FURTHER_ALONG,
    RECORDED,
    UNKNOWN_ORDER,
    apply_update,
    confirm_checkout,
    get_payment,
    record_order,
)
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox
from tests.error_support import error_rows


class CountingTransport(httpx.BaseTransport):
    """The sandbox as a transport, counting the API requests that reach it (Razorpay's budget is per request)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)


@pytest.fixture
def razorpay(db: str) -> Iterator[tuple[RazorpaySandbox, CountingTransport]]:
    sim = RazorpaySandbox()  # no webhook URL: only the callback (and what the test applies) moves the row
    transport = CountingTransport(as_transport(sim))
    with use_transport("razorpay", transport):
        yield sim, transport
    sim.close()


@pytest.fixture
def connector(razorpay: tuple[RazorpaySandbox, CountingTransport]) -> Iterator[RazorpayConnector]:
    with build_razorpay_connector() as rzp:
        assert isinstance(rzp, RazorpayConnector)
        yield rzp


def new_order(rzp: RazorpayConnector, receipt: str, *, store: bool = True) -> dict[str, Any]:
    order = rzp.create_order(42_000, receipt)
    if store:
        with get_engine().begin() as conn:
            record_order(conn, order)
    return order


def checkout(sim: RazorpaySandbox, order_id: str, outcome: str = "captured") -> dict[str, Any]:
    """The customer pays at the sandbox's checkout; its answer carries the callback fields Razorpay signs."""
    with httpx.Client(transport=as_transport(sim), base_url="https://api.razorpay.test") as control:
        paid = control.post("/_sandbox/razorpay/pay", json={"order_id": order_id, "outcome": outcome})
    assert paid.status_code == 200, paid.text
    return dict(paid.json())


def row(order_id: str) -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        return get_payment(conn, order_id)


def test_genuine_callback_records_the_payment_authorized_capture_pending(connector: RazorpayConnector,
                                                                         razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    sim, transport = razorpay
    order = new_order(connector, "INV-CB-1")
    paid = checkout(sim, order["id"])
    before = len(transport.paths)

    result = confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], connector=connector)

    assert (result.outcome, result.verified, result.payment_status, result.order_status) == (RECORDED, True, "authorized", "attempted")
    stored = row(order["id"])
    assert stored is not None
    assert (stored["payment_status"], stored["order_status"], stored["payment_id"], stored["source"]) == (
        "authorized", "attempted", paid["razorpay_payment_id"], "checkout")
    assert stored["captured_at"] is None and stored["last_event_at"] is not None
    assert transport.paths[before:] == []  # the signature is the proof: no GET spent on Razorpay's budget
    assert error_rows("razorpay") == []


def test_fetch_records_what_razorpay_says_and_spends_one_request(connector: RazorpayConnector,
                                                                 razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    sim, transport = razorpay
    order = new_order(connector, "INV-CB-2")
    paid = checkout(sim, order["id"])
    before = len(transport.paths)

    result = confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], fetch=True, connector=connector)

    assert (result.outcome, result.payment_status, result.order_status) == (RECORDED, "captured", "paid")
    assert transport.paths[before:] == [f"/v1/payments/{paid['razorpay_payment_id']}"]
    stored = row(order["id"])
    assert stored is not None
    assert (stored["payment_status"], stored["method"], stored["amount_paise"], stored["source"]) == ("captured", "upi", 42_000, "checkout")
    assert stored["captured_at"] is not None


def test_forged_signature_is_refused_recorded_without_the_signature_and_changes_nothing(
    connector: RazorpayConnector, razorpay: tuple[RazorpaySandbox, CountingTransport]
) -> None:
    sim, _ = razorpay
    order = new_order(connector, "INV-CB-3")
    paid = checkout(sim, order["id"])
    before = row(order["id"])
    forged = paid["razorpay_signature"][:-4] + ("0000" if not paid["razorpay_signature"].endswith("0000") else "1111")

    result = confirm_checkout(order["id"], paid["razorpay_payment_id"], forged, connector=connector)

    assert (result.outcome, result.verified) == (FORGED, False)
    assert row(order["id"]) == before  # not one column moved
    [error] = error_rows("razorpay", "payments")
    assert error.id == result.error_id
    assert (error.error_type, error.error_code, error.operation, error.transient) == (
        "DATA_VALIDATION_FAILED", "SIGNATURE_MISMATCH", "checkout_callback", False)
    assert error.unit == {"order_id": order["id"], "payment_id": paid["razorpay_payment_id"]}
    assert error.remedy is not None and "tampering" in error.remedy  # its own remedy, not the quarantine one
    with get_engine().connect() as conn:
        stored = json.dumps(dict(conn.execute(select(IntegrationErrorRow.__table__)).one()._mapping), default=str)
    for secret in (forged, paid["razorpay_signature"], "sandbox-key-secret"):
        assert secret not in stored


def test_a_genuine_signature_of_another_order_is_refused(connector: RazorpayConnector,
                                                         razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    """Checked against the order WE stored: a signature the customer obtained on a cheap order does not pay a dear one."""
    sim, _ = razorpay
    cheap, dear = new_order(connector, "INV-CB-4a"), new_order(connector, "INV-CB-4b")
    paid = checkout(sim, cheap["id"])

    result = confirm_checkout(dear["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], connector=connector)

    assert result.outcome == FORGED
    stored = row(dear["id"])
    assert stored is not None and (stored["payment_status"], stored["payment_id"]) == ("created", None)
    assert [e.error_code for e in error_rows("razorpay")] == ["SIGNATURE_MISMATCH"]


def test_unknown_order_writes_nothing(connector: RazorpayConnector, razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    sim, _ = razorpay
    order = new_order(connector, "INV-CB-5", store=False)  # created at Razorpay, but the ERP never stored it
    paid = checkout(sim, order["id"])

    result = confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], connector=connector)

    assert (result.outcome, result.verified) == (UNKNOWN_ORDER, False)
    assert row(order["id"]) is None
    assert error_rows("razorpay") == []


def test_replayed_callback_is_idempotent(connector: RazorpayConnector, razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    sim, _ = razorpay
    order = new_order(connector, "INV-CB-6")
    paid = checkout(sim, order["id"], "authorized")
    args = (order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"])
    assert confirm_checkout(*args, connector=connector).outcome == RECORDED
    first = row(order["id"])

    again = [confirm_checkout(*args, connector=connector), confirm_checkout(*args, fetch=True, connector=connector)]

    assert [r.outcome for r in again] == [DUPLICATE, DUPLICATE]
    assert all(r.verified and r.payment_status == "authorized" for r in again)
    assert row(order["id"]) == first  # updated_at and last_event_at included


def test_concurrent_identical_callbacks_record_once(connector: RazorpayConnector, razorpay: tuple[RazorpaySandbox, CountingTransport]) -> None:
    """The browser's handler and the callback URL can both fire: the row lock makes the second a duplicate."""
    sim, _ = razorpay
    order = new_order(connector, "INV-CB-7")
    paid = checkout(sim, order["id"])
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def call() -> None:
        start.wait()
        outcomes.append(confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], connector=connector).outcome)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [DUPLICATE] * 3 + [RECORDED]


@pytest.mark.parametrize("refund", [False, True], ids=["captured", "refunded"])
def test_a_captured_or_refunded_payment_is_not_moved_back(connector: RazorpayConnector,
                                                          razorpay: tuple[RazorpaySandbox, CountingTransport], refund: bool) -> None:
    sim, _ = razorpay
    order = new_order(connector, f"INV-CB-8-{refund}")
    paid = checkout(sim, order["id"])
    if refund:
        connector.refund_payment(paid["razorpay_payment_id"])
    # The capture (and refund) reached the ERP first, as the webhooks or reconciliation write it.
    with get_engine().begin() as conn:
        apply_update(conn, update_from_payment(connector.fetch_payment(paid["razorpay_payment_id"]), source="reconciliation"))
    before = row(order["id"])
    assert before is not None and before["payment_status"] == ("refunded" if refund else "captured")

    result = confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"], connector=connector)

    assert (result.outcome, result.verified, result.payment_status) == (FURTHER_ALONG, True, before["payment_status"])
    assert row(order["id"]) == before


def test_a_missing_key_secret_is_a_credentials_error_not_a_forgery(connector: RazorpayConnector,
                                                                  razorpay: tuple[RazorpaySandbox, CountingTransport],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sim, _ = razorpay
    order = new_order(connector, "INV-CB-9")
    paid = checkout(sim, order["id"])
    monkeypatch.setenv("RAZORPAY_KEY_SECRET", "")
    reset_settings_cache()
    try:
        with pytest.raises(AuthenticationFailed, match="RAZORPAY_KEY_SECRET"):
            confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"])
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert error_rows("razorpay") == []
    stored = row(order["id"])
    assert stored is not None and stored["payment_status"] == "created"
    # With the secret back, the configured connector (built by the function itself) verifies the same callback.
    assert confirm_checkout(order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"]).outcome == RECORDED
