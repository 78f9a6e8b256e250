"""Simulator of the WhatsApp Business Cloud API send subset the hub uses, with signed status webhooks.

API (``Authorization: Bearer <token>``, api-contracts section 5)::

    POST /v{NN}.0/{phone-number-id}/messages     send a text or template message
    GET  /v{NN}.0/{phone-number-id}              the phone number (verified_name, display_phone_number, ...)

A success answers ``{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages":
[{"id": "wamid..."}]}`` (templates add ``"message_status": "accepted"``). Every error uses Meta's
envelope ``{"error": {"message": "(#code) ...", "type", "code", "error_data": {"messaging_product",
"details"}, "fbtrace_id"}}``:

- 190 (401) bad or expired token; 100 (400) invalid parameter or unknown phone number id;
- 131008 / 131009 (400) missing or invalid template parameter, 132000 / 132001 template errors;
- 131047 (400) free-form text outside the 24-hour window (the number never wrote in, or > 24 h ago);
- 131056 (400) pair rate limit: a second message to one recipient within ``pair_interval_s`` (6 s);
- 130429 (400) throughput: more than ``throughput_per_s`` sends in one second (80 by default).

The shared ``rate_limit`` fault answers code 4 with 429, ``error_5xx`` code 2 (503) or 131000 (500),
``expire_tokens`` code 190 with 401.

Each accepted message progresses through ``auto_statuses`` (sent, delivered, read by default). Each
status is delivered as its own webhook (``statuses[]`` in Meta's envelope) signed with
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`` to the configured URL from a
background thread, retrying non-2xx answers with a bounded backoff. Switches duplicate every delivery
or reverse one message's statuses. Control routes (``/_sandbox/whatsapp/...``) simulate an inbound
customer message (opening the 24-hour window and delivering a ``messages[]`` webhook) and push a chosen
status (e.g. ``failed`` with an error) for a sent message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.core import (
    FaultSwitches,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    WebhookDeliveryWorker,
    control_json_body,
    serve_main,
    server_parser,
)

logger = logging.getLogger(__name__)

SEND_PATH = re.compile(r"^/v(\d+)\.0/([^/]+)/messages$")
PHONE_PATH = re.compile(r"^/v(\d+)\.0/([^/]+)$")
WINDOW_S = 24 * 3600
MAX_TEXT = 4096
STATUSES = ("sent", "delivered", "read", "failed")
# Templates approved for the sandbox's WABA: name -> language -> number of body parameters.
DEFAULT_TEMPLATES: dict[str, dict[str, int]] = {
    "hello_world": {"en_US": 0},
    "order_update": {"en_US": 1, "hi": 1},
    "payment_reminder": {"en_US": 2},
}


def signature_header(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the raw body with the App Secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def new_wamid() -> str:
    """A wamid-shaped id: ``wamid.`` + base64 of random bytes (Meta's ids are opaque base64)."""
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode().rstrip("=")


def error_response(status: int, code: int, message: str, details: str, *, type_: str = "OAuthException") -> SandboxResponse:
    """Meta's Graph API error envelope (section 5); no ``error_subcode`` (deprecated from v16.0)."""
    error = {
        "message": f"(#{code}) {message}",
        "type": type_,
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "A" + secrets.token_hex(11),
    }
    return SandboxResponse.json(status, {"error": error})


class MetaError(Exception):
    """An API error answered with Meta's envelope."""

    def __init__(self, code: int, message: str, details: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status

    def response(self) -> SandboxResponse:
        return error_response(self.status, self.code, self.message, self.details)


def _invalid(details: str) -> MetaError:
    return MetaError(100, "Invalid parameter", details)


@dataclass
class WebhookSwitches:
    """How the sandbox delivers webhooks; changed with ``POST /_sandbox/whatsapp/webhooks``."""

    url: str | None = None
    duplicate: bool = False  # deliver every webhook twice (same body), as Meta may
    out_of_order: bool = False  # deliver one message's statuses newest first (read before delivered)
    auto_statuses: tuple[str, ...] = ("sent", "delivered", "read")  # what each accepted message goes through
    max_attempts: int = 5  # bounded: Meta's ~7 day schedule is compressed for tests and drills
    backoff_s: float = 0.05  # first retry delay; doubled per attempt

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "duplicate": self.duplicate,
            "out_of_order": self.out_of_order,
            "auto_statuses": list(self.auto_statuses),
            "max_attempts": self.max_attempts,
            "backoff_s": self.backoff_s,
        }


@dataclass
class Delivery:
    """One webhook and what happened to it (``GET /_sandbox/whatsapp/deliveries``)."""

    event_id: str  # the id the hub's inbox keys on: message:<wamid> or status:<wamid>:<status>
    kind: str  # message | status.<status>
    body: bytes
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    state: str = "pending"  # pending | delivered | failed

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "kind": self.kind, "attempts": self.attempts, "statuses": list(self.statuses), "state": self.state}


