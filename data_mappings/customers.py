"""SAP business partners (OData V2 records) -> the ERP's canonical customer frame. Pure pandas, no I/O.

`flatten_business_partners` lifts the few nested values we need out of the expanded navigation
properties; `map_customers` is a declared column map plus a few explicit steps. A value that cannot be
parsed is never guessed: it goes to `mapping_errors`, and the customers suite refuses the row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from data_mappings.columns import CUSTOMER_COLUMNS

# Source field -> canonical column, for values that need no more than a rename and a strip.
COLUMN_MAP: dict[str, str] = {
    "BusinessPartner": "customer_id",
    "Customer": "sap_customer",
    "FirstName": "first_name",
    "LastName": "last_name",
    "SearchTerm1": "search_term",
    "BusinessPartnerGrouping": "bp_grouping",
    "CorrespondenceLanguage": "language",
    "Industry": "industry",
    "StreetName": "street",
    "HouseNumber": "house_number",
    "CityName": "city",
    "PostalCode": "postal_code",
    "Region": "region",
    "CustomerAccountGroup": "account_group",
    "OrderIsBlockedForCustomer": "order_block",
}
CATEGORIES = {"1": "person", "2": "organization"}
BOOLEAN_MAP = {
    "BusinessPartnerIsBlocked": "is_blocked",
    "IsMarkedForArchiving": "is_archived",
    "DeletionIndicator": "deletion_flag",
}
GSTIN_TAX_TYPE = "IN3"
CANONICAL_COLUMNS = list(CUSTOMER_COLUMNS)
HASHED_COLUMNS = [c for c in CANONICAL_COLUMNS if c not in ("mapping_errors", "row_hash")]

_FLAT_FIELDS = [
    "BusinessPartner",
    "Customer",
    "BusinessPartnerCategory",
    "BusinessPartnerFullName",
    "OrganizationBPName1",
    "FirstName",
    "LastName",
    "SearchTerm1",
    "BusinessPartnerGrouping",
    "CorrespondenceLanguage",
    "Industry",
    "CreationDate",
    "CreationTime",
    "LastChangeDate",
    "LastChangeTime",
    "BusinessPartnerIsBlocked",
    "IsMarkedForArchiving",
]
_ADDRESS_FIELDS = ["StreetName", "HouseNumber", "CityName", "PostalCode", "Region", "Country"]
_CUSTOMER_FIELDS = ["CustomerAccountGroup", "OrderIsBlockedForCustomer", "DeletionIndicator"]
_NESTED_FIELDS = ["Email", "PhoneNumber", "PhoneInternational", "MobileNumber", "MobileInternational", "GSTIN"]
RAW_COLUMNS = _FLAT_FIELDS + _ADDRESS_FIELDS + _CUSTOMER_FIELDS + _NESTED_FIELDS

# What the mapping reads from an A_BusinessPartner record, as OData V2 paths (nested paths select inside an
# $expand). The one list: the dataset's `$select` and `$expand` are derived from it (hub/systems/sap.py).
_ADDRESS = "to_BusinessPartnerAddress"
SOURCE_FIELDS: tuple[str, ...] = (
    *_FLAT_FIELDS,
    *(f"to_Customer/{f}" for f in _CUSTOMER_FIELDS),
    "to_BusinessPartnerTax/BPTaxType",
    "to_BusinessPartnerTax/BPTaxNumber",
    *(f"{_ADDRESS}/{f}" for f in _ADDRESS_FIELDS),
    f"{_ADDRESS}/to_EmailAddress/EmailAddress",
    f"{_ADDRESS}/to_PhoneNumber/PhoneNumber",
    f"{_ADDRESS}/to_PhoneNumber/InternationalPhoneNumber",
    f"{_ADDRESS}/to_MobilePhoneNumber/PhoneNumber",
    f"{_ADDRESS}/to_MobilePhoneNumber/InternationalPhoneNumber",
)


def source_expand(fields: Iterable[str] = SOURCE_FIELDS) -> tuple[str, ...]:
    """Every navigation path the fields go through, parents first (`a`, `a/b` for `a/b/Field`)."""
    paths: list[str] = []
    for field in fields:
        steps = field.split("/")[:-1]
        for depth in range(1, len(steps) + 1):
            path = "/".join(steps[:depth])
            if path not in paths:
                paths.append(path)
    return tuple(paths)


def _results(nav: Any) -> list[Mapping[str, Any]]:
    """An expanded to-many navigation property: `{"results": [...]}` (a bare list is tolerated)."""
    if isinstance(nav, Mapping):
        items = nav.get("results")
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
    if isinstance(nav, list):
        return [i for i in nav if isinstance(i, Mapping)]
    return []


def _first(items: list[Mapping[str, Any]], field: str) -> Any:
    for item in items:
        value = item.get(field)
        if value not in (None, ""):
            return value
    return None


def flatten_business_partners(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One flat row per partner with the first address, its first e-mail/phone/mobile and the GSTIN."""
    rows: list[list[Any]] = []
    for rec in records:
        addresses = _results(rec.get("to_BusinessPartnerAddress"))
        address = addresses[0] if addresses else {}
        customer = rec.get("to_Customer")
        customer = customer if isinstance(customer, Mapping) and "__deferred" not in customer else {}
        emails = [e for a in addresses for e in _results(a.get("to_EmailAddress"))]
        phones = [p for a in addresses for p in _results(a.get("to_PhoneNumber"))]
        mobiles = [p for a in addresses for p in _results(a.get("to_MobilePhoneNumber"))]
        gstin = next(
            (t.get("BPTaxNumber") for t in _results(rec.get("to_BusinessPartnerTax")) if t.get("BPTaxType") == GSTIN_TAX_TYPE),
            None,
        )
        rows.append(
            [rec.get(f) for f in _FLAT_FIELDS]
            + [address.get(f) for f in _ADDRESS_FIELDS]
            + [customer.get(f) for f in _CUSTOMER_FIELDS]
            + [
                _first(emails, "EmailAddress"),
                _first(phones, "PhoneNumber"),
                _first(phones, "InternationalPhoneNumber"),
                _first(mobiles, "PhoneNumber"),
                _first(mobiles, "InternationalPhoneNumber"),
                gstin,
            ]
        )
    return pd.DataFrame(rows, columns=RAW_COLUMNS, dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value).strip() or None


