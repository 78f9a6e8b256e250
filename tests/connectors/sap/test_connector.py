"""The SAP connector against the SAP sandbox: paging, incremental filter, auth, CSRF writes, debug log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest

from connectors.core.errors import AuthenticationFailed, InvalidRequest
from connectors.core.paging import query_of
from connectors.sap import SapConnector
from hub.core.settings import integration_config, reset_settings_cache
from hub.runtime.connections import build_sap_connector
from hub.systems.sap import CUSTOMERS
from sandbox.core import as_transport, running_server
from sandbox.sap import SapSandbox

PARTNERS = CUSTOMERS.stream  # the endpoint with what the customers dataset selects and expands


@pytest.fixture(scope="module")
def sandbox() -> SapSandbox:
    return SapSandbox(partners=1500, seed=3, max_page_size=400)


@pytest.fixture
def sap(sandbox: SapSandbox) -> Iterator[SapConnector]:
    sandbox.faults.clear()
    connector = build_sap_connector(transport=as_transport(sandbox))
    yield connector
    connector.close()


def test_reads_every_partner_once_by_key_even_when_the_server_pages_shorter(sap: SapConnector) -> None:
    pages = list(sap.sync(PARTNERS, None))
    ids = [r["BusinessPartner"] for p in pages for r in p.records]
    assert len(ids) == 1500 == len(set(ids))
    assert ids == sorted(ids)
    # $top=1000 asked, the server pages at 400 (with __next): each next page is asked for by key, never by offset.
    assert [len(p.records) for p in pages] == [400, 400, 400, 300]
    for previous, page in zip(pages, pages[1:], strict=False):
        query = query_of(page.position.url)
        assert "$skip" not in query and "$skiptoken" not in query
        assert query["$filter"] == f"BusinessPartner gt '{previous.records[-1]['BusinessPartner']}'"


def test_a_partner_changed_mid_read_skips_nothing() -> None:
    """Offset paging over (LastChangeDate, key) skipped partners that moved; keyset paging on the key cannot."""
    sandbox = SapSandbox(partners=1500, seed=4, max_page_size=400)
    ids: list[str] = []
    with build_sap_connector(transport=as_transport(sandbox)) as sap:
        for number, page in enumerate(sap.sync(PARTNERS, None), start=1):
            ids += [r["BusinessPartner"] for r in page.records]
            if number == 1:
                sandbox.mutate(200, rng_seed=5)
    assert len(ids) == len(set(ids)) == sandbox.partner_count


def test_count_answers_for_the_same_filter_as_the_read() -> None:
    sandbox = SapSandbox(partners=1500, seed=4, max_page_size=400)
    sap = build_sap_connector(transport=as_transport(sandbox))
    today = sandbox.now().date()
    sandbox.mutate(9, rng_seed=11)
    position = sap.start(PARTNERS, {"last_change_date": today.isoformat()})
    read = {r["BusinessPartner"] for p in sap.sync(PARTNERS, start=position) for r in p.records}
    assert sap.count(PARTNERS, position) == len(read) >= 9
    assert sap.count(PARTNERS, sap.start(PARTNERS, None)) == sandbox.partner_count


def test_first_url_selects_expands_orders_and_filters_incrementally(sap: SapConnector) -> None:
    query = query_of(sap.first_url(PARTNERS, {"last_change_date": "2026-05-10"}))
    assert query["$filter"] == "(LastChangeDate ge datetime'2026-05-09T00:00:00' or CreationDate ge datetime'2026-05-09T00:00:00')"
    assert query["$orderby"] == "BusinessPartner asc"
    assert "to_Customer/CustomerAccountGroup" in query["$select"]
    assert "to_BusinessPartnerAddress/to_EmailAddress" in query["$expand"]
    assert "$filter" not in query_of(sap.first_url(PARTNERS, None))


def test_incremental_read_returns_only_partners_changed_since_the_watermark(sandbox: SapSandbox, sap: SapConnector) -> None:
    changed = set(sandbox.mutate(7))
    today = sandbox.now().date()
    records = [r for p in sap.sync(PARTNERS, {"last_change_date": today.isoformat()}) for r in p.records]
    ids = {r["BusinessPartner"] for r in records}
    assert changed <= ids
    assert len(ids) < 100


def test_selected_shape_has_nested_navigation(sap: SapConnector) -> None:
    record = next(iter(sap.sync(PARTNERS, None))).records[0]
    assert record["LastChangeDate"] is None or record["LastChangeDate"].startswith("/Date(")
    assert "results" in record["to_BusinessPartnerAddress"]
    assert "FirstName" in record and "Supplier" not in record


def test_connection_check_reports_bad_credentials(sandbox: SapSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    good = build_sap_connector(transport=as_transport(sandbox))
    assert good.test_connection().ok
    monkeypatch.setenv("SAP_PASSWORD", "wrong")
    reset_settings_cache()
    try:
        bad = build_sap_connector(transport=as_transport(sandbox))
        check = bad.test_connection()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert not check.ok
    assert isinstance(check.error, AuthenticationFailed)
    assert check.error.status_code == 401


def test_missing_password_is_a_clear_authentication_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAP_PASSWORD", "")
    monkeypatch.setattr("hub.core.secrets._FALLBACK", None)  # no Secret-block lookup either
    reset_settings_cache()
    try:
        with pytest.raises(AuthenticationFailed, match="no password configured"):
            build_sap_connector()
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_oauth2_token_is_cached_and_renewed_after_expiry(sandbox: SapSandbox) -> None:
    config = integration_config("sap").model_copy(
        update={"auth": "oauth2", "token_url": "http://sap.sandbox/sap/bc/sec/oauth2/token"}
    )
    sap = build_sap_connector(transport=as_transport(sandbox), config=config)
    auth = sap.client.http.auth
    sap.connect()
    sap.connect()
    assert auth.token_requests == 1 and auth.cache.hits >= 1
    sandbox.expire_tokens()
    sap.connect()  # 401 on the stale token: one new token, the call succeeds
    assert auth.token_requests == 2


def test_csrf_token_is_fetched_for_writes_and_refetched_once_when_expired(sandbox: SapSandbox, sap: SapConnector) -> None:
    partner = sandbox.partner_ids()[5]
    etag = sandbox.etag_of(partner)
    sap.update_business_partner(partner, {"SearchTerm1": "UPDATED"}, etag)
    assert sandbox.get_partner(partner)["SearchTerm1"] == "UPDATED"
    first_token = sap._csrf_token
    sandbox.expire_tokens("csrf")
    sap.update_business_partner(partner, {"SearchTerm1": "AGAIN"}, sandbox.etag_of(partner))
    assert sandbox.get_partner(partner)["SearchTerm1"] == "AGAIN"
    assert sap._csrf_token != first_token


def test_stale_etag_is_an_invalid_request(sandbox: SapSandbox, sap: SapConnector) -> None:
    partner = sandbox.partner_ids()[6]
    stale = sandbox.etag_of(partner)
    sap.update_business_partner(partner, {"SearchTerm1": "ONE"}, stale)
    with pytest.raises(InvalidRequest) as info:
        sap.update_business_partner(partner, {"SearchTerm1": "TWO"}, stale)
    assert info.value.status_code == 412


def test_debug_mode_writes_redacted_request_response_pairs(sandbox: SapSandbox, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATION_DEBUG", "1")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    reset_settings_cache()
    try:
        sap = build_sap_connector(transport=as_transport(sandbox))
        sap.connect()
        sap.close()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    lines = (tmp_path / "integration_debug.log").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["integration"] == "sap" and entry["response"]["status_code"] == 200
    text = "\n".join(lines)
    assert "sandbox-secret" not in text
    assert entry["request"]["headers"]["authorization"] == "***"


def test_connector_speaks_real_http(sandbox: SapSandbox) -> None:
    with running_server(sandbox) as base:
        config = integration_config("sap").model_copy(update={"base_url": f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"})
        sap = build_sap_connector(config=config)
        try:
            pages = iter(sap.sync(PARTNERS, None))
            first, second = next(pages), next(pages)
        finally:
            sap.close()
    assert len(first.records) == 400 == len(second.records)
    assert first.next is not None and "BusinessPartner%20gt%20'1000000400'" in first.next.url
    assert second.records[0]["BusinessPartner"] > first.records[-1]["BusinessPartner"]


def test_date_literal_helper_matches_contract() -> None:
    from connectors.sap.odata import datetime_literal, parse_edm_datetime

    assert datetime_literal(date(2024, 1, 1)) == "datetime'2024-01-01T00:00:00'"
    assert parse_edm_datetime("/Date(1130112000000)/").isoformat() == "2005-10-24T00:00:00+00:00"
    assert parse_edm_datetime("/Date(1130168212000+0000)/").year == 2005
    with pytest.raises(ValueError):
        parse_edm_datetime("2024-01-01")


@pytest.mark.parametrize("cursor", [None, "incremental"])
def test_split_cuts_a_read_into_key_ranges_covering_every_partner_once(cursor: str | None) -> None:
    """The partitions of a read (tasks/partitions.py): key ranges inside the read's own filter, disjoint, complete."""
    sandbox = SapSandbox(partners=1500, seed=6, max_page_size=400)
    sandbox.mutate(300, rng_seed=2)
    with build_sap_connector(transport=as_transport(sandbox)) as sap:
        watermark = {"last_change_date": sandbox.now().date().isoformat()} if cursor else None
        position = sap.start(PARTNERS, watermark)
        whole = [r["BusinessPartner"] for p in sap.sync(PARTNERS, start=position) for r in p.records]
        starts = sap.split(PARTNERS, position, 3)
        assert len(starts) == 3
        ranges = [[r["BusinessPartner"] for p in sap.sync(PARTNERS, start=start) for r in p.records] for start in starts]
        assert [sap.count(PARTNERS, start) for start in starts] == [len(r) for r in ranges]
        sandbox.mutate(50, rng_seed=9)  # changes after the split move no key from one range into another
        again = [[r["BusinessPartner"] for p in sap.sync(PARTNERS, start=start) for r in p.records] for start in starts]
    assert sorted(k for r in ranges for k in r) == sorted(whole) and len(set(whole)) == len(whole)
    assert all(max(a) < min(b) for a, b in zip(ranges, ranges[1:], strict=False)), "ranges are ordered and disjoint"
    assert min(len(r) for r in ranges) > len(whole) // 6, "the ranges are of similar size"
    if cursor is None:
        assert sorted(k for r in again for k in r) == sorted(whole)
    for start in starts:
        assert "BusinessPartner" in query_of(start.url)["$filter"]


def test_split_of_a_small_read_gives_fewer_ranges() -> None:
    sandbox = SapSandbox(partners=2, seed=6, max_page_size=400)
    with build_sap_connector(transport=as_transport(sandbox)) as sap:
        starts = sap.split(PARTNERS, sap.start(PARTNERS, None), 8)
        keys = [r["BusinessPartner"] for start in starts for p in sap.sync(PARTNERS, start=start) for r in p.records]
    assert len(starts) <= 2 and sorted(keys) == sorted(set(keys)) and len(keys) == 2
