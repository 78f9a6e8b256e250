"""Shared helpers for the expectation suite and runner tests."""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from expectations.customers import CUSTOMER_COLUMNS

# Strings come out of the SAP mapping either as pandas' "str" dtype (NaN for
# missing) or as object columns holding None; the helper produces both.
_OBJECT_COLUMNS = ("industry", "order_block", "mapping_errors", "row_hash")
_BOOL_COLUMNS = ("is_blocked", "is_archived", "deletion_flag")
_DATETIME_COLUMNS = ("sap_created_at", "sap_changed_at")

_COUNTRIES = ("IN", "DE", "US", "IN", "GB")
_POSTAL = {"DE": "10115", "US": "94105", "GB": "SW1A 1AA"}
_PHONE_PREFIX = {"IN": "+9198", "DE": "+4930", "US": "+1415", "GB": "+4420"}


def _letters(number: int, width: int) -> str:
    """``number`` written in base 26 with A-Z digits, left-padded to ``width``."""
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 26)
        digits.append(string.ascii_uppercase[rest])
    return "".join(reversed(digits))


def make_customer_frame(n: int, *, start: int = 0) -> pd.DataFrame:
    """A valid canonical customer frame of ``n`` rows (RangeIndex), as the SAP mapping emits it.

    Every row passes the ``customers`` suite; ``customer_id``, email and GSTIN
    are unique for any ``n`` up to millions. ``start`` shifts the generated ids.
    """
    ids = range(start, start + n)
    countries = [_COUNTRIES[i % len(_COUNTRIES)] for i in ids]
    persons = [i % 3 == 0 for i in ids]
    changed = pd.Timestamp("2024-05-01T08:30:00Z")
    data: dict[str, list[Any]] = {
        "customer_id": [str(1_000_000 + i) for i in ids],
        "sap_customer": [str(1_000_000 + i) if i % 4 else None for i in ids],
        "category": ["person" if p else "organization" for p in persons],
        "name": [
            f"Person {i}" if p else f"DryMix Customer {i} Pvt Ltd" for i, p in zip(ids, persons, strict=True)
        ],
        "first_name": ["Asha" if p else None for p in persons],
        "last_name": [f"Rao{i}" if p else None for i, p in zip(ids, persons, strict=True)],
        "search_term": [f"CUST{i}"[:20] for i in ids],
        "bp_grouping": ["Z001" if p else "Z002" for p in persons],
        "language": ["EN" if c != "DE" else "DE" for c in countries],
        "industry": [None if p else "CONS" for p in persons],
        "email": [f"customer{i}@example.com" if i % 5 else None for i in ids],
        "phone": [f"{_PHONE_PREFIX[c]}{i % 10_000_000:07d}" for i, c in zip(ids, countries, strict=True)],
        "mobile": [
            f"+9197{i % 100_000_000:08d}" if c == "IN" else None for i, c in zip(ids, countries, strict=True)
        ],
        "street": [f"{i} Industrial Estate" for i in ids],
        "house_number": [str(i % 200 + 1) for i in ids],
        "city": ["Pune" if c == "IN" else "Berlin" for c in countries],
        "postal_code": [
            f"{411001 + i % 500}" if c == "IN" else _POSTAL[c] for i, c in zip(ids, countries, strict=True)
        ],
        "region": ["MH" if c == "IN" else None for c in countries],
        "country": countries,
        "gstin": [
            f"27{_letters(i // 10_000, 5)}{i % 10_000:04d}F1Z5" if c == "IN" else None
            for i, c in zip(ids, countries, strict=True)
        ],
        "account_group": ["KUNA"] * n,
        "is_blocked": [False] * n,
        "is_archived": [i % 7 == 0 for i in ids],
        "deletion_flag": [False] * n,
        "order_block": [None] * n,
        "sap_created_at": [changed - pd.Timedelta(days=365 + i % 30) for i in ids],
        "sap_changed_at": [changed - pd.Timedelta(minutes=i % 1440) for i in ids],
        "mapping_errors": [None] * n,
        "row_hash": [hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest() for i in ids],
    }
    columns: dict[str, pd.Series] = {}
    for name in CUSTOMER_COLUMNS:
        values = data[name]
        if name in _BOOL_COLUMNS:
            columns[name] = pd.Series(values, dtype=bool)
        elif name in _DATETIME_COLUMNS:
            columns[name] = pd.Series(values, dtype="datetime64[us, UTC]")
        elif name in _OBJECT_COLUMNS:
            columns[name] = pd.Series(values, dtype=object)
        else:
            columns[name] = pd.Series(values, dtype="str")
    return pd.DataFrame(columns)


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    """A fresh Data Docs root per test."""
    return tmp_path / "data_docs"
