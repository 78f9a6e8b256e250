"""The Google sandbox behaves as the contract (api-contracts section 3) says, over plain httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from sandbox.core import as_transport
from sandbox.google_calendar import (
    GOOGLE_TOKEN_URL,
    JWT_BEARER,
    GoogleCalendarSandbox,
    generate_service_account,
)
from tests.google_support import CALENDAR, event_body

SCOPE = "https://www.googleapis.com/auth/calendar.events"
API = "https://www.googleapis.com/calendar/v3/calendars/depot.ops%40drymix.in/events"


def assertion(sandbox: GoogleCalendarSandbox, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": sandbox.service_account.email, "scope": SCOPE, "aud": GOOGLE_TOKEN_URL,
                              "iat": now, "exp": now + 3600, "sub": CALENDAR}
    key = overrides.pop("key", sandbox.service_account.info["private_key"])
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": sandbox.service_account.key_id})


def token_call(client: httpx.Client, jwt_assertion: str, grant: str = JWT_BEARER) -> httpx.Response:
    return client.post(GOOGLE_TOKEN_URL, data={"grant_type": grant, "assertion": jwt_assertion})


@pytest.fixture
def sandbox() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


@pytest.fixture
def client(sandbox: GoogleCalendarSandbox) -> httpx.Client:
    return httpx.Client(transport=as_transport(sandbox))


def authed(sandbox: GoogleCalendarSandbox, client: httpx.Client) -> httpx.Client:
    token = token_call(client, assertion(sandbox)).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_token_endpoint_grants_a_token_for_a_valid_signed_assertion(sandbox: GoogleCalendarSandbox, client: httpx.Client) -> None:
    response = token_call(client, assertion(sandbox))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["access_token"].startswith("ya29.")


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"aud": "https://example.com/token"}, "invalid_grant", "audience"),
        ({"exp": int(time.time()) + 7200}, "invalid_grant", "short-lived"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "invalid_grant", "short-lived"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "invalid_grant", "account not found"),
        ({"sub": "stranger@elsewhere.com"}, "invalid_grant", "Invalid email"),
        ({"scope": "https://www.googleapis.com/auth/drive"}, "unauthorized_client", "not authorized"),
        ({"scope": None}, "invalid_scope", "scope"),
    ],
)
def test_token_endpoint_refuses_bad_claims_with_googles_errors(
    sandbox: GoogleCalendarSandbox, client: httpx.Client, overrides: dict[str, Any], error: str, fragment: str
) -> None:
    response = token_call(client, assertion(sandbox, **overrides))
    assert response.status_code in (400, 401)
    assert response.json()["error"] == error
    assert fragment in response.json()["error_description"]


def test_token_endpoint_checks_the_signature_against_the_service_account_public_key(
    sandbox: GoogleCalendarSandbox, client: httpx.Client
) -> None:
    impostor = generate_service_account(sandbox.service_account.email)
    response = token_call(client, assertion(sandbox, key=impostor.info["private_key"]))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    assert token_call(client, assertion(sandbox), grant="client_credentials").json()["error"] == "unsupported_grant_type"


def test_api_refuses_missing_or_unknown_bearer_tokens(client: httpx.Client) -> None:
    response = client.get(API, headers={"Authorization": "Bearer ya29.forged"})
    assert response.status_code == 401
    assert response.json()["error"]["errors"][0]["reason"] == "authError"


def test_insert_validates_client_ids_and_answers_409_duplicate(sandbox: GoogleCalendarSandbox, client: httpx.Client) -> None:
    api = authed(sandbox, client)
    assert api.post(API, json=event_body("abc12")).status_code == 200
    duplicate = api.post(API, json=event_body("abc12"))
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["errors"][0]["reason"] == "duplicate"
    for bad in ("abc", "ABC123", "wxyz12", "a" * 1025):
        response = api.post(API, json=event_body(bad))
        assert response.status_code == 400, bad
        assert response.json()["error"]["errors"][0]["reason"] == "invalid"
    backwards = event_body("abc13")
    backwards["end"] = {"dateTime": "2026-12-01T08:00:00+05:30"}
    assert api.post(API, json=backwards).json()["error"]["errors"][0]["reason"] == "timeRangeEmpty"


def test_paging_gives_the_sync_token_only_on_the_last_page_and_incremental_lists_show_deletions(
    sandbox: GoogleCalendarSandbox, client: httpx.Client
) -> None:
    api = authed(sandbox, client)
    for n in range(5):
        api.post(API, json=event_body(f"evt{n:02d}"))
    seen, pages, params = [], [], {"maxResults": 2}
    while True:
        page = api.get(API, params=params).json()
        pages.append(page)
        seen += [e["id"] for e in page["items"]]
        if "nextPageToken" not in page:
            break
        params = {"maxResults": 2, "pageToken": page["nextPageToken"]}
    assert seen == [f"evt{n:02d}" for n in range(5)]
    assert all("nextSyncToken" not in p for p in pages[:-1]) and "nextSyncToken" in pages[-1]
    token = pages[-1]["nextSyncToken"]

    assert api.delete(f"{API}/evt01").status_code == 204
    api.patch(f"{API}/evt02", json={"summary": "Moved"})
    changes = api.get(API, params={"syncToken": token}).json()
    assert {e["id"]: e["status"] for e in changes["items"]} == {"evt01": "cancelled", "evt02": "confirmed"}
    assert api.get(API, params={"syncToken": changes["nextSyncToken"]}).json()["items"] == []
    assert api.get(API, params={"syncToken": token, "q": "x"}).status_code == 400


def test_expired_and_garbled_sync_tokens_answer_410_full_sync_required(
    sandbox: GoogleCalendarSandbox, client: httpx.Client
) -> None:
    api = authed(sandbox, client)
    api.post(API, json=event_body("evt00"))
    token = api.get(API).json()["nextSyncToken"]
    sandbox.expire_sync_tokens()
    for stale in (token, "garbage"):
        response = api.get(API, params={"syncToken": stale})
        assert response.status_code == 410
        assert response.json()["error"]["errors"][0] == {
            "domain": "calendar", "reason": "fullSyncRequired",
            "message": "Sync token is no longer valid, a full sync is required.",
            "locationType": "parameter", "location": "syncToken",
        }


def test_quota_switch_answers_403_with_the_rate_limit_reason_then_recovers(
    sandbox: GoogleCalendarSandbox, client: httpx.Client
) -> None:
    api = authed(sandbox, client)
    assert api.post("http://x/_sandbox/google/quota", json={"reason": "userRateLimitExceeded", "next_n": 1}).status_code == 200
    refused = api.get(API)
    assert refused.status_code == 403
    assert refused.json()["error"]["errors"][0] == {
        "domain": "usageLimits", "reason": "userRateLimitExceeded", "message": "User Rate Limit Exceeded"
    }
    assert api.get(API).status_code == 200


def test_people_can_move_and_cancel_events_and_the_sync_token_sees_it(
    sandbox: GoogleCalendarSandbox, client: httpx.Client
) -> None:
    api = authed(sandbox, client)
    api.post(API, json=event_body("evt00"))
    api.post(API, json=event_body("evt01"))
    token = api.get(API).json()["nextSyncToken"]
    sandbox.person_edits(CALENDAR, "evt00", action="move", minutes=60)
    sandbox.person_edits(CALENDAR, "evt01", action="cancel")
    items = {e["id"]: e for e in api.get(API, params={"syncToken": token}).json()["items"]}
    assert items["evt00"]["start"]["dateTime"].startswith("2026-12-01T10:00:00+05:30")
    assert items["evt01"]["status"] == "cancelled"
    # Without a sync token (a full list) the deleted event is hidden unless showDeleted.
    assert [e["id"] for e in api.get(API).json()["items"]] == ["evt00"]
