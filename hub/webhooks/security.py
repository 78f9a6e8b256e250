"""Webhook verification: the one framework-free component every ingress endpoint calls.

`verify()` runs every check of a provider's policy in a fixed order and answers with a `Verdict`:
`ok`, a machine reason and the HTTP status to answer. Cheap checks on headers and the peer come
first (they also run before the body is read, see `precheck()`); the signature is checked before
anything in the body is believed; a one-time token is consumed last so that a forged request can
never burn a genuine token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from connectors.core.redact import register_secret
from hub.settings import HubSettings, split_list

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEX64 = re.compile(r"[0-9a-f]{64}")


class Reason(enum.StrEnum):
    """Why a delivery was accepted or refused (stored in webhook_rejections.reason)."""

    OK = "ok"
    NO_SECRET_CONFIGURED = "no_secret_configured"
    IP_NOT_ALLOWED = "ip_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    BAD_CONTENT_TYPE = "bad_content_type"
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED_SIGNATURE = "malformed_signature"
    BAD_SIGNATURE = "bad_signature"
    MISSING_TIMESTAMP = "missing_timestamp"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_EVENT_ID = "missing_event_id"
    MISSING_TOKEN = "missing_token"
    TOKEN_REPLAYED = "token_replayed"
    TOKEN_UNKNOWN_OR_EXPIRED = "token_unknown_or_expired"
    BAD_VERIFY_TOKEN = "bad_verify_token"


# 401 = the sender did not prove who it is; 403 = we will not talk to it; 4xx others = the delivery itself is wrong.
STATUS: dict[Reason, int] = {
    Reason.OK: 200,
    Reason.NO_SECRET_CONFIGURED: 403,
    Reason.IP_NOT_ALLOWED: 403,
    Reason.BODY_TOO_LARGE: 413,
    Reason.BAD_CONTENT_TYPE: 415,
    Reason.MISSING_SIGNATURE: 401,
    Reason.MALFORMED_SIGNATURE: 401,
    Reason.BAD_SIGNATURE: 401,
    Reason.MISSING_TIMESTAMP: 401,
    Reason.MALFORMED_TIMESTAMP: 401,
    Reason.STALE_TIMESTAMP: 401,
    Reason.FUTURE_TIMESTAMP: 401,
    Reason.MALFORMED_JSON: 400,
    Reason.UNKNOWN_EVENT_TYPE: 422,
    Reason.MISSING_EVENT_ID: 400,
    Reason.MISSING_TOKEN: 401,
    Reason.TOKEN_REPLAYED: 401,
    Reason.TOKEN_UNKNOWN_OR_EXPIRED: 401,
    Reason.BAD_VERIFY_TOKEN: 403,
}


class EventRefused(Exception):
    """Raised by an event extractor when a verified payload still cannot be taken in."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class InboxItem:
    """One thing a delivery carries, with the provider key it is de-duplicated on."""

    event_id: str
    event_type: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of verification: what to answer and, when accepted, what to store."""

    ok: bool
    reason: Reason
    status: int
    client_addr: str | None = None
    items: tuple[InboxItem, ...] = ()

    @classmethod
    def refuse(cls, reason: Reason, client_addr: str | None) -> Verdict:
        return cls(ok=False, reason=reason, status=STATUS[reason], client_addr=client_addr)


@dataclass(frozen=True)
class InboundRequest:
    """What verification needs of an HTTP request; header names are lower-case."""

    body: bytes
    headers: Mapping[str, str]
    peer: str | None
    query: Mapping[str, str] = field(default_factory=dict)


class TokenStore(Protocol):
    """Durable one-time tokens: `consume` succeeds at most once per token, ever."""

    def consume(self, provider: str, token: str, now: datetime) -> Reason | None: ...


EventExtractor = Callable[[Any, Mapping[str, str]], list[InboxItem]]


@dataclass(frozen=True)
class ProviderPolicy:
    """Everything that decides whether one provider's delivery is genuine."""

    name: str
    secrets: tuple[bytes, ...]
    signature_header: str
    extract_events: EventExtractor
    event_types: frozenset[str]
    signature_prefix: str = ""
    # Providers that send a timestamp sign `f"{timestamp}.".encode() + body` (the Stripe scheme),
    # so the timestamp cannot be changed without breaking the signature.
    timestamp_header: str | None = None
    max_age_s: int = 300
    allowed_networks: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 1_048_576
    token_required: bool = False
    token_query_param: str = "token"
    token_header: str = "x-hub-token"


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """Lower-case hex HMAC-SHA256 of the signed content (what a provider puts in its header)."""
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    # hmac.digest: the one-shot C implementation, the same MAC as hmac.new(...).hexdigest().
    return hmac.digest(secret, message, "sha256").hex()


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR ranges from settings; a bare address is a /32 (or /128)."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _in_any(addr: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]) -> str | None:
    """The address to judge: the socket peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies.

    Only hops appended by our own proxies can be believed; everything left of the first untrusted
    hop was written by the client and may be forged, so the walk goes right to left.
    """
    if peer is None or not trusted_proxies or not forwarded_for:
        return peer  # the common case parses nothing: it runs for every request
    peer_ip = _parse_ip(peer)
    if peer_ip is None or not _in_any(peer_ip, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_ip = _parse_ip(hop)
        if hop_ip is None:
            return hop  # garbage written by someone we do not trust: judged (and refused) as it is
        if not _in_any(hop_ip, trusted_proxies):
            return str(hop_ip)
    return hops[0] if hops else peer


def precheck(policy: ProviderPolicy, headers: Mapping[str, str], peer: str | None) -> Verdict | None:
    """Checks that need no body (run before the body is read); None when they pass."""
    return precheck_client(policy, headers, client_address(peer, headers.get("x-forwarded-for"), policy.trusted_proxies))


def precheck_client(policy: ProviderPolicy, headers: Mapping[str, str], client: str | None) -> Verdict | None:
    """`precheck` for a client address already worked out with `client_address`."""
    if policy.allowed_networks:
        client_ip = _parse_ip(client) if client else None
        if client_ip is None or not _in_any(client_ip, policy.allowed_networks):
            return Verdict.refuse(Reason.IP_NOT_ALLOWED, client)
    if not policy.secrets:
        return Verdict.refuse(Reason.NO_SECRET_CONFIGURED, client)
    declared = headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > policy.max_body_bytes):
        return Verdict.refuse(Reason.BODY_TOO_LARGE, client)
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return Verdict.refuse(Reason.BAD_CONTENT_TYPE, client)
    return None


