"""Customers pushed to SAP (API_BUSINESS_PARTNER writes): the field ownership, the payloads, the conflict rule.

The ERP's customer fields use the hub's names (the `customers` columns); `FIELDS` says where each lives in
SAP and who owns it after the partner exists. It is the one place ownership is written down: the create
payload, the update's PATCHes, the 412 rule (`plan_update`) and the conflict a person sees all read it.

- create: `BusinessPartnerWrites.create` looks the ERP reference up first (`BusinessPartnerIDByExtSystem`), so a
  retried create adopts the partner an earlier attempt made (its answer lost to a timeout) instead of making a
  twin; then one deep insert (roles, address with e-mail and phones, GSTIN, customer with sales areas).
- update: the partner is read (ETag from `__metadata.etag` or the `ETag` header) and only the ERP-owned fields
  that differ are written, each to the entity SAP keeps it in: the partner (`If-Match`), its address, the
  address's e-mail and phone entries.
- writes carry the CSRF token of the session (`SapConnector.write`: fetched once, fetched again after a 403
  `CSRF token validation failed`).
- a page's writes go to SAP as `$batch` change sets, one per customer (`create_request`, `update_requests`,
  `batch`), each part's error mapped as a single request's (`part_error`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx

from connectors.core.errors import IntegrationError, InvalidRequest, refused_write
from connectors.sap.batch import BatchRequest, ChangeSet, ItemResult
from connectors.sap.connector import SapConnector

log = logging.getLogger(__name__)

Owner = Literal["erp", "sap"]
Entity = Literal["partner", "address", "email", "phone", "mobile", "tax", "customer", "sales_area"]

CUSTOMER_ROLES = ("FLCU00", "FLCU01")  # customer (financial accounting), customer (sales)
GSTIN_TAX_TYPE = "IN3"
PHONE_TYPE, MOBILE_TYPE = "1", "3"  # A_AddressPhoneNumber.PhoneNumberType: landline, mobile
LOOKUP_CHUNK = 40  # `or`-ed keys per lookup GET (keeps the URL well under 4 KB)
PARTNER_EXPAND = (
    "to_BusinessPartnerAddress",
    "to_BusinessPartnerAddress/to_EmailAddress",
    "to_BusinessPartnerAddress/to_PhoneNumber",
    "to_BusinessPartnerAddress/to_MobilePhoneNumber",
    "to_BusinessPartnerTax",
    "to_Customer",
)


@dataclass(frozen=True)
class PartnerField:
    """One ERP customer field: the SAP entity and property that keep it, and who wins after creation."""

    name: str
    entity: Entity
    sap: str | None
    owner: Owner
    why: str


# The field ownership (docs/sap-customer-push.md "The conflict rule"). ERP-owned: the contact and address data
# the ERP's sales desk edits; an update pushes these, and on a conflict the ERP's value wins. SAP-owned: what
# SAP's master-data, credit and tax teams keep; the ERP sets it when it creates the partner, never after.
FIELDS: tuple[PartnerField, ...] = (
    PartnerField("name", "partner", "OrganizationBPName1", "erp", "organisation name (a person's name is first + last)"),
    PartnerField("first_name", "partner", "FirstName", "erp", "person's first name"),
    PartnerField("last_name", "partner", "LastName", "erp", "person's last name"),
    PartnerField("search_term", "partner", "SearchTerm1", "erp", "what the sales desk searches by"),
    PartnerField("language", "partner", "CorrespondenceLanguage", "erp", "language of letters and e-mails"),
    PartnerField("email", "email", "EmailAddress", "erp", "contact e-mail"),
    PartnerField("phone", "phone", "PhoneNumber", "erp", "landline"),
    PartnerField("mobile", "mobile", "PhoneNumber", "erp", "mobile"),
    PartnerField("street", "address", "StreetName", "erp", "address"),
    PartnerField("house_number", "address", "HouseNumber", "erp", "address"),
    PartnerField("city", "address", "CityName", "erp", "address"),
    PartnerField("postal_code", "address", "PostalCode", "erp", "address"),
    PartnerField("region", "address", "Region", "erp", "address"),
    PartnerField("country", "address", "Country", "erp", "address"),
    PartnerField("category", "partner", "BusinessPartnerCategory", "sap", "person or organisation: fixed once created"),
    PartnerField("bp_grouping", "partner", "BusinessPartnerGrouping", "sap", "number range: fixed once created"),
    PartnerField("gstin", "tax", "BPTaxNumber", "sap", "tax registration: SAP's tax team validates and keeps it"),
    PartnerField("account_group", "customer", "CustomerAccountGroup", "sap", "customer account group: SAP master data"),
    PartnerField("sales_areas", "sales_area", None, "sap", "pricing, payment terms, incoterms: SAP sales admin after creation"),
)
BY_NAME: dict[str, PartnerField] = {f.name: f for f in FIELDS}
ERP_OWNED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.owner == "erp")
SAP_OWNED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.owner == "sap")
# A sales area as the ERP sends it (our name -> A_CustomerSalesArea property).
SALES_AREA_FIELDS: dict[str, str] = {
    "sales_org": "SalesOrganization",
    "distribution_channel": "DistributionChannel",
    "division": "Division",
    "currency": "Currency",
    "payment_terms": "CustomerPaymentTerms",
    "incoterms": "IncotermsClassification",
    "shipping_condition": "ShippingCondition",
    "price_group": "CustomerPriceGroup",
    "supplying_plant": "SupplyingPlant",
}
DIALLING_CODES = {"IN": "91", "AE": "971", "SG": "65", "GB": "44", "US": "1", "DE": "49", "LK": "94", "BD": "880", "NP": "977"}


# --- pure helpers: values, the partner as our fields, the rule -----------------------------------------------


def odata_string(value: str) -> str:
    """A string as an OData V2 URI literal: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _results(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, Mapping):
        inner = value.get("results")
        return [dict(v) for v in inner] if isinstance(inner, list) else []
    return [dict(v) for v in value] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def national_number(number: str, country: str | None) -> tuple[str, str | None]:
    """An E.164 number (`+919876543210`) as SAP keeps it: the number without the country's dialling code, and
    the country (DestinationLocationCountry). A number of another country stays whole."""
    text = number.strip()
    code = DIALLING_CODES.get((country or "").upper())
    if text.startswith("+") and code and _digits(text).startswith(code):
        return _digits(text)[len(code):], (country or "").upper()
    return text, (country or "").upper() or None


