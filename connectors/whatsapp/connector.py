"""WhatsApp Business Cloud API connector: send text and template messages, declared on the shared core.

Meta answers every error with `{"error": {"message", "type", "code", "error_data": {"details"}, ...}}`
and the HTTP status is not authoritative (throughput limits come back as 400), so the category is
decided by `code` (api-contracts section 5):

- 0, 190 -> AUTHENTICATION_FAILED; 10 and 200-299 (permissions) -> AUTHENTICATION_FAILED
- 4, 80007, 130429, 131048, 131056 -> RATE_LIMIT_EXCEEDED (transient: retried with backoff)
- 2, 131000 -> SERVER_ERROR (transient)
- 100, 131008, 131009, 131047, 132000-132999 -> INVALID_REQUEST (131047 with a hint to send a template)
- anything else -> the category of the HTTP status

Sends go through the client's rate budget (`whatsapp.rate_budget_per_s`, 20/s by default), so a burst
queues instead of running into 130429.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connectors.core.base import Connector, Stream
from connectors.core.client import IntegrationClient
from connectors.core.errors import (
    ErrorCategory,
    IntegrationError,
    InvalidRequest,
    make_error,
)

log = logging.getLogger(__name__)

MAX_TEXT = 4096
AUTH_CODES = frozenset({0, 10, 190})
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131048, 131056})
SERVER_CODES = frozenset({2, 131000})
INVALID_CODES = frozenset({100, 131008, 131009, 131047})
TEMPLATE_HINT = "outside the 24-hour customer service window only templates can be sent: send an approved template instead"


def parse_meta_error(body: Any) -> tuple[str | None, str | None]:
    """Meta's envelope -> (code, "message: details")."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        code = str(error["code"]) if error.get("code") is not None else None
        message = str(error.get("message") or "") or None
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, Mapping) else None
        if details:
            message = f"{message}: {details}" if message else str(details)
        return code, message
    return None, None


def category_for_code(code: int) -> ErrorCategory | None:
    """The taxonomy category of a Meta error code; None when the code says nothing more than the status."""
    if code in AUTH_CODES or 200 <= code <= 299:
        return ErrorCategory.AUTHENTICATION_FAILED
    if code in RATE_LIMIT_CODES:
        return ErrorCategory.RATE_LIMIT_EXCEEDED
    if code in SERVER_CODES:
        return ErrorCategory.SERVER_ERROR
    if code in INVALID_CODES or 132000 <= code <= 132999:
        return ErrorCategory.INVALID_REQUEST
    return None


def reclassify(error: IntegrationError) -> IntegrationError:
    """Re-categorise an error response by its Meta `code` (the status-based category stays otherwise)."""
    try:
        code = int(error.code) if error.code is not None else None
    except ValueError:
        return error
    category = category_for_code(code) if code is not None else None
    if category is None or (category == error.category and code != 131047):
        return error
    message = error.message
    if code == 131047:
        message = f"{message} ({TEMPLATE_HINT})"
    return make_error(
        category,
        message,
        code=error.code,
        status_code=error.status_code,
        retry_after_s=error.retry_after_s,
        request_data=error.request_data,
        response_data=error.response_data,
        integration=error.integration,
        operation=error.operation,
    )


class WhatsAppClient(IntegrationClient):
    """The shared client, with errors classified by Meta's `code` before the retry policy sees them."""

    def send_once(self, method: str, url: str, *, operation: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().send_once(method, url, operation=operation, **kwargs)
        except IntegrationError as error:
            if error.status_code is None:
                raise
            raise reclassify(error) from error


class WhatsAppConnector(Connector):
    """Send text and template messages from one business phone number."""

    integration = "whatsapp"

    def __init__(self, client: IntegrationClient, *, phone_number_id: str) -> None:
        super().__init__(client)
        if not phone_number_id:
            raise InvalidRequest("a phone number id is required", integration=self.integration)
        self.phone_number_id = phone_number_id

    def connect(self) -> None:
        """Read the phone number: proves reachability, the token and the phone number id."""
        self.client.get_json(quote(self.phone_number_id, safe=""), operation="test_connection")

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        raise InvalidRequest("the WhatsApp connector sends messages; it has no stream to read", integration=self.integration)

    def _send(self, body: dict[str, Any], operation: str) -> dict[str, Any]:
        response = self.client.request("POST", f"{quote(self.phone_number_id, safe='')}/messages", json=body, operation=operation)
        return dict(orjson.loads(response.content))

    def send_text(self, to: str, text: str, *, preview_url: bool = False, reply_to: str | None = None) -> dict[str, Any]:
        """A free-form text (only inside the 24-hour window; 131047 otherwise). Returns Meta's answer."""
        if not to or not text:
            raise InvalidRequest("to and text are required", integration=self.integration)
        if len(text) > MAX_TEXT:
            raise InvalidRequest(f"text is at most {MAX_TEXT} characters", integration=self.integration)
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": text, "preview_url": preview_url},
        }
        if reply_to:
            body["context"] = {"message_id": reply_to}
        return self._send(body, "send_text")

    def send_template(
        self,
        to: str,
        name: str,
        language: str = "en_US",
        *,
        body_params: Sequence[str] = (),
        components: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An approved template; `body_params` become text parameters of the body component, or pass
        `components` as Meta documents them. Returns Meta's answer."""
        if not to or not name or not language:
            raise InvalidRequest("to, template name and language are required", integration=self.integration)
        if components is None:
            components = [{"type": "body", "parameters": [{"type": "text", "text": str(p)} for p in body_params]}] if body_params else []
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:
            template["components"] = [dict(c) for c in components]
        return self._send({"messaging_product": "whatsapp", "to": to, "type": "template", "template": template}, "send_template")


def message_id(answer: Mapping[str, Any]) -> str:
    """The wamid of a send answer."""
    return str(answer["messages"][0]["id"])
