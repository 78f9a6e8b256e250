"""The SAP API_BUSINESS_PARTNER sandbox behaves like the OData V2 service the hub talks to."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.sap import (
    DIRTY_KINDS,
    SERVICE_ROOT,
    TOKEN_PATH,
    SapSandbox,
    is_valid_gstin,
    parse_wire_datetime,
)

SVC = SERVICE_ROOT
BP = f"{SERVICE_ROOT}A_BusinessPartner"
BASIC = ("DRYMIX_INT", "sandbox-secret")
BASE = "http://sap.test"
PARAMTYPE_CODE = "005056A509B11EE1BB8AF4A65EC3CA20"
NOW = datetime(2026, 11, 28, 10, 15, 30, tzinfo=UTC)
EXPAND_ALL = ",".join(
    (
        "to_Customer",
        "to_BusinessPartnerTax",
        "to_BusinessPartnerAddress/to_EmailAddress",
        "to_BusinessPartnerAddress/to_PhoneNumber",
        "to_BusinessPartnerAddress/to_MobilePhoneNumber",
    )
)


class FakeClock:
    """A settable sandbox clock."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def odata(sandbox: SapSandbox, auth: Any = BASIC, headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client talking to the sandbox in-process, asking for JSON."""
    return httpx.Client(
        transport=as_transport(sandbox),
        base_url=BASE,
        auth=auth,
        headers={"Accept": "application/json", **(headers or {})},
    )


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def results(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["d"]["results"]
    return rows


def pull_all(
    client: httpx.Client, url: str, params: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow __next to the end; returns (rows, page payloads)."""
    rows: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    next_params: dict[str, str] | None = params
    while next_url:
        resp = client.get(next_url, params=next_params)
        assert resp.status_code == 200, resp.text
        page = resp.json()["d"]
        pages.append(page)
        rows.extend(page["results"])
        next_url, next_params = page.get("__next"), None
        assert len(pages) < 1000, "paging does not terminate"
    return rows, pages


@pytest.fixture(scope="module")
def reader() -> SapSandbox:
    """A read-only sandbox shared by the query tests."""
    return SapSandbox(partners=2500, max_page_size=500)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def writable(clock: FakeClock) -> SapSandbox:
    """A small sandbox each test may change."""
    return SapSandbox(partners=300, clock=clock, token_ttl_s=600, csrf_ttl_s=300)


@contextmanager
def csrf_client(sandbox: SapSandbox) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a CSRF session cookie, and its token."""
    with odata(sandbox) as client:
        fetched = client.get(SVC, headers={"X-CSRF-Token": "Fetch"})
        assert fetched.status_code == 200
        yield client, fetched.headers["x-csrf-token"]


# -- paging ------------------------------------------------------------------------------------


def test_paging_follows_next_until_the_end_and_returns_every_partner_once(reader: SapSandbox) -> None:
    with odata(reader) as client:
        rows, pages = pull_all(client, BP, {"$select": "BusinessPartner,LastChangeDate", "$inlinecount": "allpages"})
    ids = [row["BusinessPartner"] for row in rows]
    assert ids == reader.partner_ids()
    assert len(set(ids)) == 2500
    assert len(pages) == 5
    assert all(len(page["results"]) <= 500 for page in pages)
    assert all(page["__count"] == "2500" for page in pages)
    first_next = pages[0]["__next"]
    assert first_next.startswith(f"{BASE}{BP}?")
    assert "$select=BusinessPartner,LastChangeDate" in first_next
    assert "$inlinecount=allpages" in first_next
    assert "$skiptoken=" in first_next
    assert "__next" not in pages[-1]


def test_server_paging_caps_top_and_keeps_the_remaining_count(reader: SapSandbox) -> None:
    with odata(reader) as client:
        rows, pages = pull_all(client, BP, {"$top": "1200", "$skip": "100", "$select": "BusinessPartner"})
    assert [len(page["results"]) for page in pages] == [500, 500, 200]
    assert [row["BusinessPartner"] for row in rows] == reader.partner_ids()[100:1300]


def test_client_paging_with_top_and_skip(reader: SapSandbox) -> None:
    with odata(reader) as client:
        resp = client.get(BP, params={"$top": "5", "$skip": "10", "$select": "BusinessPartner"})
    payload = resp.json()["d"]
    assert [row["BusinessPartner"] for row in payload["results"]] == reader.partner_ids()[10:15]
    assert "__next" not in payload
    assert "__count" not in payload, "__count only with $inlinecount=allpages"


def test_filtered_and_ordered_paging_is_complete_and_sorted(reader: SapSandbox) -> None:
    params = {
        "$filter": "LastChangeDate ge datetime'2025-06-01T00:00:00'",
        "$orderby": "LastChangeDate desc,LastChangeTime desc",
        "$select": "BusinessPartner,LastChangeDate,LastChangeTime",
    }
    with odata(reader) as client:
        rows, _pages = pull_all(client, BP, params)
    expected = {
        pid
        for pid in reader.partner_ids()
        if parse_wire_datetime(reader.get_partner(pid)["LastChangeDate"]) >= ms("2025-06-01")
    }
    assert 0 < len(expected) < 2500
    assert [row["BusinessPartner"] for row in rows if row["BusinessPartner"] in expected] == [
        row["BusinessPartner"] for row in rows
    ]
    assert {row["BusinessPartner"] for row in rows} == expected
    assert len(rows) == len(expected)
    keys = [(parse_wire_datetime(r["LastChangeDate"]), r["LastChangeTime"]) for r in rows]
    assert keys == sorted(keys, reverse=True)


def test_invalid_skiptoken_is_a_400(reader: SapSandbox) -> None:
    with odata(reader) as client:
        resp = client.get(BP, params={"$skiptoken": "not-a-token!!"})
    assert resp.status_code == 400
    assert "skiptoken" in resp.json()["error"]["message"]["value"]


# -- $filter -------------------------------------------------------------------------------------


def test_filter_on_last_change_date_with_datetime_literal(reader: SapSandbox) -> None:
    with odata(reader) as client:
        rows, _ = pull_all(
            client,
            BP,
            {"$filter": "LastChangeDate ge datetime'2026-01-01T00:00:00'", "$select": "BusinessPartner,LastChangeDate"},
        )
    expected = [
        pid
        for pid in reader.partner_ids()
        if parse_wire_datetime(reader.get_partner(pid)["LastChangeDate"]) >= ms("2026-01-01")
    ]
    assert [row["BusinessPartner"] for row in rows] == expected
    assert all(parse_wire_datetime(row["LastChangeDate"]) >= ms("2026-01-01") for row in rows)


def test_filter_comparing_datetime_to_a_date_string_gives_the_sap_error_verbatim(reader: SapSandbox) -> None:
    with odata(reader) as client:
        for literal in ("'/Date(1714521600000)/'", "'2024-05-01'"):
            resp = client.get(BP, params={"$filter": f"LastChangeDate eq {literal}"})
            assert resp.status_code == 400
            error = resp.json()["error"]
            assert error["code"] == PARAMTYPE_CODE
            assert error["message"] == {
                "lang": "en",
                "value": "Invalid parametertype used at function 'eq' (Position: 16)",
            }
            inner = error["innererror"]
            assert set(inner) == {"application", "transactionid", "timestamp", "Error_Resolution", "errordetails"}
            assert inner["application"]["service_id"] == "API_BUSINESS_PARTNER"
            assert re.fullmatch(r"[0-9A-F]{32}", inner["transactionid"])
            assert re.fullmatch(r"\d{14}\.\d{7}", inner["timestamp"])
            assert set(inner["Error_Resolution"]) == {"SAP_Transaction", "SAP_Note"}
            assert inner["errordetails"] == [
                {
                    "code": PARAMTYPE_CODE,
                    "message": error["message"]["value"],
                    "propertyref": "",
                    "severity": "error",
                    "target": "",
                }
            ]
        ge = client.get(BP, params={"$filter": "CreationDate ge '2024-05-01'"})
    assert ge.json()["error"]["message"]["value"] == "Invalid parametertype used at function 'ge' (Position: 14)"


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"$filter": "LastChangeDate ge"}, "filter"),
        ({"$filter": "(BusinessPartner eq '1'"}, "filter"),
        ({"$filter": "NoSuchProperty eq 'x'"}, "NoSuchProperty"),
        ({"$filter": "BusinessPartner eq datetime'2024-13-45T00:00:00'"}, "Invalid literal"),
        ({"$filter": "BusinessPartner eq 1 ?"}, "position"),
        ({"$filter": "to_BusinessPartnerAddress/CityName eq 'Pune'"}, "not single-valued"),
        ({"$orderby": "NoSuchProperty desc"}, "NoSuchProperty"),
        ({"$select": "BusinessPartner,Nope"}, "Nope"),
        ({"$expand": "to_Nowhere"}, "to_Nowhere"),
        ({"$top": "ten"}, "$top"),
        ({"$search": "x"}, "$search"),
        ({"$inlinecount": "some"}, "$inlinecount"),
    ],
)
def test_bad_query_options_give_400_odata_errors(reader: SapSandbox, params: dict[str, str], fragment: str) -> None:
    with odata(reader) as client:
        resp = client.get(BP, params=params)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert fragment in error["message"]["value"]
    assert set(error) == {"code", "message", "innererror"}


