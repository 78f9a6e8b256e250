"""The SAP sandbox takes business-partner writes the way API_BUSINESS_PARTNER does.

Creates by deep insert (roles, address with e-mail and phones, GSTIN, customer with sales
areas), SAP's refusals in its error envelope, updates with and without ETags, the drills the
hub's push tests need (an edit in SAP, CSRF expiry) and the fault that loses a committed
write's answer.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.core import FaultInjector, FaultSwitches, as_transport, running_server
from sandbox.odata import (
    EntityType,
    Nav,
    NewEntity,
    ODataError,
    ODataSandbox,
    ODataService,
    decimal_prop,
    dto_prop,
    string_prop,
)
from sandbox.sap import SERVICE_ROOT, TOKEN_PATH, SapSandbox, gstin_checksum, is_valid_gstin

SVC = SERVICE_ROOT
BP = f"{SERVICE_ROOT}A_BusinessPartner"
BASIC = ("DRYMIX_INT", "sandbox-secret")
BASE = "http://sap.test"
NOW = datetime(2026, 11, 28, 10, 15, 30, tzinfo=UTC)
GSTIN = "27AAPFU0939F1Z" + gstin_checksum("27AAPFU0939F1Z")
PARTNERS = 120


class FakeClock:
    """A settable sandbox clock."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sap(clock: FakeClock) -> SapSandbox:
    return SapSandbox(partners=PARTNERS, clock=clock, max_page_size=50)


@contextmanager
def session(sandbox: SapSandbox) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """An in-process client with a CSRF session; yields it and the write headers (the token)."""
    with httpx.Client(
        transport=as_transport(sandbox), base_url=BASE, auth=BASIC, headers={"Accept": "application/json"}
    ) as client:
        fetched = client.get(SVC, headers={"X-CSRF-Token": "Fetch"})
        assert fetched.status_code == 200
        yield client, {"X-CSRF-Token": fetched.headers["x-csrf-token"]}


def dealer(ext: str = "ERP-000123") -> dict[str, Any]:
    """A new organisation customer as the hub pushes it: every navigation as a JSON array."""
    return {
        "BusinessPartnerCategory": "2",
        "OrganizationBPName1": "Shree Ganesh Building Materials",
        "SearchTerm1": "GANESH",
        "CorrespondenceLanguage": "EN",
        "BusinessPartnerIDByExtSystem": ext,
        "to_BusinessPartnerRole": [{"BusinessPartnerRole": "FLCU00"}, {"BusinessPartnerRole": "FLCU01"}],
        "to_BusinessPartnerAddress": [
            {
                "Country": "IN",
                "Region": "MH",
                "CityName": "Pune",
                "PostalCode": "411001",
                "StreetName": "Fergusson College Road",
                "HouseNumber": "12",
                "to_EmailAddress": [{"EmailAddress": "sales@ganeshbm.in", "IsDefaultEmailAddress": True}],
                "to_PhoneNumber": [{"PhoneNumber": "020 2553 1234", "PhoneNumberType": "1"}],
                "to_MobilePhoneNumber": [{"PhoneNumber": "9876543210", "PhoneNumberType": "3"}],
            }
        ],
        "to_BusinessPartnerTax": [{"BPTaxType": "IN3", "BPTaxNumber": GSTIN}],
        "to_Customer": {
            "CustomerAccountGroup": "ZDLR",
            "to_CustomerSalesArea": [
                {
                    "SalesOrganization": "1000",
                    "DistributionChannel": "10",
                    "Division": "00",
                    "Currency": "INR",
                    "CustomerPaymentTerms": "ZN30",
                    "IncotermsClassification": "EXW",
                    "ShippingCondition": "01",
                    "SupplyingPlant": "1100",
                }
            ],
        },
    }


def as_results(payload: dict[str, Any]) -> dict[str, Any]:
    """The same payload with every collection navigation as ``{"results": [...]}``."""
    out: dict[str, Any] = {}
    for name, value in payload.items():
        if isinstance(value, list):
            out[name] = {"results": [as_results(item) for item in value]}
        elif isinstance(value, dict):
            out[name] = as_results(value)
        else:
            out[name] = value
    return out


def create(client: httpx.Client, write: dict[str, str], payload: dict[str, Any]) -> httpx.Response:
    return client.post(BP, json=payload, headers=write)


def error_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


def day_ms(stamp: datetime) -> int:
    return int(datetime(stamp.year, stamp.month, stamp.day, tzinfo=UTC).timestamp() * 1000)


# -- create by deep insert ----------------------------------------------------------------------


