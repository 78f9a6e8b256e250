"""The COPY text encoding (hub/ledger/pgcopy.py) and the orjson JSON texts against real PostgreSQL.

The reference is what the load did before: psycopg's `Copy.write_row` of `frame_rows`, and `json.dumps` of
`json_safe`. The same frame goes both ways into two identical tables, which must then hold the same rows.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from hub.core.db import get_engine
from hub.core.models import QuarantinedRecord, UTCDateTime
from hub.ledger.loading import (
    QuarantineRow,
    _json_text,
    _loaded_keys,
    frame_rows,
    json_safe,
    json_safe_records,
    storable_key,
    upsert_quarantine,
    upsert_rows,
)
from hub.ledger.pgcopy import NUL_REFUSED

pytestmark = pytest.mark.postgres

IST = timezone(timedelta(hours=5, minutes=30))


def _table(name: str, metadata: MetaData) -> Table:
    return Table(
        name,
        metadata,
        Column("k", String(16), primary_key=True),
        Column("text", Text),
        Column("code", String(8)),
        Column("flag", Boolean),
        Column("maybe", Boolean),
        Column("n", BigInteger),
        Column("small", Integer),
        Column("x", Float),
        Column("amount", Numeric(15, 3)),
        Column("at", UTCDateTime()),
        Column("local", DateTime(timezone=False)),
        Column("india", DateTime(timezone=True)),
        Column("stamp_text", Text),
        Column("day", Date),
        Column("day_from_stamp", Date),
        Column("clock", Time),
        Column("doc", JSON().with_variant(JSONB(), "postgresql")),
        Column("blob", LargeBinary),
        Column("mixed", Text),
        Column("row_hash", String(32)),
    )


@pytest.fixture
def pg(db: str) -> Iterator[tuple[Table, Table]]:
    if not db.startswith("postgresql"):
        pytest.skip("the COPY path is PostgreSQL's")
    metadata = MetaData()
    new, reference = _table("copy_new", metadata), _table("copy_reference", metadata)
    metadata.create_all(get_engine())
    yield new, reference
    metadata.drop_all(get_engine())


AWKWARD_TEXT = [
    "plain", "", "tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "\\.", 'quote"s', "it's",
    "naïve ünïcödé", "emoji 🧱", "\\\\two", "end\\", "\t", "\n\n", "a\\tb", None,
]


def _awkward_frame() -> pd.DataFrame:
    n = len(AWKWARD_TEXT)
    utc = pd.Series(pd.date_range("2026-01-01 10:00:00.123456", periods=n, freq="37h", tz="UTC"))
    utc[3] = pd.NaT
    naive = pd.Series(pd.date_range("1969-12-31 23:59:59", periods=n, freq="1s")).astype("datetime64[ns]")
    naive[1] = pd.Timestamp("2024-02-29 12:00:00.000000999")  # nanoseconds: cut to microseconds as before
    naive[2] = pd.NaT
    india = pd.Series(pd.date_range("2026-03-01 09:00", periods=n, freq="5h", tz="Asia/Kolkata"))
    docs: list[Any] = [{"a": 1, "nested": {"list": [1, "two", None, 3.5]}}, [1, 2, 3], "just a string", 7, None,
                       {"quote": 'say "hi"', "slash": "a\\b", "tab": "a\tb", "uni": "ü🧱"}, {"when": pd.Timestamp("2026-01-01", tz="UTC")},
                       {"n": np.int64(5), "f": np.float64("nan"), "d": Decimal("1.50")}, {1: "int key"}, True, float("nan"), [],
                       {}, {"t": (1, 2)}, {"big": 2**70}, {"x": "\\u0000 as text, no NUL"}, 0.1, {"deep": [[[["x"]]]]}]
    return pd.DataFrame(
        {
            "k": [f"K{i:03d}" for i in range(n)],
            "text": AWKWARD_TEXT,
            "code": ["ABC", None, "x", "y", "z", "\\", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "1", "2"],
            "flag": [i % 2 == 0 for i in range(n)],
            "n": np.arange(n, dtype="int64") * 10**15 - 3,
            "small": list(range(-9, n - 9)),
            "x": [0.1, float("nan"), 1e20, -0.0, float("inf"), 1 / 3, 2.5e-8, 123456789.125, 1.0, 2.0, 3.0, -1e-300, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
            "amount": [Decimal("1.500"), None, Decimal("-2.25"), Decimal("0"), Decimal("123456789012.345")] + [Decimal(i) for i in range(n - 5)],
            "at": utc,
            "local": naive,
            "india": india,
            "stamp_text": utc,  # a timestamp into a text column keeps str(datetime)
            "day": [date(2026, 1, 1) + timedelta(days=i) if i != 4 else None for i in range(n)],
            "day_from_stamp": utc,
            "clock": [time(8, 30, i, 250) if i != 5 else None for i in range(n)],
            "doc": docs,
            "blob": [b"\x00\x01bin\\ary\t" if i % 3 == 0 else None for i in range(n)],
            "mixed": [1, "two", 3.5, None, True, Decimal("4.0"), "tab\t", date(2026, 1, 2), "x", "y", 0, -1, "z", "w", "v", "u", "t", "s"],
            "row_hash": [f"h{i}" for i in range(n)],
        }
    )


def _load_reference(table: Table, frame: pd.DataFrame) -> None:
    """The load before pgcopy: `frame_rows`, JSON columns as `json.dumps(json_safe(v))`, one `write_row` per row."""
    columns = [c.name for c in table.columns if c.name in frame.columns]
    rows = frame_rows(frame, columns)
    at = columns.index("doc")
    with get_engine().begin() as conn:
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cur, cur.copy(f'COPY "{table.name}" ({", ".join(columns)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(tuple(json.dumps(json_safe(v)) if i == at and v is not None else v for i, v in enumerate(row)))


def _contents(table: Table) -> list[tuple[Any, ...]]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(table.c.k)).all()]


@pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds")  # the reference's to_pydatetime
def test_copy_text_loads_exactly_what_write_row_loaded(pg: tuple[Table, Table]) -> None:
    new, reference = pg
    frame = _awkward_frame()
    # json.dumps writes inf as `Infinity`, which jsonb refuses: the reference cannot load it (see below).
    with get_engine().begin() as conn:
        assert upsert_rows(conn, new, frame, ["k"]) == len(frame)
    _load_reference(reference, frame)
    loaded, expected = _contents(new), _contents(reference)
    assert loaded == expected
    by_key = {r[0]: r for r in loaded}
    assert [by_key[f"K{i:03d}"][1] for i in range(len(AWKWARD_TEXT))] == AWKWARD_TEXT  # "\\N" stays text, None is NULL
    assert by_key["K001"][10] == datetime(2024, 2, 29, 12, 0)  # noqa: DTZ001 - a naive column; nanoseconds cut, not rounded


def test_loading_the_same_frame_again_writes_nothing(pg: tuple[Table, Table]) -> None:
    new, _ = pg
    frame = _awkward_frame()
    with get_engine().begin() as conn:
        upsert_rows(conn, new, frame, ["k"])
    with get_engine().begin() as conn:
        assert upsert_rows(conn, new, frame, ["k"]) == 0


def test_more_rows_than_one_write_and_missing_values_in_every_dtype(pg: tuple[Table, Table]) -> None:
    new, reference = pg
    n = 12_345  # more than ROWS_PER_WRITE: several copy.write calls
    frame = pd.DataFrame(
        {
            "k": [f"R{i}" for i in range(n)],
            "text": [None if i % 7 == 0 else f"row {i}\twith tab" if i % 11 == 0 else f"row {i}" for i in range(n)],
            "n": np.arange(n, dtype="int64"),
            "x": [float("nan") if i % 5 == 0 else i / 8 for i in range(n)],
            "at": pd.Series(pd.date_range("2020-01-01", periods=n, freq="min", tz="UTC")).where(lambda s: s.dt.minute != 7),
            "flag": [i % 3 == 0 for i in range(n)],
        }
    )
    with get_engine().begin() as conn:
        assert upsert_rows(conn, new, frame, ["k"]) == n
    _load_reference(reference, frame.assign(doc=None))
    assert _contents(new) == _contents(reference)


def test_nullable_extension_dtypes_load_missing_values_as_null(pg: tuple[Table, Table]) -> None:
    """pd.NA made psycopg fail the whole batch ("cannot adapt type 'NAType'"): it is a NULL now."""
    new, _ = pg
    frame = pd.DataFrame({"k": ["a", "b"], "small": pd.array([1, None], dtype="Int64"), "maybe": pd.array([None, True], dtype="boolean"),
                          "x": pd.array([None, 2.5], dtype="Float64"), "text": pd.array(["s", None], dtype="string")})
    with get_engine().begin() as conn:
        upsert_rows(conn, new, frame, ["k"])
        rows = conn.execute(select(new.c.k, new.c.small, new.c.maybe, new.c.x, new.c.text).order_by(new.c.k)).all()
    assert [tuple(r) for r in rows] == [("a", 1, None, None, "s"), ("b", None, True, 2.5, None)]


@pytest.mark.parametrize(("column", "first"), [("text", "fine"), ("code", None), ("mixed", 1)])
def test_a_nul_character_in_text_is_refused_before_the_copy_as_psycopg_refused_it(pg: tuple[Table, Table], column: str, first: Any) -> None:
    new, _ = pg
    frame = pd.DataFrame({"k": ["a", "b"], column: [first, "bad\x00value"]})
    with pytest.raises(psycopg.DataError) as refused, get_engine().begin() as conn:
        upsert_rows(conn, new, frame, ["k"])
    assert str(refused.value) == NUL_REFUSED and refused.value.sqlstate is None
    with pytest.raises(psycopg.DataError, match="NUL"), get_engine().begin() as conn:  # as write_row refused it
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cur, cur.copy(f"COPY copy_reference (k, {column}) FROM STDIN") as copy:
            copy.write_row(("b", "bad\x00value"))


def test_a_nul_character_in_json_is_refused_by_the_server_as_before(pg: tuple[Table, Table]) -> None:
    new, _ = pg
    frame = pd.DataFrame({"k": ["a"], "doc": [{"v": "bad\x00"}]})
    with pytest.raises(Exception) as refused, get_engine().begin() as conn:
        upsert_rows(conn, new, frame, ["k"])
    assert getattr(refused.value, "orig", refused.value).sqlstate == "22P05"  # jsonb: \u0000 cannot be converted to text


# --- JSON texts -------------------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


NAIVE = datetime(2026, 1, 1)  # noqa: DTZ001 - a naive datetime is one of the cases
JSON_CASES: list[Any] = [
    None, True, 0, -7, 2**63 - 1, 2**70, 0.1, 1e20, 1e-7, float("nan"), "", "tab\tnew\nline", "quote \" and \\ slash",
    "ünï 🧱", [1, "a", None], (1, 2), {"a": {"b": [1, {"c": None}]}}, {1: "int key", 2.5: "float key"},
    {True: "bool key", None: "none key"}, {"when": datetime(2026, 1, 1, 10, 0, tzinfo=UTC)}, {"ist": datetime(2026, 1, 1, 10, 0, 5, 120, tzinfo=IST)},
    {"naive": NAIVE}, {"day": date(2026, 2, 3)}, {"clock": time(8, 30)}, pd.Timestamp("2026-01-01 00:00:00.000000001", tz="UTC"),
    pd.NaT, pd.NA, np.int64(5), np.float32(0.5), np.float64("nan"), np.bool_(True), np.str_("np"), np.datetime64("2026-01-01T00:00:00", "us"),
    np.datetime64("2026-01-01T00:00:00", "ns"), Decimal("1.50"), {"k": Decimal("NaN")}, {"nested": [pd.Timestamp("2026-05-01", tz="UTC"), np.int32(3)]},
    Colour.RED.value, {"s": "\\u0000 is text here"}, [[[[[["deep"]]]]]],
]


def _jsonb(conn: Any, text: str) -> Any:
    return conn.exec_driver_sql("SELECT CAST(%(t)s AS jsonb)", {"t": text}).scalar_one()


@pytest.mark.parametrize("value", JSON_CASES, ids=lambda v: type(v).__name__)
def test_orjson_text_is_the_same_jsonb_value_as_json_dumps_of_json_safe(pg: tuple[Table, Table], value: Any) -> None:
    with get_engine().connect() as conn:
        assert _jsonb(conn, _json_text(value)) == _jsonb(conn, json.dumps(json_safe(value)))
        assert _jsonb(conn, _json_text(value, storable=True)) == _jsonb(conn, json.dumps(json_safe(value)))


def test_the_documented_differences_from_json_dumps() -> None:
    assert json.loads(_json_text(float("inf"))) is None  # json.dumps wrote `Infinity`, which jsonb refused
    assert json.loads(_json_text({"c": Colour.RED, "l": Level.HIGH})) == {"c": "red", "l": 3}  # str() gave "Colour.RED", "3"


def test_storable_json_keeps_nul_as_replacement_character_in_values_and_keys() -> None:
    assert json.loads(_json_text({"k\x00": ["a\x00b", {"x": "\x00"}]}, storable=True)) == {"k\ufffd": ["a\ufffdb", {"x": "\ufffd"}]}
    assert "\\u0000" in _json_text("a\x00b")  # not storable: left for PostgreSQL to refuse


# --- quarantine -------------------------------------------------------------------------------------------


def test_quarantine_rows_are_stored_with_the_same_values_as_before(pg: tuple[Table, Table]) -> None:
    raw = {"BusinessPartner": "1", "to_Address": {"results": [{"City": "Pune\x00", "n": 1.5}]}, 1: "int key"}
    rows = [
        QuarantineRow("1", raw, {"email": "x@", "at": "2026-01-01T00:00:00+00:00", "n": None}, [{"expectation": "e", "value": float("nan")}]),
        QuarantineRow("2", {"k": "v"}, None, []),
        QuarantineRow("K" * 300, {"big": 2**70, "when": datetime(2026, 1, 1, tzinfo=UTC)}, {"d": Decimal("2.5")}, [{"kwargs": {"t": (1, 2)}}]),
    ]
    with get_engine().begin() as conn:
        assert upsert_quarantine(conn, "sap", "customers", rows, "run-1") == 3
    with get_engine().begin() as conn:  # seen again: refreshed, counted
        assert upsert_quarantine(conn, "sap", "customers", rows[:1], "run-2") == 1
    with get_engine().connect() as conn:
        stored = {r.record_key: r for r in conn.execute(select(QuarantinedRecord.__table__)).all()}
        null_json = conn.exec_driver_sql("SELECT jsonb_typeof(mapped_record) FROM quarantined_records WHERE record_key = '2'").scalar_one()
    first = stored["1"]
    assert first.raw_record == {"BusinessPartner": "1", "to_Address": {"results": [{"City": "Pune\ufffd", "n": 1.5}]}, "1": "int key"}
    assert first.mapped_record == {"email": "x@", "at": "2026-01-01T00:00:00+00:00", "n": None}
    assert first.failed_expectations == [{"expectation": "e", "value": None}]
    assert (first.seen_count, first.flow_run_id, first.status) == (2, "run-2", "quarantined")
    assert null_json == "null"  # None is JSON null, as the JSON type stored it
    long = stored[storable_key("K" * 300)]
    assert long.raw_record == {"big": 2**70, "when": "2026-01-01T00:00:00+00:00"}
    assert long.mapped_record == {"d": "2.5"} and long.failed_expectations == [{"kwargs": {"t": [1, 2]}}]


def test_json_safe_records_match_json_safe_of_each_value() -> None:
    frame = pd.DataFrame(
        {
            "s": ["a", None, "c"],
            "o": [1, "x", Decimal("1.5")],
            "b": [True, False, True],
            "i": np.array([1, 2, 3], dtype="int64"),
            "f": [1.5, float("nan"), float("inf")],
            "t": pd.Series(pd.to_datetime(["2026-01-01 10:00", None, "2026-01-02 00:00:00.5"], utc=True, format="ISO8601")),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "d": [date(2026, 1, 1), None, date(2026, 1, 3)],
        },
        index=[10, 11, 12],
    )
    expected = [{str(k): json_safe(v) for k, v in r.items()} for r in frame.to_dict("records")]
    assert json_safe_records(frame) == expected
    assert json_safe_records(frame[[]]) == [{}, {}, {}]


@pytest.mark.parametrize(
    ("keys", "open_keys"),
    [
        (["1", "2", None, float("nan"), ""], {"1", "3"}),
        ([1, 2, "3"], {"1", "3", "4"}),
        (["K" * 300, "short"], {storable_key("K" * 300), "short", "other"}),
        ([None, float("nan")], {"nan", "None"}),
    ],
)
def test_loaded_keys_are_the_open_keys_among_the_loaded_ones(keys: list[Any], open_keys: set[str]) -> None:
    before = {storable_key(str(k)) for k in keys if k is not None and not (isinstance(k, float) and k != k) and str(k)}
    assert _loaded_keys(keys, open_keys) & open_keys == before & open_keys