def test_filter_logic_parentheses_nulls_functions_and_navigation(reader: SapSandbox) -> None:
    partners = {pid: reader.get_partner(pid) for pid in reader.partner_ids()}
    customers = {
        row[0]: dict(zip(reader.tables["A_Customer"].etype.names, row, strict=True))
        for row in reader.tables["A_Customer"].rows
    }
    cases: dict[str, Callable[[dict[str, Any]], bool]] = {
        (
            "(BusinessPartnerCategory eq '1' or BusinessPartnerCategory eq '2') and BusinessPartnerIsBlocked eq true"
        ): lambda p: p["BusinessPartnerIsBlocked"] is True,
        "BirthDate ne null": lambda p: p["BirthDate"] is not None,
        "not substringof('Hardware', BusinessPartnerFullName) and BusinessPartnerCategory eq '2'": lambda p: (
            p["BusinessPartnerCategory"] == "2" and "Hardware" not in (p["BusinessPartnerFullName"] or "")
        ),
        "startswith(BusinessPartnerFullName, 'Shree') or endswith(BusinessPartnerFullName, 'LLP')": lambda p: (
            (p["BusinessPartnerFullName"] or "").startswith("Shree")
            or (p["BusinessPartnerFullName"] or "").endswith("LLP")
        ),
        "tolower(SearchTerm2) eq 'pune'": lambda p: (p["SearchTerm2"] or "").lower() == "pune",
        "to_Customer/CustomerAccountGroup eq 'ZRMC'": lambda p: (
            customers.get(p["BusinessPartner"], {}).get("CustomerAccountGroup") == "ZRMC"
        ),
        "year(LastChangeDate) eq 2024 and LastChangeTime lt time'PT12H00M00S'": lambda p: (
            p["LastChangeDate"] is not None
            and datetime.fromtimestamp(parse_wire_datetime(p["LastChangeDate"]) / 1000, tz=UTC).year == 2024
            and p["LastChangeTime"] < "PT12H00M00S"
        ),
    }
    with odata(reader) as client:
        for expression, predicate in cases.items():
            count = client.get(f"{BP}/$count", params={"$filter": expression})
            assert count.status_code == 200, (expression, count.text)
            expected = sum(1 for p in partners.values() if predicate(p))
            assert int(count.text) == expected, expression
            assert expected > 0, f"case does not exercise anything: {expression}"


def test_orderby_with_several_keys(reader: SapSandbox) -> None:
    with odata(reader) as client:
        rows = results(
            client.get(
                BP,
                params={
                    "$orderby": "BusinessPartnerCategory asc,BusinessPartner desc",
                    "$select": "BusinessPartner,BusinessPartnerCategory",
                    "$top": "400",
                },
            )
        )
    keys = [(row["BusinessPartnerCategory"] or "", row["BusinessPartner"]) for row in rows]
    everything = sorted(
        ((p["BusinessPartnerCategory"] or "", pid) for pid in reader.partner_ids() for p in [reader.get_partner(pid)]),
        key=lambda k: (k[0], -int(k[1])),
    )
    assert keys == everything[:400]


# -- $select / $expand ----------------------------------------------------------------------------


