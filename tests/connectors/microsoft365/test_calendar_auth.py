"""Graph auth, throttling, idempotent calendar writes, delta reads and $batch through the connector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.core.errors import (
    AuthenticationFailed,
    ErrorCategory,
    ResyncRequired,
    classify_response,
)
from connectors.microsoft365 import CALENDAR_DELTA, BatchRequest, Microsoft365Connector
from connectors.microsoft365.connector import _TOKEN_CACHES
from hub.core.settings import reset_settings_cache
from hub.runtime.connections import build_microsoft365_connector
from sandbox.core import as_transport
from sandbox.microsoft365 import Microsoft365Sandbox, aad_error

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _event(i: int, *, txn: str | None = None, hours: int = 24) -> dict[str, Any]:
    start = NOW + timedelta(hours=hours + i)
    return {
        "subject": f"Delivery DLV-2026-{i:06d}: 18 t tile adhesive",
        "body": {"contentType": "text", "content": "Site contact: Mr. Rao, +91 98450 00000"},
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "location": {"displayName": "Prestige Lakeside, Whitefield"},
        "transactionId": txn or f"drymix-DLV-2026-{i:06d}-v1",
    }


def _window() -> dict[str, datetime]:
    return {"start": NOW - timedelta(days=30), "end": NOW + timedelta(days=90)}


# -- auth ---------------------------------------------------------------------------------------------


def test_aadsts_bodies_classify_as_authentication_failed_with_the_code() -> None:
    for status, error, code in ((401, "invalid_client", 7000215), (400, "unauthorized_client", 700016), (400, "invalid_request", 90002)):
        body = aad_error(status, error, code, "whatever went wrong").body
        classified = classify_response(httpx.Response(status, content=body, headers={"content-type": "application/json"}))
        assert classified.category is ErrorCategory.AUTHENTICATION_FAILED
        assert classified.code == f"AADSTS{code}" and f"AADSTS{code}" in classified.message
        assert "Trace ID" not in classified.message


def test_wrong_secret_fails_with_aadsts7000215(graph: Microsoft365Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROSOFT365_CLIENT_SECRET", "the-secret-id-not-its-value")
    reset_settings_cache()
    _TOKEN_CACHES.clear()
    try:
        with build_microsoft365_connector(transport=as_transport(graph)) as conn:
            check = conn.test_connection()
        assert not check.ok and isinstance(check.error, AuthenticationFailed)
        assert check.error.code == "AADSTS7000215" and "Invalid client secret" in check.error.message
        assert "the-secret-id-not-its-value" not in str(check.error)
    finally:
        reset_settings_cache()
        _TOKEN_CACHES.clear()


def test_unknown_client_fails_with_aadsts700016(graph: Microsoft365Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROSOFT365_CLIENT_ID", "00000000-0000-0000-0000-000000000000")
    reset_settings_cache()
    _TOKEN_CACHES.clear()
    try:
        with build_microsoft365_connector(transport=as_transport(graph)) as conn:
            check = conn.test_connection()
        assert isinstance(check.error, AuthenticationFailed) and check.error.code == "AADSTS700016"
    finally:
        reset_settings_cache()
        _TOKEN_CACHES.clear()


def test_token_is_cached_shared_and_renewed_when_it_expires_mid_run(graph: Microsoft365Sandbox, sleeps: list[float]) -> None:
    reset_settings_cache()
    _TOKEN_CACHES.clear()
    with build_microsoft365_connector(transport=as_transport(graph)) as one, build_microsoft365_connector(transport=as_transport(graph)) as two:
        one.connect()
        two.connect()
        one.create_event(_event(1))
        assert graph.token_requests == 1  # one token for both connectors and every call
        graph.expire_tokens()  # the token dies between two calls of the same run
        two.create_event(_event(2))
        one.connect()
        assert graph.token_requests == 2
    _TOKEN_CACHES.clear()


# -- throttling ---------------------------------------------------------------------------------------


def test_throttling_storm_is_survived_honouring_retry_after(connector: Microsoft365Connector, graph: Microsoft365Sandbox,
                                                            sleeps: list[float]) -> None:
    graph.faults.update({"rate_limit_every_n": 2, "retry_after_s": 3})
    created = [connector.create_event(_event(i)) for i in range(30)]
    assert len({e["id"] for e in created}) == 30
    fired = graph.faults.snapshot()["stats"]["fired"]["rate_limit"]
    assert fired >= 30
    # Sleeps under 0.1 s are the client's own rate budget; every retry waited the full Retry-After.
    retry_waits = [s for s in sleeps if s >= 0.1]
    assert len(retry_waits) == fired and min(retry_waits) >= 3.0
    graph.faults.replace({"error_5xx_next_n": 2, "error_5xx_status": 503, "error_5xx_retry_after_s": 5})
    sleeps.clear()
    connector.create_event(_event(99))
    retry_waits = [s for s in sleeps if s >= 0.1]
    assert len(retry_waits) == 2 and min(retry_waits) >= 5.0


# -- idempotent writes --------------------------------------------------------------------------------


def test_retried_create_after_a_lost_answer_creates_nothing_twice(connector: Microsoft365Connector, graph: Microsoft365Sandbox) -> None:
    before = len(graph.events)
    graph.faults.update({"drop_connection_next_n": 1, "drop_after_fraction": 0.0})  # created, then the answer is lost
    event = connector.create_event(_event(5))
    again = connector.create_event(_event(5))  # a later run retries the same schedule version
    assert event["id"] == again["id"]
    assert len(graph.events) == before + 1 and graph.stats["events_created"] == 1


def test_update_and_delete_are_safe_to_repeat(connector: Microsoft365Connector, graph: Microsoft365Sandbox) -> None:
    event = connector.create_event(_event(6))
    moved = connector.update_event(event["id"], {"start": {"dateTime": "2026-12-24T08:00:00", "timeZone": "UTC"},
                                                 "end": {"dateTime": "2026-12-24T09:00:00", "timeZone": "UTC"}},
                                   etag=event["@odata.etag"])
    assert moved["start"]["dateTime"].startswith("2026-12-24T08:00:00")
    assert connector.delete_event(event["id"]) is True
    assert connector.delete_event(event["id"]) is False  # already gone: not an error


# -- delta ------------------------------------------------------------------------------------------------


def test_delta_pages_to_a_delta_link_then_reads_changes_from_both_sides(connector: Microsoft365Connector, graph: Microsoft365Sandbox) -> None:
    connector.calendar = connector.calendar.model_copy(update={"delta_page_size": 5})
    first = list(connector.sync(CALENDAR_DELTA, _window()))
    assert len(first) > 1 and all(p.next and not p.end_cursor for p in first[:-1]) and first[-1].end_cursor and not first[-1].next
    seen = {r["id"] for p in first for r in p.records}
    assert len(seen) == sum(len(p.records) for p in first)

    ours = connector.create_event(_event(7))  # the ERP side
    moved, cancelled = sorted(seen)[:2]
    graph.person_edits(moved, "move", minutes=90)  # people in Outlook
    graph.person_edits(cancelled, "cancel")

    second = list(connector.sync(CALENDAR_DELTA, first[-1].end_cursor))
    changes = {r["id"]: r for p in second for r in p.records}
    assert set(changes) == {ours["id"], moved, cancelled}
    assert changes[cancelled]["@removed"] == {"reason": "deleted"}
    assert "@removed" not in changes[moved] and changes[moved]["lastModifiedDateTime"]

    third = list(connector.sync(CALENDAR_DELTA, second[-1].end_cursor))
    assert [r for p in third for r in p.records] == []  # nothing changed since


def test_expired_delta_token_raises_resync_required(connector: Microsoft365Connector, graph: Microsoft365Sandbox) -> None:
    first = list(connector.sync(CALENDAR_DELTA, _window()))
    graph.expire_delta_tokens()
    with pytest.raises(ResyncRequired) as gone:
        list(connector.sync(CALENDAR_DELTA, first[-1].end_cursor))
    assert gone.value.status_code == 410 and gone.value.code == "syncStateNotFound" and not gone.value.transient
    graph.switches.expired_delta_code = "resyncRequired"
    with pytest.raises(ResyncRequired):
        list(connector.sync(CALENDAR_DELTA, first[-1].end_cursor))


# -- $batch ----------------------------------------------------------------------------------------------


def test_batch_creates_45_events_in_3_round_trips_and_resends_only_throttled_items(
    connector: Microsoft365Connector, graph: Microsoft365Sandbox, sleeps: list[float]
) -> None:
    graph.faults.update({"rate_limit_every_n": 7, "retry_after_s": 2})
    results = connector.create_events([_event(100 + i) for i in range(45)])
    assert all(r.ok and r.status == 201 for r in results)
    assert len({r.body["id"] for r in results}) == 45
    assert graph.stats["events_created"] == 45  # re-sent items were not created twice
    assert graph.stats["batch_requests"] > 3 and 2.0 in sleeps


def test_batch_reports_per_item_errors_classified(connector: Microsoft365Connector) -> None:
    bad = _event(200)
    bad["end"] = bad["start"] | {"dateTime": "2020-01-01T00:00:00"}
    results = connector.batch([
        BatchRequest("1", "POST", f"/users/{connector.calendar_user}/events", body=_event(201)),
        BatchRequest("2", "POST", f"/users/{connector.calendar_user}/events", body=bad),
        BatchRequest("3", "GET", f"/users/{connector.calendar_user}/events/does-not-exist"),
    ])
    assert [r.status for r in results] == [201, 400, 404]
    assert results[1].error is not None and results[1].error.category is ErrorCategory.INVALID_REQUEST
    assert results[2].error is not None and results[2].error.code == "ErrorItemNotFound"


def test_batch_of_more_than_20_is_refused_by_the_sandbox(graph: Microsoft365Sandbox, connector: Microsoft365Connector) -> None:
    connector.connect()
    token = connector.client.http.auth.cache.get("token")  # type: ignore[attr-defined]
    body = {"requests": [{"id": str(i), "method": "GET", "url": "/users/planning@drymix.example/events"} for i in range(21)]}
    with httpx.Client(transport=as_transport(graph), base_url="http://graph.sandbox") as raw:
        answer = raw.post("/v1.0/$batch", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "BadRequest"


def test_retried_batch_after_a_lost_answer_creates_nothing_twice(connector: Microsoft365Connector, graph: Microsoft365Sandbox) -> None:
    connector.connect()  # the token is cached: the next request is the $batch itself
    graph.faults.update({"drop_connection_next_n": 1, "drop_after_fraction": 0.0})  # processed, answer lost
    results = connector.create_events([_event(300 + i) for i in range(12)])
    assert all(r.ok for r in results) and len({r.body["id"] for r in results}) == 12
    assert graph.stats["batch_requests"] == 2 and graph.stats["events_created"] == 12
