"""The OData engine answers `$batch` as SAP Gateway does: retrieve parts, atomic change sets, one CSRF check.

Bodies are written out by hand here (multipart/mixed, application/http parts, nested change sets), so the
tests hold the simulator to the OData V2 wire format rather than to the hub's own client.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.odata import MAX_BATCH_PARTS
from sandbox.sap import SERVICE_ROOT, SapSandbox

BASIC = ("DRYMIX_INT", "sandbox-secret")
BASE = "http://sap.test"
CRLF = "\r\n"


@pytest.fixture
def sap() -> SapSandbox:
    return SapSandbox(partners=20, seed=5)


@contextmanager
def session(sandbox: SapSandbox, base_url: str = BASE) -> Iterator[tuple[httpx.Client, str]]:
    """A client on the service root with a CSRF session; yields it and the token."""
    transport = as_transport(sandbox) if base_url == BASE else None
    with httpx.Client(transport=transport, base_url=base_url + SERVICE_ROOT, auth=BASIC, headers={"Accept": "application/json"}) as client:
        token = client.get("", headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        yield client, token


def request(method: str, url: str, body: Any = None, *, content_id: str | None = None, **headers: str) -> str:
    """One `application/http` part."""
    mime = "Content-Type: application/http" + CRLF + "Content-Transfer-Encoding: binary" + CRLF
    if content_id:
        mime += f"Content-ID: {content_id}{CRLF}"
    lines = [f"{method} {url} HTTP/1.1", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    text = ""
    if body is not None:
        text = json.dumps(body)
        lines.append("Content-Type: application/json")
    return mime + CRLF + CRLF.join(lines) + CRLF + CRLF + text


def multipart(boundary: str, parts: Sequence[str]) -> str:
    return "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts) + f"--{boundary}--{CRLF}"


def changeset(boundary: str, *requests: str) -> str:
    return f"Content-Type: multipart/mixed; boundary={boundary}{CRLF}{CRLF}" + multipart(boundary, requests)


def send(client: httpx.Client, token: str | None, *parts: str) -> httpx.Response:
    headers = {"Content-Type": "multipart/mixed; boundary=batch_1"}
    if token:
        headers["X-CSRF-Token"] = token
    return client.post("$batch", content=multipart("batch_1", parts).encode(), headers=headers)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    content_id: str | None


def _answer(part: Any) -> Answer:
    raw = part.get_payload(decode=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), headers, json.loads(body) if body.strip() else None, part.get("Content-ID"))


def answers(resp: httpx.Response) -> list[Answer | list[Answer]]:
    """The 202's parts: an answer per retrieve and per failed change set, a list per change set that worked."""
    assert resp.status_code == 202, resp.text
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        f"Content-Type: {resp.headers['content-type']}{CRLF}{CRLF}".encode() + resp.content
    )
    return [[_answer(p) for p in part.get_payload()] if part.is_multipart() else _answer(part) for part in message.get_payload()]


def partner_url(partner: str) -> str:
    return f"A_BusinessPartner('{partner}')"


def email_url(sap: SapSandbox, partner: str) -> tuple[str, str]:
    """The partner's first e-mail entry: its URL relative to the service root, and the address."""
    with session(sap) as (client, _):
        read = client.get(partner_url(partner), params={"$expand": "to_BusinessPartnerAddress/to_EmailAddress"}).json()["d"]
    address = read["to_BusinessPartnerAddress"]["results"][0]
    entry = address["to_EmailAddress"]["results"][0]
    return entry["__metadata"]["uri"].split(SERVICE_ROOT, 1)[1], entry["EmailAddress"]


def new_customer(ext: str) -> dict[str, Any]:
    return {
        "BusinessPartnerCategory": "2", "OrganizationBPName1": "Batch Traders", "BusinessPartnerIDByExtSystem": ext,
        "to_BusinessPartnerRole": [{"BusinessPartnerRole": "FLCU00"}, {"BusinessPartnerRole": "FLCU01"}],
        "to_BusinessPartnerAddress": [{"Country": "IN", "CityName": "Pune", "PostalCode": "411001", "StreetName": "MG Road",
                                       "to_EmailAddress": [{"EmailAddress": "orders@batch.in"}]}],
    }