def test_select_returns_only_the_selected_properties_plus_metadata(reader: SapSandbox) -> None:
    with odata(reader) as client:
        row = results(client.get(BP, params={"$select": "SearchTerm1,BusinessPartner", "$top": "1"}))[0]
    assert list(row) == ["__metadata", "BusinessPartner", "SearchTerm1"]
    assert row["__metadata"] == {
        "id": f"{BASE}{SVC}A_BusinessPartner('1000000001')",
        "uri": f"{BASE}{SVC}A_BusinessPartner('1000000001')",
        "type": "API_BUSINESS_PARTNER.A_BusinessPartnerType",
        "etag": reader.etag_of("1000000001"),
    }


def test_unexpanded_navigation_is_deferred_and_expanded_shapes_are_right(reader: SapSandbox) -> None:
    prospect = next(pid for pid in reader.partner_ids() if reader.get_partner(pid)["Customer"] == "")
    with odata(reader) as client:
        rows = results(
            client.get(BP, params={"$expand": "to_Customer,to_BusinessPartnerAddress/to_EmailAddress", "$top": "30"})
        )
        lone = client.get(f"{BP}('{prospect}')", params={"$expand": "to_Customer"}).json()["d"]
    row = rows[0]
    assert row["to_BusinessPartnerTax"] == {
        "__deferred": {"uri": f"{BASE}{SVC}A_BusinessPartner('1000000001')/to_BusinessPartnerTax"}
    }
    assert row["to_Customer"]["Customer"] == "1000000001"
    assert row["to_Customer"]["__metadata"]["type"] == "API_BUSINESS_PARTNER.A_CustomerType"
    address = row["to_BusinessPartnerAddress"]["results"][0]
    assert address["BusinessPartner"] == "1000000001"
    assert isinstance(address["to_EmailAddress"]["results"], list)
    assert set(address["to_PhoneNumber"]) == {"__deferred"}
    assert lone["to_Customer"] is None, "a single-valued navigation without target expands to null"
    assert all("results" in r["to_BusinessPartnerAddress"] for r in rows)


def test_select_with_expand_keeps_only_selected_navigation_paths(reader: SapSandbox) -> None:
    params = {
        "$select": "BusinessPartner,to_Customer/CustomerAccountGroup,to_BusinessPartnerAddress/CityName,"
        "to_BusinessPartnerAddress/to_MobilePhoneNumber/PhoneNumber",
        "$expand": "to_Customer,to_BusinessPartnerTax,to_BusinessPartnerAddress/to_MobilePhoneNumber",
        "$top": "20",
    }
    with odata(reader) as client:
        rows = results(client.get(BP, params=params))
        tax_selected = results(
            client.get(
                BP,
                params={
                    "$select": "BusinessPartner,to_BusinessPartnerTax",
                    "$expand": "to_BusinessPartnerTax",
                    "$top": "5",
                },
            )
        )
        not_expanded = client.get(BP, params={"$select": "to_Customer/CustomerName"})
    for row in rows:
        assert set(row) == {"__metadata", "BusinessPartner", "to_Customer", "to_BusinessPartnerAddress"}
        if row["to_Customer"] is not None:
            assert set(row["to_Customer"]) == {"__metadata", "CustomerAccountGroup"}
        for address in row["to_BusinessPartnerAddress"]["results"]:
            assert set(address) == {"__metadata", "CityName", "to_MobilePhoneNumber"}
            for mobile in address["to_MobilePhoneNumber"]["results"]:
                assert set(mobile) == {"__metadata", "PhoneNumber"}
    assert all(set(r) == {"__metadata", "BusinessPartner", "to_BusinessPartnerTax"} for r in tax_selected)
    assert any(r["to_BusinessPartnerTax"]["results"] for r in tax_selected)
    assert all(t["BPTaxType"] == "IN3" for r in tax_selected for t in r["to_BusinessPartnerTax"]["results"])
    assert not_expanded.status_code == 400


def test_single_entities_navigation_urls_and_404(reader: SapSandbox) -> None:
    with odata(reader) as client:
        one = client.get(f"{BP}('1000000001')")
        by_name = client.get(f"{BP}(BusinessPartner='1000000001')", params={"$select": "BusinessPartner"})
        deferred_uri = one.json()["d"]["to_BusinessPartnerAddress"]["__deferred"]["uri"]
        addresses = client.get(deferred_uri)
        address_uri = addresses.json()["d"]["results"][0]["__metadata"]["uri"]
        address = client.get(address_uri)
        customer = client.get(f"{BP}('1000000001')/to_Customer")
        customer_set = client.get(f"{SVC}A_Customer", params={"$top": "3", "$select": "Customer,CustomerName"})
        missing = client.get(f"{BP}('9999999999')")
        unknown_set = client.get(f"{SVC}A_Nothing")
        count = client.get(f"{BP}/$count")
    assert one.status_code == 200
    assert one.headers["etag"] == one.json()["d"]["__metadata"]["etag"]
    assert by_name.json()["d"]["BusinessPartner"] == "1000000001"
    assert addresses.status_code == 200
    assert addresses.json()["d"]["results"]
    assert address.json()["d"]["AddressID"] == addresses.json()["d"]["results"][0]["AddressID"]
    assert customer.json()["d"]["Customer"] == "1000000001"
    assert [c["Customer"] for c in results(customer_set)] == ["1000000001", "1000000002", "1000000003"]
    assert missing.status_code == 404
    assert missing.json()["error"]["message"]["value"].startswith("Resource not found")
    assert unknown_set.status_code == 404
    assert count.text == "2500"


def test_json_only_atom_requests_get_406(reader: SapSandbox) -> None:
    with httpx.Client(transport=as_transport(reader), base_url=BASE, auth=BASIC) as client:
        atom = client.get(BP, params={"$top": "1"})
        explicit = client.get(BP, params={"$top": "1", "$format": "atom"})
        json_by_format = client.get(BP, params={"$top": "1", "$format": "json"})
        service_xml = client.get(SVC)
        service_json = client.get(SVC, params={"$format": "json"})
        batch = client.post(f"{SVC}$batch")
    assert atom.status_code == explicit.status_code == 406
    assert atom.headers["content-type"].startswith("application/xml")
    assert "JSON only" in atom.text
    assert json_by_format.status_code == 200
    assert "<app:service" in service_xml.text
    assert "A_BusinessPartner" in service_json.json()["d"]["EntitySets"]
    assert batch.status_code == 403, "modifying requests need a CSRF token first"