def test_deep_insert_creates_the_partner_and_its_children_and_answers_201(sap: SapSandbox) -> None:
    with session(sap) as (client, write):
        resp = create(client, write, dealer())
    assert resp.status_code == 201, resp.text
    new_id = str(1_000_000_001 + PARTNERS)
    d = resp.json()["d"]
    uri = f"{BASE}{BP}('{new_id}')"
    assert resp.headers["location"] == uri
    assert d["__metadata"] == {
        "id": uri,
        "uri": uri,
        "type": "API_BUSINESS_PARTNER.A_BusinessPartnerType",
        "etag": resp.headers["etag"],
    }
    assert resp.headers["etag"] == sap.etag_of(new_id)
    assert (d["BusinessPartner"], d["Customer"]) == (new_id, new_id), "S/4 gives the customer the partner's number"
    assert d["BusinessPartnerFullName"] == d["BusinessPartnerName"] == "Shree Ganesh Building Materials"
    assert d["BusinessPartnerIDByExtSystem"] == "ERP-000123"
    assert d["CreationDate"] == d["LastChangeDate"] == f"/Date({day_ms(NOW)})/"
    assert d["CreationTime"] == d["LastChangeTime"] == "PT10H15M30S"
    assert d["CreatedByUser"] == d["LastChangedByUser"] == "DRYMIX_INT"
    assert [r["BusinessPartnerRole"] for r in d["to_BusinessPartnerRole"]["results"]] == ["FLCU00", "FLCU01"]
    assert all(r["BusinessPartner"] == new_id for r in d["to_BusinessPartnerRole"]["results"])

    (address,) = d["to_BusinessPartnerAddress"]["results"]
    assert address["BusinessPartner"] == new_id and address["AddressID"]
    assert (address["CityName"], address["PostalCode"], address["FullName"]) == (
        "Pune",
        "411001",
        "Shree Ganesh Building Materials",
    )
    (email,) = address["to_EmailAddress"]["results"]
    assert (email["AddressID"], email["OrdinalNumber"], email["EmailAddress"]) == (
        address["AddressID"],
        "1",
        "sales@ganeshbm.in",
    )
    (phone,) = address["to_PhoneNumber"]["results"]
    (mobile,) = address["to_MobilePhoneNumber"]["results"]
    assert (phone["PhoneNumberType"], phone["InternationalPhoneNumber"]) == ("1", "+912025531234")
    assert (mobile["PhoneNumberType"], mobile["InternationalPhoneNumber"]) == ("3", "+919876543210")
    assert phone["OrdinalNumber"] != mobile["OrdinalNumber"], "both live in A_AddressPhoneNumber"
    (tax,) = d["to_BusinessPartnerTax"]["results"]
    assert (tax["BusinessPartner"], tax["BPTaxType"], tax["BPTaxNumber"]) == (new_id, "IN3", GSTIN)
    customer = d["to_Customer"]
    assert (customer["Customer"], customer["CustomerAccountGroup"], customer["TaxNumber3"]) == (new_id, "ZDLR", GSTIN)
    assert customer["CustomerName"] == "Shree Ganesh Building Materials"
    (area,) = customer["to_CustomerSalesArea"]["results"]
    assert (area["Customer"], area["SalesOrganization"], area["Currency"], area["CustomerPaymentTerms"]) == (
        new_id,
        "1000",
        "INR",
        "ZN30",
    )
    assert d["to_BusinessPartnerAddress"]["results"][0]["__metadata"]["uri"] == (
        f"{BASE}{SVC}A_BusinessPartnerAddress(BusinessPartner='{new_id}',AddressID='{address['AddressID']}')"
    )


def test_deep_insert_accepts_results_wrapped_navigations_in_a_d_envelope(sap: SapSandbox) -> None:
    with session(sap) as (client, write):
        arrays = create(client, write, dealer("ERP-1"))
        wrapped = create(client, write, {"d": as_results(dealer("ERP-2"))})
    assert arrays.status_code == wrapped.status_code == 201, wrapped.text

    def shape(d: dict[str, Any]) -> Any:
        address = d["to_BusinessPartnerAddress"]["results"][0]
        return (
            [r["BusinessPartnerRole"] for r in d["to_BusinessPartnerRole"]["results"]],
            [e["EmailAddress"] for e in address["to_EmailAddress"]["results"]],
            [p["PhoneNumber"] for p in address["to_PhoneNumber"]["results"]],
            [p["PhoneNumber"] for p in address["to_MobilePhoneNumber"]["results"]],
            [t["BPTaxNumber"] for t in d["to_BusinessPartnerTax"]["results"]],
            [a["SalesOrganization"] for a in d["to_Customer"]["to_CustomerSalesArea"]["results"]],
        )

    assert shape(arrays.json()["d"]) == shape(wrapped.json()["d"])
    assert int(wrapped.json()["d"]["BusinessPartner"]) == int(arrays.json()["d"]["BusinessPartner"]) + 1


def test_a_person_without_navigations_gets_the_customer_role_data_sap_creates_itself(sap: SapSandbox) -> None:
    payload = {
        "BusinessPartnerCategory": "1",
        "FirstName": "Ramesh",
        "LastName": "Patil",
        "to_BusinessPartnerRole": [{"BusinessPartnerRole": "FLCU01"}],
    }
    with session(sap) as (client, write):
        resp = create(client, write, payload)
    assert resp.status_code == 201, resp.text
    d = resp.json()["d"]
    assert (d["BusinessPartnerFullName"], d["PersonFullName"], d["IsNaturalPerson"]) == ("Ramesh Patil",) * 2 + ("X",)
    assert d["to_Customer"]["Customer"] == d["BusinessPartner"], "a customer role creates the customer"
    assert d["to_Customer"]["NFPartnerIsNaturalPerson"] == "X"
    assert d["to_BusinessPartnerAddress"] == {"__deferred": {"uri": f"{resp.headers['location']}/to_BusinessPartnerAddress"}}


