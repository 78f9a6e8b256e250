"""A frame as PostgreSQL COPY text, built column by column: a `copy.write` per chunk, not a Python call per row.

Each value is written as the text psycopg's own dumpers sent for it (`Copy.write_row`, before), or, for
timestamps, a text PostgreSQL reads as the same value, so the server parses the same values. Common
dtypes are encoded a whole column at a time: text (object columns of `str`), booleans, integers, floats,
and UTC or naive timestamps bound for a timestamp or date column. Anything else (decimals, dates, bytes,
other time zones, mixed object columns) goes value by value through psycopg's dumpers.

A text column is joined into one string to look for COPY's specials (backslash, tab, newline, carriage
return) and NUL in a few scans; only a column holding one is escaped, in the same joined string. A NUL
character in text is refused as psycopg refuses it (DataError, before anything is sent), so the bisection
in hub/ledger/loading.py isolates the row as it did; JSON columns are written as their JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from pandas.api.types import infer_dtype
from psycopg.adapt import PyFormat, Transformer

NULL = "\\N"
_SEP = "\x00"  # joins a column's values to escape them in one pass: no text value can hold it (refused first)
NUL_REFUSED = "PostgreSQL text fields cannot contain NUL (0x00) bytes"  # psycopg's own message (types/string.py)
ROWS_PER_WRITE = 1_000  # ~1 MB of COPY text a write (business partners): a write's text and its bytes are what is held


def copy_chunks(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    json_columns: Collection[str],
    timestamp_columns: Collection[str],
    json_text: Callable[[Any], str],
    plain_values: Callable[[pd.Series], list[Any]],
    cursor: psycopg.Cursor[Any],
) -> Iterator[str]:
    """`frame[columns]` as COPY text, `ROWS_PER_WRITE` lines a chunk (a `copy.write` each).

    Every column is encoded when this is called, before anything is sent: a value psycopg would refuse (a NUL
    character) raises before the COPY starts. The chunks are then joined one at a time, as they are written:
    a batch's whole COPY text (~0.9 KB a partner) and its lines never sit in memory at once.
    `timestamp_columns` are those whose table column is a timestamp or a date (any other keeps
    `str(datetime)`, the text it got before); `plain_values(series)` is the value list `write_row` was given
    (hub/ledger/loading.py `frame_rows`), for JSON columns and the columns encoded value by value.
    """
    if not columns or frame.empty:
        return iter(())
    encoded = [
        _encode_column(frame[name], json=name in json_columns, timestamp=name in timestamp_columns,
                       json_text=json_text, plain_values=plain_values, cursor=cursor)
        for name in columns
    ]
    return _joined_chunks(encoded, len(frame))


def _joined_chunks(encoded: list[list[str]], rows: int) -> Iterator[str]:
    lines = map("\t".join, zip(*encoded, strict=True))
    for _ in range(0, rows, ROWS_PER_WRITE):
        yield "\n".join(islice(lines, ROWS_PER_WRITE)) + "\n"


def _encode_column(
    series: pd.Series,
    *,
    json: bool,
    timestamp: bool,
    json_text: Callable[[Any], str],
    plain_values: Callable[[pd.Series], list[Any]],
    cursor: psycopg.Cursor[Any],
) -> list[str]:
    dtype = series.dtype
    if json:
        # As before: None and NaN are SQL NULL, anything else its JSON text (pd.NA is JSON null).
        values = plain_values(series)
        mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        return _texts([json_text(v) if v is not None else "" for v in values], mask)
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        tz = getattr(dtype, "tz", None)
        if timestamp and (tz is None or str(tz) == "UTC"):
            return _timestamps(series, aware=tz is not None)
        # Another zone's offset changes with the date, a text column keeps str(datetime): value by value.
        return _dumped(plain_values(series), cursor)
    if dtype == np.bool_:
        return np.where(series.to_numpy(), "t", "f").tolist()  # type: ignore[no-any-return]
    if isinstance(dtype, pd.BooleanDtype):
        mask = series.isna().to_numpy()
        return _masked(np.where(series.fillna(False).to_numpy(dtype=bool), "t", "f").astype(object), mask)
    if pd.api.types.is_integer_dtype(dtype):
        mask = series.isna().to_numpy()
        if mask.any():
            return _masked(np.array([str(v) for v in series.to_numpy(dtype=object)], dtype=object), mask)
        return series.to_numpy().astype(str).tolist()  # type: ignore[no-any-return]
    if pd.api.types.is_float_dtype(dtype):
        mask = series.isna().to_numpy()
        # repr is str(float), what psycopg writes (`inf` included, which PostgreSQL reads).
        return _masked(np.array(list(map(repr, series.to_numpy(dtype=float, na_value=np.nan).tolist())), dtype=object), mask)
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        values = series.tolist()
        try:  # a column of str and nothing else, the most common, is known by joining it
            return _texts(values, None)
        except TypeError:
            pass
        if infer_dtype(series, skipna=True) in ("string", "empty"):
            array = np.array(values, dtype=object)
            mask = pd.isna(array)
            array[mask] = ""
            return _texts(array.tolist(), mask)
    return _dumped(plain_values(series), cursor)


def _masked(texts: np.ndarray | list[str], mask: np.ndarray | None) -> list[str]:
    """Tokens of texts that need no escaping: NULL where `mask`."""
    if mask is None or not mask.any():
        return texts if isinstance(texts, list) else texts.tolist()
    tokens = np.array(texts, dtype=object)
    tokens[mask] = NULL
    return tokens.tolist()  # type: ignore[no-any-return]


def _texts(values: list[str], mask: np.ndarray | None) -> list[str]:
    """Texts ("" where missing) escaped for COPY where they need it, NULL where `mask`; a NUL refused as psycopg
    refuses it. A value that is not a str raises TypeError."""
    blob = _SEP.join(values)
    if blob.count(_SEP) != max(len(values) - 1, 0):
        raise psycopg.DataError(NUL_REFUSED)
    if "\\" in blob or "\t" in blob or "\n" in blob or "\r" in blob:
        blob = blob.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        values = blob.split(_SEP)
    return _masked(values, mask)


def _timestamps(series: pd.Series, *, aware: bool) -> list[str]:
    values = series.dt.tz_localize(None).to_numpy() if aware else series.to_numpy()
    # Microseconds, cut as `Timestamp.to_pydatetime` cut them (numpy floors too); PostgreSQL keeps no finer.
    texts = np.datetime_as_string(values.astype("datetime64[us]"), unit="us").tolist()
    suffix = "+00:00" if aware else ""  # the offset str(datetime) wrote for an aware UTC value
    # A space, not numpy's "T": `time` columns read only the former.
    blob = ((suffix + _SEP).join(texts) + suffix).replace("T", " ")
    return _masked(blob.split(_SEP), np.isnat(values))


def _dumped(values: list[Any], cursor: psycopg.Cursor[Any]) -> list[str]:
    """Values as psycopg's dumpers write them for COPY (`Copy.write_row`); a NUL in text raises here."""
    transformer = Transformer(cursor)
    encoding = cursor.connection.info.encoding
    dumped = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
    mask = np.fromiter((b is None for b in dumped), dtype=bool, count=len(dumped))
    return _texts([bytes(b).decode(encoding) if b is not None else "" for b in dumped], mask)