def test_metadata_is_valid_edmx_matching_what_is_served(reader: SapSandbox) -> None:
    ns = {
        "edmx": "http://schemas.microsoft.com/ado/2007/06/edmx",
        "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
        "edm": "http://schemas.microsoft.com/ado/2008/09/edm",
        "sap": "http://www.sap.com/Protocols/SAPData",
    }
    with odata(reader) as client:
        resp = client.get(f"{SVC}$metadata")
        full = client.get(
            f"{BP}('1000000001')",
            params={"$expand": EXPAND_ALL},
        ).json()["d"]
    assert resp.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(resp.content)
    services = root.find("edmx:DataServices", ns)
    assert services is not None
    assert services.get(f"{{{ns['m']}}}DataServiceVersion") == "2.0"
    schema = services.find("edm:Schema", ns)
    assert schema is not None
    assert schema.get("Namespace") == "API_BUSINESS_PARTNER"
    types = {t.get("Name"): t for t in schema.findall("edm:EntityType", ns)}
    bp = types["A_BusinessPartnerType"]
    props = {p.get("Name"): p for p in bp.findall("edm:Property", ns)}
    assert props["LastChangeDate"].get("Type") == "Edm.DateTime"
    assert props["LastChangeDate"].get(f"{{{ns['sap']}}}display-format") == "Date"
    assert props["LastChangeTime"].get("Type") == "Edm.Time"
    assert props["BusinessPartnerIsBlocked"].get("Type") == "Edm.Boolean"
    assert props["BusinessPartnerUUID"].get("Type") == "Edm.Guid"
    assert [k.get("Name") for k in bp.findall("edm:Key/edm:PropertyRef", ns)] == ["BusinessPartner"]

    def served(entity: dict[str, Any]) -> set[str]:
        return {
            k
            for k, v in entity.items()
            if k != "__metadata"
            and not (isinstance(v, dict) and ({"__deferred"} == set(v) or "results" in v or "__metadata" in v))
            and k not in ("to_Customer",)
        }

    def declared(type_name: str) -> set[str]:
        return {p.get("Name") or "" for p in types[type_name].findall("edm:Property", ns)}

    assert served(full) == declared("A_BusinessPartnerType")
    assert served(full["to_Customer"]) == declared("A_CustomerType")
    assert served(full["to_BusinessPartnerTax"]["results"][0]) == declared("A_BusinessPartnerTaxNumberType")
    address = full["to_BusinessPartnerAddress"]["results"][0]
    assert served(address) == declared("A_BusinessPartnerAddressType")
    assert served(address["to_EmailAddress"]["results"][0]) == declared("A_AddressEmailAddressType")
    navs = {n.get("Name"): n.get("Relationship") for n in bp.findall("edm:NavigationProperty", ns)}
    associations = {f"API_BUSINESS_PARTNER.{a.get('Name')}" for a in schema.findall("edm:Association", ns)}
    assert set(navs) == {"to_BusinessPartnerAddress", "to_BusinessPartnerRole", "to_BusinessPartnerTax", "to_Customer"}
    assert set(navs.values()) <= associations
    sets = {s.get("Name") for s in schema.findall("edm:EntityContainer/edm:EntitySet", ns)}
    assert {"A_BusinessPartner", "A_Customer", "A_BusinessPartnerAddress"} <= sets


def test_wire_formats_follow_odata_v2_verbose_json(reader: SapSandbox) -> None:
    with odata(reader) as client:
        rows = results(client.get(BP, params={"$top": "50", "$expand": "to_BusinessPartnerAddress"}))
    for row in rows:
        assert re.fullmatch(r"/Date\(\d+\)/", row["LastChangeDate"]), row["LastChangeDate"]
        assert parse_wire_datetime(row["LastChangeDate"]) % 86_400_000 == 0, "date-only values are midnight UTC"
        assert re.fullmatch(r"PT\d{2}H\d{2}M\d{2}S", row["LastChangeTime"])
        assert isinstance(row["BusinessPartnerIsBlocked"], bool) or row["BusinessPartnerIsBlocked"] is None
        assert row["BusinessPartnerDeathDate"] is None
        assert ms("2023-06-01") <= parse_wire_datetime(row["LastChangeDate"]) <= ms("2026-06-30")
        for address in row["to_BusinessPartnerAddress"]["results"]:
            assert re.fullmatch(r"/Date\(\d+\+0000\)/", address["ValidityStartDate"])
            assert address["ValidityEndDate"] == "/Date(253402300799000+0000)/"


# -- auth, OAuth, CSRF --------------------------------------------------------------------------


def test_missing_or_wrong_credentials_get_sap_logon_401(reader: SapSandbox) -> None:
    cases = [None, ("DRYMIX_INT", "wrong"), ("SOMEONE", "sandbox-secret")]
    for auth in cases:
        with odata(reader, auth=auth) as client:
            resp = client.get(BP, params={"$top": "1"})
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Basic realm="SAP NetWeaver Application Server"'
        assert resp.headers["content-type"].startswith("text/html")
        assert "Logon" in resp.text
    with odata(reader, auth=("drymix_int", "sandbox-secret")) as client:
        assert client.get(BP, params={"$top": "1"}).status_code == 200, "SAP user names are case-insensitive"
        assert client.get(BP, params={"$top": "1", "sap-client": "100"}).status_code == 200
        assert client.get(BP, params={"$top": "1", "sap-client": "200"}).status_code == 401
    with odata(reader, auth=None, headers={"Authorization": "Basic !!!"}) as client:
        assert client.get(BP).status_code == 401


