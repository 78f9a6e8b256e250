"""The Google Calendar connector against the sandbox: auth, idempotent inserts, incremental reads, quotas."""

from __future__ import annotations

import time

import pytest

from connectors.core.errors import (
    AuthenticationFailed,
    ErrorCategory,
    RateLimitExceeded,
    ResyncRequired,
    classify_response,
)
from connectors.core.jwt_bearer import load_service_account_info
from connectors.google_workspace.connector import EVENTS
from data_mappings.google_events import event_id_for
from sandbox.google_calendar import GOOGLE_TOKEN_URL, GoogleCalendarSandbox
from tests.google_support import CALENDAR, event_body, in_process_connector


@pytest.fixture
def sandbox() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


def test_assertion_carries_iss_scope_aud_exp_and_sub_and_the_sandbox_verifies_its_signature(
    sandbox: GoogleCalendarSandbox,
) -> None:
    with in_process_connector(sandbox) as connector:
        connector.connect()
    assert len(sandbox.assertions) == 1
    verified = sandbox.assertions[0]
    claims = verified["claims"]
    assert verified["header"]["alg"] == "RS256" and verified["header"]["kid"] == sandbox.service_account.key_id
    assert claims["iss"] == sandbox.service_account.email
    assert claims["scope"] == "https://www.googleapis.com/auth/calendar.events"
    assert claims["aud"] == GOOGLE_TOKEN_URL
    assert claims["sub"] == CALENDAR
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert abs(claims["iat"] - time.time()) < 60


def test_token_is_fetched_once_and_shared_by_every_call(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        for n in range(5):
            connector.insert_event(event_body(f"evt{n:02d}"))
        list(connector.sync(EVENTS))
        assert connector.auth.token_requests == 1
    assert sandbox.token_requests == 1


def test_an_expired_token_mid_run_is_replaced_without_failing_the_call(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        connector.insert_event(event_body("evt00"))
        sandbox.tokens.clear()  # the server forgets every token (expired or revoked)
        connector.insert_event(event_body("evt01"))
        assert connector.auth.token_requests == 2
    assert len(sandbox.live_events(CALENDAR)) == 2


def test_refused_delegation_is_an_authentication_error_with_googles_code(sandbox: GoogleCalendarSandbox) -> None:
    sandbox.delegation.clear()  # the admin never granted domain-wide delegation
    with in_process_connector(sandbox) as connector, pytest.raises(AuthenticationFailed) as caught:
        connector.connect()
    assert caught.value.code == "unauthorized_client"


def test_a_retry_after_a_lost_insert_answer_creates_nothing_twice(sandbox: GoogleCalendarSandbox) -> None:
    event_id = event_id_for("DLV-2026-000001")
    with in_process_connector(sandbox) as connector:
        connector.connect()
        # The insert reaches the calendar but its answer is lost; the retry is answered 409 duplicate.
        sandbox.faults.update({"drop_connection_next_n": 1})
        result = connector.insert_event(event_body(event_id))
        assert result.created is False and result.event["id"] == event_id
        # Inserting again later (a rerun) is also a success, not a second event.
        assert connector.insert_event(event_body(event_id)).created is False
    assert [e["id"] for e in sandbox.live_events(CALENDAR)] == [event_id]
    assert sandbox.api_calls["insert"] == 3


def test_quota_storm_of_403_rate_limits_and_429_is_survived_with_jittered_backoff(sandbox: GoogleCalendarSandbox) -> None:
    sleeps: list[float] = []
    with in_process_connector(sandbox, sleeps=sleeps) as connector:
        connector.connect()
        sandbox.quota.reason, sandbox.quota.next_n = "userRateLimitExceeded", 2
        connector.insert_event(event_body("evt00"))
        sandbox.quota.reason, sandbox.quota.next_n = "rateLimitExceeded", 2
        connector.insert_event(event_body("evt01"))
        sandbox.faults.update({"rate_limit_next_n": 2, "retry_after_s": None})  # 429 with Google's body
        connector.insert_event(event_body("evt02"))
    assert len(sandbox.live_events(CALENDAR)) == 3
    assert len(sleeps) == 6
    assert len(set(sleeps)) > 1  # exponential with jitter, not a fixed delay


def test_quota_errors_classify_as_rate_limit_and_other_403_stay_permanent(sandbox: GoogleCalendarSandbox) -> None:
    import httpx

    for reason in ("rateLimitExceeded", "userRateLimitExceeded"):
        body = {"error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": "x"}], "code": 403, "message": "x"}}
        error = classify_response(httpx.Response(403, json=body))
        assert isinstance(error, RateLimitExceeded) and error.transient and error.code == reason
    forbidden = {"error": {"errors": [{"domain": "global", "reason": "forbidden", "message": "Forbidden"}], "code": 403}}
    error = classify_response(httpx.Response(403, json=forbidden))
    assert error.category is ErrorCategory.AUTHENTICATION_FAILED and not error.transient


