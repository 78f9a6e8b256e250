"""The ingress's security suite over real HTTP: every refusal answers the right 4xx and leaves only a count."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from hub.ingress.app import create_app
from hub.ingress.inbox import issue_token, list_events
from hub.ingress.security import (
    RAZORPAY_EVENT_TYPES,
    ProviderPolicy,
    policies_from_settings,
    razorpay_events,
    sign,
)
from tests.hub.ingress.conftest import (
    RZP_OLD_SECRET,
    RZP_SECRET,
    VERIFY_TOKEN,
    hub_settings,
    razorpay_body,
    razorpay_headers,
    rejections,
    serving,
    stored_events,
    whatsapp_body,
    whatsapp_headers,
)


@pytest.fixture
def ingress(db: str) -> Iterator[str]:
    """The ingress as configured by default (test secrets, 64 KiB body limit)."""
    with serving(create_app(hub_settings())) as base:
        yield base


def post(base: str, path: str, body: bytes, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base}{path}", content=body, headers=headers, timeout=10, **kwargs)


def assert_refused(response: httpx.Response, status: int, reason: str, provider: str = "razorpay") -> None:
    """Refused with this status and reason, nothing stored, and exactly one rejection counted."""
    assert response.status_code == status, response.text
    assert response.json() == {"error": reason}
    assert stored_events() == 0
    assert rejections(reason, provider) == 1


def test_signed_razorpay_event_is_committed_before_the_2xx(ingress: str) -> None:
    body = razorpay_body()
    headers = razorpay_headers(body, event_id="evt_00000000000001")
    response = post(ingress, "/webhooks/razorpay", body, headers)
    assert response.status_code == 200 and response.json() == {"status": "accepted", "items": 1}
    [event] = list_events()
    created_at = orjson.loads(body)["created_at"]
    key = f"payment.captured:pay_29QQoUBi66xm2f:{created_at}"  # from the signed body only
    assert (event.provider, event.event_id, event.event_type, event.status) == ("razorpay", key, "payment.captured", "received")
    assert event.provider_event_id == "evt_00000000000001"  # the unsigned header: kept as information
    assert event.body_sha256 == hashlib.sha256(body).hexdigest()
    assert event.event_at is not None and int(event.event_at.timestamp()) == created_at
    assert event.body == body  # the exact bytes that were signed, never re-serialised
    assert event.headers["x-razorpay-signature"] == "***"
    assert event.remote_addr == "127.0.0.1"


def test_tampered_body_is_refused(ingress: str) -> None:
    body = razorpay_body()
    headers = razorpay_headers(body)
    assert_refused(post(ingress, "/webhooks/razorpay", body.replace(b"50000", b"90000"), headers), 401, "bad_signature")


def test_wrong_secret_is_refused(ingress: str) -> None:
    body = razorpay_body()
    assert_refused(post(ingress, "/webhooks/razorpay", body, razorpay_headers(body, secret="not-our-secret")), 401, "bad_signature")


def test_missing_signature_header_is_refused(ingress: str) -> None:
    body = razorpay_body()
    headers = razorpay_headers(body)
    del headers["x-razorpay-signature"]
    assert_refused(post(ingress, "/webhooks/razorpay", body, headers), 401, "missing_signature")


@pytest.mark.parametrize("signature", ["sha256=" + "a" * 64, "zz" * 32, "abc123"])
def test_malformed_razorpay_signature_is_refused(ingress: str, signature: str) -> None:
    body = razorpay_body()
    headers = {**razorpay_headers(body), "x-razorpay-signature": signature}
    assert_refused(post(ingress, "/webhooks/razorpay", body, headers), 401, "malformed_signature")


@pytest.mark.parametrize("prefix", ["", "sha1=", "SHA256 "])
def test_whatsapp_signature_without_sha256_prefix_is_malformed(ingress: str, prefix: str) -> None:
    body = whatsapp_body()
    good = whatsapp_headers(body)["x-hub-signature-256"].removeprefix("sha256=")
    headers = {"content-type": "application/json", "x-hub-signature-256": prefix + good}
    assert_refused(post(ingress, "/webhooks/whatsapp", body, headers), 401, "malformed_signature", "whatsapp")


def _timestamped_app() -> Any:
    """The ingress with a Razorpay policy that also signs a timestamp header (a provider that sends one)."""
    settings = hub_settings()
    policies = policies_from_settings(settings)
    policies["razorpay"] = ProviderPolicy(
        name="razorpay",
        secrets=(RZP_SECRET.encode(),),
        signature_header="x-razorpay-signature",
        extract_events=razorpay_events,
        event_types=RAZORPAY_EVENT_TYPES,
        timestamp_header="x-webhook-timestamp",
        max_age_s=300,
    )
    return create_app(settings, policies=policies)


@pytest.mark.parametrize(("offset_s", "status", "reason"), [(-330, 401, "stale_timestamp"), (330, 401, "future_timestamp"), (-270, 200, None), (270, 200, None)])
def test_timestamp_window_in_both_directions(db: str, offset_s: int, status: int, reason: str | None) -> None:
    body = razorpay_body()
    with serving(_timestamped_app()) as base:
        # Offsets stay well clear of the 300 s edge: a slow machine must not move a case across it.
        ts = int(time.time()) + offset_s
        headers = {**razorpay_headers(body), "x-webhook-timestamp": str(ts), "x-razorpay-signature": sign(RZP_SECRET.encode(), body, ts)}
        response = post(base, "/webhooks/razorpay", body, headers)
    if reason is None:
        assert response.status_code == 200 and stored_events() == 1
    else:
        assert_refused(response, status, reason)


def test_timestamp_is_covered_by_the_signature(db: str) -> None:
    body = razorpay_body()
    old = int(time.time()) - 3600
    headers = {**razorpay_headers(body), "x-webhook-timestamp": str(int(time.time())), "x-razorpay-signature": sign(RZP_SECRET.encode(), body, old)}
    with serving(_timestamped_app()) as base:
        assert_refused(post(base, "/webhooks/razorpay", body, headers), 401, "bad_signature")


def test_one_time_token_works_once_even_across_restarts(db: str) -> None:
    settings = hub_settings(webhook_one_time_token_providers="razorpay")
    token = issue_token("razorpay")
    body = razorpay_body()
    with serving(create_app(settings)) as base:
        first = post(base, "/webhooks/razorpay", body, razorpay_headers(body), params={"token": token})
        assert first.status_code == 200
    assert stored_events() == 1
    with serving(create_app(settings)) as base:  # a new process-equivalent: only the table remembers
        # The provider's retry of the delivery stored under the token (a lost 200): acknowledged, no second effect.
        retry = post(base, "/webhooks/razorpay", body, razorpay_headers(body), params={"token": token})
        other = razorpay_body(payment_id="pay_otherdelivery1")
        replay = post(base, "/webhooks/razorpay", other, razorpay_headers(other), params={"token": token})
    assert retry.status_code == 200
    assert replay.status_code == 401 and replay.json() == {"error": "token_replayed"}
    assert stored_events() == 1 and rejections("token_replayed") == 1


def test_unknown_expired_and_missing_tokens_are_refused(db: str) -> None:
    settings = hub_settings(webhook_one_time_token_providers="razorpay")
    expired = issue_token("razorpay", timedelta(seconds=-1))
    other_provider = issue_token("whatsapp")
    body = razorpay_body()
    with serving(create_app(settings)) as base:
        for token in (expired, other_provider, "never-issued"):
            response = post(base, "/webhooks/razorpay", body, {**razorpay_headers(body), "x-hub-token": token})
            assert response.status_code == 401 and response.json() == {"error": "token_unknown_or_expired"}
        missing = post(base, "/webhooks/razorpay", body, razorpay_headers(body))
    assert missing.status_code == 401 and missing.json() == {"error": "missing_token"}
    assert stored_events() == 0 and rejections("token_unknown_or_expired") == 3 and rejections("missing_token") == 1


def test_forged_request_does_not_burn_a_genuine_token(db: str) -> None:
    settings = hub_settings(webhook_one_time_token_providers="razorpay")
    token = issue_token("razorpay")
    body = razorpay_body()
    with serving(create_app(settings)) as base:
        forged = post(base, "/webhooks/razorpay", body, razorpay_headers(body, secret="forger"), params={"token": token})
        genuine = post(base, "/webhooks/razorpay", body, razorpay_headers(body), params={"token": token})
    assert forged.status_code == 401 and genuine.status_code == 200


def test_address_outside_the_allowlist_is_refused(db: str) -> None:
    body = razorpay_body()
    with serving(create_app(hub_settings(razorpay_webhook_allowed_ips="10.0.0.0/8, 192.168.0.0/16"))) as base:
        assert_refused(post(base, "/webhooks/razorpay", body, razorpay_headers(body)), 403, "ip_not_allowed")


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(db: str) -> None:
    body = razorpay_body()
    headers = {**razorpay_headers(body), "x-forwarded-for": "203.0.113.7"}
    with serving(create_app(hub_settings(razorpay_webhook_allowed_ips="203.0.113.0/24"))) as base:
        assert_refused(post(base, "/webhooks/razorpay", body, headers), 403, "ip_not_allowed")


def test_trusted_proxy_uses_the_right_most_untrusted_hop(db: str) -> None:
    settings = hub_settings(razorpay_webhook_allowed_ips="203.0.113.0/24", webhook_trusted_proxies="127.0.0.1/32, 10.1.0.0/16")
    body = razorpay_body()
    with serving(create_app(settings)) as base:
        # client -> our proxy 10.1.2.3 -> loopback: the client is the hop left of our proxies.
        ok = post(base, "/webhooks/razorpay", body, {**razorpay_headers(body), "x-forwarded-for": "203.0.113.7, 10.1.2.3"})
        # A forged left-most entry does not help: the right-most untrusted hop is the real sender.
        spoofed = post(base, "/webhooks/razorpay", body, {**razorpay_headers(body), "x-forwarded-for": "203.0.113.7, 198.51.100.9"})
    assert ok.status_code == 200
    assert [e.remote_addr for e in list_events()] == ["203.0.113.7"]
    assert spoofed.status_code == 403 and spoofed.json() == {"error": "ip_not_allowed"}
    assert rejections("ip_not_allowed") == 1


def test_oversize_body_is_refused_with_413(ingress: str) -> None:
    body = b'{"event":"payment.captured","pad":"' + b"x" * (70 * 1024) + b'"}'
    assert_refused(post(ingress, "/webhooks/razorpay", body, razorpay_headers(body)), 413, "body_too_large")


def test_malformed_json_is_refused(ingress: str) -> None:
    body = b'{"event": "payment.captured", '
    assert_refused(post(ingress, "/webhooks/razorpay", body, razorpay_headers(body)), 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_refused(ingress: str, content_type: str | None) -> None:
    body = razorpay_body()
    headers = razorpay_headers(body)
    if content_type is None:
        del headers["content-type"]
    else:
        headers["content-type"] = content_type
    assert_refused(post(ingress, "/webhooks/razorpay", body, headers), 415, "bad_content_type")


def test_unknown_event_type_is_refused(ingress: str) -> None:
    body = razorpay_body(event="subscription.charged")
    assert_refused(post(ingress, "/webhooks/razorpay", body, razorpay_headers(body)), 422, "unknown_event_type")


def test_unknown_whatsapp_status_is_refused(ingress: str) -> None:
    body = whatsapp_body(statuses=[("wamid.X", "deleted")])
    assert_refused(post(ingress, "/webhooks/whatsapp", body, whatsapp_headers(body)), 422, "unknown_event_type", "whatsapp")


def test_a_payload_without_an_entity_id_is_refused_and_the_unsigned_header_is_not_needed(ingress: str) -> None:
    payload = orjson.loads(razorpay_body())
    del payload["payload"]["payment"]["entity"]["id"]
    body = orjson.dumps(payload)
    assert_refused(post(ingress, "/webhooks/razorpay", body, razorpay_headers(body)), 400, "missing_event_id")
    genuine = razorpay_body()
    headers = razorpay_headers(genuine)
    del headers["x-razorpay-event-id"]  # unsigned: its absence changes nothing
    assert post(ingress, "/webhooks/razorpay", genuine, headers).status_code == 200
    assert [e.provider_event_id for e in list_events()] == [None]


def test_rotation_accepts_new_and_previous_secret_only(db: str) -> None:
    with serving(create_app(hub_settings(razorpay_webhook_secrets=f"{RZP_SECRET},{RZP_OLD_SECRET}"))) as base:
        statuses = []
        for n, secret in enumerate((RZP_SECRET, RZP_OLD_SECRET, "retired-secret")):
            body = razorpay_body(payment_id=f"pay_rotation{n}")  # three distinct events
            statuses.append(post(base, "/webhooks/razorpay", body, razorpay_headers(body, secret=secret)).status_code)
    assert statuses == [200, 200, 401]
    assert stored_events() == 2 and rejections("bad_signature") == 1


def test_no_secret_configured_refuses_everything(db: str) -> None:
    settings = hub_settings(razorpay_webhook_secrets="", whatsapp_app_secrets=" , ")
    body = razorpay_body()
    wa = whatsapp_body()
    with serving(create_app(settings)) as base:
        # Even a request "signed" with the empty key is refused: no key, no trust.
        rzp = post(base, "/webhooks/razorpay", body, razorpay_headers(body, secret=""))
        whatsapp = post(base, "/webhooks/whatsapp", wa, whatsapp_headers(wa, secret=""))
    assert rzp.status_code == 403 and whatsapp.status_code == 403
    assert stored_events() == 0
    assert rejections("no_secret_configured", "razorpay") == 1 and rejections("no_secret_configured", "whatsapp") == 1


def test_same_event_delivered_20_times_concurrently_is_stored_once(ingress: str) -> None:
    body = razorpay_body()
    headers = razorpay_headers(body, event_id="evt_concurrent0001")

    async def deliver_all() -> list[int]:
        async with httpx.AsyncClient(base_url=ingress, limits=httpx.Limits(max_connections=20), timeout=10) as client:
            responses = await asyncio.gather(*(client.post("/webhooks/razorpay", content=body, headers=headers) for _ in range(20)))
        return [r.status_code for r in responses]

    assert asyncio.run(deliver_all()) == [200] * 20
    assert stored_events() == 1
    assert [e.provider_event_id for e in list_events()] == ["evt_concurrent0001"]


def test_whatsapp_delivery_stores_one_event_per_message_and_status(ingress: str) -> None:
    first = whatsapp_body(statuses=[("wamid.A", "sent"), ("wamid.A", "delivered")], messages=["wamid.IN1"])
    assert post(ingress, "/webhooks/whatsapp", first, whatsapp_headers(first)).json() == {"status": "accepted", "items": 3}
    assert post(ingress, "/webhooks/whatsapp", first, whatsapp_headers(first)).status_code == 200  # Meta's retry
    later = whatsapp_body(statuses=[("wamid.A", "delivered"), ("wamid.A", "read")])
    assert post(ingress, "/webhooks/whatsapp", later, whatsapp_headers(later)).status_code == 200
    keys = sorted((e.event_id, e.event_type) for e in list_events())
    assert keys == [
        ("message:wamid.IN1", "message"),
        ("status:wamid.A:delivered", "status.delivered"),
        ("status:wamid.A:read", "status.read"),
        ("status:wamid.A:sent", "status.sent"),
    ]


def test_meta_subscription_handshake(ingress: str) -> None:
    ok = httpx.get(f"{ingress}/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    wrong = httpx.get(f"{ingress}/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"})
    bad_mode = httpx.get(f"{ingress}/webhooks/whatsapp", params={"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"})
    assert wrong.status_code == 403 and bad_mode.status_code == 403
    assert rejections("bad_verify_token", "whatsapp") == 2 and stored_events() == 0


def test_handshake_fails_closed_without_a_verify_token(db: str) -> None:
    with serving(create_app(hub_settings(whatsapp_verify_token=""))) as base:
        response = httpx.get(f"{base}/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"})
    assert response.status_code == 403


def test_health_reports_the_database(ingress: str) -> None:
    response = httpx.get(f"{ingress}/health")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_bench_route_exists_only_when_enabled(db: str) -> None:
    with serving(create_app(hub_settings())) as base:
        assert httpx.post(f"{base}/bench/bare", content=b"{}").status_code == 404
    with serving(create_app(hub_settings(webhook_bench_bare=True))) as base:
        assert httpx.post(f"{base}/bench/bare", content=b"{}").status_code == 200


def test_postgres_inbox_connection_lost_is_not_acknowledged_and_the_next_delivery_reconnects(db: str) -> None:
    """On PostgreSQL the group commit has its own connection: when the server drops it, the delivery in
    flight is answered 503 (not durable, so not acknowledged: the provider retries it), and the next
    delivery opens a new connection and is stored."""
    if not db.startswith("postgresql"):
        pytest.skip("the event-loop inbox connection is the PostgreSQL path")
    from sqlalchemy import text

    from hub.core.db import get_engine
    from hub.ingress.writer import APPLICATION_NAME

    with serving(create_app(hub_settings())) as base:
        first = razorpay_body()
        assert post(base, "/webhooks/razorpay", first, razorpay_headers(first, event_id="evt_before_drop")).status_code == 200
        with get_engine().begin() as conn:
            dropped = conn.execute(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"),
                {"name": APPLICATION_NAME},
            ).scalar_one()
        assert dropped == 1
        lost = razorpay_body(payment_id="pay_lost")
        answer = post(base, "/webhooks/razorpay", lost, razorpay_headers(lost, event_id="evt_during_drop"))
        assert answer.status_code == 503 and answer.json() == {"error": "inbox_unavailable"}
        again = post(base, "/webhooks/razorpay", lost, razorpay_headers(lost, event_id="evt_during_drop"))  # the retry
        assert again.status_code == 200
    assert sorted(e.provider_event_id or "" for e in list_events()) == ["evt_before_drop", "evt_during_drop"]