def _check_signature(policy: ProviderPolicy, body: bytes, headers: Mapping[str, str], now: float) -> Reason | None:
    header = headers.get(policy.signature_header, "").strip()
    if not header:
        return Reason.MISSING_SIGNATURE
    if policy.signature_prefix:
        if not header.startswith(policy.signature_prefix):
            return Reason.MALFORMED_SIGNATURE
        header = header[len(policy.signature_prefix) :]
    given = header.lower()
    if not _HEX64.fullmatch(given):
        return Reason.MALFORMED_SIGNATURE
    timestamp: int | None = None
    if policy.timestamp_header:
        raw_ts = headers.get(policy.timestamp_header, "").strip()
        if not raw_ts:
            return Reason.MISSING_TIMESTAMP
        if not raw_ts.isdigit() or len(raw_ts) > 12:
            return Reason.MALFORMED_TIMESTAMP
        timestamp = int(raw_ts)
    # Every secret is compared (no early exit) so timing says nothing about which one matched.
    matches = [hmac.compare_digest(sign(secret, body, timestamp), given) for secret in policy.secrets]
    if not any(matches):
        return Reason.BAD_SIGNATURE
    if timestamp is not None:
        if timestamp < now - policy.max_age_s:
            return Reason.STALE_TIMESTAMP
        if timestamp > now + policy.max_age_s:
            return Reason.FUTURE_TIMESTAMP
    return None


def _token(policy: ProviderPolicy, request: InboundRequest) -> str | None:
    return request.query.get(policy.token_query_param) or request.headers.get(policy.token_header) or None


def verify(
    policy: ProviderPolicy,
    request: InboundRequest,
    *,
    now: float | None = None,
    tokens: TokenStore | None = None,
) -> Verdict:
    """Every check of the policy, in order; the first failure decides the answer."""
    client = client_address(request.peer, request.headers.get("x-forwarded-for"), policy.trusted_proxies)
    refused = precheck_client(policy, request.headers, client)
    if refused is not None:
        return refused
    return verify_body(policy, request, client, now=now, tokens=tokens)


def verify_body(
    policy: ProviderPolicy,
    request: InboundRequest,
    client: str | None,
    *,
    now: float | None = None,
    tokens: TokenStore | None = None,
) -> Verdict:
    """The checks after `precheck_client` passed, for the ingress, which runs that before reading the
    body (`verify` is the two together): size, signature and timestamp, JSON, event ids and types, token."""
    if len(request.body) > policy.max_body_bytes:
        return Verdict.refuse(Reason.BODY_TOO_LARGE, client)
    now = time.time() if now is None else now
    bad = _check_signature(policy, request.body, request.headers, now)
    if bad is not None:
        return Verdict.refuse(bad, client)
    try:
        # orjson: strict RFC 8259 (invalid UTF-8, NaN and out-of-range integers are malformed), and fast.
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return Verdict.refuse(Reason.MALFORMED_JSON, client)
    try:
        items = policy.extract_events(payload, request.headers)
    except EventRefused as refusal:
        return Verdict.refuse(refusal.reason, client)
    if not items or any(item.event_type not in policy.event_types for item in items):
        return Verdict.refuse(Reason.UNKNOWN_EVENT_TYPE, client)
    if policy.token_required:
        token = _token(policy, request)
        if token is None:
            return Verdict.refuse(Reason.MISSING_TOKEN, client)
        if tokens is None:
            raise ValueError(f"policy {policy.name!r} requires one-time tokens but no token store was given")
        token_refusal = tokens.consume(policy.name, token, datetime.fromtimestamp(now, UTC))
        if token_refusal is not None:
            return Verdict.refuse(token_refusal, client)
    return Verdict(ok=True, reason=Reason.OK, status=200, client_addr=client, items=tuple(items))