def same_value(name: str, a: Any, b: Any) -> bool:
    """Whether two values of one field mean the same (e-mail ignores case, a phone compares its digits)."""
    x, y = _text(a), _text(b)
    if x is None or y is None:
        return x is None and y is None
    if name == "email":
        return x.casefold() == y.casefold()
    if name in ("phone", "mobile"):
        dx, dy = _digits(x), _digits(y)
        shorter, longer = sorted((dx, dy), key=len)
        return bool(shorter) and len(shorter) >= 6 and longer.endswith(shorter)
    if name in ("country", "region", "language"):
        return x.upper() == y.upper()
    return x == y


def partner_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """An A_BusinessPartner record (addresses, e-mails, phones, tax, customer expanded) as our field names."""
    addresses = _results(record.get("to_BusinessPartnerAddress"))
    address = addresses[0] if addresses else {}
    emails = _results(address.get("to_EmailAddress"))
    phones = _results(address.get("to_PhoneNumber"))
    mobiles = _results(address.get("to_MobilePhoneNumber"))
    taxes = _results(record.get("to_BusinessPartnerTax"))
    customer = record.get("to_Customer")
    customer = customer if isinstance(customer, Mapping) and "__deferred" not in customer else {}
    category = _text(record.get("BusinessPartnerCategory"))

    def phone(entries: list[dict[str, Any]]) -> str | None:
        entry = entries[0] if entries else {}
        return _text(entry.get("InternationalPhoneNumber")) or _text(entry.get("PhoneNumber"))

    first, last = _text(record.get("FirstName")), _text(record.get("LastName"))
    person_name = " ".join(p for p in (first, last) if p) or None
    return {
        "partner": _text(record.get("BusinessPartner")),
        "erp_ref": _text(record.get("BusinessPartnerIDByExtSystem")),
        "category": {"1": "person", "2": "organization"}.get(category or "", category),
        "name": person_name if category == "1" else _text(record.get("OrganizationBPName1")),
        "first_name": first,
        "last_name": last,
        "search_term": _text(record.get("SearchTerm1")),
        "language": _text(record.get("CorrespondenceLanguage")),
        "email": _text(emails[0].get("EmailAddress")) if emails else None,
        "phone": phone(phones),
        "mobile": phone(mobiles),
        "street": _text(address.get("StreetName")),
        "house_number": _text(address.get("HouseNumber")),
        "city": _text(address.get("CityName")),
        "postal_code": _text(address.get("PostalCode")),
        "region": _text(address.get("Region")),
        "country": _text(address.get("Country")),
        "gstin": next((_text(t.get("BPTaxNumber")) for t in taxes if t.get("BPTaxType") == GSTIN_TAX_TYPE), None),
        "account_group": _text(customer.get("CustomerAccountGroup")),
        "is_blocked": bool(record.get("BusinessPartnerIsBlocked")),
    }