def test_a_persistent_quota_error_gives_up_as_rate_limit_exceeded(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        connector.connect()
        sandbox.quota.reason, sandbox.quota.next_n = "rateLimitExceeded", 100
        with pytest.raises(RateLimitExceeded):
            connector.insert_event(event_body("evt00"))


def test_incremental_read_pages_to_the_last_page_for_the_cursor(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        connector.page_size = 2
        for n in range(5):
            connector.insert_event(event_body(f"evt{n:02d}"))
        sandbox.empty_first_page = True  # Google may answer an empty page that still has a nextPageToken
        pages = list(connector.sync(EVENTS))
        assert [p.end_cursor is not None for p in pages] == [False] * (len(pages) - 1) + [True]
        assert sum(len(p.records) for p in pages) == 5 and pages[0].records == []
        cursor = pages[-1].end_cursor
        assert cursor is not None and cursor["sync_token"]
        connector.patch_event("evt03", {"summary": "Moved by the hub"})
        sandbox.person_edits(CALENDAR, "evt04", action="cancel")
        changes = list(connector.sync(EVENTS, cursor))
        assert {i["id"]: i["status"] for p in changes for i in p.records} == {"evt03": "confirmed", "evt04": "cancelled"}
        assert changes[-1].end_cursor


def test_an_expired_sync_token_is_refused_as_resync_required_and_a_full_read_starts_over(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        connector.insert_event(event_body("evt00"))
        cursor = list(connector.sync(EVENTS))[-1].end_cursor
        sandbox.expire_sync_tokens()
        with pytest.raises(ResyncRequired):
            list(connector.sync(EVENTS, cursor))
        pages = list(connector.sync(EVENTS))  # what the sync engine then reads (tasks/engine.py, resync)
    assert [i["id"] for p in pages for i in p.records] == ["evt00"]
    assert pages[-1].end_cursor and pages[-1].end_cursor["sync_token"] != (cursor or {}).get("sync_token")


def test_cancel_is_idempotent_and_keeps_the_event_as_cancelled(sandbox: GoogleCalendarSandbox) -> None:
    with in_process_connector(sandbox) as connector:
        connector.insert_event(event_body("evt00"))
        assert connector.cancel_event("evt00")["status"] == "cancelled"
        assert connector.cancel_event("evt00")["status"] == "cancelled"
        assert connector.cancel_event("nosuch1") is None


def test_key_file_problems_are_clear_authentication_errors(tmp_path) -> None:
    from pydantic import SecretStr

    with pytest.raises(AuthenticationFailed, match="no service-account key"):
        load_service_account_info(SecretStr(""), None)
    with pytest.raises(AuthenticationFailed, match="not valid JSON"):
        load_service_account_info(SecretStr("{nope"), None)
    with pytest.raises(AuthenticationFailed, match="not a service-account key"):
        load_service_account_info(SecretStr('{"type": "authorized_user"}'), None)
    with pytest.raises(AuthenticationFailed, match="cannot read"):
        load_service_account_info(None, tmp_path / "missing.json")


def test_quota_storm_over_real_http_loses_and_duplicates_nothing(
    sandbox: GoogleCalendarSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.core.settings import integration_config
    from hub.runtime.connections import build_google_workspace_connector
    from tests.google_support import FAST_RETRY, served

    sleeps: list[float] = []
    with served(sandbox, monkeypatch):
        config = integration_config("google_workspace").model_copy(update={"retry": FAST_RETRY, "rate_budget_per_s": 10_000})
        sandbox.quota.reason, sandbox.quota.every_n = "userRateLimitExceeded", 3  # every third call refused
        sandbox.faults.update({"rate_limit_every_n": 5, "retry_after_s": None, "drop_connection_every_n": 7})
        with build_google_workspace_connector(config=config, sleep=sleeps.append) as connector:
            for n in range(30):
                connector.insert_event(event_body(f"evt{n:02d}"))
            items = [i for page in connector.sync(EVENTS) for i in page.records]
    assert sorted(i["id"] for i in items) == [f"evt{n:02d}" for n in range(30)]
    assert sandbox.quota.fired > 0 and sleeps
