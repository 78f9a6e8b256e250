"""Webhook verification: the one framework-free component every ingress endpoint calls.

`verify()` runs every check of a provider's policy in a fixed order and answers with a `Verdict`:
`ok`, a machine reason and the HTTP status to answer. Cheap checks on headers and the peer come
first (they also run before the body is read, see `precheck()`); the signature is checked before
anything in the body is believed; then the payload's shape, its own time (freshness) and, last, the
presence of a one-time token, which the inbox spends in the transaction that stores the delivery
(`hub.ingress.inbox.DbTokenStore`), so a forged or unstorable request never burns a genuine token.

Everything a delivery is identified by comes from the signed bytes: Razorpay `<event>:<entity id>:
<created_at>`, WhatsApp `message:<wamid>` / `status:<wamid>:<status>`. Unsigned headers (Razorpay's
`x-razorpay-event-id`) and the query string never decide what is stored (docs/webhooks.md).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from connectors.core.redact import register_secret
from hub.core.settings import HubSettings, integration_config, split_list

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
    MALFORMED_PAYLOAD = "malformed_payload"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_EVENT_ID = "missing_event_id"
    MISSING_EVENT_TIME = "missing_event_time"
    STALE_EVENT = "stale_event"
    FUTURE_EVENT = "future_event"
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
    Reason.MALFORMED_PAYLOAD: 400,
    Reason.UNKNOWN_EVENT_TYPE: 422,
    Reason.MISSING_EVENT_ID: 400,
    Reason.MISSING_EVENT_TIME: 400,
    # Signed, well-formed, but outside the freshness window: refused like a bad timestamp (the provider
    # retries a genuine one; reconciliation recovers what no retry brings back).
    Reason.STALE_EVENT: 422,
    Reason.FUTURE_EVENT: 422,
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
    """One thing a delivery carries, with the key it is de-duplicated on (built from signed bytes only)."""

    event_id: str
    event_type: str
    event_at: float | None = None  # the payload's own unix time, when it has one


@dataclass(frozen=True)
class Verdict:
    """The outcome of verification: what to answer and, when accepted, what to store."""

    ok: bool
    reason: Reason
    status: int
    client_addr: str | None = None
    items: tuple[InboxItem, ...] = ()
    body_sha256: str = ""
    token: str | None = None  # the one-time token to spend with the insert (policies that require one)

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
    # Providers that sign only the body (Razorpay, Meta) resend the same bytes for hours or days: their
    # payload time is refused when ahead of our clock by more than the skew, or older than the horizon.
    max_future_skew_s: int = 300
    max_event_age_s: int | None = None
    provider_event_id_header: str | None = None  # kept as information with the event, never as its key
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


def check_address(policy: ProviderPolicy, client: str | None) -> Verdict | None:
    """The IP allowlist alone (every request of the provider, the GET handshake included); None when allowed."""
    if policy.allowed_networks:
        client_ip = _parse_ip(client) if client else None
        if client_ip is None or not _in_any(client_ip, policy.allowed_networks):
            return Verdict.refuse(Reason.IP_NOT_ALLOWED, client)
    return None


def precheck_client(policy: ProviderPolicy, headers: Mapping[str, str], client: str | None) -> Verdict | None:
    """`precheck` for a client address already worked out with `client_address`."""
    outside = check_address(policy, client)
    if outside is not None:
        return outside
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


def verify(policy: ProviderPolicy, request: InboundRequest, *, now: float | None = None) -> Verdict:
    """Every check of the policy, in order; the first failure decides the answer."""
    client = client_address(request.peer, request.headers.get("x-forwarded-for"), policy.trusted_proxies)
    refused = precheck_client(policy, request.headers, client)
    if refused is not None:
        return refused
    return verify_body(policy, request, client, now=now)


def check_freshness(policy: ProviderPolicy, items: Iterable[InboxItem], now: float) -> Reason | None:
    """The payload's own time against our clock: never ahead by more than the skew, never past the horizon."""
    for item in items:
        if item.event_at is None:
            continue
        if item.event_at > now + policy.max_future_skew_s:
            return Reason.FUTURE_EVENT
        if policy.max_event_age_s is not None and item.event_at < now - policy.max_event_age_s:
            return Reason.STALE_EVENT
    return None


