"""OData V2 `$batch` for SAP Gateway: several requests in one HTTP request, writes grouped in atomic change sets.

A batch body is `multipart/mixed`: a retrieve is one `application/http` part holding a GET; a change set is a
nested `multipart/mixed` of modifying requests (each with its own headers, such as `If-Match`, and a
`Content-ID`) that SAP applies all or nothing. The answer (202) holds one part per retrieve and per change set,
in order: a change set that worked answers a nested multipart with a response per request, one that failed
answers its one error response. Each part's error is classified as a single request's would be
(`classify_response` with the client's body parser: SAP's error envelope), so callers map it the same way.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx

from connectors.core.errors import ErrorBodyParser, IntegrationError, classify_response

CRLF = "\r\n"
URL_SAFE = "/()$,='?&:@!*+;%~"


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch; `url` is relative to the service root (`A_BusinessPartner('1000042')`)."""

    method: str
    url: str
    json: Any = None
    if_match: str | None = None
    content_id: str | None = None
    operation: str | None = None


@dataclass(frozen=True)
class ChangeSet:
    """Modifying requests SAP applies all or nothing (one customer's writes)."""

    requests: tuple[BatchRequest, ...]


BatchItem = BatchRequest | ChangeSet


@dataclass(frozen=True)
class PartResult:
    """One response inside a batch answer: its status, headers (lower-case names), JSON body, and the error."""

    status: int
    headers: Mapping[str, str]
    body: Any
    content_id: str | None = None
    error: IntegrationError | None = None

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag") or None


@dataclass(frozen=True)
class ItemResult:
    """The answer to one retrieve or one change set: its responses, or the one error that undid the change set."""

    parts: tuple[PartResult, ...]

    @property
    def error(self) -> IntegrationError | None:
        return next((p.error for p in self.parts if p.error is not None), None)

    @property
    def ok(self) -> bool:
        return self.error is None


def has_create(items: Sequence[BatchItem]) -> bool:
    """Whether a batch creates something (then it is never resent blindly: a lost answer may hide a create)."""
    return any(r.method == "POST" for item in items for r in (item.requests if isinstance(item, ChangeSet) else (item,)))


def _request_part(request: BatchRequest) -> str:
    mime = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if request.content_id:
        mime.append(f"Content-ID: {request.content_id}")
    # A request line holds no spaces: a `$filter`'s are percent-encoded (what is encoded already stays so).
    lines = [f"{request.method} {quote(request.url, safe=URL_SAFE)} HTTP/1.1", "Accept: application/json"]
    body = ""
    if request.if_match:
        lines.append(f"If-Match: {request.if_match}")
    if request.json is not None:
        body = json.dumps(request.json, ensure_ascii=False, separators=(",", ":"))
        lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return CRLF.join(mime) + CRLF + CRLF + CRLF.join(lines) + CRLF + CRLF + body


def _multipart(boundary: str, parts: Sequence[str]) -> str:
    return "".join(f"--{boundary}{CRLF}{part}{CRLF}" for part in parts) + f"--{boundary}--{CRLF}"


def build_batch(items: Sequence[BatchItem], boundary: str | None = None) -> tuple[str, bytes]:
    """The batch's content type and body: a part per retrieve (GET only) and a nested multipart per change set."""
    outer = boundary or f"batch_{uuid.uuid4()}"
    parts: list[str] = []
    for item in items:
        if isinstance(item, ChangeSet):
            if not item.requests:
                raise ValueError("a change set needs at least one request")
            inner = f"changeset_{uuid.uuid4()}"
            body = _multipart(inner, [_request_part(r) for r in item.requests])
            parts.append(f"Content-Type: multipart/mixed; boundary={inner}{CRLF}{CRLF}{body}")
        else:
            if item.method != "GET":
                raise ValueError(f"{item.method} {item.url} must go in a change set")
            parts.append(_request_part(item))
    return f"multipart/mixed; boundary={outer}", _multipart(outer, parts).encode()


def _parse_multipart(content_type: str, body: bytes) -> Message:
    # The standard library's MIME parser reads the nesting and boundaries; `application/http` payloads are
    # HTTP messages, which it leaves as text, so the status line and headers are split below.
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        f"Content-Type: {content_type}{CRLF}MIME-Version: 1.0{CRLF}{CRLF}".encode() + body
    )
    if not message.is_multipart():
        raise ValueError(f"a $batch answer must be multipart/mixed, not {content_type!r}")
    return message


def _payload(part: Message) -> bytes:
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _http_response(part: Message) -> tuple[int, dict[str, str], bytes]:
    """An `application/http` part -> status, headers (lower-case names), body."""
    data = _payload(part)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("HTTP/"):
        raise ValueError(f"a $batch answer part holds no HTTP response: {data[:80]!r}")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length and length.isdigit():
        body = body[: int(length)]
    return status, headers, body


def _part_result(part: Message, request: BatchRequest, *, base_url: str, integration: str, body_parser: ErrorBodyParser | None) -> PartResult:
    status, headers, raw = _http_response(part)
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    content_id = part.get("Content-ID") or headers.get("content-id")
    error = None
    if status >= 400:
        # A synthetic response for the one classifier every single request goes through.
        response = httpx.Response(status, headers=headers, content=raw, request=httpx.Request(request.method, base_url + request.url))
        error = classify_response(response, body_parser=body_parser, integration=integration, operation=request.operation or "batch_part")
    return PartResult(status, headers, body, content_id, error)


def parse_batch(
    content_type: str,
    body: bytes,
    items: Sequence[BatchItem],
    *,
    base_url: str = "",
    integration: str = "sap",
    body_parser: ErrorBodyParser | None = None,
) -> list[ItemResult]:
    """A `$batch` answer -> one `ItemResult` per item sent, in order."""
    parts = _parse_multipart(content_type, body).get_payload()
    assert isinstance(parts, list)
    if len(parts) != len(items):
        raise ValueError(f"the $batch answer holds {len(parts)} part(s) for {len(items)} item(s) sent")
    results: list[ItemResult] = []
    result_of = partial(_part_result, base_url=base_url, integration=integration, body_parser=body_parser)
    for part, item in zip(parts, items, strict=True):
        if isinstance(item, ChangeSet):
            if part.is_multipart():
                answers = part.get_payload()
                assert isinstance(answers, list)
                if len(answers) != len(item.requests):
                    raise ValueError(f"a change set of {len(item.requests)} request(s) answered {len(answers)} part(s)")
                results.append(ItemResult(tuple(result_of(a, r) for a, r in zip(answers, item.requests, strict=True))))
            else:
                # The change set failed as a whole: which request SAP refused is in the error's text, the
                # classification follows the request whose Content-ID it echoes, else the first one.
                status, headers, _ = _http_response(part)
                echoed = part.get("Content-ID") or headers.get("content-id")
                culprit = next((r for r in item.requests if echoed and r.content_id == echoed), item.requests[0])
                results.append(ItemResult((result_of(part, culprit),)))
        else:
            results.append(ItemResult((result_of(part, item),)))
    return results


__all__ = ["BatchItem", "BatchRequest", "ChangeSet", "ItemResult", "PartResult", "build_batch", "has_create", "parse_batch"]
