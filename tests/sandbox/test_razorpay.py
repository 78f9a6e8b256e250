"""The Razorpay sandbox answers like the Orders/Payments API and delivers signed webhooks like Razorpay."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.core import SandboxRequest, SandboxResponse, Simulator, as_transport, running_server
from sandbox.razorpay import RazorpaySandbox, checkout_signature

AUTH = ("rzp_test_drymix", "sandbox-key-secret")
BASE = "https://api.razorpay.test"


class Receiver(Simulator):
    """A webhook endpoint that records deliveries and can refuse the first N."""

    name = "receiver"

    def __init__(self, refuse_first: int = 0) -> None:
        super().__init__()
        self.refuse_first = refuse_first
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._count = 0
        self._guard = threading.Lock()

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        with self._guard:
            self._count += 1
            if self._count <= self.refuse_first:
                return SandboxResponse.json(503, {"error": "busy"})
            self.received.append(({k.lower(): v for k, v in req.headers.items()}, req.body))
        return SandboxResponse.json(200, {"ok": True})

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, body in self.received]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def sandbox(receiver: Receiver) -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox(webhook_url="http://receiver.test/hook", webhook_transport=as_transport(receiver))
    yield sim
    sim.close()


@pytest.fixture
def client(sandbox: RazorpaySandbox) -> Iterator[httpx.Client]:
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE, auth=AUTH) as c:
        yield c


def create(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body = {"amount": 50000, "currency": "INR", "receipt": "rcpt_11", "notes": {"plant": "pune"}, **overrides}
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_order_has_the_documented_shape(client: httpx.Client) -> None:
    order = create(client)
    assert order["id"].startswith("order_") and len(order["id"]) == len("order_") + 14
    assert order["entity"] == "order" and order["status"] == "created"
    assert (order["amount"], order["amount_paid"], order["amount_due"], order["attempts"]) == (50000, 0, 50000, 0)
    assert order["receipt"] == "rcpt_11" and order["notes"] == {"plant": "pune"}
    assert client.get(f"/v1/orders/{order['id']}").json() == order


def test_unique_receipt_returns_the_same_order_and_plain_repeat_creates_another(client: httpx.Client) -> None:
    first = create(client, receipt="inv-1", unique_receipt=True)
    again = create(client, receipt="inv-1", unique_receipt=True)
    assert again["id"] == first["id"]
    other = create(client, receipt="inv-1")
    assert other["id"] != first["id"]
    clash = client.post("/v1/orders", json={"amount": 700, "currency": "INR", "receipt": "inv-1", "unique_receipt": True})
    assert clash.status_code == 400 and clash.json()["error"]["field"] == "receipt"


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"amount": 99, "currency": "INR"}, "amount", "at least INR 1.00"),
        ({"amount": "500", "currency": "INR"}, "amount", "integer"),
        ({"currency": "INR"}, "amount", "required"),
        ({"amount": 500, "currency": "INR", "receipt": "r" * 41}, "receipt", "40"),
        ({"amount": 500, "currency": "INR", "notes": {f"k{i}": "v" for i in range(16)}}, "notes", "15"),
    ],
)
def test_invalid_orders_get_the_razorpay_error_envelope(client: httpx.Client, body: dict[str, Any], field: str, text: str) -> None:
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BAD_REQUEST_ERROR" and error["field"] == field and text in error["description"]
    assert set(error) >= {"code", "description", "source", "step", "reason", "metadata"}


def test_auth_unknown_url_unknown_id(sandbox: RazorpaySandbox) -> None:
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE, auth=("rzp_test_drymix", "wrong")) as bad:
        response = bad.get("/v1/payments")
    assert response.status_code == 401 and response.json()["error"]["description"] == "Authentication failed"
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE, auth=AUTH) as c:
        missing = c.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"] | {"description": ""} == {
            "code": "BAD_REQUEST_ERROR", "description": "", "source": "NA", "step": "NA", "reason": "NA", "metadata": {}
        }
        unknown = c.get("/v1/orders/order_doesnotexist00")
        assert unknown.status_code == 400 and unknown.json()["error"]["description"] == "The id provided does not exist"


def test_faults_apply_to_api_routes_with_razorpay_bodies_and_no_retry_after(client: httpx.Client, sandbox: RazorpaySandbox) -> None:
    sandbox.faults.update({"rate_limit_next_n": 1, "error_5xx_next_n": 1, "error_5xx_status": 503})
    limited = client.get("/v1/payments")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["error"]["code"] == "BAD_REQUEST_ERROR"
    unavailable = client.get("/v1/payments")
    assert unavailable.status_code == 503 and unavailable.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert client.get("/v1/payments").status_code == 200


def test_pay_captured_moves_the_order_and_delivers_signed_events_in_order(
    client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver
) -> None:
    order = create(client)
    paid = client.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "captured"}).json()
    assert sandbox.wait_for_deliveries(5)
    assert receiver.events() == ["payment.authorized", "payment.captured", "order.paid"]
    for headers, body in receiver.received:
        expected = hmac.new(b"sandbox-webhook-secret", body, hashlib.sha256).hexdigest()
        assert headers["x-razorpay-signature"] == expected
        assert headers["x-razorpay-event-id"].startswith("evt_")
    event = json.loads(receiver.received[-1][1])
    assert event["contains"] == ["payment", "order"] and event["payload"]["order"]["entity"]["status"] == "paid"
    assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "paid"
    payments = client.get(f"/v1/orders/{order['id']}/payments").json()
    assert payments["entity"] == "collection" and payments["items"][0]["status"] == "captured"
    assert paid["razorpay_signature"] == checkout_signature("sandbox-key-secret", order["id"], paid["razorpay_payment_id"])
    again = client.post("/_sandbox/razorpay/pay", json={"order_id": order["id"]})
    assert again.status_code == 400


def test_failed_and_authorized_outcomes(client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver) -> None:
    failed = sandbox.pay(create(client, receipt="a")["id"], "failed")
    sandbox.pay(create(client, receipt="b")["id"], "authorized")
    assert sandbox.wait_for_deliveries(5)
    assert receiver.events() == ["payment.failed", "payment.authorized"]
    assert failed["payment"]["error_code"] == "BAD_REQUEST_ERROR" and failed["order"]["status"] == "attempted"


def test_retries_non_2xx_then_delivers(client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver) -> None:
    receiver.refuse_first = 2
    sandbox.webhooks.backoff_s = 0.01
    sandbox.pay(create(client)["id"], "authorized")
    assert sandbox.wait_for_deliveries(5)
    delivery = sandbox.deliveries[-1]
    assert delivery.state == "delivered" and delivery.statuses == [503, 503, 200]


def test_gives_up_after_bounded_attempts(client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver) -> None:
    receiver.refuse_first = 100
    client.post("/_sandbox/razorpay/webhooks", json={"max_attempts": 3, "backoff_s": 0.01})
    sandbox.pay(create(client)["id"], "authorized")
    assert sandbox.wait_for_deliveries(5)
    assert sandbox.deliveries[-1].state == "failed" and sandbox.deliveries[-1].attempts == 3


def test_duplicate_out_of_order_and_drop_switches(client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver) -> None:
    client.post("/_sandbox/razorpay/webhooks", json={"duplicate": True, "out_of_order": True})
    sandbox.pay(create(client, receipt="x")["id"], "captured")
    assert sandbox.wait_for_deliveries(5)
    assert receiver.events() == ["order.paid", "order.paid", "payment.captured", "payment.captured", "payment.authorized", "payment.authorized"]
    ids = [h["x-razorpay-event-id"] for h, _ in receiver.received]
    assert ids[0] == ids[1] and ids[2] == ids[3]
    receiver.received.clear()
    client.post("/_sandbox/razorpay/webhooks", json={"duplicate": False, "out_of_order": False, "drop_next_n": 2})
    sandbox.pay(create(client, receipt="y")["id"], "captured")
    assert sandbox.wait_for_deliveries(5)
    assert receiver.events() == ["order.paid"]
    states = [d["state"] for d in client.get("/_sandbox/razorpay/deliveries").json()["deliveries"][-3:]]
    assert states == ["dropped", "dropped", "delivered"]
    assert client.post("/_sandbox/razorpay/webhooks", json={"bogus": 1}).status_code == 422


def test_list_payments_window_paging_and_count_limit(client: httpx.Client, sandbox: RazorpaySandbox) -> None:
    clock = [1_700_000_000.0]
    sandbox._clock = lambda: clock[0]
    for i in range(5):
        sandbox.pay(create(client, receipt=f"r{i}")["id"], "authorized")
        clock[0] += 10
    everything = client.get("/v1/payments", params={"count": 100}).json()
    assert everything["count"] == 5
    stamps = [p["created_at"] for p in everything["items"]]
    assert stamps == sorted(stamps, reverse=True)
    page = client.get("/v1/payments", params={"from": 1_700_000_010, "to": 1_700_000_030, "count": 2, "skip": 1}).json()
    assert [p["created_at"] for p in page["items"]] == [1_700_000_020, 1_700_000_010]
    too_many = client.get("/v1/payments", params={"count": 101})
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "count"


def test_over_real_http_with_webhooks_to_a_real_receiver() -> None:
    receiver = Receiver()
    sim = RazorpaySandbox()
    try:
        with running_server(receiver) as hook_base, running_server(sim) as base:
            with httpx.Client(base_url=base, auth=AUTH) as c:
                assert c.post("/_sandbox/razorpay/webhooks", json={"url": f"{hook_base}/hook"}).status_code == 200
                order = c.post("/v1/orders", json={"amount": 1000, "currency": "INR", "receipt": "http-1"}).json()
                paid = c.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "captured"})
                assert paid.status_code == 200
                assert c.post("/_sandbox/razorpay/deliveries/wait", json={"timeout_s": 5}).json() == {"done": True}
                assert c.get(f"/v1/payments/{paid.json()['razorpay_payment_id']}").json()["status"] == "captured"
        assert receiver.events() == ["payment.authorized", "payment.captured", "order.paid"]
    finally:
        sim.close()


# -- refunds -----------------------------------------------------------------------------------


def captured_payment(client: httpx.Client, sandbox: RazorpaySandbox, amount: int = 50000) -> dict[str, Any]:
    order = create(client, amount=amount)
    paid = client.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "captured"}).json()
    assert sandbox.wait_for_deliveries(5)
    return dict(paid["payment"])


def test_full_refund_by_default_has_the_refund_entity_shape_and_refunds_the_payment(
    client: httpx.Client, sandbox: RazorpaySandbox
) -> None:
    payment = captured_payment(client, sandbox)
    response = client.post(f"/v1/payments/{payment['id']}/refund", json={"notes": {"reason": "damaged bags"}})
    assert response.status_code == 200, response.text
    refund = response.json()
    assert set(refund) == {
        "id", "entity", "amount", "currency", "payment_id", "notes", "receipt", "acquirer_data",
        "created_at", "batch_id", "status", "speed_processed", "speed_requested",
    }
    assert refund["id"].startswith("rfnd_") and refund["entity"] == "refund"
    assert (refund["amount"], refund["currency"], refund["payment_id"]) == (50000, "INR", payment["id"])
    assert (refund["status"], refund["speed_requested"], refund["notes"]) == ("processed", "normal", {"reason": "damaged bags"})
    after = client.get(f"/v1/payments/{payment['id']}").json()
    assert (after["status"], after["amount_refunded"], after["refund_status"]) == ("refunded", 50000, "full")
    assert client.get(f"/v1/refunds/{refund['id']}").json() == refund
    assert client.get(f"/v1/payments/{payment['id']}/refunds/{refund['id']}").json() == refund
    listed = client.get(f"/v1/payments/{payment['id']}/refunds").json()
    assert listed == {"entity": "collection", "count": 1, "items": [refund]}


def test_partial_refunds_add_up_and_keep_the_payment_captured_until_full(client: httpx.Client, sandbox: RazorpaySandbox) -> None:
    payment = captured_payment(client, sandbox, amount=30000)
    first = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 10000}).json()
    after = client.get(f"/v1/payments/{payment['id']}").json()
    assert (after["status"], after["amount_refunded"], after["refund_status"]) == ("captured", 10000, "partial")
    second = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 20000}).json()
    after = client.get(f"/v1/payments/{payment['id']}").json()
    assert (after["status"], after["amount_refunded"], after["refund_status"]) == ("refunded", 30000, "full")
    items = client.get(f"/v1/payments/{payment['id']}/refunds").json()["items"]
    assert [r["id"] for r in items] == [second["id"], first["id"]]  # newest first


@pytest.mark.parametrize(
    ("setup_amounts", "body", "field", "text"),
    [
        ([], {"amount": 50001}, "amount", "greater than amount captured"),
        ([40000], {"amount": 10001}, "amount", "greater than amount captured"),
        ([50000], {}, "id", "fully refunded already"),
        ([], {"amount": 99}, "amount", "at least INR 1.00"),
        ([], {"amount": "100"}, "amount", "integer"),
        ([], {"speed": "warp"}, "speed", "invalid"),
        ([], {"receipt": "r" * 41}, "receipt", "40"),
    ],
)
def test_refused_refunds_get_the_razorpay_error_envelope_and_change_nothing(
    client: httpx.Client, sandbox: RazorpaySandbox, setup_amounts: list[int], body: dict[str, Any], field: str, text: str
) -> None:
    payment = captured_payment(client, sandbox)
    for amount in setup_amounts:
        assert client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": amount}).status_code == 200
    before = client.get(f"/v1/payments/{payment['id']}").json()
    refunds_before = len(sandbox.refunds)
    response = client.post(f"/v1/payments/{payment['id']}/refund", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BAD_REQUEST_ERROR" and error["field"] == field and text in error["description"]
    assert set(error) >= {"code", "description", "source", "step", "reason", "metadata"}
    assert client.get(f"/v1/payments/{payment['id']}").json() == before
    assert len(sandbox.refunds) == refunds_before


def test_refund_of_an_uncaptured_or_unknown_payment_is_refused(client: httpx.Client, sandbox: RazorpaySandbox) -> None:
    order = create(client)
    authorized = client.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "authorized"}).json()
    response = client.post(f"/v1/payments/{authorized['razorpay_payment_id']}/refund", json={})
    assert response.status_code == 400 and "not been captured" in response.json()["error"]["description"]
    unknown = client.post("/v1/payments/pay_doesnotexist000/refund", json={})
    assert unknown.status_code == 400 and unknown.json()["error"]["description"] == "The id provided does not exist"
    assert client.get("/v1/refunds/rfnd_doesnotexist00").status_code == 400
    assert client.get("/v1/payments/pay_doesnotexist000/refunds").status_code == 400


def test_idempotency_key_returns_the_same_refund_and_refuses_a_different_body(client: httpx.Client, sandbox: RazorpaySandbox) -> None:
    payment = captured_payment(client, sandbox)
    headers = {"X-Refund-Idempotency": "refund-INV-42-1"}
    first = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 1000}, headers=headers).json()
    again = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 1000}, headers=headers).json()
    assert again["id"] == first["id"] and len(sandbox.refunds) == 1
    assert client.get(f"/v1/payments/{payment['id']}").json()["amount_refunded"] == 1000
    other = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 2000}, headers=headers)
    assert other.status_code == 400 and "idempotency key" in other.json()["error"]["description"]
    short = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 2000}, headers={"X-Refund-Idempotency": "short"})
    assert short.status_code == 400


def test_refund_delivers_signed_refund_created_and_processed_with_refund_and_payment(
    client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver
) -> None:
    payment = captured_payment(client, sandbox)
    receiver.received.clear()
    refund = client.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 20000}).json()
    assert sandbox.wait_for_deliveries(5)
    assert receiver.events() == ["refund.created", "refund.processed"]
    for headers, body in receiver.received:
        assert headers["x-razorpay-signature"] == hmac.new(b"sandbox-webhook-secret", body, hashlib.sha256).hexdigest()
        event = json.loads(body)
        assert event["contains"] == ["refund", "payment"]
        assert event["payload"]["refund"]["entity"]["id"] == refund["id"]
        assert event["payload"]["payment"]["entity"]["amount_refunded"] == 20000
        assert event["payload"]["payment"]["entity"]["status"] == "captured"
    created, processed = (json.loads(body)["payload"]["refund"]["entity"] for _, body in receiver.received)
    assert (created["status"], processed["status"]) == ("pending", "processed")
    assert processed["acquirer_data"]["arn"]