class WhatsAppSandbox(WebhookDeliveryWorker, Simulator):
    _worker_name = "whatsapp-webhooks"

    """Sent messages in memory, the real request/response shapes and errors, and status webhooks."""

    name = "whatsapp"

    def __init__(
        self,
        access_token: str = "sandbox-whatsapp-token",
        phone_number_id: str = "100000000000001",
        app_secret: str = "sandbox-app-secret",
        *,
        webhook_url: str | None = None,
        webhook_transport: httpx.BaseTransport | None = None,
        waba_id: str = "200000000000002",
        display_phone_number: str = "919800000001",
        templates: Mapping[str, Mapping[str, int]] | None = None,
        pair_interval_s: float = 6.0,
        throughput_per_s: int = 80,
        clock: Callable[[], float] = time.time,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(faults=faults)
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.waba_id = waba_id
        self.display_phone_number = display_phone_number
        self.templates = {name: dict(langs) for name, langs in (templates or DEFAULT_TEMPLATES).items()}
        self.pair_interval_s = pair_interval_s
        self.throughput_per_s = throughput_per_s
        self.webhooks = WebhookSwitches(url=webhook_url)
        self._clock = clock
        self.messages: dict[str, dict[str, Any]] = {}  # wamid -> what was sent and its status
        self.last_inbound: dict[str, float] = {}  # wa_id -> when the customer last wrote
        self._last_sent: dict[str, float] = {}  # wa_id -> when we last sent to them
        self._recent: deque[float] = deque()  # send times inside the last second
        self.deliveries: list[Delivery] = []
        self._init_delivery(webhook_transport)

    def now(self) -> float:
        return self._clock()

    # -- API -----------------------------------------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        return error_response(401, 190, "Error validating access token: Session has expired", "The access token has expired or is invalid")

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        # Meta sends no Retry-After: the switch's value is ignored on purpose.
        return error_response(429, 4, "Application request limit reached", "Too many calls from this app")

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        if status == 503:
            return error_response(503, 2, "Service temporarily unavailable", "Temporary service outage, retry later")
        return error_response(status, 131000, "Something went wrong", "Message failed to send because of an unknown error")

    def _authorized(self, req: SandboxRequest) -> bool:
        scheme, _, token = (req.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.access_token.encode())

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        phone = PHONE_PATH.match(req.path.rstrip("/"))
        if phone is not None and req.method == "GET":
            if not self._authorized(req):
                return self.unauthorized_response(req)
            if phone.group(2) != self.phone_number_id:
                return error_response(400, 100, "Unsupported get request", f"Object with ID '{phone.group(2)}' does not exist", type_="GraphMethodException")
            return SandboxResponse.json(200, {
                "verified_name": "DryMix Sandbox", "display_phone_number": self.display_phone_number,
                "id": self.phone_number_id, "quality_rating": "GREEN",
            })
        match = SEND_PATH.match(req.path.rstrip("/"))
        if match is None:
            return error_response(400, 100, "Unknown path components", f"Unknown path {req.path}", type_="OAuthException")
        if not self._authorized(req):
            return self.unauthorized_response(req)
        if req.method != "POST":
            return error_response(400, 100, "Unsupported get request", "Only POST is supported on /messages", type_="GraphMethodException")
        if match.group(2) != self.phone_number_id:
            return error_response(
                400, 100, "Unsupported post request",
                f"Object with ID '{match.group(2)}' does not exist, cannot be loaded due to missing permissions, or does not support this operation",
                type_="GraphMethodException",
            )
        try:
            return SandboxResponse.json(200, self.send(self._body(req)))
        except MetaError as error:
            return error.response()

    @staticmethod
    def _body(req: SandboxRequest) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            raise _invalid("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object")
        return body

    def _check_template(self, template: Any) -> tuple[str, str]:
        if not isinstance(template, dict):
            raise MetaError(131008, "Required parameter is missing", "Parameter 'template' is required for type template")
        name = template.get("name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not name:
            raise MetaError(131008, "Required parameter is missing", "template.name is required")
        if not isinstance(code, str) or not code:
            raise MetaError(131008, "Required parameter is missing", "template.language.code is required")
        langs = self.templates.get(name)
        if langs is None or code not in langs:
            raise MetaError(132001, "Template name does not exist in the translation", f"template name ({name}) does not exist in {code}")
        components = template.get("components") or []
        if not isinstance(components, list):
            raise MetaError(131009, "Parameter value is not valid", "template.components must be an array")
        body_params = 0
        for component in components:
            if not isinstance(component, dict) or not isinstance(component.get("parameters", []), list):
                raise MetaError(131009, "Parameter value is not valid", "each component needs a type and a parameters array")
            if component.get("type") == "body":
                for param in component.get("parameters", []):
                    if not isinstance(param, dict) or param.get("type") not in ("text", "currency", "date_time", "image", "document"):
                        raise MetaError(131009, "Parameter value is not valid", "body parameter type is not valid")
                    if param["type"] == "text" and (not isinstance(param.get("text"), str) or not param["text"]):
                        raise MetaError(131008, "Required parameter is missing", "text parameter needs a non-empty text")
                    body_params += 1
        if body_params != langs[code]:
            raise MetaError(
                132000, "Number of parameters does not match the expected number of params",
                f"body: number of localizable_params ({body_params}) does not match the expected number of params ({langs[code]})",
            )
        return name, code

    def send(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate like the Cloud API, apply window, pair and throughput limits, store, queue statuses."""
        if body.get("messaging_product") != "whatsapp":
            raise _invalid("The parameter messaging_product is required and must be 'whatsapp'")
        to = body.get("to")
        if not isinstance(to, str) or not to.strip():
            raise _invalid("The parameter to is required")
        wa_id = re.sub(r"[\s+\-()]", "", to)
        if not re.fullmatch(r"\d{8,15}", wa_id):
            raise _invalid(f"to ({to}) is not a valid phone number")
        kind = body.get("type", "text")
        text: str | None = None
        template_name: str | None = None
        if kind == "text":
            content = body.get("text")
            text = content.get("body") if isinstance(content, dict) else None
            if not isinstance(text, str) or not text:
                raise _invalid("The parameter text['body'] is required")
            if len(text) > MAX_TEXT:
                raise _invalid(f"text['body'] may be at most {MAX_TEXT} characters")
        elif kind == "template":
            template_name, _ = self._check_template(body.get("template"))
        else:
            raise _invalid(f"Param type ({kind}) must be one of text, template")
        now = self.now()
        if kind == "text":
            wrote = self.last_inbound.get(wa_id)
            if wrote is None or now - wrote > WINDOW_S:
                raise MetaError(
                    131047, "Re-engagement message",
                    "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
                )
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.throughput_per_s:
            raise MetaError(
                130429, "Rate limit hit",
                "Message failed to send because there were too many messages sent from this phone number in a short period of time",
            )
        last = self._last_sent.get(wa_id)
        if last is not None and now - last < self.pair_interval_s:
            raise MetaError(
                131056, "(Business Account, Consumer Account) pair rate limit hit",
                "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time",
            )
        self._recent.append(now)
        self._last_sent[wa_id] = now
        wamid = new_wamid()
        self.messages[wamid] = {
            "id": wamid, "to": wa_id, "type": kind, "text": text, "template": template_name,
            "status": "accepted", "statuses": [], "created_at": now,
        }
        self._enqueue([self._status_delivery(wamid, status, now) for status in self.webhooks.auto_statuses])
        answer: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": wamid}],
        }
        if kind == "template":
            answer["messages"][0]["message_status"] = "accepted"
        return answer

    # -- webhooks --------------------------------------------------------------------------------

    def _envelope(self, value: dict[str, Any]) -> bytes:
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": self.display_phone_number, "phone_number_id": self.phone_number_id},
            **value,
        }
        payload = {"object": "whatsapp_business_account", "entry": [{"id": self.waba_id, "changes": [{"field": "messages", "value": value}]}]}
        # Serialised once: these exact bytes are signed and sent on every attempt.
        return json.dumps(payload, separators=(",", ":")).encode()

    def _status_delivery(self, wamid: str, status: str, now: float, error: Mapping[str, Any] | None = None) -> Delivery:
        message = self.messages[wamid]
        entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(now)), "recipient_id": message["to"]}
        if status != "failed":
            category = "utility" if message["type"] == "template" else "service"
            entry["conversation"] = {"id": secrets.token_hex(16), "expiration_timestamp": str(int(now) + WINDOW_S), "origin": {"type": category}}
            entry["pricing"] = {"billable": category != "service", "pricing_model": "PMP", "category": category}
        else:
            entry["errors"] = [dict(error or {
                "code": 131026, "title": "Message undeliverable",
                "message": "Message undeliverable", "error_data": {"details": "Message could not be delivered"},
            })]
        message["statuses"].append(status)
        message["status"] = status
        delivery = Delivery(event_id=f"status:{wamid}:{status}", kind=f"status.{status}", body=self._envelope({"statuses": [entry]}))
        self.deliveries.append(delivery)
        return delivery

    def push_status(self, wamid: str, status: str, error: Mapping[str, Any] | None = None) -> Delivery:
        """Deliver one status of a sent message now (e.g. ``failed`` with an error object)."""
        if status not in STATUSES:
            raise _invalid(f"status must be one of {', '.join(STATUSES)}")
        with self.lock:
            if wamid not in self.messages:
                raise _invalid(f"unknown message {wamid}")
            delivery = self._status_delivery(wamid, status, self.now(), error)
        self._enqueue([delivery])
        return delivery

    def inbound(self, sender: str, text: str, name: str = "Customer") -> dict[str, Any]:
        """A customer writes in: opens the 24-hour window and delivers a ``messages[]`` webhook."""
        wa_id = re.sub(r"[\s+\-()]", "", sender)
        if not re.fullmatch(r"\d{8,15}", wa_id) or not text:
            raise _invalid("from must be a phone number and text non-empty")
        with self.lock:
            now = self.now()
            self.last_inbound[wa_id] = now
            wamid = new_wamid()
            value = {
                "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": wamid, "timestamp": str(int(now)), "type": "text", "text": {"body": text}}],
            }
            delivery = Delivery(event_id=f"message:{wamid}", kind="message", body=self._envelope(value))
            self.deliveries.append(delivery)
        self._enqueue([delivery])
        return {"id": wamid, "wa_id": wa_id, "event_id": delivery.event_id}

    def _enqueue(self, deliveries: list[Delivery]) -> None:
        with self.lock:
            switches = self._switches()
        kept = list(deliveries)
        if switches.out_of_order:
            kept.reverse()
        if switches.duplicate:
            kept = [d for d in kept for _ in (0, 1)]
        if not kept:
            return
        self._queue_batch(kept)

    def _switches(self) -> WebhookSwitches:
        return WebhookSwitches(**{**self.webhooks.to_dict(), "auto_statuses": tuple(self.webhooks.auto_statuses)})

    def _deliver(self, delivery: Delivery) -> None:
        """POST one webhook, retrying non-2xx and transport errors with a doubling, bounded backoff."""
        with self.lock:
            switches = self._switches()
        headers = {
            "content-type": "application/json",
            "x-hub-signature-256": signature_header(self.app_secret, delivery.body),
            "user-agent": "facebookexternalua",
        }
        if self._post_with_retries(delivery, switches.url, headers, switches.max_attempts, switches.backoff_s):
            return
        if switches.url:
            logger.warning("whatsapp sandbox: webhook %s not delivered after %d attempts", delivery.event_id, delivery.attempts)

    # -- control routes -----------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        return [
            'POST /_sandbox/whatsapp/inbound {"from": phone, "text": str, "name": optional}',
            'POST /_sandbox/whatsapp/status {"wamid", "status": "sent" | "delivered" | "read" | "failed", "error": optional}',
            'POST /_sandbox/whatsapp/webhooks {"url", "duplicate", "out_of_order", "auto_statuses", "max_attempts", "backoff_s"}',
            "GET /_sandbox/whatsapp/webhooks",
            "GET /_sandbox/whatsapp/messages",
            "GET /_sandbox/whatsapp/deliveries",
            'POST /_sandbox/whatsapp/deliveries/wait {"timeout_s": seconds}',
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        route = req.path.rstrip("/")
        prefix = "/_sandbox/whatsapp/"
        if not route.startswith(prefix):
            return None
        action = route[len(prefix) :]
        if req.method == "GET" and action == "webhooks":
            return SandboxResponse.json(200, self.webhooks.to_dict())
        if req.method == "GET" and action == "messages":
            return SandboxResponse.json(200, {"messages": list(self.messages.values())})
        if req.method == "GET" and action == "deliveries":
            return SandboxResponse.json(200, {"deliveries": [d.to_dict() for d in self.deliveries]})
        if req.method != "POST" or action not in ("inbound", "status", "webhooks", "deliveries/wait"):
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if action == "inbound":
                return SandboxResponse.json(200, self.inbound(str(body.get("from", "")), str(body.get("text", "")), str(body.get("name", "Customer"))))
            if action == "status":
                err = body.get("error")
                delivery = self.push_status(str(body.get("wamid", "")), str(body.get("status", "")), err if isinstance(err, dict) else None)
                return SandboxResponse.json(200, delivery.to_dict())
        except MetaError as exc:
            return exc.response()
        if action == "deliveries/wait":
            # Waiting must not hold the simulator lock the worker needs.
            self.lock.release()
            try:
                done = self.wait_for_deliveries(float(body.get("timeout_s", 10.0)))
            finally:
                self.lock.acquire()
            return SandboxResponse.json(200 if done else 504, {"done": done})
        return self._set_webhooks(body)

    def _set_webhooks(self, body: Mapping[str, Any]) -> SandboxResponse:
        allowed = set(WebhookSwitches().to_dict())
        unknown = set(body) - allowed
        if unknown:
            return SandboxResponse.json(422, {"error": f"unknown webhook switches: {', '.join(sorted(unknown))}"})
        merged = {**self.webhooks.to_dict(), **body}
        try:
            statuses = tuple(str(s) for s in merged["auto_statuses"])
            switches = WebhookSwitches(
                url=None if merged["url"] in (None, "") else str(merged["url"]),
                duplicate=bool(merged["duplicate"]),
                out_of_order=bool(merged["out_of_order"]),
                auto_statuses=statuses,
                max_attempts=int(merged["max_attempts"]),
                backoff_s=float(merged["backoff_s"]),
            )
        except (TypeError, ValueError) as exc:
            return SandboxResponse.json(422, {"error": f"invalid webhook switches: {exc}"})
        if any(s not in STATUSES for s in statuses) or not 1 <= switches.max_attempts <= 20 or not 0 <= switches.backoff_s <= 60:
            return SandboxResponse.json(422, {"error": f"auto_statuses from {STATUSES}, 1 <= max_attempts <= 20, 0 <= backoff_s <= 60"})
        self.webhooks = switches
        return SandboxResponse.json(200, switches.to_dict())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox whatsapp [options]``: serve the WhatsApp sandbox."""
    parser = server_parser("whatsapp", "Serve the WhatsApp Cloud API sandbox.", 8403)
    parser.add_argument("--webhook-url", default=None, help="where signed status webhooks are delivered")
    return serve_main(parser, argv, lambda args, faults: WhatsAppSandbox(webhook_url=args.webhook_url, faults=faults))

if __name__ == "__main__":
    sys.exit(main())