def test_oauth_client_credentials_tokens_work_and_expire(writable: SapSandbox, clock: FakeClock) -> None:
    with httpx.Client(transport=as_transport(writable), base_url=BASE) as client:
        issued = client.post(
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": "drymix-hub",
                "client_secret": "sandbox-client-secret",
            },
        )
        assert issued.status_code == 200
        token = issued.json()
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 600
        bearer = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}
        assert client.get(BP, params={"$top": "1"}, headers=bearer).status_code == 200

        by_header = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("drymix-hub", "sandbox-client-secret")
        )
        assert by_header.status_code == 200
        wrong = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials", "client_id": "drymix-hub", "client_secret": "nope"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        grant = client.post(TOKEN_PATH, data={"grant_type": "password"}, auth=("drymix-hub", "sandbox-client-secret"))
        assert grant.status_code == 400
        assert grant.json()["error"] == "unsupported_grant_type"
        assert client.get(TOKEN_PATH).status_code == 405

        clock.advance(601)
        expired = client.get(BP, params={"$top": "1"}, headers=bearer)
        assert expired.status_code == 401
        assert 'Bearer error="invalid_token"' in expired.headers.get_list("www-authenticate")[1]
        assert (
            client.get(
                BP, params={"$top": "1"}, headers={"Authorization": "Bearer made-up", "Accept": "application/json"}
            ).status_code
            == 401
        )

        fresh = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("drymix-hub", "sandbox-client-secret")
        ).json()
        fresh_bearer = {"Authorization": f"Bearer {fresh['access_token']}", "Accept": "application/json"}
        assert client.get(BP, params={"$top": "1"}, headers=fresh_bearer).status_code == 200
        killed = client.post("/_sandbox/sap/expire-tokens", json={"kind": "oauth"})
        assert killed.json()["expired"]["oauth_tokens"] >= 1
        assert client.get(BP, params={"$top": "1"}, headers=fresh_bearer).status_code == 401


def test_control_clock_route_expires_tokens_by_sandbox_time(writable: SapSandbox) -> None:
    with httpx.Client(transport=as_transport(writable), base_url=BASE) as client:
        token = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("drymix-hub", "sandbox-client-secret")
        ).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}
        assert client.get(BP, params={"$top": "1"}, headers=bearer).status_code == 200
        moved = client.post("/_sandbox/sap/clock", json={"advance_s": 3600})
        assert moved.status_code == 200
        assert datetime.fromisoformat(moved.json()["now"]) == NOW + timedelta(hours=1)
        assert client.get(BP, params={"$top": "1"}, headers=bearer).status_code == 401


def test_csrf_fetch_validate_and_expire(writable: SapSandbox, clock: FakeClock) -> None:
    target = f"{BP}('1000000001')"
    with odata(writable) as client:
        denied = client.patch(target, json={"SearchTerm1": "X"}, headers={"If-Match": writable.etag_of("1000000001")})
        assert denied.status_code == 403
        assert denied.headers["x-csrf-token"] == "Required"
        assert denied.text == "CSRF token validation failed"

        fetched = client.head(SVC, headers={"X-CSRF-Token": "Fetch"})
        assert fetched.status_code == 200
        token = fetched.headers["x-csrf-token"]
        assert len(base64.b64decode(token)) == 16
        cookies = fetched.headers.get_list("set-cookie")
        assert any(c.startswith("SAP_SESSIONID_S4H_100=") for c in cookies)
        assert any(c.startswith("sap-usercontext=sap-client=100") for c in cookies)
        assert client.cookies.get("SAP_SESSIONID_S4H_100")

        again = client.get(f"{SVC}$metadata", headers={"X-CSRF-Token": "fetch"})
        assert again.headers["x-csrf-token"] == token, "same session, same token"

        ok = client.patch(
            target,
            json={"SearchTerm1": "FIRST"},
            headers={"X-CSRF-Token": token, "If-Match": writable.etag_of("1000000001")},
        )
        assert ok.status_code == 204, ok.text
        assert client.patch(target, json={}, headers={"X-CSRF-Token": "Fetch", "If-Match": "*"}).status_code == 403

        clock.advance(301)
        stale = client.patch(
            target,
            json={"SearchTerm1": "SECOND"},
            headers={"X-CSRF-Token": token, "If-Match": writable.etag_of("1000000001")},
        )
        assert stale.status_code == 403
        assert stale.headers["x-csrf-token"] == "Required"
        renewed = client.get(SVC, headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        assert renewed != token
        assert (
            client.patch(
                target,
                json={"SearchTerm1": "SECOND"},
                headers={"X-CSRF-Token": renewed, "If-Match": writable.etag_of("1000000001")},
            ).status_code
            == 204
        )

        client.post("/_sandbox/sap/expire-tokens", json={"kind": "csrf"})
        assert (
            client.patch(
                target, json={"SearchTerm1": "THIRD"}, headers={"X-CSRF-Token": renewed, "If-Match": "*"}
            ).status_code
            == 403
        )

    with odata(writable) as other:
        # A token is bound to its session cookie: without the cookie it is worthless.
        assert (
            other.patch(
                target, json={"SearchTerm1": "X"}, headers={"X-CSRF-Token": renewed, "If-Match": "*"}
            ).status_code
            == 403
        )


def test_patch_requires_if_match_and_rejects_stale_etags(writable: SapSandbox, clock: FakeClock) -> None:
    target = f"{BP}('1000000002')"
    with csrf_client(writable) as (client, token):
        before = client.get(target).json()["d"]
        etag = before["__metadata"]["etag"]
        assert client.patch(target, json={"SearchTerm1": "NEW"}, headers={"X-CSRF-Token": token}).status_code == 428
        assert (
            client.patch(
                target, json={"SearchTerm1": "NEW"}, headers={"X-CSRF-Token": token, "If-Match": "W/\"'stale'\""}
            ).status_code
            == 412
        )

        clock.advance(60)
        done = client.patch(
            target,
            json={"SearchTerm1": "NEW", "IsMarkedForArchiving": True},
            headers={"X-CSRF-Token": token, "If-Match": etag},
        )
        assert done.status_code == 204
        assert done.content == b""
        after = client.get(target).json()["d"]
        assert after["SearchTerm1"] == "NEW"
        assert after["IsMarkedForArchiving"] is True
        stamp = NOW + timedelta(seconds=60)
        assert after["LastChangeDate"] == f"/Date({ms(stamp.date().isoformat())})/"
        assert after["LastChangeTime"] == f"PT{stamp:%H}H{stamp:%M}M{stamp:%S}S"
        assert after["LastChangedByUser"] == "DRYMIX_INT"
        assert after["__metadata"]["etag"] == done.headers["etag"] != etag

        assert (
            client.patch(
                target, json={"SearchTerm1": "AGAIN"}, headers={"X-CSRF-Token": token, "If-Match": etag}
            ).status_code
            == 412
        )
        merged = client.request(
            "MERGE",
            target,
            json={"SearchTerm2": "MERGED"},
            headers={"X-CSRF-Token": token, "If-Match": after["__metadata"]["etag"]},
        )
        assert merged.status_code == 204
        tunnelled = client.post(
            target,
            json={"d": {"SearchTerm2": "TUNNEL"}},
            headers={"X-CSRF-Token": token, "If-Match": "*", "X-HTTP-Method": "MERGE"},
        )
        assert tunnelled.status_code == 204
        assert client.get(target).json()["d"]["SearchTerm2"] == "TUNNEL"


def test_patch_validates_the_payload_and_derives_names(writable: SapSandbox) -> None:
    org = next(
        pid
        for pid in writable.partner_ids()
        if writable.get_partner(pid)["BusinessPartnerCategory"] == "2" and pid not in writable.dirty_ids
    )
    target = f"{BP}('{org}')"
    with csrf_client(writable) as (client, token):
        headers = {"X-CSRF-Token": token, "If-Match": "*"}
        for payload, fragment in [
            ({"LastChangeDate": "/Date(0)/"}, "read-only"),
            ({"NoSuchField": 1}, "invalid"),
            ({"SearchTerm1": "X" * 21}, "longer than 20"),
            ({"BusinessPartnerIsBlocked": "yes"}, "true or false"),
            ({"to_Customer": {}}, "Deep update"),
        ]:
            resp = client.patch(target, json=payload, headers=headers)
            assert resp.status_code == 400, payload
            assert fragment in resp.json()["error"]["message"]["value"]
        assert client.patch(target, content=b"{broken", headers=headers).status_code == 400
        assert client.patch(f"{BP}('9999999999')", json={}, headers=headers).status_code == 404
        assert client.patch(f"{SVC}A_Customer('{org}')", json={}, headers=headers).status_code == 405
        assert client.delete(target, headers=headers).status_code == 405

        renamed = client.patch(
            target,
            json={"OrganizationBPName1": "Sahyadri Cement Depot", "OrganizationBPName2": "Pvt Ltd"},
            headers=headers,
        )
        assert renamed.status_code == 204
        entity = client.get(target, params={"$expand": "to_Customer"}).json()["d"]
    assert entity["BusinessPartnerFullName"] == "Sahyadri Cement Depot Pvt Ltd"
    assert entity["to_Customer"]["CustomerName"] == "Sahyadri Cement Depot Pvt Ltd"


# -- data ------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_data_and_partners_do_not_depend_on_size() -> None:
    params = {
        "$top": "300",
        "$expand": EXPAND_ALL,
    }
    first, second, other = (
        SapSandbox(seed=7, partners=1200),
        SapSandbox(seed=7, partners=1200),
        SapSandbox(seed=8, partners=1200),
    )
    bodies = []
    for sandbox in (first, second, other):
        with odata(sandbox) as client:
            bodies.append(client.get(BP, params=params).content)
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]
    assert first.dirty_ids == second.dirty_ids
    small = SapSandbox(seed=7, partners=300)
    assert small.get_partner("1000000250") == first.get_partner("1000000250")