def verify_subscription(expected_token: str, params: Mapping[str, str]) -> Verdict:
    """Meta's GET handshake: mode `subscribe` and our verify token; fails closed without a token."""
    given = params.get("hub.verify_token", "")
    challenge = params.get("hub.challenge", "")
    if (
        not expected_token
        or params.get("hub.mode") != "subscribe"
        or not challenge
        or len(challenge) > 256
        or not hmac.compare_digest(given.encode(), expected_token.encode())
    ):
        return Verdict.refuse(Reason.BAD_VERIFY_TOKEN, None)
    return Verdict(ok=True, reason=Reason.OK, status=200)


# --- providers -------------------------------------------------------------------------------

RAZORPAY_EVENT_TYPES = frozenset(
    {"payment.authorized", "payment.captured", "payment.failed", "order.paid", "refund.created", "refund.processed", "refund.failed"}
)
WHATSAPP_STATUSES = ("sent", "delivered", "read", "failed")
WHATSAPP_EVENT_TYPES = frozenset({"message", "errors", *(f"status.{s}" for s in WHATSAPP_STATUSES)})
_MAX_EVENT_ID = 255


def _event_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_EVENT_ID - 40:
        raise EventRefused(Reason.MISSING_EVENT_ID)
    return value.strip()


def razorpay_events(payload: Any, headers: Mapping[str, str]) -> list[InboxItem]:
    """One item per delivery, keyed on `x-razorpay-event-id` (unchanged across Razorpay's retries)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    return [InboxItem(event_id=_event_id(headers.get("x-razorpay-event-id")), event_type=payload["event"])]


def whatsapp_events(payload: Any, headers: Mapping[str, str]) -> list[InboxItem]:
    """One item per message id and per (message id, status) in the delivery; Meta batches several."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    items: dict[str, InboxItem] = {}
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
            if change.get("field") != "messages":
                # Another subscribed field: named so that the event-type check refuses it by name.
                items[f"field:{change.get('field')}"] = InboxItem(f"field:{change.get('field')}", f"field.{change.get('field')}")
                continue
            value = change["value"]
            for message in value.get("messages") or []:
                key = f"message:{_event_id(message.get('id') if isinstance(message, dict) else None)}"
                items[key] = InboxItem(key, "message")
            for status in value.get("statuses") or []:
                if not isinstance(status, dict):
                    raise EventRefused(Reason.MISSING_EVENT_ID)
                wamid = _event_id(status.get("id"))
                state = str(status.get("status"))
                key = f"status:{wamid}:{state}"
                items[key] = InboxItem(key, f"status.{state}")
            if value.get("errors") and not value.get("messages") and not value.get("statuses"):
                # Account-level errors carry no id of their own: the digest of what they say is the key.
                digest = hashlib.sha256(json.dumps(value["errors"], sort_keys=True).encode()).hexdigest()[:40]
                key = f"errors:{digest}"
                items[key] = InboxItem(key, "errors")
    return list(items.values())


def _secrets(value: Any) -> tuple[bytes, ...]:
    values = split_list(value)
    for secret in values:
        register_secret(secret)
    return tuple(v.encode() for v in values)


def policies_from_settings(settings: HubSettings) -> dict[str, ProviderPolicy]:
    """The ingress's policies as configured (secrets are registered for redaction on the way)."""
    trusted = parse_networks(split_list(settings.webhook_trusted_proxies))
    token_providers = set(split_list(settings.webhook_one_time_token_providers))
    common: dict[str, Any] = {
        "max_age_s": settings.webhook_max_age_s,
        "max_body_bytes": settings.webhook_max_body_bytes,
        "trusted_proxies": trusted,
    }
    register_secret(settings.whatsapp_verify_token.get_secret_value())
    return {
        "razorpay": ProviderPolicy(
            name="razorpay",
            secrets=_secrets(settings.razorpay_webhook_secrets),
            signature_header="x-razorpay-signature",
            extract_events=razorpay_events,
            event_types=RAZORPAY_EVENT_TYPES,
            allowed_networks=parse_networks(split_list(settings.razorpay_webhook_allowed_ips)),
            token_required="razorpay" in token_providers,
            **common,
        ),
        "whatsapp": ProviderPolicy(
            name="whatsapp",
            secrets=_secrets(settings.whatsapp_app_secrets),
            signature_header="x-hub-signature-256",
            signature_prefix="sha256=",
            extract_events=whatsapp_events,
            event_types=WHATSAPP_EVENT_TYPES,
            allowed_networks=parse_networks(split_list(settings.whatsapp_webhook_allowed_ips)),
            token_required="whatsapp" in token_providers,
            **common,
        ),
    }