def verify_body(policy: ProviderPolicy, request: InboundRequest, client: str | None, *, now: float | None = None) -> Verdict:
    """The checks after `precheck_client` passed, for the ingress, which runs that before reading the
    body (`verify` is the two together): size, signature and timestamp, JSON, event ids, types and
    times, token presence. The token itself is spent by the inbox, in the transaction that stores."""
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
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError, OverflowError):
        # An extractor checks every shape it reads; this net turns a shape it missed into a 400, never a 500.
        return Verdict.refuse(Reason.MALFORMED_PAYLOAD, client)
    if not items or any(item.event_type not in policy.event_types for item in items):
        return Verdict.refuse(Reason.UNKNOWN_EVENT_TYPE, client)
    stale = check_freshness(policy, items, now)
    if stale is not None:
        return Verdict.refuse(stale, client)
    token: str | None = None
    if policy.token_required:
        token = _token(policy, request)
        if token is None or len(token) > 512:
            return Verdict.refuse(Reason.MISSING_TOKEN, client)
    return Verdict(
        ok=True, reason=Reason.OK, status=200, client_addr=client, items=tuple(items),
        body_sha256=hashlib.sha256(request.body).hexdigest(), token=token,
    )


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
_RAZORPAY_ID = re.compile(r"[A-Za-z0-9_]{1,32}")
_RAZORPAY_ENTITIES = ("refund", "payment", "order")
_MAX_UNIX = 10**11  # year 5138: anything larger is not a unix time in seconds


def _event_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_EVENT_ID - 40:
        raise EventRefused(Reason.MISSING_EVENT_ID)
    return value.strip()


def _unix_time(value: Any, *, digits_string: bool = False) -> float:
    """A unix time in seconds, as an integer (Razorpay) or a string of digits (WhatsApp, `digits_string`);
    anything else is refused."""
    if digits_string and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventRefused(Reason.MISSING_EVENT_TIME)
    if not 0 < value < _MAX_UNIX:
        raise EventRefused(Reason.MISSING_EVENT_TIME)
    return float(value)


def razorpay_entity_id(payload: Mapping[str, Any]) -> str:
    """The id of the entity a Razorpay event is about: the first of `contains` (refund, payment, order)."""
    inner = payload.get("payload")
    if not isinstance(inner, dict):
        raise EventRefused(Reason.MALFORMED_PAYLOAD)
    contains = payload.get("contains")
    names = [c for c in contains if isinstance(c, str)] if isinstance(contains, list) else []
    for name in [*names, *_RAZORPAY_ENTITIES]:
        wrapper = inner.get(name)
        entity = wrapper.get("entity") if isinstance(wrapper, dict) else None
        if isinstance(entity, dict):
            entity_id = entity.get("id")
            if not isinstance(entity_id, str) or not _RAZORPAY_ID.fullmatch(entity_id):
                raise EventRefused(Reason.MISSING_EVENT_ID)
            return entity_id
    raise EventRefused(Reason.MISSING_EVENT_ID)


def razorpay_events(payload: Any, headers: Mapping[str, str]) -> list[InboxItem]:
    """One item per delivery, keyed on what the signature covers: `<event>:<entity id>:<created_at>`.

    Razorpay's `x-razorpay-event-id` is not signed: a captured delivery resent with a new id must land
    on the same key, so the header never takes part in it (the ingress keeps it as information)."""
    if not isinstance(payload, dict):
        raise EventRefused(Reason.MALFORMED_PAYLOAD)
    event = payload.get("event")
    if not isinstance(event, str) or not event or len(event) > 64:
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    if event not in RAZORPAY_EVENT_TYPES:
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    created_at = _unix_time(payload.get("created_at"))
    entity_id = razorpay_entity_id(payload)
    return [InboxItem(event_id=f"{event}:{entity_id}:{int(created_at)}", event_type=event, event_at=created_at)]


def _list_or_absent(value: Mapping[str, Any], key: str) -> list[Any]:
    """`value[key]` when it is a list, [] when absent or null; any other shape is refused."""
    found = value.get(key)
    if found is None:
        return []
    if not isinstance(found, list):
        raise EventRefused(Reason.MALFORMED_PAYLOAD)
    return found


