"""The customer push's SAP side without a server: field ownership, the conflict rule, the deep insert, refusals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, RetryPolicy
from connectors.core.errors import ErrorCategory, InvalidRequest, classify_response, refused_write
from connectors.sap.connector import SapConnector
from connectors.sap.odata import parse_sap_error
from connectors.sap.partners_write import (
    ERP_OWNED,
    FIELDS,
    SAP_OWNED,
    BusinessPartnerWrites,
    create_payload,
    national_number,
    partner_view,
    plan_update,
)

SAP_NOW = {
    "partner": "1000042", "category": "organization", "name": "Shree Ganesh Builders", "search_term": "GANESH",
    "email": "accounts@ganesh.in", "phone": "+912240001234", "mobile": "+919820012345", "street": "MG Road",
    "house_number": "12", "city": "Pune", "postal_code": "411001", "region": "13", "country": "IN", "language": "EN",
    "gstin": "27AAPFU0939F1ZV",
}


def test_every_field_has_one_owner_and_the_erp_owns_contact_and_address() -> None:
    assert {f.name for f in FIELDS} == set(ERP_OWNED) | set(SAP_OWNED)
    assert not set(ERP_OWNED) & set(SAP_OWNED)
    assert {"email", "phone", "mobile", "street", "city", "postal_code", "name", "search_term"} <= set(ERP_OWNED)
    assert {"gstin", "account_group", "sales_areas", "category"} <= set(SAP_OWNED)


def test_rule_writes_only_the_erp_owned_fields_that_differ() -> None:
    plan = plan_update({"email": "Accounts@Ganesh.in", "city": "Mumbai", "gstin": "27AAAAA0000A1Z5"}, SAP_NOW, base=None)
    assert plan.changes == {"city": "Mumbai"}  # the e-mail is the same address; the GSTIN is SAP's
    assert plan.ignored == ["gstin"]
    assert plan.conflicts == []


def test_rule_keeps_sap_edit_of_a_field_the_erp_did_not_change() -> None:
    base = {**SAP_NOW, "mobile": "+919820000000"}  # SAP changed the mobile after the ERP read the partner
    plan = plan_update({"mobile": "+919820000000", "street": "FC Road"}, SAP_NOW, base=base)
    assert plan.changes == {"street": "FC Road"}
    assert plan.kept_sap == {"mobile": "+919820012345"}


def test_rule_calls_a_field_both_sides_changed_differently_a_conflict() -> None:
    base = {**SAP_NOW, "email": "old@ganesh.in"}
    plan = plan_update({"email": "erp@ganesh.in", "city": "Nashik"}, SAP_NOW, base=base)
    assert plan.conflicts == ["email"]
    assert plan.changes == {"city": "Nashik"}


def test_rule_without_a_base_lets_the_erp_win_on_its_fields() -> None:
    plan = plan_update({"email": "erp@ganesh.in"}, SAP_NOW, base=None)
    assert plan.changes == {"email": "erp@ganesh.in"} and not plan.conflicts


def test_person_names_are_first_and_last_an_organisation_has_one_name() -> None:
    person_now = {**SAP_NOW, "category": "person", "first_name": "Asha", "last_name": "Rao", "name": "Asha Rao"}
    plan = plan_update({"name": "Asha R", "first_name": "Asha", "last_name": "Iyer"}, person_now, base=None)
    assert plan.changes == {"last_name": "Iyer"}


def test_phone_numbers_compare_by_digits_whatever_the_notation() -> None:
    assert plan_update({"phone": "+91 22 4000 1234"}, SAP_NOW, base=None).changes == {}
    assert national_number("+919820012345", "IN") == ("9820012345", "IN")
    assert national_number("+6561234567", "IN") == ("+6561234567", "IN")


def test_create_payload_is_the_deep_insert_sap_expects() -> None:
    body = create_payload("ERP-000123", {
        **{k: v for k, v in SAP_NOW.items() if k not in ("partner",)},
        "account_group": "ZDLR",
        "sales_areas": [{"sales_org": "1710", "distribution_channel": "10", "division": "00", "currency": "INR"}],
    })
    assert body["BusinessPartnerCategory"] == "2"
    assert body["OrganizationBPName1"] == "Shree Ganesh Builders"
    assert body["BusinessPartnerIDByExtSystem"] == "ERP-000123"
    assert [r["BusinessPartnerRole"] for r in body["to_BusinessPartnerRole"]] == ["FLCU00", "FLCU01"]
    address = body["to_BusinessPartnerAddress"][0]
    assert address["CityName"] == "Pune" and address["PostalCode"] == "411001" and address["Country"] == "IN"
    assert address["to_EmailAddress"] == [{"EmailAddress": "accounts@ganesh.in", "IsDefaultEmailAddress": True}]
    assert address["to_MobilePhoneNumber"][0] == {"PhoneNumber": "9820012345", "PhoneNumberType": "3", "IsDefaultPhoneNumber": True,
                                                  "DestinationLocationCountry": "IN"}
    assert address["to_PhoneNumber"][0]["PhoneNumberType"] == "1"
    assert body["to_BusinessPartnerTax"] == [{"BPTaxType": "IN3", "BPTaxNumber": "27AAPFU0939F1ZV"}]
    assert body["to_Customer"]["CustomerAccountGroup"] == "ZDLR"
    assert body["to_Customer"]["to_CustomerSalesArea"] == [
        {"SalesOrganization": "1710", "DistributionChannel": "10", "Division": "00", "Currency": "INR"}
    ]
    # A person: first and last name, no organisation name.
    person = create_payload("ERP-9", {"category": "person", "first_name": "Asha", "last_name": "Rao", "country": "IN"})
    assert person["BusinessPartnerCategory"] == "1" and person["FirstName"] == "Asha" and "OrganizationBPName1" not in person


def test_partner_view_reads_an_expanded_partner_as_our_fields() -> None:
    record = {
        "BusinessPartner": "1000042", "BusinessPartnerCategory": "2", "OrganizationBPName1": "Shree Ganesh Builders",
        "BusinessPartnerIDByExtSystem": "ERP-000123", "SearchTerm1": "GANESH", "CorrespondenceLanguage": "EN",
        "to_BusinessPartnerAddress": {"results": [{
            "AddressID": "77", "StreetName": "MG Road", "CityName": "Pune", "Country": "IN", "PostalCode": "411001",
            "to_EmailAddress": {"results": [{"EmailAddress": "accounts@ganesh.in"}]},
            "to_PhoneNumber": {"results": []},
            "to_MobilePhoneNumber": {"results": [{"PhoneNumber": "9820012345", "InternationalPhoneNumber": "+919820012345"}]},
        }]},
        "to_BusinessPartnerTax": {"results": [{"BPTaxType": "IN3", "BPTaxNumber": "27AAPFU0939F1ZV"}]},
        "to_Customer": {"CustomerAccountGroup": "ZDLR"},
    }
    view = partner_view(record)
    assert view["erp_ref"] == "ERP-000123" and view["name"] == "Shree Ganesh Builders" and view["category"] == "organization"
    assert view["email"] == "accounts@ganesh.in" and view["mobile"] == "+919820012345" and view["phone"] is None
    assert view["gstin"] == "27AAPFU0939F1ZV" and view["account_group"] == "ZDLR"


def _sap_error(status: int, code: str, message: str) -> httpx.Response:
    body = {"error": {"code": code, "message": {"lang": "en", "value": message}}}
    return httpx.Response(status, json=body, request=httpx.Request("POST", "http://sap/A_BusinessPartner"))


def test_a_refused_write_is_a_data_validation_failure_with_saps_message() -> None:
    error = classify_response(_sap_error(400, "R11/401", "Tax number 27XX is not valid"), body_parser=parse_sap_error,
                              integration="sap", operation="create_partner")
    refused = refused_write(error)
    assert refused.category is ErrorCategory.DATA_VALIDATION_FAILED
    assert refused.code == "R11/401" and "Tax number 27XX is not valid" in refused.message and refused.status_code == 400
    assert not refused.transient
    # Anything but a refusal of the record passes through unchanged.
    server = classify_response(_sap_error(503, "X", "busy"), body_parser=parse_sap_error)
    assert refused_write(server) is server
    not_found = classify_response(_sap_error(404, "X", "no such partner"), body_parser=parse_sap_error)
    assert refused_write(not_found) is not_found


class FakeSap:
    """Just enough of API_BUSINESS_PARTNER for the connector's own logic: CSRF, lookups, creates."""

    def __init__(self, *, expire_csrf_on_post: int | None = None, lose_create_answer: bool = False) -> None:
        self.token_no = 0
        self.requests: list[tuple[str, str]] = []
        self.partners: list[dict[str, Any]] = []
        self.expire_on = expire_csrf_on_post  # the token expires before this POST (1-based) arrives
        self.lose_create_answer = lose_create_answer

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("x-csrf-token") == "Fetch":
            self.token_no += 1
            return httpx.Response(200, headers={"x-csrf-token": f"tok-{self.token_no}"})
        if request.method == "GET":
            wanted = request.url.params.get("$filter", "")
            found = [p for p in self.partners if f"'{p['BusinessPartnerIDByExtSystem']}'" in wanted]
            return httpx.Response(200, json={"d": {"results": found}})
        posts = sum(1 for method, _ in self.requests if method == "POST")
        if posts == self.expire_on:
            self.token_no += 1  # the session's token expired: only a new fetch gets the current one
            self.expire_on = None
        if request.headers.get("x-csrf-token") != f"tok-{self.token_no}":
            return httpx.Response(403, headers={"x-csrf-token": "Required"}, text="CSRF token validation failed")
        body = json.loads(request.content)
        partner = {"BusinessPartner": str(1000000 + len(self.partners)), "BusinessPartnerIDByExtSystem": body["BusinessPartnerIDByExtSystem"],
                   "__metadata": {"etag": f"W/\"{len(self.partners)}\""}}
        self.partners.append(partner)
        if self.lose_create_answer:
            self.lose_create_answer = False
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(201, json={"d": partner})


