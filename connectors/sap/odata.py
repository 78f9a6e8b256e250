"""OData V2 wire format helpers: literals, /Date()/ values, decimals, the SAP error envelope."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

_DATE_RE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_DURATION_RE = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def datetime_literal(value: date | datetime) -> str:
    """`datetime'2024-01-01T00:00:00'`: the URI literal for an Edm.DateTime filter (UTC, no offset)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f"datetime'{value.strftime('%Y-%m-%dT%H:%M:%S')}'"
    return f"datetime'{value.isoformat()}T00:00:00'"


def datetimeoffset_literal(value: datetime) -> str:
    """`datetimeoffset'2026-12-01T10:00:00Z'`: the URI literal for an Edm.DateTimeOffset filter, in UTC.

    A naive datetime is refused: its zone would be a guess, and a wrong guess moves a watermark by hours.
    """
    if value.tzinfo is None:
        raise ValueError("datetimeoffset_literal needs a timezone-aware datetime")
    utc = value.astimezone(UTC)
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        stamp += f".{utc.microsecond:06d}".rstrip("0")
    return f"datetimeoffset'{stamp}Z'"


def parse_edm_datetime(value: Any) -> datetime | None:
    """`/Date(ms)/` or `/Date(ms+0000)/` -> aware UTC datetime; None for null; ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not an Edm.DateTime: {value!r}")
    match = _DATE_RE.match(value)
    if not match:
        raise ValueError(f"not an Edm.DateTime: {value!r}")
    ms = int(match.group(1))
    # The offset suffix of Edm.DateTimeOffset only says which zone to *display*; ms are UTC already.
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def parse_edm_time(value: Any) -> timedelta | None:
    """`PT14H30M05S` -> timedelta; None for null; ValueError otherwise."""
    if value is None:
        return None
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"not an Edm.Time: {value!r}")
    h, m, s = match.groups()
    return timedelta(hours=int(h or 0), minutes=int(m or 0), seconds=float(s or 0))


def parse_edm_decimal(value: Any) -> Decimal | None:
    """Decimals travel as JSON strings in OData V2."""
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not an Edm.Decimal: {value!r}") from None


def parse_sap_error(body: Any) -> tuple[str | None, str | None]:
    """SAP's OData error envelope -> (code, message with the first detail messages appended)."""
    if not isinstance(body, Mapping):
        return None, None
    error = body.get("error")
    if not isinstance(error, Mapping):
        return None, None
    code = error.get("code")
    message = error.get("message")
    if isinstance(message, Mapping):
        message = message.get("value")
    raw_inner = error.get("innererror")
    inner: Mapping[str, Any] = raw_inner if isinstance(raw_inner, Mapping) else {}
    details = [
        str(d.get("message"))
        for d in (inner.get("errordetails") or [])
        if isinstance(d, Mapping) and d.get("message") and d.get("message") != message
    ]
    text = str(message) if message else None
    if details:
        text = f"{text or ''} ({'; '.join(details[:3])})".strip()
    if inner.get("transactionid"):
        text = f"{text} [SAP transaction {inner['transactionid']}]"
    return (str(code) if code is not None else None), text
