from __future__ import annotations

import pandas as pd

from data_mappings.customers import (
    CANONICAL_COLUMNS,
    e164,
    flatten_business_partners,
    map_customers,
)
from tests.factories import address, partner


def mapped(*records: dict) -> pd.DataFrame:
    return map_customers(flatten_business_partners(list(records)))


def test_maps_a_clean_partner_to_the_canonical_columns() -> None:
    row = mapped(partner(1)).iloc[0]
    assert list(mapped(partner(1)).columns) == CANONICAL_COLUMNS
    assert row.customer_id == "1000000001"
    assert row.category == "organization"
    assert row["name"] == "Shree Ganesh Traders 1"
    assert row.email == "orders1@ganesh-traders.in"
    assert row.phone == "+912026123456"
    assert row.mobile == "+919822012345"
    assert row.country == "IN" and row.city == "Pune" and row.postal_code == "411001"
    assert row.gstin == "27AAPFU0939F1ZV"
    assert row.account_group == "KUNA"
    assert row.is_blocked is False or row.is_blocked == False  # noqa: E712 - numpy bool
    assert row.sap_changed_at == pd.Timestamp("2023-11-14 14:30:05", tz="UTC")
    assert row.mapping_errors is None


def test_name_falls_back_to_organisation_then_person() -> None:
    org = partner(2, BusinessPartnerFullName="  ")
    person = partner(3, BusinessPartnerCategory="1", BusinessPartnerFullName=None, OrganizationBPName1=None, FirstName="Asha", LastName="Rao")
    frame = mapped(org, person)
    assert frame.loc[0, "name"] == "Shree Ganesh Traders 2"
    assert frame.loc[1, "name"] == "Asha Rao"
    assert frame.loc[1, "category"] == "person"


def test_unparseable_values_become_mapping_errors_not_guesses() -> None:
    bad = partner(4, LastChangeDate="2024-01-01", BusinessPartnerIsBlocked="X", BusinessPartnerCategory="9")
    row = mapped(bad).iloc[0]
    assert "LastChangeDate: not an Edm.DateTime" in row.mapping_errors
    assert "BusinessPartnerIsBlocked: not a boolean" in row.mapping_errors
    assert "BusinessPartnerCategory: unknown code" in row.mapping_errors
    assert row.category is None


def test_never_changed_partner_uses_creation_as_last_change() -> None:
    row = mapped(partner(5, LastChangeDate=None, LastChangeTime=None)).iloc[0]
    assert row.sap_changed_at == row.sap_created_at


def test_partner_with_every_field_null_maps_without_crashing() -> None:
    row = mapped({"BusinessPartner": None}).iloc[0]
    assert row.customer_id is None and row["name"] is None
    assert pd.isna(row.sap_changed_at)
    assert row.is_blocked == False  # noqa: E712 - SAP's initial value


def test_deferred_navigation_and_missing_addresses_are_tolerated() -> None:
    rec = partner(6, to_Customer={"__deferred": {"uri": "x"}}, to_BusinessPartnerAddress={"results": []})
    row = mapped(rec).iloc[0]
    assert row.account_group is None and row.email is None and row.country is None


def test_phone_normalisation() -> None:
    assert e164("098220 12345", None, "IN") == "+919822012345"
    assert e164("9822012345", None, "IN") == "+919822012345"
    assert e164("0044 20 7946 0958", None, "GB") == "+442079460958"
    assert e164("12345", None, "IN") == "12345"
    assert e164("+91 98-abc", None, "IN") == "+9198abc"
    assert e164(None, "+971 4 123 4567", "AE") == "+97141234567"


def test_row_hash_changes_only_when_values_change() -> None:
    a, b = mapped(partner(7)), mapped(partner(7))
    assert a.loc[0, "row_hash"] == b.loc[0, "row_hash"]
    changed = partner(7)
    address(changed)["CityName"] = "Nashik"
    assert mapped(changed).loc[0, "row_hash"] != a.loc[0, "row_hash"]


def test_html_and_sql_looking_strings_are_kept_verbatim() -> None:
    evil = partner(8, BusinessPartnerFullName="Robert'); DROP TABLE customers;--")
    assert mapped(evil).loc[0, "name"] == "Robert'); DROP TABLE customers;--"