def test_data_looks_like_an_indian_building_materials_customer_base(reader: SapSandbox) -> None:
    partners = [reader.get_partner(pid) for pid in reader.partner_ids()]
    clean = [p for p in partners if p["BusinessPartner"] not in reader.dirty_ids]
    assert all(re.fullmatch(r"10\d{8}", p["BusinessPartner"]) for p in partners)
    categories = Counter(p["BusinessPartnerCategory"] for p in clean)
    assert categories["2"] > 0.75 * len(clean)
    assert categories["1"] > 0.05 * len(clean)
    assert Counter(p["CorrespondenceLanguage"] for p in clean).keys() == {"EN", "HI"}
    addr_table = reader.tables["A_BusinessPartnerAddress"]
    addresses = [dict(zip(addr_table.etype.names, row, strict=True)) for row in addr_table.rows]
    clean_addresses = [a for a in addresses if a["BusinessPartner"] not in reader.dirty_ids]
    countries = Counter(a["Country"] for a in clean_addresses)
    assert countries["IN"] > 0.95 * len(clean_addresses)
    assert set(countries) - {"IN"} <= {"AE", "NP", "BD", "LK"}
    assert len(countries) > 1
    indian = [a for a in clean_addresses if a["Country"] == "IN"]
    assert all(re.fullmatch(r"[1-8]\d{5}", a["PostalCode"]) for a in indian)
    assert {"MH", "KA", "TN", "GJ"} <= {a["Region"] for a in indian}
    tax_table = reader.tables["A_BusinessPartnerTaxNumber"]
    gstins = [row[2] for row in tax_table.rows if row[0] not in reader.dirty_ids]
    assert gstins
    assert all(is_valid_gstin(g) for g in gstins)
    region_of = {a["BusinessPartner"]: a["Region"] for a in indian}
    state_codes = {"MH": "27", "KA": "29", "TN": "33", "GJ": "24", "DL": "07"}
    for row in tax_table.rows:
        region = region_of.get(row[0])
        if row[0] not in reader.dirty_ids and region in state_codes:
            assert row[2].startswith(state_codes[region])