def test_a_created_partner_is_read_counted_paged_and_found_by_delta_and_external_reference(
    sap: SapSandbox, clock: FakeClock
) -> None:
    clock.advance(86_400)  # a day after every generated change
    with session(sap) as (client, write):
        before = int(client.get(f"{BP}/$count").text)
        new_id = create(client, write, dealer("ERP-000777")).json()["d"]["BusinessPartner"]
        count = client.get(f"{BP}/$count")
        entity = client.get(f"{BP}('{new_id}')", params={"$expand": "to_Customer/to_CustomerSalesArea"})
        last_generated = str(1_000_000_000 + PARTNERS)
        keyset = client.get(
            BP, params={"$filter": f"BusinessPartner gt '{last_generated}'", "$orderby": "BusinessPartner", "$top": "5"}
        )
        delta = client.get(
            BP, params={"$filter": f"LastChangeDate ge datetime'{clock.now:%Y-%m-%d}T00:00:00'", "$select": "BusinessPartner"}
        )
        by_ref = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-000777'", "$select": "BusinessPartner"})
        paged = client.get(BP, params={"$select": "BusinessPartner", "$skip": str(PARTNERS - 10), "$inlinecount": "allpages"})
    assert count.text == str(before + 1)
    assert entity.status_code == 200 and entity.headers["etag"] == sap.etag_of(new_id)
    assert entity.json()["d"]["to_Customer"]["to_CustomerSalesArea"]["results"][0]["Division"] == "00"
    assert [r["BusinessPartner"] for r in keyset.json()["d"]["results"]] == [new_id]
    assert [r["BusinessPartner"] for r in delta.json()["d"]["results"]] == [new_id]
    assert [r["BusinessPartner"] for r in by_ref.json()["d"]["results"]] == [new_id]
    assert paged.json()["d"]["__count"] == str(PARTNERS + 1)
    assert paged.json()["d"]["results"][-1]["BusinessPartner"] == new_id


def test_lookup_by_external_reference_is_a_string_filter_and_sap_does_not_keep_it_unique(sap: SapSandbox) -> None:
    generated = next(
        pid for pid in sap.partner_ids() if sap.get_partner(pid)["BusinessPartnerIDByExtSystem"].startswith("DMS-")
    )
    reference = sap.get_partner(generated)["BusinessPartnerIDByExtSystem"]
    with session(sap) as (client, write):
        found = client.get(BP, params={"$filter": f"BusinessPartnerIDByExtSystem eq '{reference}'"})
        first = create(client, write, dealer("ERP-000123"))
        twin = create(client, write, dealer("ERP-000123"))
        both = client.get(
            BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-000123'", "$select": "BusinessPartner"}
        )
        none = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-999999'"})
        typed = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 123"})
    assert [r["BusinessPartner"] for r in found.json()["d"]["results"]] == [generated]
    assert first.status_code == twin.status_code == 201, "SAP does not refuse a second partner with the same reference"
    assert [r["BusinessPartner"] for r in both.json()["d"]["results"]] == [
        first.json()["d"]["BusinessPartner"],
        twin.json()["d"]["BusinessPartner"],
    ]
    assert none.json()["d"]["results"] == []
    assert typed.status_code == 400, "the reference is an Edm.String: a number literal is the wrong type"


# -- refusals -----------------------------------------------------------------------------------


def _without(path: list[Any]) -> dict[str, Any]:
    payload = dealer()
    target: Any = payload
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return payload


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    payload = dealer()
    target: Any = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return payload


def _person_without_last_name() -> dict[str, Any]:
    payload = _without(["OrganizationBPName1"])
    payload.update(BusinessPartnerCategory="1", FirstName="Suresh")
    return payload