def _text(series: pd.Series, transform: Any = None) -> pd.Series:
    """Strip; empty or whitespace-only becomes None; non-strings become their string form.

    List comprehensions rather than `Series.map`: pandas may turn a returned None into NaN, and this
    runs on every text column of every batch, so strings take the inline fast path.
    """
    values = [(v.strip() or None) if v.__class__ is str else _clean(v) for v in series.tolist()]
    if transform is not None:
        values = [transform(v) if v is not None else None for v in values]
    return pd.Series(values, index=series.index, dtype=object)


_EDM_DATETIME = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/\Z")
_EDM_TIME = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?\Z")
_MISSING = object()


def _edm_ms(value: Any) -> Any:
    """Milliseconds of a `/Date(ms)/` value; None when absent; _MISSING when present but unreadable."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    match = _EDM_DATETIME.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else _MISSING


def _edm_seconds(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    match = _EDM_TIME.match(value) if isinstance(value, str) else None
    if not match or value == "PT":
        return _MISSING
    h, m, sec = match.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(sec or 0)


def _parse_edm_datetime(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`/Date(ms)/` -> UTC timestamps, plus a mask of values that were present but unreadable."""
    parsed = [_edm_ms(v) for v in series.tolist()]
    bad = pd.Series([p is _MISSING for p in parsed], index=series.index, dtype=bool)
    ms = pd.array([None if p is _MISSING else p for p in parsed], dtype="Int64")
    return pd.Series(pd.to_datetime(ms, unit="ms", utc=True), index=series.index), bad