def test_the_mapping_selects_every_field_it_reads_and_expands_every_path_to_them() -> None:
    """SOURCE_FIELDS is the one list of what the customers mapping reads; the dataset's $select and $expand come from it."""
    from data_mappings.customers import BOOLEAN_MAP, COLUMN_MAP, SOURCE_FIELDS, source_expand

    selected_leaves = {field.rsplit("/", 1)[-1] for field in SOURCE_FIELDS}
    assert set(COLUMN_MAP) | set(BOOLEAN_MAP) <= selected_leaves
    assert source_expand() == (
        "to_Customer",
        "to_BusinessPartnerTax",
        "to_BusinessPartnerAddress",
        "to_BusinessPartnerAddress/to_EmailAddress",
        "to_BusinessPartnerAddress/to_PhoneNumber",
        "to_BusinessPartnerAddress/to_MobilePhoneNumber",
    )
    assert source_expand(["a/b/c/Field", "a/Other", "Flat"]) == ("a", "a/b", "a/b/c")


def test_edm_times_read_as_arrays_equal_the_one_value_reading() -> None:
    from data_mappings.customers import _edm_seconds, _parse_edm_time, _read_edm

    values = [
        "PT09H30M33S", "PT00H00M00S", "PT99H99M99S", "PT23H59M59S",  # SAP's own form
        "PT9H30M33S", "PT09H30M33.5S", "PT14H", "PT30M", "PT05S", "PT", "PT09H30M33SX", " PT09H30M33S",  # other widths
        "PT0AH30M33S", "PT09X30M33S", "PT09H30M3/S", "PT\u0661\u0662H00M00S", "pt09h30m33s",  # look alike, are not
        None, float("nan"), 36000, True, ["PT09H30M33S"], "",
    ]
    series = pd.Series(values, dtype=object)
    spans, bad = _parse_edm_time(series)
    seconds, known, unreadable = _read_edm(series, _edm_seconds, float)
    expected = pd.to_timedelta(pd.arrays.FloatingArray(seconds, ~known), unit="s")
    assert spans.isna().tolist() == list(~known)
    assert spans[known].tolist() == list(expected[known])
    assert bad.tolist() == unreadable.tolist()
    assert spans[0] == pd.Timedelta(hours=9, minutes=30, seconds=33) and spans[2] == pd.Timedelta(seconds=99 * 3600 + 99 * 60 + 99)
    assert bad[[12, 13, 14, 16, 17 + 2, 17 + 4]].all() and not bad[[17, 18]].any()


def test_row_hashes_are_the_values_pandas_gives_and_the_table_stores() -> None:
    """`row_hash` is stored in `customers`: hashing text columns without factorizing must not change one value."""
    from data_mappings.customers import HASHED_COLUMNS, _hash_rows

    frame = mapped(*(partner(i) for i in range(1, 40)))
    frame.loc[3, "email"] = None
    frame.loc[4, "email"] = float("nan")
    frame.loc[5, "name"] = pd.NA
    frame.loc[6, "city"] = ""
    frame.loc[7, "name"] = "Śrī Gaṇeśa Traders 🧱"
    frame.loc[8, "city"] = frame.loc[9, "city"]  # a repeated value: one category under factorizing
    frame.loc[10, "gstin"] = "1"  # text that looks like a number
    expected = pd.util.hash_pandas_object(frame[HASHED_COLUMNS], index=False).to_numpy()
    assert (_hash_rows(frame[HASHED_COLUMNS]) == expected).all()
    # A column that is not text and missing values alone goes pandas' own way, with the same values.
    mixed = pd.DataFrame({"a": pd.Series([1, "1", True, None, 1.0], dtype=object), "b": ["x", None, "y", "x", "z"]})
    assert (_hash_rows(mixed) == pd.util.hash_pandas_object(mixed, index=False).to_numpy()).all()
    assert len(_hash_rows(frame[HASHED_COLUMNS].iloc[:0])) == 0


def test_a_text_repeated_on_a_page_is_one_object_in_the_mapped_rows() -> None:
    """A parsed page gives every partner its own copy of "IN" or "Pune"; the mapped rows keep one of each."""
    import orjson

    records = orjson.loads(orjson.dumps([partner(n) for n in range(1, 201)]))  # as a page is parsed: no shared strings
    assert len({id(address(r)["Country"]) for r in records}) == 200
    frame = mapped(*records)
    for column in ("country", "city", "account_group", "language", "bp_grouping"):
        values = frame[column].tolist()
        assert len({id(v) for v in values}) == len(set(values)) == 1, column
    assert frame["country"].tolist() == ["IN"] * 200 and frame["city"].tolist() == ["Pune"] * 200
    assert frame["customer_id"].nunique() == 200  # distinct values stay distinct