def test_dirty_records_are_present_and_exposed(reader: SapSandbox) -> None:
    dirty = reader.dirty_ids
    assert 0.03 <= len(dirty) / reader.partner_count <= 0.055
    assert set(dirty.values()) == set(DIRTY_KINDS)
    with odata(reader) as client:
        assert client.get("/_sandbox/sap/dirty").json() == {"count": len(dirty), "dirty": dirty}

        def entity(pid: str) -> dict[str, Any]:
            resp = client.get(
                f"{BP}('{pid}')",
                params={"$expand": EXPAND_ALL},
            )
            assert resp.status_code == 200
            data: dict[str, Any] = resp.json()["d"]
            return data

        by_kind: dict[str, list[str]] = {}
        for pid, kind in dirty.items():
            by_kind.setdefault(kind, []).append(pid)
        for pid in by_kind["missing_name"]:
            assert entity(pid)["BusinessPartnerFullName"] in (None, "")
        for pid in by_kind["invalid_email"]:
            mails = [
                m["EmailAddress"]
                for a in entity(pid)["to_BusinessPartnerAddress"]["results"]
                for m in a["to_EmailAddress"]["results"]
            ]
            assert any(not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", m) for m in mails)
        for pid in by_kind["invalid_phone"]:
            phones = [
                m["PhoneNumber"]
                for a in entity(pid)["to_BusinessPartnerAddress"]["results"]
                for m in a["to_MobilePhoneNumber"]["results"]
            ]
            assert any(not re.fullmatch(r"[1-9]\d{8,9}", p) for p in phones)
        for pid in by_kind["unknown_country"]:
            assert entity(pid)["to_BusinessPartnerAddress"]["results"][0]["Country"] not in (
                "IN",
                "AE",
                "NP",
                "BD",
                "LK",
            )
        gst_owner = Counter(row[2] for row in reader.tables["A_BusinessPartnerTaxNumber"].rows)
        for pid in by_kind["duplicate_gstin"]:
            assert gst_owner[entity(pid)["to_BusinessPartnerTax"]["results"][0]["BPTaxNumber"]] >= 2
        for pid in by_kind["invalid_gstin"]:
            assert not is_valid_gstin(entity(pid)["to_BusinessPartnerTax"]["results"][0]["BPTaxNumber"])
        for pid in by_kind["non_ascii_name"]:
            raw = client.get(f"{BP}('{pid}')", params={"$select": "BusinessPartnerFullName"})
            name = raw.json()["d"]["BusinessPartnerFullName"]
            assert not name.isascii()
            assert name.encode() in raw.content, "served as raw UTF-8"
        for pid in by_kind["injection_like_name"]:
            assert any(marker in entity(pid)["BusinessPartnerFullName"] for marker in ("'", "<", "{", "$", "\n", '"'))
        for pid in by_kind["mostly_null"]:
            values = entity(pid)
            nulls = sum(1 for v in values.values() if v is None)
            assert nulls > 50
            assert values["to_BusinessPartnerAddress"]["results"] == []
            assert values["LastChangeDate"] is not None, "still visible to delta syncs"
        for pid in by_kind["untrimmed_name"]:
            name = entity(pid)["BusinessPartnerFullName"]
            assert name != " ".join(name.split())


# -- changes -----------------------------------------------------------------------------------------


def test_mutate_stamps_changed_partners_with_the_sandbox_clock(writable: SapSandbox) -> None:
    before = {pid: writable.get_partner(pid) for pid in writable.partner_ids()}
    changed = writable.mutate(7, rng_seed=1)
    assert len(set(changed)) == 7
    today = f"/Date({ms('2026-11-28')})/"
    for pid in changed:
        now = writable.get_partner(pid)
        assert now["LastChangeDate"] == today
        assert now["LastChangeTime"] == "PT10H15M30S"
        assert now["ETag"] != before[pid]["ETag"]
    untouched = [pid for pid in writable.partner_ids() if pid not in changed]
    assert all(writable.get_partner(pid) == before[pid] for pid in untouched)
    with odata(writable) as client:
        rows, _ = pull_all(
            client, BP, {"$filter": "LastChangeDate ge datetime'2026-11-28T00:00:00'", "$select": "BusinessPartner"}
        )
    assert sorted(row["BusinessPartner"] for row in rows) == sorted(changed)
    twin = SapSandbox(partners=300, clock=FakeClock())
    assert twin.mutate(7, rng_seed=1) == changed, "a seeded mutation is reproducible"


def test_control_routes_mutate_and_add_partners(writable: SapSandbox) -> None:
    with odata(writable) as client:
        mutated = client.post("/_sandbox/sap/mutate", json={"count": 3})
        assert mutated.status_code == 200
        assert mutated.json()["count"] == 3
        added = client.post("/_sandbox/sap/add-partners", json={"count": 2})
        assert added.json()["added"] == ["1000000301", "1000000302"]
        new = client.get(f"{BP}('1000000302')", params={"$expand": "to_BusinessPartnerAddress"}).json()["d"]
        assert new["CreationDate"] == new["LastChangeDate"] == f"/Date({ms('2026-11-28')})/"
        assert client.get(f"{BP}/$count").text == "302"
        assert client.post("/_sandbox/sap/mutate", json={"count": -1}).status_code == 400
        assert client.post("/_sandbox/sap/mutate", content=b"[1]").status_code == 400
        info = client.get("/_sandbox/sap/info").json()
    assert info["partners"] == 302
    assert info["username"] == "DRYMIX_INT"
    assert "password" not in info
    assert "client_secret" not in info
    for pid in mutated.json()["changed"]:
        assert writable.get_partner(pid)["LastChangeDate"] == f"/Date({ms('2026-11-28')})/"


def test_mutations_repair_the_dirt_they_touch() -> None:
    sandbox = SapSandbox(partners=400, clock=FakeClock())
    before = dict(sandbox.dirty_ids)
    sandbox.mutate(400, rng_seed=3)
    repaired = {pid for pid in before if pid not in sandbox.dirty_ids}
    assert repaired, "name fixes, new phones and e-mails repair some dirty partners"
    for pid in repaired:
        assert before[pid] in {
            "invalid_phone",
            "invalid_email",
            "missing_name",
            "untrimmed_name",
            "invalid_postal_code",
            "unknown_country",
            "duplicate_gstin",
        }


def test_changes_on_start_touch_partners_at_startup() -> None:
    sandbox = SapSandbox(partners=200, changes_on_start=5, clock=FakeClock())
    today = f"/Date({ms('2026-11-28')})/"
    assert sum(1 for pid in sandbox.partner_ids() if sandbox.get_partner(pid)["LastChangeDate"] == today) == 5


# -- faults in SAP's shapes ------------------------------------------------------------------------


def test_faults_answer_in_sap_shapes() -> None:
    sandbox = SapSandbox(partners=50, faults={"rate_limit_next_n": 1, "retry_after_s": "0"})
    with odata(sandbox) as client:
        limited = client.get(BP)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "0"
        assert limited.json()["fault"]["detail"]["errorcode"] == "policies.ratelimit.QuotaViolation"
        sandbox.faults.replace({"error_5xx_next_n": 1, "error_5xx_status": 500})
        failed = client.get(BP)
        assert failed.status_code == 500
        assert set(failed.json()["error"]) == {"code", "message", "innererror"}
        sandbox.faults.replace({"error_5xx_next_n": 1, "error_5xx_status": 503})
        unavailable = client.get(BP)
        assert unavailable.status_code == 503
        assert unavailable.headers["content-type"].startswith("text/html")
        client.put("/_sandbox/faults", json={"expire_tokens": True})
        assert client.get(BP).status_code == 401, "even correct credentials are rejected"
        refused = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("drymix-hub", "sandbox-client-secret")
        )
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        client.delete("/_sandbox/faults")
        assert client.get(BP, params={"$top": "1"}).status_code == 200


