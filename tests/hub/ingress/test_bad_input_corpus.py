"""The bad-input corpus: what an attacker (or a broken sender) can put at the door, for both providers.

Each case is one row of a table: how to build the request (signatures, payload times, replays with
header and query variations, body shapes and encodings, sizes, methods, addresses, tokens), the status
it must get, and the refusal reason it must leave in the rejection ledger. Every case also proves that
no other table changed: not the inbox, not the tokens, not payments or messages. A replay of a stored
genuine delivery must be answered 200 and change nothing at all.

Runs against the real ingress (uvicorn on a free port) on SQLite and, with DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from hub.core.db import get_engine
from hub.core.models import Base
from hub.ingress.app import create_app
from hub.ingress.inbox import issue_token, rejection_counts
from hub.ingress.security import sign
from tests.hub.ingress.conftest import RZP_SECRET, VERIFY_TOKEN, WA_SECRET, hub_settings, serving

LEDGER = "webhook_rejections"
ALLOWED = "203.0.113.0/24"  # TEST-NET-3: the loopback peer of the tests is outside it


# --- bodies ----------------------------------------------------------------------------------------


def now() -> int:
    return int(time.time())


def rzp_payload(**top: Any) -> dict[str, Any]:
    payment = {"id": "pay_CorpusPayment01", "amount": 50000, "currency": "INR", "status": "captured",
               "order_id": "order_CorpusOrder001", "method": "upi", "captured": True, "created_at": now() - 5}
    payload: dict[str, Any] = {"entity": "event", "account_id": "acc_BFQ7uQEaa7j2z7", "event": "payment.captured",
                               "contains": ["payment"], "payload": {"payment": {"entity": payment}}, "created_at": now()}
    payload.update(top)
    return payload


def rzp_body(**top: Any) -> bytes:
    return orjson.dumps(rzp_payload(**top))


def rzp_entity(**fields: Any) -> bytes:
    payload = rzp_payload()
    payload["payload"]["payment"]["entity"].update(fields)
    return orjson.dumps(payload)


def rzp_headers(body: bytes, secret: str = RZP_SECRET, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-razorpay-signature": sign(secret.encode(), body),
            "x-razorpay-event-id": "evt_Corpus00000001", **extra}


def wa_value(**value: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "919800000000", "phone_number_id": "1234567890"}}
    base.update(value)
    return base


def wa_status(**fields: Any) -> dict[str, Any]:
    status = {"id": "wamid.Corpus1", "status": "delivered", "timestamp": str(now()), "recipient_id": "919811111111"}
    status.update(fields)
    return status


def wa_body(value: dict[str, Any] | None = None, *, field_name: Any = "messages", obj: Any = "whatsapp_business_account",
            entry: Any = None) -> bytes:
    value = value if value is not None else wa_value(statuses=[wa_status()])
    if entry is None:
        entry = [{"id": "WABA1", "changes": [{"field": field_name, "value": value}]}]
    return orjson.dumps({"object": obj, "entry": entry})


def wa_headers(body: bytes, secret: str = WA_SECRET, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-hub-signature-256": "sha256=" + sign(secret.encode(), body), **extra}


DEEP = "__deep__"


def deep(body: bytes, depth: int, leaf: bytes = b"1") -> bytes:
    """`body` with its "__deep__" placeholder replaced by JSON nested `depth` levels (deeper than a
    serialiser will write, well within what a parser accepts: 1024 levels for orjson)."""
    return body.replace(f'"{DEEP}"'.encode(), b"[" * depth + leaf + b"]" * depth)


# --- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[dict[str, str]], Req]  # gets what `setup` returned (a token, say)
    status: int
    reason: str | None  # the refusal counted in the ledger; None: nothing counted (a replay, a 405)
    server: str = "default"
    setup: Callable[[str], dict[str, str]] | None = None  # runs before the snapshot, with the server's base URL


def post_rzp(body: bytes | Callable[[], bytes], headers: dict[str, str] | None = None, **params: str) -> Callable[[dict[str, str]], Req]:
    """A Razorpay delivery; a body given as a function is built when the case runs (times relative to then,
    not to collection: the suite can reach this module many minutes after importing it)."""

    def build(_ctx: dict[str, str]) -> Req:
        raw = body() if callable(body) else body
        return Req("POST", "/webhooks/razorpay", raw, headers if headers is not None else rzp_headers(raw), params)

    return build


def post_wa(body: bytes, headers: dict[str, str] | None = None, **params: str) -> Callable[[dict[str, str]], Req]:
    return lambda _ctx: Req("POST", "/webhooks/whatsapp", body, headers if headers is not None else wa_headers(body), params)


def stored_first(path: str, body: bytes, headers: dict[str, str], params: dict[str, str] | None = None) -> Callable[[str], dict[str, str]]:
    """Setup of a replay case: the genuine delivery, stored before the snapshot."""

    def setup(base: str) -> dict[str, str]:
        response = httpx.post(f"{base}{path}", content=body, headers=headers, params=params or {}, timeout=10)
        assert response.status_code == 200, response.text
        return {}

    return setup


def token_setup(provider: str, ttl: timedelta = timedelta(hours=1)) -> Callable[[str], dict[str, str]]:
    return lambda _base: {"token": issue_token(provider, ttl)}


def spent_token_setup(body: bytes) -> Callable[[str], dict[str, str]]:
    def setup(base: str) -> dict[str, str]:
        token = issue_token("razorpay")
        first = httpx.post(f"{base}/webhooks/razorpay", content=body, headers=rzp_headers(body), params={"token": token}, timeout=10)
        assert first.status_code == 200, first.text
        return {"token": token}

    return setup


def chunks(total: int) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 8192
            sent += 8192

    return gen


GENUINE_RZP = rzp_body(created_at=now() - 30)
GENUINE_WA = wa_body(wa_value(statuses=[wa_status(id="wamid.CorpusReplay", status="read")], messages=[
    {"from": "919811111111", "id": "wamid.CorpusInbound", "timestamp": str(now() - 30), "type": "text", "text": {"body": "hi"}}]))
OTHER_RZP = rzp_entity(id="pay_CorpusOther0001")
OVERSIZE = rzp_body(notes="x" * 70_000)
UTF16 = '{"event":"payment.captured"}'.encode("utf-16")

CASES: list[Case] = [
    # -- signatures
    Case("rzp-missing-signature", post_rzp(rzp_body(), {"content-type": "application/json"}), 401, "missing_signature"),
    Case("rzp-signature-not-hex", post_rzp(rzp_body(), {**rzp_headers(rzp_body()), "x-razorpay-signature": "z" * 64}), 401, "malformed_signature"),
    Case("rzp-signature-truncated", post_rzp(rzp_body(), {**rzp_headers(rzp_body()), "x-razorpay-signature": sign(RZP_SECRET.encode(), rzp_body())[:63]}), 401, "malformed_signature"),
    Case("rzp-signature-with-meta-prefix", post_rzp(rzp_body(), {**rzp_headers(rzp_body()), "x-razorpay-signature": "sha256=" + sign(RZP_SECRET.encode(), rzp_body())}), 401, "malformed_signature"),
    Case("rzp-wrong-secret", post_rzp(rzp_body(), rzp_headers(rzp_body(), secret="not-the-secret")), 401, "bad_signature"),
    Case("rzp-tampered-amount", post_rzp(rzp_entity(amount=1), rzp_headers(rzp_body())), 401, "bad_signature"),
    Case("rzp-signed-with-the-meta-secret", post_rzp(rzp_body(), rzp_headers(rzp_body(), secret=WA_SECRET)), 401, "bad_signature"),
    Case("wa-missing-signature", post_wa(wa_body(), {"content-type": "application/json"}), 401, "missing_signature", ),
    Case("wa-legacy-sha1-header-only", post_wa(wa_body(), {"content-type": "application/json", "x-hub-signature": "sha1=" + "0" * 40}), 401, "missing_signature"),
    Case("wa-signature-without-prefix", post_wa(wa_body(), {**wa_headers(wa_body()), "x-hub-signature-256": sign(WA_SECRET.encode(), wa_body())}), 401, "malformed_signature"),
    Case("wa-wrong-secret", post_wa(wa_body(), wa_headers(wa_body(), secret="not-the-app-secret")), 401, "bad_signature"),
    Case("wa-signed-with-the-razorpay-secret", post_wa(wa_body(), wa_headers(wa_body(), secret=RZP_SECRET)), 401, "bad_signature"),
    # -- payload times (neither provider signs a delivery timestamp: the payload's own time decides)
    Case("rzp-a-year-old", post_rzp(rzp_body(created_at=now() - 365 * 86_400)), 422, "stale_event"),
    Case("rzp-past-the-retry-window", post_rzp(rzp_body(created_at=now() - 25 * 3600)), 422, "stale_event"),
    Case("rzp-year-2100", post_rzp(rzp_body(created_at=4_102_444_800)), 422, "future_event"),
    Case("rzp-ten-minutes-ahead", post_rzp(lambda: rzp_body(created_at=now() + 600)), 422, "future_event"),
    Case("rzp-created-at-a-string", post_rzp(rzp_body(created_at="1764000000")), 400, "missing_event_time"),
    Case("rzp-created-at-a-float", post_rzp(rzp_body(created_at=1_764_000_000.5)), 400, "missing_event_time"),
    Case("rzp-created-at-missing", post_rzp(orjson.dumps({k: v for k, v in rzp_payload().items() if k != "created_at"})), 400, "missing_event_time"),
    Case("wa-status-eight-days-old", post_wa(wa_body(wa_value(statuses=[wa_status(timestamp=str(now() - 8 * 86_400))]))), 422, "stale_event"),
    Case("wa-status-year-2100", post_wa(wa_body(wa_value(statuses=[wa_status(timestamp="4102444800")]))), 422, "future_event"),
    Case("wa-status-without-timestamp", post_wa(wa_body(wa_value(statuses=[{"id": "wamid.X", "status": "sent"}]))), 400, "missing_event_time"),
    Case("wa-message-timestamp-not-a-number", post_wa(wa_body(wa_value(messages=[{"from": "9198", "id": "wamid.M", "timestamp": "soon", "type": "text"}]))), 400, "missing_event_time"),
    # -- replays of a stored genuine delivery: header and query variations store nothing and change nothing
    Case("rzp-replay-new-event-id", post_rzp(GENUINE_RZP, rzp_headers(GENUINE_RZP, **{"x-razorpay-event-id": "evt_Forged0000001"})), 200, None,
         setup=stored_first("/webhooks/razorpay", GENUINE_RZP, rzp_headers(GENUINE_RZP))),
    Case("rzp-replay-without-event-id", post_rzp(GENUINE_RZP, {k: v for k, v in rzp_headers(GENUINE_RZP).items() if k != "x-razorpay-event-id"}), 200, None,
         setup=stored_first("/webhooks/razorpay", GENUINE_RZP, rzp_headers(GENUINE_RZP))),
    Case("rzp-replay-with-query", post_rzp(GENUINE_RZP, rzp_headers(GENUINE_RZP), event_id="evt_Forged0000002", retry="1"), 200, None,
         setup=stored_first("/webhooks/razorpay", GENUINE_RZP, rzp_headers(GENUINE_RZP))),
    Case("rzp-replay-other-headers-and-upper-case-signature",
         post_rzp(GENUINE_RZP, {**rzp_headers(GENUINE_RZP), "x-razorpay-signature": sign(RZP_SECRET.encode(), GENUINE_RZP).upper(),
                                "user-agent": "replayer/1.0", "x-forwarded-for": "203.0.113.7", "x-request-id": "r-1"}), 200, None,
         setup=stored_first("/webhooks/razorpay", GENUINE_RZP, rzp_headers(GENUINE_RZP))),
    Case("wa-replay-other-headers-and-query", post_wa(GENUINE_WA, wa_headers(GENUINE_WA, **{"user-agent": "replayer", "x-hub-signature": "sha1=00"}), attempt="2"), 200, None,
         setup=stored_first("/webhooks/whatsapp", GENUINE_WA, wa_headers(GENUINE_WA))),
    # -- body shapes and encodings (all correctly signed: only the shape is wrong)
    Case("rzp-not-json", post_rzp(b"event=payment.captured"), 400, "malformed_json"),
    Case("rzp-invalid-utf8", post_rzp(b'{"event":"\xff"}'), 400, "malformed_json"),
    Case("rzp-nan", post_rzp(b'{"event":"payment.captured","created_at":NaN}'), 400, "malformed_json"),
    Case("rzp-utf16-body", post_rzp(UTF16, rzp_headers(UTF16, **{"content-type": "application/json; charset=utf-16"})), 400, "malformed_json"),
    Case("rzp-nested-beyond-the-parser", post_rzp(orjson.dumps({"event": "payment.captured"})[:-1] + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}"), 400, "malformed_json"),
    Case("rzp-json-array", post_rzp(b"[1,2,3]"), 400, "malformed_payload"),
    Case("rzp-payload-not-an-object", post_rzp(rzp_body(payload=[1])), 400, "malformed_payload"),
    Case("rzp-unknown-event", post_rzp(rzp_body(event="subscription.charged")), 422, "unknown_event_type"),
    Case("rzp-event-an-object", post_rzp(deep(rzp_body(event={"name": DEEP}), 600)), 422, "unknown_event_type"),
    Case("rzp-entity-without-id", post_rzp(orjson.dumps({**rzp_payload(), "payload": {"payment": {"entity": {"amount": 1}}}})), 400, "missing_event_id"),
    Case("rzp-entity-id-injection", post_rzp(rzp_entity(id="pay_1:payment.captured:1")), 400, "missing_event_id"),
    Case("rzp-entity-id-too-long", post_rzp(rzp_entity(id="pay_" + "A" * 60)), 400, "missing_event_id"),
    Case("wa-statuses-not-a-list", post_wa(wa_body(wa_value(statuses=7))), 400, "malformed_payload"),
    Case("wa-messages-a-string", post_wa(wa_body(wa_value(messages="wamid.1"))), 400, "malformed_payload"),
    Case("wa-messages-an-object", post_wa(wa_body(wa_value(messages={"id": "wamid.1"}))), 400, "malformed_payload"),
    Case("wa-errors-nested-600-deep", post_wa(deep(wa_body(wa_value(errors=[DEEP])), 600, b'{"code":1}')), 400, "malformed_payload"),
    Case("wa-status-an-object", post_wa(deep(wa_body(wa_value(statuses=[wa_status(status={"deep": DEEP})])), 900)), 422, "unknown_event_type"),
    Case("wa-unknown-status", post_wa(wa_body(wa_value(statuses=[wa_status(status="deleted")]))), 422, "unknown_event_type"),
    Case("wa-field-an-object", post_wa(deep(wa_body(field_name={"f": DEEP}), 900)), 400, "malformed_payload"),
    Case("wa-other-object", post_wa(wa_body(obj="page")), 422, "unknown_event_type"),
    Case("wa-entry-not-a-list", post_wa(wa_body(entry={"id": "WABA1"})), 400, "malformed_payload"),
    Case("wa-status-without-id", post_wa(wa_body(wa_value(statuses=[{"status": "sent", "timestamp": str(now())}]))), 400, "missing_event_id"),
    Case("wa-status-an-integer", post_wa(wa_body(wa_value(statuses=[5]))), 400, "malformed_payload"),
    Case("rzp-text-plain", post_rzp(rzp_body(), {**rzp_headers(rzp_body()), "content-type": "text/plain"}), 415, "bad_content_type"),
    Case("wa-no-content-type", post_wa(wa_body(), {"x-hub-signature-256": wa_headers(wa_body())["x-hub-signature-256"]}), 415, "bad_content_type"),
    # -- sizes (the limit is 64 KiB in these tests)
    Case("rzp-declared-oversize", post_rzp(OVERSIZE, rzp_headers(OVERSIZE)), 413, "body_too_large"),
    Case("rzp-chunked-oversize", lambda _ctx: Req("POST", "/webhooks/razorpay", chunks(200_000), {"content-type": "application/json", "x-razorpay-signature": "0" * 64}), 413, "body_too_large"),
    Case("wa-declared-oversize", post_wa(wa_body(wa_value(statuses=[wa_status(pad="x" * 70_000)]))), 413, "body_too_large"),
    # -- methods
    Case("rzp-put", lambda _ctx: Req("PUT", "/webhooks/razorpay", rzp_body(), rzp_headers(rzp_body())), 405, None),
    Case("rzp-get", lambda _ctx: Req("GET", "/webhooks/razorpay"), 405, None),
    Case("wa-delete", lambda _ctx: Req("DELETE", "/webhooks/whatsapp", wa_body(), wa_headers(wa_body())), 405, None),
    # -- addresses (the allowlist covers the POSTs and Meta's GET handshake; X-Forwarded-For is not believed)
    Case("rzp-outside-the-allowlist", post_rzp(rzp_body()), 403, "ip_not_allowed", server="allowlist"),
    Case("rzp-forged-forwarded-for", post_rzp(rzp_body(), rzp_headers(rzp_body(), **{"x-forwarded-for": "203.0.113.9"})), 403, "ip_not_allowed", server="allowlist"),
    Case("rzp-forged-hop-behind-our-proxy", post_rzp(rzp_body(), rzp_headers(rzp_body(), **{"x-forwarded-for": "203.0.113.9, 198.51.100.23"})), 403, "ip_not_allowed", server="proxied"),
    Case("wa-outside-the-allowlist", post_wa(wa_body()), 403, "ip_not_allowed", server="allowlist"),
    Case("wa-handshake-outside-the-allowlist",
         lambda _ctx: Req("GET", "/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "77"}),
         403, "ip_not_allowed", server="allowlist"),
    Case("wa-handshake-wrong-verify-token",
         lambda _ctx: Req("GET", "/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "77"}), 403, "bad_verify_token"),
    Case("wa-handshake-oversize-challenge",
         lambda _ctx: Req("GET", "/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "9" * 300}), 403, "bad_verify_token"),
    # -- one-time tokens
    Case("rzp-token-missing", post_rzp(rzp_body()), 401, "missing_token", server="token"),
    Case("rzp-token-never-issued", post_rzp(rzp_body(), token="never-issued"), 401, "token_unknown_or_expired", server="token"),
    Case("rzp-token-expired", lambda ctx: Req("POST", "/webhooks/razorpay", rzp_body(), rzp_headers(rzp_body()), {"token": ctx["token"]}), 401,
         "token_unknown_or_expired", server="token", setup=token_setup("razorpay", timedelta(seconds=-1))),
    Case("rzp-token-of-the-other-provider", lambda ctx: Req("POST", "/webhooks/razorpay", rzp_body(), rzp_headers(rzp_body()), {"token": ctx["token"]}), 401,
         "token_unknown_or_expired", server="token", setup=token_setup("whatsapp")),
    Case("rzp-token-reused-for-another-delivery",
         lambda ctx: Req("POST", "/webhooks/razorpay", OTHER_RZP, rzp_headers(OTHER_RZP), {"token": ctx["token"]}), 401, "token_replayed",
         server="token", setup=spent_token_setup(GENUINE_RZP)),
    Case("rzp-token-retry-of-its-own-delivery",
         lambda ctx: Req("POST", "/webhooks/razorpay", GENUINE_RZP, rzp_headers(GENUINE_RZP, **{"x-razorpay-event-id": "evt_Retry"}), {"token": ctx["token"]}),
         200, None, server="token", setup=spent_token_setup(GENUINE_RZP)),
    Case("wa-token-in-header-never-issued", post_wa(wa_body(), wa_headers(wa_body(), **{"x-hub-token": "forged"})), 401, "token_unknown_or_expired", server="token"),
]


SERVERS: dict[str, dict[str, Any]] = {
    "default": {},
    "allowlist": {"razorpay_webhook_allowed_ips": ALLOWED, "whatsapp_webhook_allowed_ips": ALLOWED},
    "proxied": {"razorpay_webhook_allowed_ips": ALLOWED, "webhook_trusted_proxies": "127.0.0.1/32"},
    "token": {"webhook_one_time_token_providers": "razorpay,whatsapp"},
}


@pytest.fixture(scope="module")
def servers(migrated_db: str) -> Iterator[dict[str, str]]:
    """One real ingress per configuration, for the whole module (each case empties the database first)."""
    import contextlib

    from connectors.core.metrics import METRICS
    from hub.monitoring.health import flush_metrics

    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serving(create_app(hub_settings(**overrides)))) for name, overrides in SERVERS.items()}
        # Request measurement (call_metrics, written by a background flusher on its own clock) counts every
        # request, refused or not, like the ledger: it is switched off here so that the snapshot sees only
        # what a delivery itself makes the ingress write. tests/hub/monitoring covers the measurement.
        flush_metrics()
        enabled, METRICS.enabled = METRICS.enabled, False
        try:
            yield urls
        finally:
            METRICS.enabled = enabled


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the rejection ledger, in a comparable form."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with get_engine().connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name != LEDGER:
                out[table.name] = sorted((tuple(repr(v) for v in row) for row in conn.execute(select(table))), key=repr)
    return out


def send(base: str, req: Req) -> httpx.Response:
    content = req.content() if callable(req.content) else req.content
    with httpx.Client(base_url=base, timeout=15) as client:
        return client.request(req.method, req.path, content=content, headers=req.headers, params=req.params)


def test_the_corpus_is_large_and_covers_both_providers() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    for prefix in ("rzp-", "wa-"):
        assert sum(c.name.startswith(prefix) for c in CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_status_and_changes_nothing_but_the_rejection_ledger(db: str, servers: dict[str, str], case: Case) -> None:
    base = servers[case.server]
    ctx = case.setup(base) if case.setup else {}
    before, ledger_before = snapshot(), rejection_counts()
    response = send(base, case.build(ctx))
    assert response.status_code == case.status, response.text
    assert snapshot() == before, "a refused or replayed delivery changed a table besides the rejection ledger"
    ledger = rejection_counts()
    added = {reason: n - ledger_before.get(reason, 0) for reason, n in ledger.items() if n != ledger_before.get(reason, 0)}
    assert added == ({case.reason: 1} if case.reason else {})
    if case.reason:
        assert response.json() == {"error": case.reason}
