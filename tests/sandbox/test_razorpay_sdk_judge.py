"""An independent judge: the official `razorpay` Python SDK verifies what our sandbox signs.

Our sandbox signs webhooks and checkout callbacks, and our ingress verifies them; if both shared a
mistake (the wrong key, a re-serialised body, the wrong message for a checkout signature), they would
still agree with each other. Razorpay's own SDK must accept every genuine signature and refuse every
tampered one, and our verifier must reach the same verdict on the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import razorpay
from razorpay.errors import SignatureVerificationError

from hub.ingress.security import InboundRequest, policies_from_settings, verify
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox
from tests.hub.ingress.conftest import hub_settings
from tests.sandbox.test_razorpay import AUTH, BASE, Receiver, create


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


@pytest.fixture
def sdk(sandbox: RazorpaySandbox) -> razorpay.Client:
    return razorpay.Client(auth=(sandbox.key_id, sandbox.key_secret))


def ours_accepts(sandbox: RazorpaySandbox, headers: dict[str, str], body: bytes) -> bool:
    policy = policies_from_settings(hub_settings(razorpay_webhook_secrets=sandbox.webhook_secret))["razorpay"]
    return verify(policy, InboundRequest(body=body, headers={**headers, "content-type": "application/json"}, peer="127.0.0.1")).ok


def test_the_sdk_accepts_every_sandbox_webhook_signature_and_so_do_we(
    client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver, sdk: razorpay.Client
) -> None:
    for receipt, outcome in (("judge-1", "captured"), ("judge-2", "failed"), ("judge-3", "authorized")):
        sandbox.pay(create(client, receipt=receipt)["id"], outcome)
    assert sandbox.wait_for_deliveries(10)
    assert len(receiver.received) >= 4
    for headers, body in receiver.received:
        # The SDK takes the body as text: the exact bytes, decoded, never re-serialised.
        assert sdk.utility.verify_webhook_signature(body.decode("utf-8"), headers["x-razorpay-signature"], sandbox.webhook_secret)
        assert ours_accepts(sandbox, headers, body)


def test_the_sdk_refuses_tampered_webhooks_and_so_do_we(
    client: httpx.Client, sandbox: RazorpaySandbox, receiver: Receiver, sdk: razorpay.Client
) -> None:
    sandbox.pay(create(client, receipt="judge-t")["id"], "captured")
    assert sandbox.wait_for_deliveries(10)
    headers, body = receiver.received[-1]
    signature = headers["x-razorpay-signature"]
    tampered_bodies = [body.replace(b'"captured"', b'"refunded"', 1), body + b" ", body.replace(b"50000", b"50001", 1)]
    for tampered in tampered_bodies:
        assert tampered != body
        with pytest.raises(SignatureVerificationError):
            sdk.utility.verify_webhook_signature(tampered.decode("utf-8"), signature, sandbox.webhook_secret)
        assert not ours_accepts(sandbox, headers, tampered)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(SignatureVerificationError):
        sdk.utility.verify_webhook_signature(body.decode("utf-8"), flipped, sandbox.webhook_secret)
    assert not ours_accepts(sandbox, {**headers, "x-razorpay-signature": flipped}, body)
    with pytest.raises(SignatureVerificationError):  # the key secret is not the webhook secret
        sdk.utility.verify_webhook_signature(body.decode("utf-8"), signature, sandbox.key_secret)


def test_the_sdk_accepts_sandbox_checkout_signatures_and_refuses_tampered_ones(
    client: httpx.Client, sandbox: RazorpaySandbox, sdk: razorpay.Client
) -> None:
    order = create(client, receipt="judge-checkout")
    paid = client.post("/_sandbox/razorpay/pay", json={"order_id": order["id"]}).json()
    callback = {k: paid[k] for k in ("razorpay_order_id", "razorpay_payment_id", "razorpay_signature")}
    assert callback["razorpay_order_id"] == order["id"]
    assert sdk.utility.verify_payment_signature(callback)
    with pytest.raises(SignatureVerificationError):  # the signature of this payment for another order
        sdk.utility.verify_payment_signature({**callback, "razorpay_order_id": "order_" + "X" * 14})
    with pytest.raises(SignatureVerificationError):
        sdk.utility.verify_payment_signature({**callback, "razorpay_payment_id": "pay_" + "Y" * 14})
    with pytest.raises(SignatureVerificationError):  # signed with another key secret
        razorpay.Client(auth=(sandbox.key_id, "another-key-secret")).utility.verify_payment_signature(callback)