def test_retrieve_parts_answer_in_order_with_their_etags(sap: SapSandbox) -> None:
    first, second = sap.partner_ids()[:2]
    with session(sap) as (client, token):
        resp = send(client, token, request("GET", partner_url(first) + "?$select=BusinessPartner"),
                    request("GET", f"A_BusinessPartner?$filter=BusinessPartner%20eq%20'{second}'&$format=json"),
                    request("GET", "A_BusinessPartner('none')"))
    one, many, missing = answers(resp)
    assert isinstance(one, Answer) and isinstance(many, Answer) and isinstance(missing, Answer)
    assert one.status == 200 and one.body["d"]["BusinessPartner"] == first
    assert one.headers["etag"] == sap.etag_of(first)
    assert [r["BusinessPartner"] for r in many.body["d"]["results"]] == [second]
    assert missing.status == 404 and missing.body["error"]["code"] == "/IWBEP/CM_MGW_RT/020"
    assert resp.headers["content-type"].startswith("multipart/mixed; boundary=batch_")


def test_a_change_set_patches_a_partner_with_if_match_and_its_email(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    etag = sap.etag_of(partner)
    url, _ = email_url(sap, partner)
    with session(sap) as (client, token):
        resp = send(client, token, changeset(
            "changeset_a",
            request("PATCH", partner_url(partner), {"SearchTerm1": "BATCHED"}, content_id="1", If_Match=etag),
            request("MERGE", url, {"EmailAddress": "batch@example.in"}, content_id="2"),
        ))
    (parts,) = answers(resp)
    assert isinstance(parts, list)
    assert [(p.status, p.content_id) for p in parts] == [(204, "1"), (204, "2")]
    assert parts[0].headers["etag"] != etag
    record = sap.get_partner(partner)
    assert record["SearchTerm1"] == "BATCHED"
    assert email_url(sap, partner)[1] == "batch@example.in"


def test_a_change_set_whose_second_request_fails_undoes_the_first(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    etag = sap.etag_of(partner)
    url, mail = email_url(sap, partner)
    before = sap.get_partner(partner)
    count = sap.partner_count
    with session(sap) as (client, token):
        resp = send(client, token, changeset(
            "changeset_b",
            request("POST", "A_BusinessPartner", new_customer("ERP-BATCH-1"), content_id="1"),
            request("PATCH", partner_url(partner), {"SearchTerm1": "UNDONE"}, content_id="2", If_Match=etag),
            request("PATCH", url, {"EmailAddress": "not-an-email"}, content_id="3"),
        ))
        again = client.get(partner_url(partner), params={"$select": "SearchTerm1"}).json()["d"]
        lookup = client.get("A_BusinessPartner", params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-BATCH-1'"}).json()
    (error,) = answers(resp)
    assert isinstance(error, Answer)
    assert error.status == 400 and error.content_id == "3"
    assert error.body["error"]["code"] == "AM/117"
    assert sap.get_partner(partner) == before and sap.etag_of(partner) == etag  # the partner PATCH was undone
    assert again["SearchTerm1"] == before["SearchTerm1"]
    assert email_url(sap, partner)[1] == mail
    assert sap.partner_count == count and lookup["d"]["results"] == []  # the create was undone


def test_a_create_in_a_change_set_answers_201_with_the_created_tree(sap: SapSandbox) -> None:
    count = sap.partner_count
    with session(sap) as (client, token):
        (parts,) = answers(send(client, token, changeset(
            "changeset_c", request("POST", "A_BusinessPartner", new_customer("ERP-BATCH-2"), content_id="1"))))
        assert isinstance(parts, list)
        (created,) = parts
        partner = created.body["d"]["BusinessPartner"]
        (patched,) = answers(send(client, token, changeset(
            "changeset_d", request("PATCH", partner_url(partner), {"SearchTerm1": "SECOND"}, If_Match=created.headers["etag"]))))
    assert created.status == 201 and created.content_id == "1"
    assert created.headers["location"].endswith(partner_url(partner))
    assert created.body["d"]["BusinessPartnerIDByExtSystem"] == "ERP-BATCH-2"
    assert created.body["d"]["to_BusinessPartnerAddress"]["results"][0]["to_EmailAddress"]["results"][0]["EmailAddress"] == "orders@batch.in"
    assert isinstance(patched, list) and patched[0].status == 204
    assert sap.partner_count == count + 1
    assert sap.get_partner(partner)["SearchTerm1"] == "SECOND"


def test_a_request_refers_to_an_entity_created_earlier_in_its_change_set_by_content_id(sap: SapSandbox) -> None:
    count = sap.partner_count
    with session(sap) as (client, token):
        (error,) = answers(send(client, token, changeset(
            "changeset_e",
            request("POST", "A_BusinessPartner", new_customer("ERP-BATCH-3"), content_id="new"),
            request("PATCH", "$new", {"SearchTerm1": "BYREF"}, content_id="ref"),
        )))
    # `$new` is the partner just created; a partner PATCH needs If-Match inside a batch too (428), so the change
    # set fails as a whole and the create goes with it.
    assert isinstance(error, Answer) and error.status == 428 and error.content_id == "ref"
    assert sap.partner_count == count


def test_missing_csrf_token_refuses_the_whole_batch(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    with session(sap) as (client, _token):
        resp = send(client, None, request("GET", partner_url(partner)),
                    changeset("changeset_f", request("PATCH", partner_url(partner), {"SearchTerm1": "X"}, If_Match=sap.etag_of(partner))))
    assert resp.status_code == 403 and resp.text == "CSRF token validation failed"
    assert resp.headers["x-csrf-token"] == "Required"
    assert sap.get_partner(partner)["SearchTerm1"] != "X"


def test_a_stale_etag_fails_its_own_change_set_only(sap: SapSandbox) -> None:
    first, second = sap.partner_ids()[:2]
    fresh = sap.etag_of(second)
    stale = sap.etag_of(first)
    sap.edit_as_user(first, {"SearchTerm2": "MOVED-ON"})  # the ETag moves on after we read it
    with session(sap) as (client, token):
        resp = send(
            client, token,
            changeset("changeset_g", request("PATCH", partner_url(first), {"SearchTerm1": "STALE"}, If_Match=stale)),
            changeset("changeset_h", request("PATCH", partner_url(second), {"SearchTerm1": "FRESH"}, If_Match=fresh)),
            request("GET", partner_url(first) + "?$select=SearchTerm1"),
        )
    failed, worked, read = answers(resp)
    assert isinstance(failed, Answer) and failed.status == 412 and failed.body["error"]["code"] == "/IWBEP/CM_MGW_RT/054"
    assert isinstance(worked, list) and worked[0].status == 204
    assert isinstance(read, Answer) and read.body["d"]["SearchTerm1"] != "STALE"
    assert sap.get_partner(second)["SearchTerm1"] == "FRESH"


def test_malformed_batches_and_too_many_parts_are_400(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    with session(sap) as (client, token):
        not_multipart = client.post("$batch", content=b"{}", headers={"Content-Type": "application/json", "X-CSRF-Token": token})
        unclosed = client.post("$batch", content=f"--batch_1{CRLF}{request('GET', partner_url(partner))}{CRLF}".encode(),
                               headers={"Content-Type": "multipart/mixed; boundary=batch_1", "X-CSRF-Token": token})
        write_outside = send(client, token, request("PATCH", partner_url(partner), {"SearchTerm1": "X"}))
        read_inside = send(client, token, changeset("changeset_i", request("GET", partner_url(partner))))
        too_many = send(client, token, *[request("GET", partner_url(partner))] * (MAX_BATCH_PARTS + 1))
        get_batch = client.get("$batch")
    for resp in (not_multipart, unclosed, write_outside, read_inside, too_many):
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "/IWBEP/CM_MGW_RT/022"
    assert f"at most {MAX_BATCH_PARTS}" in too_many.json()["error"]["message"]["value"]
    assert get_batch.status_code == 405


def test_faults_apply_to_the_batch_as_a_whole_and_a_lost_answer_still_committed(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    with session(sap) as (client, token):
        sap.faults.update({"error_5xx_next_n": 1})
        failed = send(client, token, request("GET", partner_url(partner)))
        sap.faults.update({"timeout_after_commit_next_n": 1, "timeout_sleep_s": 0.2})
        with pytest.raises(httpx.TimeoutException):
            client.post("$batch", timeout=0.1, headers={"Content-Type": "multipart/mixed; boundary=batch_1", "X-CSRF-Token": token},
                        content=multipart("batch_1", [changeset("changeset_j", request(
                            "PATCH", partner_url(partner), {"SearchTerm1": "LOST"}, If_Match=sap.etag_of(partner)))]).encode())
    assert failed.status_code == 503  # the whole batch, as any request
    assert sap.get_partner(partner)["SearchTerm1"] == "LOST"  # the batch committed; its answer was lost


def test_over_real_http_a_batch_of_creates_and_updates(sap: SapSandbox) -> None:
    partner = sap.partner_ids()[0]
    with running_server(sap) as base_url, session(sap, base_url.rstrip("/")) as (client, token):
        resp = send(
            client, token,
            changeset("changeset_k", request("POST", "A_BusinessPartner", new_customer("ERP-BATCH-4"), content_id="1")),
            changeset("changeset_l", request("PATCH", partner_url(partner), {"SearchTerm1": "HTTP"}, If_Match=sap.etag_of(partner))),
        )
    created, updated = answers(resp)
    assert isinstance(created, list) and created[0].status == 201
    assert isinstance(updated, list) and updated[0].status == 204
    assert sap.get_partner(partner)["SearchTerm1"] == "HTTP"
