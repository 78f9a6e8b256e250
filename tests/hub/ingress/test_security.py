"""The verification component on its own: pure functions, no server."""

from __future__ import annotations

import pytest

from hub.ingress.security import (
    InboundRequest,
    Reason,
    client_address,
    parse_networks,
    policies_from_settings,
    sign,
    verify,
    verify_subscription,
    whatsapp_events,
)
from tests.hub.ingress.conftest import RZP_SECRET, hub_settings, razorpay_body, razorpay_headers

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "xff", "proxies", "expected"),
    [
        ("198.51.100.1", "203.0.113.7", (), "198.51.100.1"),  # not opted in: the socket peer, always
        ("198.51.100.1", "203.0.113.7", PROXIES, "198.51.100.1"),  # peer is not our proxy: its header is not believed
        ("10.0.0.5", "203.0.113.7", PROXIES, "203.0.113.7"),
        ("10.0.0.5", "1.1.1.1, 203.0.113.7, 10.2.2.2", PROXIES, "203.0.113.7"),  # right-most untrusted hop
        ("10.0.0.5", "10.9.9.9, 10.2.2.2", PROXIES, "10.9.9.9"),  # all hops ours: the left-most
        ("10.0.0.5", "not-an-ip", PROXIES, "not-an-ip"),
        ("10.0.0.5", None, PROXIES, "10.0.0.5"),
        ("::1", "2001:db8::7", parse_networks(["::1/128"]), "2001:db8::7"),
    ],
)
def test_client_address(peer: str, xff: str | None, proxies: tuple, expected: str) -> None:  # type: ignore[type-arg]
    assert client_address(peer, xff, proxies) == expected


def test_verify_reports_reason_and_status_without_any_framework() -> None:
    policy = policies_from_settings(hub_settings())["razorpay"]
    body = razorpay_body()
    ok = verify(policy, InboundRequest(body=body, headers=razorpay_headers(body), peer="127.0.0.1"))
    assert ok.ok and ok.status == 200 and ok.items[0].event_type == "payment.captured"
    bad = verify(policy, InboundRequest(body=body + b" ", headers=razorpay_headers(body), peer="127.0.0.1"))
    assert (bad.ok, bad.reason, bad.status) == (False, Reason.BAD_SIGNATURE, 401)


def test_upper_case_hex_signature_is_accepted() -> None:
    policy = policies_from_settings(hub_settings())["razorpay"]
    body = razorpay_body()
    headers = {**razorpay_headers(body), "x-razorpay-signature": sign(RZP_SECRET.encode(), body).upper()}
    assert verify(policy, InboundRequest(body=body, headers=headers, peer="127.0.0.1")).ok


def test_token_policy_hands_the_token_on_unspent_and_refuses_without_one() -> None:
    policy = policies_from_settings(hub_settings(webhook_one_time_token_providers="razorpay"))["razorpay"]
    body = razorpay_body()
    verdict = verify(policy, InboundRequest(body=body, headers=razorpay_headers(body), peer="127.0.0.1", query={"token": "t"}))
    # Verification only reads the token: the inbox spends it in the transaction that stores the delivery.
    assert verdict.ok and verdict.token == "t"
    missing = verify(policy, InboundRequest(body=body, headers=razorpay_headers(body), peer="127.0.0.1"))
    assert (missing.ok, missing.reason) == (False, Reason.MISSING_TOKEN)


def test_whatsapp_errors_only_delivery_gets_a_content_key() -> None:
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": {"errors": [{"code": 131000}]}}]}]}
    [item] = whatsapp_events(payload, {})
    assert item.event_type == "errors" and item.event_id.startswith("errors:")
    assert whatsapp_events(payload, {}) == [item]  # the same errors, the same key


def test_other_whatsapp_fields_are_named_for_the_type_check() -> None:
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "account_update", "value": {}}]}]}
    assert [i.event_type for i in whatsapp_events(payload, {})] == ["field.account_update"]


def test_loaded_secrets_are_registered_for_redaction() -> None:
    from connectors.core.redact import redact_text

    policies_from_settings(hub_settings(razorpay_webhook_secrets="fresh-rotation-secret-9,older-secret-8"))
    assert redact_text("x fresh-rotation-secret-9 y older-secret-8") == "x *** y ***"


def test_subscription_handshake_is_constant_time_and_closed_by_default() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "42"}
    assert verify_subscription("tok", params).ok
    assert verify_subscription("", {**params, "hub.verify_token": ""}).reason == Reason.BAD_VERIFY_TOKEN
    assert not verify_subscription("tok", {**params, "hub.challenge": "x" * 300}).ok


def test_stored_header_memo_masks_a_secret_registered_after_it_saw_the_value() -> None:
    from connectors.core.redact import register_secret
    from hub.ingress.app import _HeaderRedactor

    redact = _HeaderRedactor()
    headers = {"x-razorpay-signature": "ab" * 32, "user-agent": "agent late-registered-secret-77", "x-long": "v" * 300}
    first = redact(headers)
    assert first["x-razorpay-signature"] == "***" and first["user-agent"] == "agent late-registered-secret-77"
    register_secret("late-registered-secret-77")
    assert redact(headers)["user-agent"] == "agent ***"
    assert redact(headers)["x-long"] == "v" * 300