REFUSALS = [
    ("missing category", _without(["BusinessPartnerCategory"]), "R11/401", "BusinessPartnerCategory", "category"),
    ("unknown category", _with(["BusinessPartnerCategory"], "7"), "R11/401", "BusinessPartnerCategory", "'7'"),
    ("organisation without name", _without(["OrganizationBPName1"]), "R11/402", "OrganizationBPName1", "Name 1"),
    ("person without last name", _person_without_last_name(), "R11/402", "LastName", "last name"),
    ("external number", _with(["BusinessPartner"], "4711"), "R11/403", "BusinessPartner", "External numbers"),
    (
        "unknown role",
        _with(["to_BusinessPartnerRole", 1, "BusinessPartnerRole"], "ZZZZZZ"),
        "R11/404",
        "to_BusinessPartnerRole[1]/BusinessPartnerRole",
        "'ZZZZZZ' does not exist",
    ),
    (
        "customer without customer role",
        _with(["to_BusinessPartnerRole"], [{"BusinessPartnerRole": "000000"}]),
        "R11/405",
        "to_Customer",
        "FLCU00 or FLCU01",
    ),
    (
        "address without country",
        _without(["to_BusinessPartnerAddress", 0, "Country"]),
        "AM/216",
        "to_BusinessPartnerAddress[0]/Country",
        "Enter a country",
    ),
    (
        "unknown country format",
        _with(["to_BusinessPartnerAddress", 0, "Country"], "IND"),
        "AM/216",
        "to_BusinessPartnerAddress[0]/Country",
        "'IND' does not exist",
    ),
    (
        "short PIN code",
        _with(["to_BusinessPartnerAddress", 0, "PostalCode"], "4110"),
        "AM/175",
        "to_BusinessPartnerAddress[0]/PostalCode",
        "6 digits",
    ),
    (
        "malformed e-mail",
        _with(["to_BusinessPartnerAddress", 0, "to_EmailAddress", 0, "EmailAddress"], "rajesh@@mail"),
        "AM/117",
        "to_BusinessPartnerAddress[0]/to_EmailAddress[0]/EmailAddress",
        "rajesh@@mail",
    ),
    (
        "phone with letters",
        _with(["to_BusinessPartnerAddress", 0, "to_MobilePhoneNumber", 0, "PhoneNumber"], "+91 98-abc"),
        "AM/172",
        "to_BusinessPartnerAddress[0]/to_MobilePhoneNumber[0]/PhoneNumber",
        "invalid characters",
    ),
    (
        "GSTIN with a wrong check character",
        _with(["to_BusinessPartnerTax", 0, "BPTaxNumber"], GSTIN[:14] + ("A" if GSTIN[14] != "A" else "B")),
        "AR/103",
        "to_BusinessPartnerTax[0]/BPTaxNumber",
        "IN3",
    ),
    (
        "malformed GSTIN",
        _with(["to_BusinessPartnerTax", 0, "BPTaxNumber"], "27AAPFU0939"),
        "AR/103",
        "to_BusinessPartnerTax[0]/BPTaxNumber",
        "'27AAPFU0939'",
    ),
    (
        "unknown property",
        _with(["to_Customer", "NoSuchField"], "x"),
        "/IWBEP/CM_MGW_RT/022",
        "to_Customer/NoSuchField",
        "Property 'NoSuchField' is invalid",
    ),
    (
        "wrong type",
        _with(["to_BusinessPartnerAddress", 0, "to_EmailAddress", 0, "IsDefaultEmailAddress"], "yes"),
        "/IWBEP/CM_MGW_RT/022",
        "to_BusinessPartnerAddress[0]/to_EmailAddress[0]/IsDefaultEmailAddress",
        "expected true or false",
    ),
    (
        "too long",
        _with(["OrganizationBPName1"], "X" * 41),
        "/IWBEP/CM_MGW_RT/022",
        "OrganizationBPName1",
        "longer than 40",
    ),
    (
        "read-only property",
        _with(["CreationDate"], "/Date(0)/"),
        "/IWBEP/CM_MGW_RT/022",
        "CreationDate",
        "read-only",
    ),
    (
        "navigation of the wrong shape",
        _with(["to_BusinessPartnerRole"], "FLCU01"),
        "/IWBEP/CM_MGW_RT/022",
        "to_BusinessPartnerRole",
        "navigation property",
    ),
]


