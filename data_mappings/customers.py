"""SAP business partners (OData V2 records) -> the ERP's canonical customer frame. Pure pandas, no I/O.

`flatten_business_partners` lifts the few nested values we need out of the expanded navigation
properties, flattening each nested `results` level once; `map_customers` is a declared column map plus a few
explicit steps, column by column. A value that cannot be
parsed is never guessed: it goes to `mapping_errors`, and the customers suite refuses the row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
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


def _item_lists(navs: list[Any]) -> list[list[Any]]:
    """Each navigation property's items: the wire's `{"results": [...]}` as is, other shapes through `_results`.

    The common shape is read inline (no call per partner); its items are checked once, flattened, in `_explode`.
    """
    return [
        nav["results"] if nav.__class__ is dict and nav.get("results").__class__ is list else _results(nav)
        for nav in navs
    ]


def _explode(lists: list[list[Any]], owners: np.ndarray) -> tuple[list[Mapping[str, Any]], np.ndarray]:
    """All items of all lists in order, with each item's owner (a partner's position); non-mappings dropped."""
    counts = np.fromiter(map(len, lists), dtype=np.intp, count=len(lists))
    items = [item for listed in lists for item in listed]
    item_owners = np.repeat(owners, counts)
    if not set(map(type, items)) <= {dict}:  # `_results` keeps mappings only; rare, so checked in bulk first
        keep = [isinstance(item, Mapping) for item in items]
        items = [item for item, ok in zip(items, keep, strict=True) if ok]
        item_owners = item_owners[np.array(keep, dtype=bool)]
    return items, item_owners


def _objects(values: list[Any] | tuple[Any, ...]) -> np.ndarray:
    """A 1-d object array of the values as they are (`np.array` would nest lists into a second dimension)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _pick(items: list[Mapping[str, Any]], fields: list[str] | tuple[str, ...]) -> list[np.ndarray]:
    """Each field's values over the items, as object arrays (None where an item lacks the field)."""
    return [_objects(_values(items, f)) for f in fields]


def _values(items: list[Mapping[str, Any]], field: str) -> list[Any]:
    # `itemgetter` mapped over the items runs in C; an item without the field (rare: `$select` sends every
    # field) makes the whole list take `.get`, with the same result.
    try:
        return list(map(itemgetter(field), items))
    except KeyError:
        return [item.get(field) for item in items]


def _first_by_owner(values: np.ndarray, owners: np.ndarray, keep: np.ndarray, size: int) -> np.ndarray:
    """Per owner position, the first kept value in order (None where an owner has none); owners ascend."""
    out = np.full(size, None, dtype=object)
    kept, kept_owners = values[keep], owners[keep]
    if len(kept):
        starts = np.flatnonzero(np.r_[True, kept_owners[1:] != kept_owners[:-1]])
        out[kept_owners[starts]] = kept[starts]
    return out


_NONE_OPERAND = np.array(None, dtype=object)


def _nones(values: np.ndarray) -> np.ndarray:
    """Where a value is None: elementwise `== None` (JSON values compare equal to None only when they are)."""
    return np.equal(values, _NONE_OPERAND)


def _present(values: np.ndarray) -> np.ndarray:
    """`value not in (None, "")` for every value (elementwise `!=`, as `in` compares, so NaN counts as present)."""
    return ~_nones(values) & np.not_equal(values, "")


_NO_CUSTOMER: Mapping[str, Any] = dict.fromkeys(_CUSTOMER_FIELDS)  # no customer role: every field None
_NESTED_NUMBERS = (
    ("to_EmailAddress", ("EmailAddress",)),
    ("to_PhoneNumber", ("PhoneNumber", "InternationalPhoneNumber")),
    ("to_MobilePhoneNumber", ("PhoneNumber", "InternationalPhoneNumber")),
)


