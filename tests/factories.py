"""Synthetic OData V2 business-partner records, shaped like API_BUSINESS_PARTNER's with our $expand."""

from __future__ import annotations

from typing import Any


def odata_date(ms: int) -> str:
    return f"/Date({ms})/"


def partner(n: int = 1, **overrides: Any) -> dict[str, Any]:
    bp = f"{1000000000 + n}"
    record: dict[str, Any] = {
        "__metadata": {"type": "API_BUSINESS_PARTNER.A_BusinessPartnerType"},
        "BusinessPartner": bp,
        "Customer": bp,
        "BusinessPartnerCategory": "2",
        "BusinessPartnerFullName": f"Shree Ganesh Traders {n}",
        "OrganizationBPName1": f"Shree Ganesh Traders {n}",
        "FirstName": None,
        "LastName": None,
        "SearchTerm1": "GANESH",
        "BusinessPartnerGrouping": "BP02",
        "CorrespondenceLanguage": "EN",
        "Industry": "CONS",
        "CreationDate": odata_date(1_600_000_000_000 - 1_600_000_000_000 % 86_400_000),
        "CreationTime": "PT10H15M00S",
        "LastChangeDate": odata_date(1_700_000_000_000 - 1_700_000_000_000 % 86_400_000),
        "LastChangeTime": "PT14H30M05S",
        "BusinessPartnerIsBlocked": False,
        "IsMarkedForArchiving": False,
        "to_Customer": {"CustomerAccountGroup": "KUNA", "OrderIsBlockedForCustomer": "", "DeletionIndicator": False},
        "to_BusinessPartnerTax": {"results": [{"BPTaxType": "IN3", "BPTaxNumber": "27AAPFU0939F1ZV"}]},
        "to_BusinessPartnerAddress": {
            "results": [
                {
                    "StreetName": "MG Road",
                    "HouseNumber": "12",
                    "CityName": "Pune",
                    "PostalCode": "411001",
                    "Region": "MH",
                    "Country": "IN",
                    "to_EmailAddress": {"results": [{"EmailAddress": f"orders{n}@ganesh-traders.in"}]},
                    "to_PhoneNumber": {"results": [{"PhoneNumber": "020 2612 3456", "InternationalPhoneNumber": None}]},
                    "to_MobilePhoneNumber": {"results": [{"PhoneNumber": "98220 12345", "InternationalPhoneNumber": "+919822012345"}]},
                }
            ]
        },
    }
    record.update(overrides)
    return record


def address(record: dict[str, Any]) -> dict[str, Any]:
    return record["to_BusinessPartnerAddress"]["results"][0]