@pytest.mark.parametrize(("payload", "code", "target", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_come_in_sap_error_envelope_and_create_nothing(
    sap: SapSandbox, payload: dict[str, Any], code: str, target: str, fragment: str
) -> None:
    rows_before = {name: len(table.rows) for name, table in sap.tables.items()}
    with session(sap) as (client, write):
        resp = create(client, write, copy.deepcopy(payload))
        count = client.get(f"{BP}/$count").text
    error = error_of(resp)
    assert error["code"] == code
    assert fragment in error["message"]["value"]
    assert error["message"]["lang"] == "en"
    inner = error["innererror"]
    assert inner["application"]["service_id"] == "API_BUSINESS_PARTNER"
    assert len(inner["transactionid"]) == 32
    assert inner["errordetails"][0] == {
        "code": code,
        "message": error["message"]["value"],
        "propertyref": "",
        "severity": "error",
        "target": target,
    }
    assert count == str(PARTNERS)
    assert {name: len(table.rows) for name, table in sap.tables.items()} == rows_before


def test_every_business_problem_of_a_payload_is_listed(sap: SapSandbox) -> None:
    payload = _without(["OrganizationBPName1"])
    payload["to_BusinessPartnerAddress"][0]["Country"] = ""
    payload["to_BusinessPartnerTax"][0]["BPTaxNumber"] = "URP"
    with session(sap) as (client, write):
        error = error_of(create(client, write, payload))
    assert [(d["code"], d["target"]) for d in error["innererror"]["errordetails"]] == [
        ("R11/402", "OrganizationBPName1"),
        ("AM/216", "to_BusinessPartnerAddress[0]/Country"),
        ("AR/103", "to_BusinessPartnerTax[0]/BPTaxNumber"),
    ]
    assert error["code"] == "R11/402"


def test_creates_go_to_the_partner_collection_only(sap: SapSandbox) -> None:
    with session(sap) as (client, write):
        on_customer = client.post(f"{SVC}A_Customer", json={"CustomerAccountGroup": "ZDLR"}, headers=write)
        on_entity = client.post(f"{BP}('1000000001')", json=dealer(), headers=write)
        not_json = client.post(BP, content=b"{broken", headers=write)
        not_object = client.post(BP, json=[dealer()], headers=write)
    assert on_customer.status_code == 405
    assert on_entity.status_code == 405
    assert error_of(not_json)["message"]["value"] == "The request body is not valid JSON"
    assert "JSON object" in error_of(not_object)["message"]["value"]


# -- updates ------------------------------------------------------------------------------------


def test_partner_updates_need_if_match_428_then_412_when_stale(sap: SapSandbox, clock: FakeClock) -> None:
    with session(sap) as (client, write):
        created = create(client, write, dealer())
        target = created.headers["location"]
        etag = created.headers["etag"]
        missing = client.patch(target, json={"SearchTerm2": "PUNE"}, headers=write)
        clock.advance(5)
        done = client.patch(target, json={"SearchTerm2": "PUNE"}, headers={**write, "If-Match": etag})
        stale = client.patch(target, json={"SearchTerm2": "AGAIN"}, headers={**write, "If-Match": etag})
        after = client.get(target)
    assert missing.status_code == 428
    assert error_of_status(missing, 428)["code"] == "/IWBEP/CM_MGW_RT/054"
    assert done.status_code == 204 and done.headers["etag"] != etag
    assert stale.status_code == 412
    assert after.headers["etag"] == done.headers["etag"]
    assert after.json()["d"]["LastChangeTime"] == "PT10H15M35S"


def error_of_status(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


def test_address_email_and_phone_updates_need_no_etag_and_move_the_partners_change_stamp(
    sap: SapSandbox, clock: FakeClock
) -> None:
    with session(sap) as (client, write):
        d = create(client, write, dealer()).json()["d"]
        partner = d["BusinessPartner"]
        etag = sap.etag_of(partner)
        address = d["to_BusinessPartnerAddress"]["results"][0]
        email = address["to_EmailAddress"]["results"][0]
        mobile = address["to_MobilePhoneNumber"]["results"][0]
        clock.advance(600)
        street = client.patch(address["__metadata"]["uri"], json={"StreetName": "Karve Road"}, headers=write)
        after_street = sap.get_partner(partner)
        clock.advance(60)
        mail = client.request(
            "MERGE", email["__metadata"]["uri"], json={"EmailAddress": "accounts@ganeshbm.in"}, headers=write
        )
        phone = client.patch(mobile["__metadata"]["uri"], json={"PhoneNumber": "9123456780"}, headers=write)
        refused_mail = client.patch(email["__metadata"]["uri"], json={"EmailAddress": "no-email"}, headers=write)
        retyped = client.patch(mobile["__metadata"]["uri"], json={"PhoneNumberType": "1"}, headers=write)
        bad_country = client.patch(address["__metadata"]["uri"], json={"Country": "XX1"}, headers=write)
        read = client.get(
            f"{BP}('{partner}')",
            params={"$expand": "to_BusinessPartnerAddress/to_EmailAddress,to_BusinessPartnerAddress/to_MobilePhoneNumber"},
        ).json()["d"]
    assert street.status_code == mail.status_code == phone.status_code == 204
    assert "etag" not in street.headers, "addresses carry no ETag in SAP"
    assert after_street["LastChangeTime"] == "PT10H25M30S"
    assert etag_header_of(after_street) != etag
    assert read["LastChangeTime"] == "PT10H26M30S"
    address_now = read["to_BusinessPartnerAddress"]["results"][0]
    assert address_now["StreetName"] == "Karve Road"
    assert address_now["to_EmailAddress"]["results"][0]["EmailAddress"] == "accounts@ganeshbm.in"
    assert address_now["to_EmailAddress"]["results"][0]["SearchEmailAddress"] == "ACCOUNTS@GANESHBM.IN"
    mobile_now = address_now["to_MobilePhoneNumber"]["results"][0]
    assert (mobile_now["PhoneNumber"], mobile_now["InternationalPhoneNumber"]) == ("9123456780", "+919123456780")
    assert error_of(refused_mail)["code"] == "AM/117"
    assert "read-only" in error_of(retyped)["message"]["value"]
    assert error_of(bad_country)["message"]["value"] == "Country 'XX1' does not exist"


def etag_header_of(partner: dict[str, Any]) -> str:
    return f"W/\"'{partner['ETag']}'\""


def test_a_blocked_partner_refuses_changes_until_the_block_is_lifted(sap: SapSandbox) -> None:
    with session(sap) as (client, write):
        d = create(client, write, dealer()).json()["d"]
        partner, target = d["BusinessPartner"], d["__metadata"]["uri"]
        address_uri = d["to_BusinessPartnerAddress"]["results"][0]["__metadata"]["uri"]
        blocked = client.post(
            "/_sandbox/sap/edit", json={"partner": partner, "changes": {"BusinessPartnerIsBlocked": True}}
        )
        etag = blocked.json()["etag"]
        on_partner = client.patch(target, json={"SearchTerm1": "NEW"}, headers={**write, "If-Match": etag})
        on_address = client.patch(address_uri, json={"StreetName": "Elsewhere"}, headers=write)
        lifted = client.patch(target, json={"BusinessPartnerIsBlocked": False}, headers={**write, "If-Match": etag})
        after = client.patch(address_uri, json={"StreetName": "Elsewhere"}, headers=write)
    assert blocked.status_code == 200
    for refused in (on_partner, on_address):
        error = error_of(refused)
        assert error["code"] == "R11/406"
        assert f"Business partner {partner} is blocked" in error["message"]["value"]
    assert lifted.status_code == 204
    assert after.status_code == 204


# -- drills -------------------------------------------------------------------------------------


def test_an_edit_in_sap_moves_the_etag_so_the_hubs_stale_write_gets_412(sap: SapSandbox, clock: FakeClock) -> None:
    partner = next(pid for pid in sap.partner_ids() if not sap.get_partner(pid)["BusinessPartnerIsBlocked"])
    with session(sap) as (client, write):
        read = client.get(f"{BP}('{partner}')")
        etag = read.headers["etag"]
        clock.advance(120)
        edited = client.post(
            "/_sandbox/sap/edit",
            json={"partner": partner, "changes": {"SearchTerm2": "SAP EDIT"}, "address": {"HouseNumber": "77"}, "user": "AIYER"},
        )
        stale = client.patch(f"{BP}('{partner}')", json={"SearchTerm2": "HUB"}, headers={**write, "If-Match": etag})
        reread = client.get(f"{BP}('{partner}')", params={"$expand": "to_BusinessPartnerAddress"})
        unknown = client.post("/_sandbox/sap/edit", json={"partner": "9999999999", "changes": {"SearchTerm2": "X"}})
        invalid = client.post("/_sandbox/sap/edit", json={"partner": partner, "changes": {"SearchTerm2": 5}})
        empty = client.post("/_sandbox/sap/edit", json={"partner": partner})
    assert edited.status_code == 200
    assert edited.json()["etag"] == reread.headers["etag"] != etag
    assert stale.status_code == 412
    d = reread.json()["d"]
    assert (d["SearchTerm2"], d["LastChangedByUser"], d["LastChangeTime"]) == ("SAP EDIT", "AIYER", "PT10H17M30S")
    assert d["to_BusinessPartnerAddress"]["results"][0]["HouseNumber"] == "77"
    assert unknown.status_code == 404
    assert invalid.status_code == empty.status_code == 400


def test_edit_as_user_changes_email_and_mobile_like_a_person_in_sap(sap: SapSandbox) -> None:
    partner = next(
        pid
        for pid in sap.partner_ids()
        if pid not in sap.dirty_ids
        and sap.tables["A_BusinessPartnerAddress"].links["to_EmailAddress"][
            sap.tables["A_BusinessPartner"].links["to_BusinessPartnerAddress"][sap.partner_ids().index(pid)][0]
        ]
        and sap.tables["A_BusinessPartnerAddress"].links["to_MobilePhoneNumber"][
            sap.tables["A_BusinessPartner"].links["to_BusinessPartnerAddress"][sap.partner_ids().index(pid)][0]
        ]
    )
    before = sap.etag_of(partner)
    after = sap.edit_as_user(partner, email="purchase@example.in", mobile="9988776655")
    with session(sap) as (client, _write):
        d = client.get(
            f"{BP}('{partner}')",
            params={"$expand": "to_BusinessPartnerAddress/to_EmailAddress,to_BusinessPartnerAddress/to_MobilePhoneNumber"},
        ).json()["d"]
    address = d["to_BusinessPartnerAddress"]["results"][0]
    assert address["to_EmailAddress"]["results"][0]["EmailAddress"] == "purchase@example.in"
    assert address["to_MobilePhoneNumber"]["results"][0]["PhoneNumber"] == "9988776655"
    assert after == d["__metadata"]["etag"] != before
    assert d["LastChangedByUser"] == "KPATIL"


def test_writes_without_a_valid_csrf_token_get_403_and_the_expiry_drill_invalidates_tokens(sap: SapSandbox) -> None:
    with session(sap) as (client, write):
        d = create(client, write, dealer()).json()["d"]
        address_uri = d["to_BusinessPartnerAddress"]["results"][0]["__metadata"]["uri"]
        no_token = [
            client.post(BP, json=dealer("ERP-2")),
            client.patch(address_uri, json={"StreetName": "X"}),
            client.request("MERGE", d["__metadata"]["uri"], json={"SearchTerm2": "X"}, headers={"If-Match": "*"}),
        ]
        expired = client.post("/_sandbox/sap/expire-tokens", json={"kind": "csrf"})
        with_old_token = create(client, write, dealer("ERP-3"))
        renewed = client.get(SVC, headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        retried = create(client, {"X-CSRF-Token": renewed}, dealer("ERP-3"))
    for resp in (*no_token, with_old_token):
        assert resp.status_code == 403
        assert resp.headers["x-csrf-token"] == "Required"
        assert resp.text == "CSRF token validation failed"
    assert expired.json() == {"expired": {"oauth_tokens": 0, "csrf_sessions": 1}}
    assert renewed != write["X-CSRF-Token"]
    assert retried.status_code == 201
    assert sap.partner_count == PARTNERS + 2, "refused writes created nothing"


# -- the write whose answer is lost ---------------------------------------------------------------


def test_timeout_after_commit_counts_only_successful_writes() -> None:
    injector = FaultInjector(FaultSwitches(timeout_after_commit_next_n=1))
    assert injector.decide_after_commit() is True
    assert injector.decide_after_commit() is False
    every = FaultInjector(FaultSwitches(timeout_after_commit_every_n=2))
    assert [every.decide_after_commit() for _ in range(4)] == [False, True, False, True]
    assert every.snapshot()["stats"]["fired"]["timeout_after_commit"] == 2


def test_timeout_after_commit_loses_the_answer_of_a_create_that_was_made(sap: SapSandbox) -> None:
    sap.faults.update({"timeout_after_commit_next_n": 1})
    with session(sap) as (client, write):
        lookup = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-42'"})
        refused = create(client, write, _without(["BusinessPartnerCategory"]))
        token = client.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("drymix-hub", "sandbox-client-secret")
        )
        with pytest.raises(httpx.ReadTimeout):
            create(client, write, dealer("ERP-42"))
        found = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-42'", "$select": "BusinessPartner"})
        next_write = create(client, write, dealer("ERP-43"))
    assert lookup.status_code == 200 and lookup.json()["d"]["results"] == [], "reads are never hit"
    assert refused.status_code == 400, "a refused write commits nothing and does not use up the fault"
    assert token.status_code == 200, "an OAuth token request is no change of SAP's data"
    assert [r["BusinessPartner"] for r in found.json()["d"]["results"]] == [str(1_000_000_001 + PARTNERS)]
    assert next_write.status_code == 201
    snapshot = sap.faults.snapshot()
    assert snapshot["switches"]["timeout_after_commit_next_n"] == 0
    assert snapshot["stats"]["fired"]["timeout_after_commit"] == 1


# -- metadata and generated data ---------------------------------------------------------------------


def test_metadata_describes_creates_roles_and_sales_areas() -> None:
    sap = SapSandbox(partners=20)
    with session(sap) as (client, _write):
        metadata = client.get(f"{SVC}$metadata")
        d = client.get(
            f"{BP}('1000000001')", params={"$expand": "to_BusinessPartnerRole,to_Customer/to_CustomerSalesArea"}
        ).json()["d"]
    ns = {
        "edm": "http://schemas.microsoft.com/ado/2008/09/edm",
        "sap": "http://www.sap.com/Protocols/SAPData",
    }
    root = ET.fromstring(metadata.content)
    types = {t.get("Name"): t for t in root.iter(f"{{{ns['edm']}}}EntityType")}
    assert {"A_BusinessPartnerRoleType", "A_CustomerSalesAreaType"} <= set(types)
    props = {p.get("Name"): p for p in types["A_BusinessPartnerType"].findall("edm:Property", ns)}
    category = props["BusinessPartnerCategory"]
    assert category.get(f"{{{ns['sap']}}}updatable") == "false"
    assert category.get(f"{{{ns['sap']}}}creatable") is None, "set on create, fixed afterwards"
    assert props["CreationDate"].get(f"{{{ns['sap']}}}creatable") == "false"
    sets = {s.get("Name"): s for s in root.iter(f"{{{ns['edm']}}}EntitySet")}
    assert sets["A_BusinessPartner"].get(f"{{{ns['sap']}}}creatable") == "true"
    assert sets["A_Customer"].get(f"{{{ns['sap']}}}creatable") == "false"
    assert sets["A_AddressEmailAddress"].get(f"{{{ns['sap']}}}updatable") == "true"
    roles = [r["BusinessPartnerRole"] for r in d["to_BusinessPartnerRole"]["results"]]
    if d["Customer"]:
        assert roles == ["FLCU00", "FLCU01"]
        assert d["to_Customer"]["to_CustomerSalesArea"]["results"][0]["SalesOrganization"] == "1000"
    else:
        assert roles == ["000000"]
    assert is_valid_gstin(GSTIN)


# -- over real HTTP ---------------------------------------------------------------------------------


def test_over_real_http_create_update_and_a_create_whose_answer_never_arrives() -> None:
    sap = SapSandbox(partners=50)
    with running_server(sap) as base_url, httpx.Client(
        base_url=base_url, auth=BASIC, headers={"Accept": "application/json"}, timeout=10
    ) as client:
        token = client.head(SVC, headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        write = {"X-CSRF-Token": token}
        created = client.post(BP, json={"d": as_results(dealer("ERP-HTTP-1"))}, headers=write)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{base_url}{BP}('1000000051')"
        updated = client.patch(
            created.headers["location"], json={"SearchTerm2": "HTTP"}, headers={**write, "If-Match": created.headers["etag"]}
        )
        assert updated.status_code == 204

        faults = client.post("/_sandbox/faults", json={"timeout_after_commit_next_n": 1, "timeout_sleep_s": 5})
        assert faults.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            client.post(BP, json=dealer("ERP-HTTP-2"), headers=write, timeout=0.5)
        found = client.get(BP, params={"$filter": "BusinessPartnerIDByExtSystem eq 'ERP-HTTP-2'", "$select": "BusinessPartner"})
    assert [r["BusinessPartner"] for r in found.json()["d"]["results"]] == ["1000000052"]
    assert sap.get_partner("1000000051")["SearchTerm2"] == "HTTP"


# -- the engine's create, for any service -------------------------------------------------------------

ORDER_ROOT = "/sap/opu/odata/sap/ZORDER_SRV/"
ORDER_TYPE = EntityType(
    "Z_OrderType",
    "Z_Order",
    (
        string_prop("OrderID", 10, key=True),
        string_prop("Customer", 10),
        dto_prop("LastChangeDateTime", ro=True),
    ),
    ("OrderID",),
    (Nav("to_Item", "Z_OrderItem", True),),
    has_etag=True,
    etag_property="LastChangeDateTime",
)
ITEM_TYPE = EntityType(
    "Z_OrderItemType",
    "Z_OrderItem",
    (
        string_prop("OrderID", 10, key=True),
        string_prop("ItemNo", 6, key=True),
        string_prop("Material", 40),
        decimal_prop("Quantity"),
    ),
    ("OrderID", "ItemNo"),
)
ORDER_SERVICE = ODataService(
    "ZORDER_SRV", ORDER_ROOT, "ZORDER_SRV", (ORDER_TYPE, ITEM_TYPE), creatable=frozenset({"Z_Order"})
)


class OrderSandbox(ODataSandbox):
    """Orders numbered by the service; item numbers come from the payload or are counted in tens."""

    name = "orders"

    def __init__(self) -> None:
        super().__init__(ORDER_SERVICE, clock=lambda: NOW)

    def on_create(self, entity: NewEntity, user: str) -> None:
        if not entity.get("Customer"):
            raise ODataError(400, "V1/123", "Enter a customer", details=[("V1/123", "Enter a customer", "Customer")])
        entity.values["OrderID"] = str(4_000_000 + len(entity.table.rows))
        for n, item in enumerate(entity.kids("to_Item")):
            item.values.setdefault("ItemNo", str(10 * (n + 1)))


def test_the_engine_creates_any_declared_service_with_inherited_keys_and_a_fresh_etag() -> None:
    sandbox = OrderSandbox()
    with httpx.Client(
        transport=as_transport(sandbox), base_url=BASE, auth=BASIC, headers={"Accept": "application/json"}
    ) as client:
        write = {"X-CSRF-Token": client.get(ORDER_ROOT, headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]}
        items = [{"Material": "DM-TILE-ADH-20KG", "Quantity": "40"}, {"Material": "DM-PLASTER-25KG", "Quantity": "5.5"}]
        made = client.post(f"{ORDER_ROOT}Z_Order", json={"Customer": "1000000001", "to_Item": items}, headers=write)
        items_read = client.get(f"{ORDER_ROOT}Z_Order('4000000')/to_Item")
        refused = client.post(f"{ORDER_ROOT}Z_Order", json={"to_Item": items}, headers=write)
        twice = client.post(
            f"{ORDER_ROOT}Z_Order",
            json={"Customer": "C1", "to_Item": [{"ItemNo": "10"}, {"ItemNo": "10"}]},
            headers=write,
        )
        foreign = client.post(
            f"{ORDER_ROOT}Z_Order", json={"Customer": "C1", "to_Item": [{"OrderID": "999"}]}, headers=write
        )
        bad_key = client.post(
            f"{ORDER_ROOT}Z_Order", json={"Customer": "C1", "to_Item": [{"ItemNo": "1'0"}]}, headers=write
        )
        on_items = client.post(f"{ORDER_ROOT}Z_OrderItem", json={"OrderID": "4000000"}, headers=write)
        metadata = client.get(f"{ORDER_ROOT}$metadata").text
    assert made.status_code == 201, made.text
    d = made.json()["d"]
    assert d["OrderID"] == "4000000"
    assert [(i["OrderID"], i["ItemNo"], i["Quantity"]) for i in d["to_Item"]["results"]] == [
        ("4000000", "10", "40"),
        ("4000000", "20", "5.5"),
    ]
    assert d["LastChangeDateTime"] == f"/Date({int(NOW.timestamp() * 1000)}+0000)/"
    assert made.headers["etag"] == d["__metadata"]["etag"] == "W/\"datetimeoffset'2026-11-28T10%3A15%3A30.0000000Z'\""
    assert [i["ItemNo"] for i in items_read.json()["d"]["results"]] == ["10", "20"]
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "V1/123")
    assert refused.json()["error"]["innererror"]["errordetails"][0]["target"] == "Customer"
    assert "Z_OrderItemType(OrderID='4000001',ItemNo='10') already exists" in twice.json()["error"]["message"]["value"]
    assert foreign.json()["error"]["innererror"]["errordetails"][0]["target"] == "to_Item[0]/OrderID"
    assert bad_key.json()["error"]["innererror"]["errordetails"][0]["target"] == "to_Item[0]/ItemNo"
    assert on_items.status_code == 405
    assert len(sandbox.tables["Z_Order"].rows) == 1 and len(sandbox.tables["Z_OrderItem"].rows) == 2
    assert 'EntitySet Name="Z_Order" EntityType="ZORDER_SRV.Z_OrderType" sap:creatable="true"' in metadata
