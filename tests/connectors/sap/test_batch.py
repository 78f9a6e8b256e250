"""The `$batch` client: the multipart body it writes, the answer it reads, and its errors classified as single requests'."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, RetryPolicy
from connectors.core.errors import ErrorCategory
from connectors.sap.batch import BatchRequest, ChangeSet, build_batch, has_create, parse_batch
from connectors.sap.connector import SapConnector
from connectors.sap.odata import parse_sap_error
from connectors.sap.partners_write import PreconditionFailed, create_payload, create_request, part_error
from sandbox.core import as_transport
from sandbox.sap import SERVICE_ROOT, SapSandbox

CRLF = "\r\n"


def test_the_body_has_a_part_per_retrieve_and_a_nested_multipart_per_change_set() -> None:
    items = [
        BatchRequest("GET", "A_BusinessPartner?$filter=BusinessPartner eq '1'&$format=json"),
        ChangeSet((
            BatchRequest("PATCH", "A_BusinessPartner('1')", {"SearchTerm1": "NEW"}, if_match='W/"\'7\'"', content_id="1"),
            BatchRequest("PATCH", "A_AddressEmailAddress(AddressID='9',Person='',OrdinalNumber='1')", {"EmailAddress": "a@b.in"},
                         content_id="2"),
        )),
    ]
    content_type, body = build_batch(items, boundary="batch_test")
    text = body.decode()
    assert content_type == "multipart/mixed; boundary=batch_test"
    assert text.startswith("--batch_test\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n")
    assert "GET A_BusinessPartner?$filter=BusinessPartner%20eq%20'1'&$format=json HTTP/1.1\r\n" in text  # no spaces in a request line
    assert text.endswith("--batch_test--\r\n")
    nested = text.split("Content-Type: multipart/mixed; boundary=", 1)[1]
    inner = nested.split("\r\n", 1)[0]
    assert inner.startswith("changeset_") and nested.count(f"--{inner}\r\n") == 2 and f"--{inner}--" in nested
    assert "Content-ID: 1\r\n\r\nPATCH A_BusinessPartner('1') HTTP/1.1\r\n" in text
    assert "If-Match: W/\"'7'\"\r\n" in text
    assert '\r\n\r\n{"SearchTerm1":"NEW"}\r\n' in text


def test_writes_outside_a_change_set_and_empty_change_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="must go in a change set"):
        build_batch([BatchRequest("PATCH", "A_BusinessPartner('1')", {})])
    with pytest.raises(ValueError, match="at least one request"):
        build_batch([ChangeSet(())])
    assert has_create([ChangeSet((create_request("ERP-1", {"name": "X"}),))])
    assert not has_create([BatchRequest("GET", "A_BusinessPartner")])


def _http(status: int, reason: str, body: Any = None, content_id: str | None = None, **headers: str) -> str:
    mime = "Content-Type: application/http" + CRLF + "Content-Transfer-Encoding: binary" + CRLF
    if content_id:
        mime += f"Content-ID: {content_id}{CRLF}"
    text = json.dumps(body) if body is not None else ""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()), f"Content-Length: {len(text)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    return mime + CRLF + CRLF.join(lines) + CRLF + CRLF + text


def _multipart(boundary: str, parts: list[str]) -> str:
    return "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts) + f"--{boundary}--{CRLF}"


def _sap_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": {"lang": "en", "value": message},
                      "innererror": {"transactionid": "ABC", "errordetails": [{"code": code, "message": message}]}}}


def test_an_answer_is_read_into_results_per_item_with_errors_classified_like_single_requests() -> None:
    items = [
        BatchRequest("GET", "A_BusinessPartner('1')", operation="read_partner"),
        ChangeSet((BatchRequest("PATCH", "A_BusinessPartner('1')", {"SearchTerm1": "X"}, if_match="e1", content_id="1",
                                operation="update_partner"),
                   BatchRequest("PATCH", "A_AddressEmailAddress(AddressID='9',Person='',OrdinalNumber='1')", {}, content_id="2",
                                operation="update_email"))),
        ChangeSet((BatchRequest("PATCH", "A_BusinessPartner('2')", {"SearchTerm1": "Y"}, if_match="stale", operation="update_partner"),)),
        ChangeSet((create_request("ERP-7", {"name": "Z"}),)),
        ChangeSet((create_request("ERP-8", {"name": ""}),)),
    ]
    ok_set = "Content-Type: multipart/mixed; boundary=cs_1" + CRLF + CRLF + _multipart(
        "cs_1", [_http(204, "No Content", content_id="1", ETag='W/"new"'), _http(204, "No Content", content_id="2")])
    created = "Content-Type: multipart/mixed; boundary=cs_2" + CRLF + CRLF + _multipart(
        "cs_2", [_http(201, "Created", {"d": {"BusinessPartner": "1000077"}}, content_id="1", ETag='W/"c"')])
    body = _multipart("batch_x", [
        _http(200, "OK", {"d": {"BusinessPartner": "1"}}, ETag='W/"e1"'),
        ok_set,
        _http(412, "Precondition Failed", _sap_error("/IWBEP/CM_MGW_RT/054", "Precondition failed")),
        created,
        _http(400, "Bad Request", _sap_error("R11/401", "Enter a name for an organization")),
    ]).encode()
    results = parse_batch("multipart/mixed; boundary=batch_x", body, items, base_url="http://sap/", body_parser=parse_sap_error)
    read, patched, stale, made, refused = results
    assert read.ok and read.parts[0].body == {"d": {"BusinessPartner": "1"}} and read.parts[0].etag == 'W/"e1"'
    assert patched.ok and [(p.status, p.content_id) for p in patched.parts] == [(204, "1"), (204, "2")]
    assert patched.parts[0].etag == 'W/"new"'
    assert made.ok and made.parts[0].status == 201 and made.parts[0].body["d"]["BusinessPartner"] == "1000077"
    assert stale.error is not None and stale.error.status_code == 412 and stale.error.operation == "update_partner"
    assert isinstance(part_error(stale.error), PreconditionFailed)
    assert refused.error is not None
    mapped = part_error(refused.error)
    assert getattr(mapped, "category", None) is ErrorCategory.DATA_VALIDATION_FAILED
    assert getattr(mapped, "code", None) == "R11/401" and "Enter a name for an organization" in str(mapped)
    assert refused.error.operation == "create_partner"


def test_an_answer_with_a_part_missing_is_an_error_not_a_silent_shift() -> None:
    items = [BatchRequest("GET", "A_BusinessPartner('1')"), BatchRequest("GET", "A_BusinessPartner('2')")]
    body = _multipart("b", [_http(200, "OK", {"d": {}})]).encode()
    with pytest.raises(ValueError, match="1 part"):
        parse_batch("multipart/mixed; boundary=b", body, items)
    with pytest.raises(ValueError, match="multipart/mixed"):
        parse_batch("application/json", b"{}", items)


class Counting(httpx.BaseTransport):
    """The sandbox as a transport, counting the requests that reach it."""

    def __init__(self, sandbox: SapSandbox) -> None:
        self.inner = as_transport(sandbox)
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path.rsplit("/", 1)[-1]))
        return self.inner.handle_request(request)


def _connector(transport: httpx.BaseTransport) -> SapConnector:
    config = IntegrationConfig(name="sap", base_url="http://sap.test" + SERVICE_ROOT, rate_budget_per_s=1000)
    client = IntegrationClient(config, transport=transport, retry=RetryPolicy(max_retries=1, base_delay_ms=0), body_parser=parse_sap_error,
                               auth=httpx.BasicAuth("DRYMIX_INT", "sandbox-secret"), sleep=lambda s: None)
    return SapConnector(client)


def test_a_batch_is_one_request_and_its_expired_csrf_token_is_fetched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = SapSandbox(partners=10, seed=3)
    transport = Counting(sandbox)
    connector = _connector(transport)
    budget = connector.client.budget
    tokens: list[float] = []
    acquire = budget.acquire
    monkeypatch.setattr(budget, "acquire", lambda sleep: tokens.append(acquire(sleep)) or 0.0)
    partner = sandbox.partner_ids()[0]
    fields = {"name": "Batch Client Traders", "country": "IN", "city": "Pune", "postal_code": "411001", "street": "MG Road"}
    first = connector.batch([ChangeSet((create_request("ERP-C1", fields),))])
    sandbox.expire_tokens("csrf")
    second = connector.batch([
        BatchRequest("GET", f"A_BusinessPartner('{partner}')?$format=json", operation="read_partner"),
        ChangeSet((BatchRequest("PATCH", f"A_BusinessPartner('{partner}')", {"SearchTerm1": "BATCHCLIENT"},
                                if_match=sandbox.etag_of(partner), operation="update_partner"),)),
        ChangeSet((BatchRequest("POST", "A_BusinessPartner", {**create_payload("ERP-C2", fields), "BusinessPartnerCategory": "9"},
                                operation="create_partner"),)),
    ])
    assert first[0].ok and first[0].parts[0].status == 201
    read, patched, refused = second
    assert read.ok and patched.ok and sandbox.get_partner(partner)["SearchTerm1"] == "BATCHCLIENT"
    assert refused.error is not None and refused.error.status_code == 400
    assert getattr(part_error(refused.error), "category", None) is ErrorCategory.DATA_VALIDATION_FAILED
    # HEAD (fetch), $batch, then the second batch refused with 403, a fresh token, the same batch again.
    assert transport.requests == [("HEAD", ""), ("POST", "$batch"), ("POST", "$batch"), ("HEAD", ""), ("POST", "$batch")]
    assert len(tokens) == len(transport.requests) == 5  # a rate-budget token per HTTP request, not per customer