def test_unknown_paths_outside_the_service_are_plain_404() -> None:
    with odata(SapSandbox(partners=10)) as client:
        resp = client.get("/sap/opu/odata/sap/API_NOTHING/")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/html")


# -- over real HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SapSandbox, str]]:
    sandbox = SapSandbox(partners=1200, max_page_size=250)
    with running_server(sandbox) as base_url:
        yield sandbox, base_url


def test_real_server_paging_links_point_back_at_the_server(served: tuple[SapSandbox, str]) -> None:
    sandbox, base_url = served
    with httpx.Client(base_url=base_url, auth=BASIC, headers={"Accept": "application/json"}) as client:
        rows, pages = pull_all(
            client,
            BP,
            {
                "$select": "BusinessPartner",
                "$filter": "BusinessPartnerCategory eq '2' or BusinessPartnerCategory eq '1'",
            },
        )
    assert len(pages) > 3
    assert all(page["__next"].startswith(f"{base_url}{BP}?") for page in pages[:-1])
    expected = [
        pid for pid in sandbox.partner_ids() if sandbox.get_partner(pid)["BusinessPartnerCategory"] in ("1", "2")
    ]
    assert [r["BusinessPartner"] for r in rows] == expected


def test_real_server_csrf_cookies_and_patch(served: tuple[SapSandbox, str]) -> None:
    sandbox, base_url = served
    with httpx.Client(base_url=base_url, auth=BASIC, headers={"Accept": "application/json"}) as client:
        token = client.get(SVC, headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        target = f"{BP}('1000000005')"
        etag = client.get(target).headers["etag"]
        done = client.patch(
            target, json={"SearchTerm2": "OVER HTTP"}, headers={"X-CSRF-Token": token, "If-Match": etag}
        )
        assert done.status_code == 204
    assert sandbox.get_partner("1000000005")["SearchTerm2"] == "OVER HTTP"


def test_real_server_faults_on_an_odata_page(served: tuple[SapSandbox, str]) -> None:
    _sandbox, base_url = served
    with httpx.Client(base_url=base_url, auth=BASIC, headers={"Accept": "application/json"}) as client:
        client.put("/_sandbox/faults", json={"drop_connection_next_n": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(BP)
        client.put("/_sandbox/faults", json={"malformed_json_next_n": 1})
        broken = client.get(BP)
        assert broken.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            broken.json()
        client.put("/_sandbox/faults", json={"timeout_next_n": 1, "timeout_sleep_s": 3})
        with pytest.raises(httpx.ReadTimeout):
            client.get(BP, timeout=0.3)
        client.put("/_sandbox/faults", json={"rate_limit_next_n": 1, "retry_after_s": 2})
        limited = client.get(BP)
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
        client.delete("/_sandbox/faults")
        assert len(results(client.get(BP))) == 250


def test_raw_field_drill_serves_bad_values_without_breaking_queries(writable: SapSandbox) -> None:
    writable.set_raw_field("1000000010", "LastChangeDate", "2024-05-01T00:00:00")
    with odata(writable) as client:
        served = client.get(f"{BP}('1000000010')", params={"$select": "LastChangeDate"}).json()["d"]
        assert served["LastChangeDate"] == "2024-05-01T00:00:00"
        rows, _ = pull_all(
            client, BP, {"$filter": "LastChangeDate ge datetime'2020-01-01T00:00:00'", "$select": "BusinessPartner"}
        )
        assert "1000000010" not in {row["BusinessPartner"] for row in rows}, "an unparsable date compares as null"
        assert len(rows) == 299
        by_route = client.post(
            "/_sandbox/sap/set-field", json={"partner": "1000000011", "field": "SearchTerm1", "value": 42}
        )
        assert by_route.status_code == 200
        assert client.get(f"{BP}('1000000011')").json()["d"]["SearchTerm1"] == 42
        for expression in ("substringof('A', SearchTerm1)", "SearchTerm1 gt 'A'"):
            assert client.get(f"{BP}/$count", params={"$filter": expression}).status_code == 200
        ordered = client.get(BP, params={"$orderby": "SearchTerm1", "$select": "BusinessPartner", "$top": "1"})
        assert ordered.status_code == 200
        assert (
            client.post(
                "/_sandbox/sap/set-field", json={"partner": "1000000011", "field": "Nope", "value": 1}
            ).status_code
            == 400
        )
        assert (
            client.post(
                "/_sandbox/sap/set-field", json={"partner": "42", "field": "SearchTerm1", "value": 1}
            ).status_code
            == 404
        )


def test_an_empty_sandbox_serves_an_empty_collection() -> None:
    with odata(SapSandbox(partners=0)) as client:
        resp = client.get(BP, params={"$inlinecount": "allpages"})
    assert resp.json() == {"d": {"__count": "0", "results": []}}


def test_names_other_modules_import_from_sandbox_sap_still_resolve_to_the_engine() -> None:
    """hub/, bench/ and tests import these from sandbox.sap; the protocol ones must be the engine's, not copies."""
    import sandbox.odata as engine
    import sandbox.sap as sap

    for name in ("wire_day", "wire_date", "wire_dto_day", "wire_time", "parse_wire_datetime", "parse_wire_time"):
        assert getattr(sap, name) is getattr(engine, name)
    for name in ("TOKEN_PATH", "FAULTS_ENV", "EntityType", "Prop", "Nav", "ODataError"):
        assert getattr(sap, name) is getattr(engine, name)
    assert issubclass(SapSandbox, engine.ODataSandbox)
    assert sap.SERVICE.root == SERVICE_ROOT and sap.TYPES_BY_SET["A_BusinessPartner"] is sap.BP_TYPE
    assert sap.partner_id(0) == str(sap.FIRST_PARTNER_NUMBER) and sap.ANCHOR_DATE.isoformat() == "2026-06-30"
    assert callable(sap.serve_sap) and callable(sap.main) and callable(sap.build_sandbox)