def _parse_edm_time(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`PT14H30M05S` -> timedelta, plus a mask of unreadable values."""
    parsed = [_edm_seconds(v) for v in series.tolist()]
    bad = pd.Series([p is _MISSING for p in parsed], index=series.index, dtype=bool)
    seconds = pd.array([None if p is _MISSING else p for p in parsed], dtype="Float64")
    return pd.Series(pd.to_timedelta(seconds, unit="s"), index=series.index), bad


def e164(number: str | None, international: str | None, country: str | None) -> str | None:
    """E.164 where the source gives enough to know it; anything else is left as sent for the suite to judge."""
    if international:
        return international.replace(" ", "")
    if number is None:
        return None
    cleaned = "".join(ch for ch in number if ch not in " -()/.")
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if cleaned.startswith("+") or country != "IN" or not cleaned.isdigit():
        return cleaned
    # Indian numbers: a trunk 0 or the bare 10-digit subscriber number get the +91 country code.
    if len(cleaned) == 11 and cleaned.startswith("0"):
        return "+91" + cleaned[1:]
    if len(cleaned) == 10:
        return "+91" + cleaned
    return cleaned


def normalise_phone(number: pd.Series, international: pd.Series, country: pd.Series) -> pd.Series:
    values = [e164(n, i, c) for n, i, c in zip(_text(number), _text(international), country, strict=True)]
    return pd.Series(values, index=number.index, dtype=object)


def _append_error(errors: pd.Series, mask: pd.Series, message: str) -> pd.Series:
    add = pd.Series([message if flag else None for flag in mask.tolist()], index=errors.index, dtype=object)
    both = errors.notna() & add.notna()
    out = errors.where(errors.notna(), add)
    out[both] = errors[both] + "; " + add[both]
    return out


def _boolean(series: pd.Series, field: str, errors: pd.Series) -> tuple[pd.Series, pd.Series]:
    """JSON booleans; null means false (SAP's initial value); anything else is a mapping error."""
    raw_values = series.tolist()
    is_bool = [isinstance(v, bool | np.bool_) for v in raw_values]
    bad = pd.Series([not ok and not _missing(v) for v, ok in zip(raw_values, is_bool, strict=True)], index=series.index)
    errors = _append_error(errors, bad, f"{field}: not a boolean")
    values = pd.Series([bool(v) if ok else False for v, ok in zip(raw_values, is_bool, strict=True)], index=series.index)
    return values, errors


def map_customers(raw: pd.DataFrame) -> pd.DataFrame:
    """Flat business-partner rows (see `flatten_business_partners`) -> canonical customer rows, same index."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"business-partner frame lacks columns: {', '.join(missing)}")
    out = pd.DataFrame(index=raw.index)
    errors = pd.Series([None] * len(raw), index=raw.index, dtype=object)

    for source, target in COLUMN_MAP.items():
        out[target] = _text(raw[source])

    category_code = _text(raw["BusinessPartnerCategory"])
    out["category"] = pd.Series([CATEGORIES.get(v) if v else None for v in category_code], index=raw.index, dtype=object)
    errors = _append_error(
        errors, category_code.notna() & out["category"].isna(), "BusinessPartnerCategory: unknown code"
    )

    full = _text(raw["BusinessPartnerFullName"])
    org = _text(raw["OrganizationBPName1"])
    person = [" ".join(p for p in (first, last) if p) or None for first, last in zip(out["first_name"], out["last_name"], strict=True)]
    out["name"] = pd.Series(
        [f or o or p for f, o, p in zip(full, org, person, strict=True)], index=raw.index, dtype=object
    )

    out["email"] = _text(raw["Email"], str.lower)
    out["country"] = _text(raw["Country"], str.upper)
    out["phone"] = normalise_phone(raw["PhoneNumber"], raw["PhoneInternational"], out["country"])
    out["mobile"] = normalise_phone(raw["MobileNumber"], raw["MobileInternational"], out["country"])
    out["gstin"] = _text(raw["GSTIN"], lambda v: v.upper().replace(" ", ""))

    for source, target in BOOLEAN_MAP.items():
        out[target], errors = _boolean(raw[source], source, errors)

    created_date, bad = _parse_edm_datetime(raw["CreationDate"])
    errors = _append_error(errors, bad, "CreationDate: not an Edm.DateTime")
    created_time, bad = _parse_edm_time(raw["CreationTime"])
    errors = _append_error(errors, bad, "CreationTime: not an Edm.Time")
    changed_date, bad = _parse_edm_datetime(raw["LastChangeDate"])
    errors = _append_error(errors, bad, "LastChangeDate: not an Edm.DateTime")
    changed_time, bad = _parse_edm_time(raw["LastChangeTime"])
    errors = _append_error(errors, bad, "LastChangeTime: not an Edm.Time")

    created = created_date + created_time.fillna(pd.Timedelta(0))
    changed = changed_date + changed_time.fillna(pd.Timedelta(0))
    out["sap_created_at"] = created
    # A partner never changed since creation has no LastChangeDate: its creation is its last change.
    out["sap_changed_at"] = changed.where(changed.notna(), created)

    out["mapping_errors"] = errors
    out["row_hash"] = row_hashes(out)
    return out[CANONICAL_COLUMNS]


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """A stable digest of the mapped values, so a load can skip rows that did not change."""
    hashed = pd.util.hash_pandas_object(frame[HASHED_COLUMNS], index=False)
    return pd.Series([f"{h:016x}" for h in hashed.tolist()], index=frame.index, dtype=object)


def change_dates(mapped: pd.DataFrame) -> pd.Series:
    """The date each row last changed (the incremental cursor is date-granular, like LastChangeDate)."""
    return mapped["sap_changed_at"].dt.date