def etag_of(record: Mapping[str, Any], response: httpx.Response | None = None) -> str | None:
    """The entity's ETag: the `ETag` header of a single-entity read, else `__metadata.etag`."""
    if response is not None and response.headers.get("ETag"):
        return response.headers["ETag"]
    metadata = record.get("__metadata")
    if isinstance(metadata, Mapping) and metadata.get("etag"):
        return str(metadata["etag"])
    return None


def owned_fields(category: str | None) -> tuple[str, ...]:
    """The ERP-owned fields that apply to a partner: a person's first and last name, else (organisation, group) its name."""
    skip = {"name"} if category == "person" else {"first_name", "last_name"}
    return tuple(n for n in ERP_OWNED if n not in skip)


@dataclass
class UpdatePlan:
    """What an update writes (`changes`: our field -> the ERP's value), and what it does not and why."""

    changes: dict[str, Any] = field(default_factory=dict)
    kept_sap: dict[str, Any] = field(default_factory=dict)  # SAP changed it, the ERP did not: SAP's value stays
    conflicts: list[str] = field(default_factory=list)  # both changed it, to different values: a person decides
    ignored: list[str] = field(default_factory=list)  # SAP owns it: not pushed by an update


def plan_update(erp: Mapping[str, Any], sap: Mapping[str, Any], base: Mapping[str, Any] | None) -> UpdatePlan:
    """The conflict rule: the ERP's owned fields over SAP's current version.

    `erp` is the change the ERP queued, `sap` the partner as SAP has it now (`partner_view`), `base` the
    partner as the ERP last saw it when it made the change (its `customers` row), when it has one.
    For each ERP-owned field the ERP sent: equal to SAP's value -> nothing to write; the ERP left it as it saw
    it and SAP changed it since -> SAP's value stays; SAP changed it since and the ERP changed it to something
    else -> a conflict; otherwise the ERP's value is written. SAP-owned fields are never written by an update.
    """
    plan = UpdatePlan()
    owned = owned_fields(sap.get("category") or erp.get("category"))
    for name, wanted in erp.items():
        if name not in BY_NAME:
            continue
        if name not in owned:
            if BY_NAME[name].owner == "sap":
                plan.ignored.append(name)
            continue
        current = sap.get(name)
        if same_value(name, wanted, current):
            continue
        if base is not None and name in base:
            seen = base.get(name)
            sap_changed = not same_value(name, seen, current)
            erp_changed = not same_value(name, seen, wanted)
            if sap_changed and not erp_changed:
                plan.kept_sap[name] = current
                continue
            if sap_changed and erp_changed:
                plan.conflicts.append(name)
                continue
        plan.changes[name] = wanted
    return plan