def whatsapp_events(payload: Any, headers: Mapping[str, str]) -> list[InboxItem]:
    """One item per message id and per (message id, status) in the delivery; Meta batches several."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise EventRefused(Reason.MALFORMED_PAYLOAD)
    items: dict[str, InboxItem] = {}
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise EventRefused(Reason.MALFORMED_PAYLOAD)
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                raise EventRefused(Reason.MALFORMED_PAYLOAD)
            field_name = change.get("field")
            if not isinstance(field_name, str) or not field_name or len(field_name) > 64:
                raise EventRefused(Reason.MALFORMED_PAYLOAD)
            if field_name != "messages":
                # Another subscribed field: named so that the event-type check refuses it by name.
                items[f"field:{field_name}"] = InboxItem(f"field:{field_name}", f"field.{field_name}")
                continue
            value = change["value"]
            messages = _list_or_absent(value, "messages")
            statuses = _list_or_absent(value, "statuses")
            errors = _list_or_absent(value, "errors")
            for message in messages:
                if not isinstance(message, dict):
                    raise EventRefused(Reason.MALFORMED_PAYLOAD)
                key = f"message:{_event_id(message.get('id'))}"
                items[key] = InboxItem(key, "message", _unix_time(message.get("timestamp"), digits_string=True))
            for status in statuses:
                if not isinstance(status, dict):
                    raise EventRefused(Reason.MALFORMED_PAYLOAD)
                wamid = _event_id(status.get("id"))
                state = status.get("status")
                if not isinstance(state, str) or state not in WHATSAPP_STATUSES:
                    raise EventRefused(Reason.UNKNOWN_EVENT_TYPE)
                key = f"status:{wamid}:{state}"
                items[key] = InboxItem(key, f"status.{state}", _unix_time(status.get("timestamp"), digits_string=True))
            if errors and not messages and not statuses:
                # Account-level errors carry no id and no time of their own: the digest of what they say
                # (sorted keys, so the same errors give the same key) is the key. orjson refuses nesting
                # deeper than 255 levels with an error, never a RecursionError.
                try:
                    canonical = orjson.dumps(errors, option=orjson.OPT_SORT_KEYS)
                except orjson.JSONEncodeError:
                    raise EventRefused(Reason.MALFORMED_PAYLOAD) from None
                key = f"errors:{hashlib.sha256(canonical).hexdigest()[:40]}"
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
        "max_future_skew_s": settings.webhook_max_future_skew_s,
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
            max_event_age_s=settings.razorpay_webhook_max_event_age_s,
            provider_event_id_header="x-razorpay-event-id",
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
            max_event_age_s=settings.whatsapp_webhook_max_event_age_s,
            allowed_networks=parse_networks(split_list(settings.whatsapp_webhook_allowed_ips)),
            token_required="whatsapp" in token_providers,
            **common,
        ),
    }


# Where each provider publishes the addresses its webhooks come from (docs/webhooks.md has the detail).
PUBLISHED_RANGES = {
    "razorpay": "the webhook IPs Razorpay publishes on razorpay.com/docs/security/whitelists (copy the current list)",
    "whatsapp": "the ranges of Meta's AS32934 (`whois -h whois.radb.net -- '-i origin AS32934' | grep ^route`)",
}
_ALLOWLIST_SETTING = {"razorpay": "RAZORPAY_WEBHOOK_ALLOWED_IPS", "whatsapp": "WHATSAPP_WEBHOOK_ALLOWED_IPS"}
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _talks_to_a_sandbox(provider: str) -> bool:
    """True when the provider's API base URL is on this machine (the sandbox stack, tests)."""
    try:
        base_url = integration_config(provider).base_url
    except (KeyError, ValueError, OSError):
        return False
    host = urlsplit(str(base_url)).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def allowlist_warnings(settings: HubSettings) -> list[str]:
    """Production configurations (a provider whose webhooks are accepted, whose API is not a local sandbox)
    that leave that provider's IP allowlist empty: any address on the internet may deliver."""
    allowlists = {"razorpay": settings.razorpay_webhook_allowed_ips, "whatsapp": settings.whatsapp_webhook_allowed_ips}
    secrets = {"razorpay": settings.razorpay_webhook_secrets, "whatsapp": settings.whatsapp_app_secrets}
    warnings: list[str] = []
    for provider, allowed in allowlists.items():
        if split_list(allowed) or not split_list(secrets[provider]) or _talks_to_a_sandbox(provider):
            continue
        warnings.append(
            f"{provider}: webhooks accepted from any address ({_ALLOWLIST_SETTING[provider]} is empty); "
            f"set it to {PUBLISHED_RANGES[provider]}"
        )
    return warnings
