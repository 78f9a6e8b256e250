"""The Graph sandbox speaks the contract (api-contracts section 2), checked with raw HTTP requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.microsoft365 import CHUNK_UNIT, GRAPH_SCOPE, Microsoft365Sandbox

TENANT = "8f5e2c1a-6b3d-4e7f-9a10-3c2d1e0f4a5b"


@pytest.fixture
def sim() -> Microsoft365Sandbox:
    return Microsoft365Sandbox(seed=1)


@pytest.fixture
def http(sim: Microsoft365Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(transport=as_transport(sim), base_url="https://graph.sandbox") as client:
        yield client


def _token(http: httpx.Client, sim: Microsoft365Sandbox, **override: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret, "scope": GRAPH_SCOPE, **override}
    return http.post(f"/{override.pop('tenant', TENANT)}/oauth2/v2.0/token", data=form)


def _auth(http: httpx.Client, sim: Microsoft365Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(http, sim).json()['access_token']}"}


def test_token_endpoint_grants_and_refuses_like_entra_id(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    ok = _token(http, sim).json()
    assert ok["token_type"] == "Bearer" and ok["expires_in"] == 3599 and "refresh_token" not in ok
    bad = _token(http, sim, client_secret="nope")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client" and bad.json()["error_codes"] == [7000215]
    assert bad.json()["error_description"].startswith("AADSTS7000215:")
    unknown = _token(http, sim, client_id="11111111-1111-1111-1111-111111111111")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [700016]
    scope = _token(http, sim, scope="https://graph.microsoft.com/Calendars.ReadWrite")
    assert scope.json()["error"] == "invalid_scope"
    tenant = http.post("/no-such-tenant/oauth2/v2.0/token", data={"grant_type": "client_credentials"})
    assert tenant.json()["error_codes"] == [90002]


def test_graph_errors_use_the_envelope_and_expired_tokens_get_401(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    headers = _auth(http, sim)
    missing = http.get("/v1.0/users/nobody@drymix.example/events", headers=headers)
    error = missing.json()["error"]
    assert missing.status_code == 404 and error["code"] == "ErrorInvalidUser" and "request-id" in error["innerError"]
    sim.expire_tokens()
    expired = http.get("/v1.0/users/planning@drymix.example/events", headers=headers)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_throttling_switch_answers_429_with_retry_after(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    headers = _auth(http, sim)
    sim.faults.update({"rate_limit_next_n": 1, "retry_after_s": 7})
    throttled = http.get("/v1.0/users/planning@drymix.example/events", headers=headers)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"


def test_upload_session_protocol(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    headers = _auth(http, sim)
    total = 2 * CHUNK_UNIT + 1000
    data = bytes(range(256)) * (total // 256) + bytes(total % 256)
    created = http.post("/v1.0/drives/" + sim.drive_id + "/root:/ERP/Invoices/INV-9.pdf:/createUploadSession",
                        json={"item": {"@microsoft.graph.conflictBehavior": "fail", "name": "INV-9.pdf", "fileSize": total}}, headers=headers)
    assert created.status_code == 200 and created.json()["nextExpectedRanges"] == ["0-"]
    url = created.json()["uploadUrl"]

    def put(start: int, end: int, **extra: str) -> httpx.Response:
        return http.put(url, content=data[start : end + 1], headers={"Content-Range": f"bytes {start}-{end}/{total}", **extra})

    assert put(0, CHUNK_UNIT - 1, Authorization=headers["Authorization"]).status_code == 401  # no token on the upload URL
    assert put(0, 1000).status_code == 400  # not a multiple of 320 KiB
    first = put(0, CHUNK_UNIT - 1)
    assert first.status_code == 202 and first.json()["nextExpectedRanges"] == [f"{CHUNK_UNIT}-{total - 1}"]
    again = put(0, CHUNK_UNIT - 1)
    assert again.status_code == 416 and again.json()["error"]["innerError"]["code"] == "fragmentOverlap"
    assert put(2 * CHUNK_UNIT, total - 1).status_code == 416  # out of order
    assert http.get(url).json()["nextExpectedRanges"] == [f"{CHUNK_UNIT}-{total - 1}"]  # status for a resume
    assert put(CHUNK_UNIT, 2 * CHUNK_UNIT - 1).status_code == 202
    done = put(2 * CHUNK_UNIT, total - 1)
    assert done.status_code == 201 and done.json()["size"] == total and done.json()["webUrl"] and done.json()["id"]
    assert http.get(url).status_code == 404  # the session ended with the last byte


def test_name_conflict_at_commit_is_409(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    headers = _auth(http, sim)
    path = f"/v1.0/drives/{sim.drive_id}/root:/ERP/Invoices/dup.pdf:"
    assert http.put(path + "/content", content=b"one", headers=headers).status_code == 201
    session = http.post(path + "/createUploadSession", json={"item": {"@microsoft.graph.conflictBehavior": "fail"}}, headers=headers).json()
    last = http.put(session["uploadUrl"], content=b"two", headers={"Content-Range": "bytes 0-2/3"})
    assert last.status_code == 409 and last.json()["error"]["code"] == "nameAlreadyExists"


def test_delta_pages_removed_items_and_expired_tokens(http: httpx.Client, sim: Microsoft365Sandbox) -> None:
    headers = {**_auth(http, sim), "Prefer": "odata.maxpagesize=4"}
    page = http.get("/v1.0/users/planning@drymix.example/calendarView/delta",
                    params={"startDateTime": "2020-01-01T00:00:00Z", "endDateTime": "2030-01-01T00:00:00Z"}, headers=headers).json()
    ids = [e["id"] for e in page["value"]]
    while "@odata.nextLink" in page:
        page = http.get(page["@odata.nextLink"], headers=headers).json()
        ids += [e["id"] for e in page["value"]]
    assert len(ids) == len(set(ids)) == 12 and "@odata.deltaLink" in page
    sim.person_edits(ids[0], "cancel")
    changes = http.get(page["@odata.deltaLink"], headers=headers).json()
    assert changes["value"] == [{"@odata.type": "#microsoft.graph.event", "id": ids[0], "@removed": {"reason": "deleted"}}]
    sim.expire_delta_tokens()
    gone = http.get(changes["@odata.deltaLink"], headers=headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"


def test_sandbox_serves_over_real_http(sim: Microsoft365Sandbox) -> None:
    with running_server(sim) as url, httpx.Client(base_url=url) as http:
        assert http.get("/_sandbox/health").json()["simulator"] == "microsoft365"
        headers = _auth(http, sim)
        assert http.get(f"/v1.0/drives/{sim.drive_id}", headers=headers).json()["driveType"] == "documentLibrary"
        assert http.post("/_sandbox/microsoft365/tokens/expire").json()["expired"] == 1