# --- payloads -------------------------------------------------------------------------------------------------


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    text = _text(value)
    if text is not None:
        target[key] = text


def create_payload(erp_ref: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The deep insert of a new customer: partner, roles, address (e-mail, phones), GSTIN, customer with sales areas."""
    category = str(fields.get("category") or "organization")
    body: dict[str, Any] = {"BusinessPartnerCategory": "1" if category == "person" else "2", "BusinessPartnerIDByExtSystem": erp_ref}
    if category == "person":
        _put(body, "FirstName", fields.get("first_name"))
        _put(body, "LastName", fields.get("last_name"))
    else:
        _put(body, "OrganizationBPName1", fields.get("name"))
    _put(body, "SearchTerm1", fields.get("search_term"))
    _put(body, "CorrespondenceLanguage", fields.get("language"))
    _put(body, "Language", fields.get("language"))
    _put(body, "BusinessPartnerGrouping", fields.get("bp_grouping"))
    body["to_BusinessPartnerRole"] = [{"BusinessPartnerRole": role} for role in CUSTOMER_ROLES]
    address: dict[str, Any] = {}
    for name in ("street", "house_number", "city", "postal_code", "region", "country"):
        _put(address, str(BY_NAME[name].sap), fields.get(name))
    _put(address, "Language", fields.get("language"))
    country = _text(fields.get("country"))
    if _text(fields.get("email")):
        address["to_EmailAddress"] = [{"EmailAddress": _text(fields["email"]), "IsDefaultEmailAddress": True}]
    for name, nav, kind in (("phone", "to_PhoneNumber", PHONE_TYPE), ("mobile", "to_MobilePhoneNumber", MOBILE_TYPE)):
        if _text(fields.get(name)):
            number, dest = national_number(str(fields[name]), country)
            entry = {"PhoneNumber": number, "PhoneNumberType": kind, "IsDefaultPhoneNumber": True}
            if dest:
                entry["DestinationLocationCountry"] = dest
            address[nav] = [entry]
    body["to_BusinessPartnerAddress"] = [address]
    if _text(fields.get("gstin")):
        body["to_BusinessPartnerTax"] = [{"BPTaxType": GSTIN_TAX_TYPE, "BPTaxNumber": _text(fields["gstin"])}]
    customer: dict[str, Any] = {}
    _put(customer, "CustomerAccountGroup", fields.get("account_group"))
    areas = []
    for area in fields.get("sales_areas") or ():
        entry = {}
        for ours, theirs in SALES_AREA_FIELDS.items():
            _put(entry, theirs, area.get(ours) if isinstance(area, Mapping) else None)
        if entry:
            areas.append(entry)
    customer["to_CustomerSalesArea"] = areas
    body["to_Customer"] = customer
    return body


# --- the writes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateResult:
    partner: str
    etag: str | None
    adopted: bool  # found by its ERP reference: an earlier attempt (or someone in SAP) had created it
    record: dict[str, Any]


@dataclass(frozen=True)
class PartnerRead:
    record: dict[str, Any]
    etag: str | None

    @property
    def view(self) -> dict[str, Any]:
        return partner_view(self.record)


class PreconditionFailed(Exception):
    """SAP answered 412: the partner changed since it was read (its ETag moved on)."""

    def __init__(self, error: IntegrationError) -> None:
        super().__init__(str(error))
        self.error = error


class BusinessPartnerWrites:
    """Creates and updates of business partners on one SAP connector (its session: CSRF token and cookies)."""

    def __init__(self, connector: SapConnector) -> None:
        self.connector = connector
        self.client = connector.client

    # -- reads ------------------------------------------------------------------------------------------------
    def _query(self, keys: Sequence[str], key_field: str, operation: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            params = {
                "$filter": " or ".join(f"{key_field} eq {odata_string(k)}" for k in chunk),
                "$expand": ",".join(PARTNER_EXPAND),
                "$format": "json",
                "$top": str(max(2 * len(chunk), 2)),
            }
            body = self.client.get_json("A_BusinessPartner", params=params, operation=operation)
            found.extend(dict(r) for r in (body.get("d") or {}).get("results") or [])
        return found

    def find_by_erp_refs(self, erp_refs: Iterable[str]) -> dict[str, list[PartnerRead]]:
        """The partners SAP keeps under each ERP reference (BusinessPartnerIDByExtSystem), a few GETs per page."""
        refs = sorted({r for r in erp_refs if r})
        out: dict[str, list[PartnerRead]] = {r: [] for r in refs}
        for record in self._query(refs, "BusinessPartnerIDByExtSystem", "lookup_partner_by_erp_ref"):
            ref = _text(record.get("BusinessPartnerIDByExtSystem"))
            if ref in out:
                out[ref].append(PartnerRead(record, etag_of(record)))
        return out

    def read_many(self, partners: Iterable[str]) -> dict[str, PartnerRead]:
        """Partners with their addresses, e-mails, phones, tax numbers and customer data, and their ETags."""
        keys = sorted({p for p in partners if p})
        return {str(r["BusinessPartner"]): PartnerRead(r, etag_of(r)) for r in self._query(keys, "BusinessPartner", "read_partners")}

    def read(self, partner: str) -> PartnerRead:
        """One partner as it is now (its ETag from the `ETag` header, else `__metadata.etag`)."""
        response = self.client.request(
            "GET", f"A_BusinessPartner({odata_string(partner)})", params={"$expand": ",".join(PARTNER_EXPAND), "$format": "json"},
            operation="read_partner",
        )
        record = dict(response.json()["d"])
        return PartnerRead(record, etag_of(record, response))

    # -- create -----------------------------------------------------------------------------------------------
    def create(self, erp_ref: str, fields: Mapping[str, Any], *, known: Sequence[PartnerRead] | None = None) -> CreateResult:
        """Create the partner unless SAP already keeps one under `erp_ref` (then adopt it).

        `known`: what a lookup of the page found for this reference just before (None: look it up now). The
        POST itself is never retried blindly: after a timeout or a 5xx the reference is looked up again, and a
        partner the lost attempt made is adopted; otherwise the failure goes back to the caller (retried later).
        """
        existing = list(known) if known is not None else self.find_by_erp_refs([erp_ref]).get(erp_ref, [])
        if existing:
            return self.adopt(erp_ref, existing)
        try:
            response = self.connector.write("POST", "A_BusinessPartner", json=create_payload(erp_ref, fields), retry=False,
                                            operation="create_partner")
        except IntegrationError as error:
            if error.transient:
                again = self.find_by_erp_refs([erp_ref]).get(erp_ref, [])
                if again:
                    log.info("SAP create of %s answered %s but the partner exists: adopted", erp_ref, error.category.value)
                    return self.adopt(erp_ref, again)
                raise
            raise refused_write(error) from error
        record = dict(response.json()["d"])
        return CreateResult(str(record["BusinessPartner"]), etag_of(record, response), adopted=False, record=record)

    @staticmethod
    def adopt(erp_ref: str, existing: Sequence[PartnerRead]) -> CreateResult:
        """The one partner SAP keeps under `erp_ref`, taken as this customer's; two or more are for a person to merge."""
        if len(existing) > 1:
            keys = ", ".join(str(p.record.get("BusinessPartner")) for p in existing)
            raise InvalidRequest(
                f"SAP keeps {len(existing)} partners under the ERP reference {erp_ref} ({keys}): merge them in SAP, then retry",
                code="DUPLICATE_ERP_REF", integration="sap", operation="create_partner",
            )
        return CreateResult(str(existing[0].record["BusinessPartner"]), existing[0].etag, adopted=True, record=existing[0].record)

    # -- update -----------------------------------------------------------------------------------------------
    def update(self, read: PartnerRead, changes: Mapping[str, Any]) -> str | None:
        """Write `changes` (ERP-owned fields) one request at a time; returns the partner's ETag after.

        The partner's own fields go first, with `If-Match`: a 412 there (`PreconditionFailed`) means SAP changed
        the partner since `read`, and nothing has been written yet. Address, e-mail and phones follow. A page of
        customers goes through `batch` instead (one change set each); this path serves a partner without an
        address, whose e-mail or phone needs the address SAP creates first.
        """
        partner = str(read.record["BusinessPartner"])
        etag = read.etag
        for request in self.update_requests(read, changes):
            response = self._write(request.method, request.url, request.json or {}, if_match=request.if_match,
                                   operation=request.operation or "update_partner")
            if request.operation == "update_partner":
                etag = response.headers.get("ETag") or None
        if self.needs_address(read, changes):
            address = self._first_address(partner)
            if address is not None:
                country = _text(changes.get("country")) or read.view.get("country")
                for request in communication_requests(partner, address, changes, country):
                    self._write(request.method, request.url, request.json or {}, if_match=request.if_match,
                                operation=request.operation or "update_partner")
        return etag

    @staticmethod
    def update_requests(read: PartnerRead, changes: Mapping[str, Any]) -> list[BatchRequest]:
        """The writes of an update, in order: the partner's own fields (`If-Match`), its address, e-mail and phones.

        A partner without an address gets one created; its e-mail and phones wait for it (`needs_address`).
        """
        partner = str(read.record["BusinessPartner"])
        country = _text(changes.get("country")) or read.view.get("country")
        by_entity: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            by_entity.setdefault(BY_NAME[name].entity, {})[name] = value
        requests: list[BatchRequest] = []
        if "partner" in by_entity:
            body = {str(BY_NAME[n].sap): (_text(v) or "") for n, v in by_entity["partner"].items()}
            if not read.etag:
                raise InvalidRequest(f"SAP sent no ETag for partner {partner}: cannot update it safely", code="NO_ETAG",
                                     integration="sap", operation="update_partner")
            requests.append(BatchRequest("PATCH", f"A_BusinessPartner({odata_string(partner)})", body, if_match=read.etag,
                                         operation="update_partner"))
        addresses = _results(read.record.get("to_BusinessPartnerAddress"))
        address = addresses[0] if addresses else None
        if "address" in by_entity:
            body = {str(BY_NAME[n].sap): (_text(v) or "") for n, v in by_entity["address"].items()}
            if address is None:
                requests.append(BatchRequest("POST", f"A_BusinessPartner({odata_string(partner)})/to_BusinessPartnerAddress", body,
                                             operation="create_address"))
            else:
                requests.append(BatchRequest("PATCH", _address_key(partner, address), body, if_match=etag_of(address),
                                             operation="update_address"))
        if address is not None:
            requests.extend(communication_requests(partner, address, changes, country))
        return [replace(request, content_id=str(n)) for n, request in enumerate(requests, start=1)]

    @staticmethod
    def needs_address(read: PartnerRead, changes: Mapping[str, Any]) -> bool:
        """Whether an update's e-mail or phone needs an address SAP has not got yet (two steps, not one change set)."""
        return not _results(read.record.get("to_BusinessPartnerAddress")) and _communications(changes)

    def _first_address(self, partner: str) -> dict[str, Any] | None:
        addresses = _results(self.read(partner).record.get("to_BusinessPartnerAddress"))
        return addresses[0] if addresses else None

    # -- batches ----------------------------------------------------------------------------------------------
    def batch(self, change_sets: Sequence[Sequence[BatchRequest]]) -> list[ItemResult]:
        """Each customer's writes as one change set of one `$batch` (one request of the rate budget).

        SAP applies a change set all or nothing, so one customer's refusal or 412 never undoes another's writes.
        A part's error is classified as the single request's would be; `part_error` maps it as `_write` does.
        """
        return self.connector.batch([ChangeSet(tuple(requests)) for requests in change_sets], operation="push_customers_batch")

    def _write(self, method: str, url: str, body: Mapping[str, Any], *, operation: str, if_match: str | None = None) -> httpx.Response:
        try:
            # A POST is sent once (a lost answer must not make a second entry); a PATCH is idempotent.
            return self.connector.write(method, url, json=dict(body), if_match=if_match, operation=operation, retry=method != "POST")
        except IntegrationError as error:
            raise part_error(error) from error


def part_error(error: IntegrationError) -> Exception:
    """A write's error (a single request's, or a `$batch` part's) as the push sees it: 412 -> `PreconditionFailed`,
    a transient failure as it is, a refusal -> DATA_VALIDATION_FAILED with SAP's message."""
    if error.status_code == 412:
        return PreconditionFailed(error)
    if error.transient:
        return error
    return refused_write(error)


def create_request(erp_ref: str, fields: Mapping[str, Any]) -> BatchRequest:
    """A create's deep insert as one request of a change set."""
    return BatchRequest("POST", "A_BusinessPartner", create_payload(erp_ref, fields), content_id="1", operation="create_partner")


def _communications(changes: Mapping[str, Any]) -> bool:
    return any(BY_NAME[name].entity in ("email", "phone", "mobile") for name in changes)


def _address_key(partner: str, address: Mapping[str, Any]) -> str:
    return f"A_BusinessPartnerAddress(BusinessPartner={odata_string(partner)},AddressID={odata_string(str(address['AddressID']))})"


def communication_requests(partner: str, address: Mapping[str, Any], changes: Mapping[str, Any], country: str | None) -> list[BatchRequest]:
    """E-mail -> A_AddressEmailAddress, phone and mobile -> A_AddressPhoneNumber (PhoneNumberType 1 / 3): a PATCH of
    the address's entry, or a POST of a new one when it has none."""
    requests: list[BatchRequest] = []
    for entity in ("email", "phone", "mobile"):
        if entity not in changes:
            continue
        value = _text(changes[entity])
        nav = {"email": "to_EmailAddress", "phone": "to_PhoneNumber", "mobile": "to_MobilePhoneNumber"}[entity]
        entity_set = "A_AddressEmailAddress" if entity == "email" else "A_AddressPhoneNumber"
        entries = _results(address.get(nav))
        if entity == "email":
            body: dict[str, Any] = {"EmailAddress": value or ""}
        else:
            number, dest = national_number(value, country) if value else ("", None)
            body = {"PhoneNumber": number}
            if dest:
                body["DestinationLocationCountry"] = dest
        if entries:
            entry = entries[0]
            keys = ",".join(f"{k}={odata_string(str(entry.get(k) or ''))}" for k in ("AddressID", "Person", "OrdinalNumber"))
            requests.append(BatchRequest("PATCH", f"{entity_set}({keys})", body, if_match=etag_of(entry), operation=f"update_{entity}"))
            continue
        if not value:
            continue
        if entity == "email":
            body["IsDefaultEmailAddress"] = True
        else:
            body.update({"PhoneNumberType": PHONE_TYPE if entity == "phone" else MOBILE_TYPE, "IsDefaultPhoneNumber": True})
        requests.append(BatchRequest("POST", f"{_address_key(partner, address)}/{nav}", body, operation=f"create_{entity}"))
    return requests


__all__ = [
    "BY_NAME",
    "ERP_OWNED",
    "FIELDS",
    "SAP_OWNED",
    "BusinessPartnerWrites",
    "CreateResult",
    "PartnerField",
    "PartnerRead",
    "PreconditionFailed",
    "UpdatePlan",
    "communication_requests",
    "create_payload",
    "create_request",
    "part_error",
    "partner_view",
    "plan_update",
]