def flatten_business_partners(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One flat row per partner with the first address, its first e-mail/phone/mobile and the GSTIN.

    Columnar: the nested `results` lists are flattened once into item lists with their partner's position,
    and "the first one with a value" is taken per partner with numpy, not searched record by record.
    """
    records = records if isinstance(records, list) else list(records)
    size = len(records)
    positions = np.arange(size)
    columns: dict[str, Any] = dict(zip(_FLAT_FIELDS, _pick(records, _FLAT_FIELDS), strict=True))

    addresses, address_owners = _explode(_item_lists(_values(records, _ADDRESS)), positions)
    every_address = np.ones(len(addresses), dtype=bool)
    for f, values in zip(_ADDRESS_FIELDS, _pick(addresses, _ADDRESS_FIELDS), strict=True):
        columns[f] = _first_by_owner(values, address_owners, every_address, size)  # the first address's, even empty

    customers = [
        c if isinstance(c, Mapping) and "__deferred" not in c else _NO_CUSTOMER
        for c in _values(records, "to_Customer")
    ]
    columns.update(zip(_CUSTOMER_FIELDS, _pick(customers, _CUSTOMER_FIELDS), strict=True))

    nested: list[np.ndarray] = []
    for nav, fields in _NESTED_NUMBERS:  # across all of a partner's addresses, as SAP lists them
        items, owners = _explode(_item_lists(_values(addresses, nav)), address_owners)
        nested.extend(_first_by_owner(values, owners, _present(values), size) for values in _pick(items, fields))
    taxes, tax_owners = _explode(_item_lists(_values(records, "to_BusinessPartnerTax")), positions)
    tax_types, tax_numbers = _pick(taxes, ("BPTaxType", "BPTaxNumber"))
    gstin = _first_by_owner(tax_numbers, tax_owners, np.equal(tax_types, GSTIN_TAX_TYPE), size)
    columns.update(zip(_NESTED_FIELDS, [*nested, gstin], strict=True))
    return pd.DataFrame({c: columns[c] for c in RAW_COLUMNS}, dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value).strip() or None


def _kinds(values: np.ndarray) -> np.ndarray:
    """Each value's exact class (`map(type, ...)` runs in C), for `_of_kind`."""
    return np.fromiter(map(type, values), dtype=object, count=len(values))


def _of_kind(kinds: np.ndarray, *classes: type) -> np.ndarray:
    """Where the class is exactly one of `classes` (not isinstance: subclasses take the slow, exact path)."""
    found = np.zeros(len(kinds), dtype=bool)
    for cls in classes:
        # In a 1-element object array: numpy would read a numpy scalar type such as np.bool_ as an array-like.
        operand = np.empty(1, dtype=object)
        operand[0] = cls
        found |= np.equal(kinds, operand)
    return found


_NONE = type(None)


def _strings(values: np.ndarray) -> pd.Series:
    """A plain object Series of strings for the `.str` methods (pandas 3 would infer its own string dtype)."""
    return pd.Series(values, dtype=object)


def _text_values(values: np.ndarray, transform: Callable[[str], str] | None = None) -> np.ndarray:
    """Strip; empty or whitespace-only becomes None; non-strings become their string form; then the transform.

    A list comprehension, not `.str.strip()`: without pyarrow, pandas' `.str` methods on object (and python-
    backed string) columns call a Python lambda per value (pandas/core/strings/object_array.py `_str_map`), and
    measured 1.5x slower than this. Strings take the inline path; other values (rare) go through `_clean`.
    """
    # One object per distinct text: the parse gives every partner its own "IN", "Mumbai" or "Z001" (~55 bytes
    # each), and the mapped rows keep them for the batch's life; shared, a mapped partner holds ~555 bytes of
    # strings instead of ~1,073 (~5 MB less per 10,000, measured by object identity). One pass over the values
    # strips, transforms and shares (~10 % less than a pass for each, measured on 10,000 partners).
    shared: dict[str, str] = {}
    share = shared.setdefault
    if transform is None:
        texts = [
            (share(s, s) if (s := v.strip()) else None) if v.__class__ is str else _clean(v)
            for v in values.tolist()
        ]
    else:
        texts = [
            (share(t := transform(s), t) if (s := v.strip()) else None) if v.__class__ is str
            else (transform(c) if (c := _clean(v)) is not None else None)
            for v in values.tolist()
        ]
    return _objects(texts)


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


def _read_edm(series: pd.Series, one: Callable[[Any], Any], dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, a mask of known values and a mask of unreadable ones, each distinct value read once by `one`.

    Dates repeat within a batch (about a third of a 10k batch's creation dates, a tenth of its change dates are
    distinct); `factorize` finds the distinct values in C. Reading them with `.str.extract` measured slower than
    `one`'s compiled regex: pandas' object `.str` calls a Python function per value too.
    """
    values = series.to_numpy(dtype=object)
    try:
        codes, uniques = pd.factorize(values)
    except TypeError:  # an unhashable value (a list or an object where a date belongs): each value its own
        codes, uniques = np.arange(len(values)), values
    parsed = [one(v) for v in uniques]
    known_u = np.array([p is not None and p is not _MISSING for p in parsed], dtype=bool)
    parsed_u = np.array([p if ok else 0 for p, ok in zip(parsed, known_u, strict=True)], dtype=dtype)
    bad_u = np.array([p is _MISSING for p in parsed], dtype=bool)
    seen = codes >= 0
    out = np.zeros(len(values), dtype=dtype)
    known = np.zeros(len(values), dtype=bool)
    bad = np.zeros(len(values), dtype=bool)
    out[seen], known[seen], bad[seen] = parsed_u[codes[seen]], known_u[codes[seen]], bad_u[codes[seen]]
    # factorize's missing values: None and NaN are absent; any other missing-like object is read as `one` reads it.
    for position in np.flatnonzero(~seen & ~_of_kind(_kinds(values), _NONE, float)):
        bad[position] = one(values[position]) is _MISSING
    return out, known, bad


def _parse_edm_datetime(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`/Date(ms)/` -> UTC timestamps, plus a mask of values that were present but unreadable."""
    ms, known, bad = _read_edm(series, _edm_ms, np.int64)
    stamps = pd.to_datetime(pd.arrays.IntegerArray(ms, ~known), unit="ms", utc=True)
    return pd.Series(stamps, index=series.index), pd.Series(bad, index=series.index)


_PT_FORM = np.array([ord(c) for c in "PT__H__M__S"], dtype=np.uint32)
_PT_LETTERS = np.array([0, 1, 4, 7, 10])
_PT_DIGITS = np.array([2, 3, 5, 6, 8, 9])
_PT_SECONDS = np.array([36000, 3600, 600, 60, 10, 1], dtype=np.int64)


def _fixed_edm_times(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of the values in SAP's own Edm.Time form `PThhHmmMssS` (11 ASCII characters), read as arrays,
    and where that form was found; every other value (None, fractions, other widths, junk) is left to `_edm_seconds`.

    Creation and change times are nearly all distinct, so reading each distinct value once (`_read_edm`) saved
    little: this reads the common form without a Python call per value, then its digits by position.
    """
    seconds = np.zeros(len(values), dtype=np.float64)
    strings = _of_kind(_kinds(values), str)
    if strings.any():
        texts = values[strings]
        fixed = np.fromiter(map(len, texts), dtype=np.intp, count=len(texts)) == len(_PT_FORM)
        codes = texts[fixed].astype(f"U{len(_PT_FORM)}").view(np.uint32).reshape(-1, len(_PT_FORM))
        digits = codes[:, _PT_DIGITS] - ord("0")
        form = (codes[:, _PT_LETTERS] == _PT_FORM[_PT_LETTERS]).all(axis=1) & (digits <= 9).all(axis=1)
        fixed[fixed] = form
        strings[strings] = fixed
        seconds[strings] = digits[form].astype(np.int64) @ _PT_SECONDS
    return seconds, strings


def _parse_edm_time(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`PT14H30M05S` -> timedelta, plus a mask of unreadable values."""
    values = series.to_numpy(dtype=object)
    seconds, known = _fixed_edm_times(values)
    bad = np.zeros(len(values), dtype=bool)
    rest = ~known
    if rest.any():
        seconds[rest], known[rest], bad[rest] = _read_edm(pd.Series(values[rest], dtype=object), _edm_seconds, np.float64)
    span = pd.to_timedelta(pd.arrays.FloatingArray(seconds, ~known), unit="s")
    return pd.Series(span, index=series.index), pd.Series(bad, index=series.index)


def e164(number: str | None, international: str | None, country: str | None) -> str | None:
    """E.164 where the source gives enough to know it; anything else is left as sent for the suite to judge.

    One number at a time, for callers outside the mapping; `normalise_phone` does the same column-wise.
    """
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


def _e164_values(number: np.ndarray, international: np.ndarray, country: np.ndarray) -> np.ndarray:
    """`e164` column-wise over texts (None or non-empty stripped strings): every shape has a `.str` form."""
    out = np.full(len(number), None, dtype=object)
    has_international = ~_nones(international)
    if has_international.any():
        out[has_international] = _strings(international[has_international]).str.replace(" ", "", regex=False).to_numpy()
    local = ~has_international & ~_nones(number)
    if local.any():
        cleaned = _strings(number[local]).str.replace(r"[ \-()/.]", "", regex=True)
        cleaned = cleaned.where(~cleaned.str.startswith("00"), "+" + cleaned.str.slice(2))
        indian = (
            ~cleaned.str.startswith("+").to_numpy(dtype=bool)
            & np.equal(country[local], "IN")
            & cleaned.str.isdigit().to_numpy(dtype=bool)
        )
        length = cleaned.str.len().to_numpy()
        trunk = indian & (length == 11) & cleaned.str.startswith("0").to_numpy(dtype=bool)
        values = cleaned.to_numpy(dtype=object, copy=True)
        values[trunk] = "+91" + cleaned[trunk].str.slice(1).to_numpy(dtype=object)
        bare = indian & (length == 10)
        values[bare] = "+91" + values[bare]
        out[local] = values
    return out


def normalise_phone(number: pd.Series, international: pd.Series, country: pd.Series) -> pd.Series:
    values = _e164_values(
        _text_values(number.to_numpy(dtype=object)),
        _text_values(international.to_numpy(dtype=object)),
        country.to_numpy(dtype=object),
    )
    return pd.Series(values, index=number.index, dtype=object)


def _append_error(errors: np.ndarray, mask: np.ndarray, message: str) -> np.ndarray:
    """`errors` (None or "a; b") with `message` added where `mask` is set."""
    out = errors.copy()
    mask = np.asarray(mask, dtype=bool)
    first = mask & _nones(out)
    out[first] = message
    more = mask & ~first
    out[more] = out[more] + f"; {message}"
    return out


def _boolean(series: pd.Series, field: str, errors: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """JSON booleans; null means false (SAP's initial value); anything else is a mapping error."""
    values = series.to_numpy(dtype=object)
    kinds = _kinds(values)
    is_bool = _of_kind(kinds, bool, np.bool_)
    bad = np.zeros(len(values), dtype=bool)
    odd = ~is_bool & ~_of_kind(kinds, _NONE)
    if odd.any():  # NaN is null as well; the rest are errors (rare: SAP sends true, false or null)
        bad[odd] = [not _missing(v) for v in values[odd]]
    result = np.zeros(len(values), dtype=bool)
    result[is_bool] = values[is_bool].astype(bool)
    # An empty batch keeps the object dtype the row-wise mapping gave it (nothing to infer a dtype from).
    flags = pd.Series(result, index=series.index, dtype=bool if len(values) else object)
    return flags, _append_error(errors, bad, f"{field}: not a boolean")


def _column(values: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(values, index=index, dtype=object)


def map_customers(raw: pd.DataFrame) -> pd.DataFrame:
    """Flat business-partner rows (see `flatten_business_partners`) -> canonical customer rows, same index."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"business-partner frame lacks columns: {', '.join(missing)}")
    index = raw.index
    source = {c: raw[c].to_numpy(dtype=object) for c in RAW_COLUMNS}
    texts = {target: _text_values(source[field]) for field, target in COLUMN_MAP.items()}
    out: dict[str, pd.Series] = {target: _column(values, index) for target, values in texts.items()}
    errors = np.full(len(raw), None, dtype=object)

    category_code = _text_values(source["BusinessPartnerCategory"])
    category = np.full(len(raw), None, dtype=object)
    for code, label in CATEGORIES.items():
        category[np.equal(category_code, code)] = label
    out["category"] = _column(category, index)
    errors = _append_error(
        errors, ~_nones(category_code) & _nones(category), "BusinessPartnerCategory: unknown code"
    )

    first, last = texts["first_name"], texts["last_name"]
    has_first, has_last = ~_nones(first), ~_nones(last)
    person = np.where(has_first, first, last)
    both = has_first & has_last
    person[both] = first[both] + " " + last[both]
    full = _text_values(source["BusinessPartnerFullName"])
    org = _text_values(source["OrganizationBPName1"])
    name = np.where(~_nones(full), full, np.where(~_nones(org), org, person))
    out["name"] = _column(name, index)

    out["email"] = _column(_text_values(source["Email"], str.lower), index)
    country = _text_values(source["Country"], str.upper)
    out["country"] = _column(country, index)
    for target, number, international in (
        ("phone", "PhoneNumber", "PhoneInternational"),
        ("mobile", "MobileNumber", "MobileInternational"),
    ):
        phone = _e164_values(_text_values(source[number]), _text_values(source[international]), country)
        out[target] = _column(phone, index)
    out["gstin"] = _column(
        _text_values(source["GSTIN"], lambda v: v.upper().replace(" ", "")), index
    )

    for field, target in BOOLEAN_MAP.items():
        out[target], errors = _boolean(raw[field], field, errors)

    created_date, bad = _parse_edm_datetime(raw["CreationDate"])
    errors = _append_error(errors, bad.to_numpy(), "CreationDate: not an Edm.DateTime")
    created_time, bad = _parse_edm_time(raw["CreationTime"])
    errors = _append_error(errors, bad.to_numpy(), "CreationTime: not an Edm.Time")
    changed_date, bad = _parse_edm_datetime(raw["LastChangeDate"])
    errors = _append_error(errors, bad.to_numpy(), "LastChangeDate: not an Edm.DateTime")
    changed_time, bad = _parse_edm_time(raw["LastChangeTime"])
    errors = _append_error(errors, bad.to_numpy(), "LastChangeTime: not an Edm.Time")

    created = created_date + created_time.fillna(pd.Timedelta(0))
    changed = changed_date + changed_time.fillna(pd.Timedelta(0))
    out["sap_created_at"] = created
    # A partner never changed since creation has no LastChangeDate: its creation is its last change.
    out["sap_changed_at"] = changed.where(changed.notna(), created)

    out["mapping_errors"] = _column(errors, index)
    frame = pd.DataFrame({c: out[c] for c in CANONICAL_COLUMNS if c != "row_hash"}, index=index)
    frame["row_hash"] = row_hashes(frame)
    return frame


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """A stable digest of the mapped values, so a load can skip rows that did not change.

    The values are pandas' `hash_pandas_object` as 16 hex digits: the `customers` table stores them, so a
    different hash would rewrite every customer once. The hex digits are built with numpy, 16 per row.
    """
    hashed = _hash_rows(frame[HASHED_COLUMNS])
    digits = _HEX_DIGITS[(hashed[:, None] >> _NIBBLE_SHIFTS) & np.uint64(0xF)]
    text = np.ascontiguousarray(digits).view("S16").ravel().astype("U16").astype(object)
    return pd.Series(text, index=frame.index, dtype=object)


_NULL_HASH = np.iinfo(np.uint64).max  # what `hash_pandas_object` gives a missing value


def _hash_rows(frame: pd.DataFrame) -> np.ndarray:
    """`pd.util.hash_pandas_object(frame, index=False)`, the same values, ~30 % less CPU on mapped partners.

    pandas factorizes each text column before hashing it (`categorize=True`): worth it for a column of few
    distinct values, pure overhead for names, e-mails and phone numbers, which hold nearly one value a row. A
    column of text and missing values only is hashed value by value here, missing ones given pandas' own null hash:
    the value of each row is the one pandas gives it (tests/data_mappings/test_customers.py holds them equal).
    Any other column goes pandas' own way. Columns are combined with pandas' own combiner.
    """
    from pandas.api.types import infer_dtype

    try:
        from pandas.core.util.hashing import combine_hash_arrays  # private: another pandas may move it
    except ImportError:
        return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)

    def column(series: pd.Series) -> np.ndarray:
        values = series._values
        if isinstance(values, np.ndarray) and values.dtype == object and infer_dtype(values, skipna=True) in ("string", "empty"):
            hashed = pd.util.hash_array(values, categorize=False)
            hashed[pd.isna(values)] = _NULL_HASH
            return hashed
        return pd.util.hash_pandas_object(series, index=False).to_numpy(dtype=np.uint64)

    if frame.empty or not len(frame.columns):
        return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    return combine_hash_arrays((column(frame[name]) for name in frame.columns), len(frame.columns))  # type: ignore[no-any-return]


def change_dates(mapped: pd.DataFrame) -> pd.Series:
    """The date each row last changed (the incremental cursor is date-granular, like LastChangeDate)."""
    return mapped["sap_changed_at"].dt.date