def _writes(fake: FakeSap) -> BusinessPartnerWrites:
    config = IntegrationConfig(name="sap", base_url="http://sap/", rate_budget_per_s=1000)
    client = IntegrationClient(config, transport=httpx.MockTransport(fake.handler), retry=RetryPolicy(max_retries=2, base_delay_ms=0),
                               body_parser=parse_sap_error, sleep=lambda s: None)
    return BusinessPartnerWrites(SapConnector(client))


def test_csrf_token_is_fetched_once_per_session_and_again_after_it_expires() -> None:
    fake = FakeSap(expire_csrf_on_post=3)
    writes = _writes(fake)
    for n in range(4):
        writes.create(f"ERP-{n}", {"name": f"Customer {n}", "country": "IN"})
    fetches = [r for r in fake.requests if r[0] == "HEAD"]
    assert len(fetches) == 2  # once for the session, once after SAP refused the expired token
    assert len(fake.partners) == 4


def test_a_create_whose_answer_was_lost_is_adopted_not_sent_again() -> None:
    fake = FakeSap(lose_create_answer=True)
    created = _writes(fake).create("ERP-7", {"name": "Lost Answer Ltd", "country": "IN"})
    assert created.adopted and created.partner == "1000000"
    assert len(fake.partners) == 1
    assert [m for m, _ in fake.requests].count("POST") == 1


def test_a_create_adopts_the_partner_sap_already_keeps_under_the_erp_reference() -> None:
    fake = FakeSap()
    writes = _writes(fake)
    first = writes.create("ERP-8", {"name": "Once Ltd", "country": "IN"})
    again = writes.create("ERP-8", {"name": "Once Ltd", "country": "IN"})
    assert not first.adopted and again.adopted and again.partner == first.partner
    assert len(fake.partners) == 1


def test_two_partners_under_one_erp_reference_are_refused_not_guessed() -> None:
    fake = FakeSap()
    fake.partners = [{"BusinessPartner": "1", "BusinessPartnerIDByExtSystem": "ERP-9"}, {"BusinessPartner": "2", "BusinessPartnerIDByExtSystem": "ERP-9"}]
    with pytest.raises(InvalidRequest, match="2 partners under the ERP reference ERP-9"):
        _writes(fake).create("ERP-9", {"name": "Twin Ltd"})
