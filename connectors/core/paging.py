"""Paginators: small objects that say where the next page is, tested with synthetic responses.

A position is a URL plus a little JSON-safe state, so that a failed unit of work (a page or a batch
of pages) can be recorded in `integration_errors` and resumed exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class PagePosition:
    url: str
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "state": dict(self.state)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PagePosition:
        return cls(url=str(data["url"]), state=dict(data.get("state") or {}))


@dataclass(frozen=True)
class Page:
    """One page of records, where it came from, and where the next one is (None at the end)."""

    position: PagePosition
    records: list[dict[str, Any]]
    next: PagePosition | None
    # Where a later read starts, handed by the source with a read's last page (Google's nextSyncToken,
    # Graph's @odata.deltaLink); None for sources whose cursor is a value of the records.
    end_cursor: dict[str, Any] | None = None


class Paginator(Protocol):
    def start(self, url: str) -> PagePosition: ...

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None: ...


def dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def with_query(url: str, **params: Any) -> str:
    """`url` with query parameters set (order kept, OData `$` names and literals left readable)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: str(v) for k, v in params.items()})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="$'(),/:*", quote_via=quote), parts.fragment))


@dataclass(frozen=True)
class ODataV2Paginator:
    """OData V2: follow the server's `d.__next` ($skiptoken) when present, else page with $top/$skip.

    In OData `$top` bounds the whole answer and the server may page *within* it, so the client reads a
    window of `$top` rows (following every `__next`), and opens the next window with `$skip` only when
    the window came back full. A short window is the end.
    """

    next_link_path: tuple[str, ...] = ("d", "__next")

    def start(self, url: str) -> PagePosition:
        return PagePosition(url, {"window": url, "seen": 0})

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        window = str(position.state.get("window", position.url))
        seen = int(position.state.get("seen", 0)) + len(records)
        link = dig(body, self.next_link_path)
        if isinstance(link, str) and link:
            return PagePosition(link, {"window": window, "seen": seen})
        query = query_of(window)
        top = int(query.get("$top", "0") or 0)
        if top <= 0 or seen < top:
            return None
        following = with_query(window, **{"$skip": int(query.get("$skip", "0") or 0) + top})
        return PagePosition(following, {"window": following, "seen": 0})


def odata_string(value: str) -> str:
    """An OData string literal: single quotes around, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class ODataKeysetPaginator:
    """OData keyset paging on the primary key: each page asks for `key gt '<last key read>'`.

    Offsets over data that changes while it is read skip rows: a row read early whose sort position
    moves (a changed `LastChangeDate`) shifts every later row by one, and a `$skip` window then steps
    over one of them (issue 12: 80 partners never read while the run reported success). Ordered by the
    key alone and filtered by the last key read, a read cannot skip a row that matched when it started:
    keys do not change, and a changed row stays where it was. A row created meanwhile with a lower key
    is left to the next incremental run, whose watermark never stands after this read's start.

    The server's own `__next` is not followed (SAP Gateway's skip tokens are offsets too); it only says
    that the server cut the page short, so the next page is asked for from the last key instead.
    """

    key: str
    next_link_path: tuple[str, ...] = ("d", "__next")

    def start(self, url: str) -> PagePosition:
        query = query_of(url)
        return PagePosition(url, {"filter": query.get("$filter", ""), "after": None})

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        query = query_of(position.url)
        top = int(query.get("$top", "0") or 0)
        more = isinstance(dig(body, self.next_link_path), str) and bool(dig(body, self.next_link_path))
        if not records or (not more and (top <= 0 or len(records) < top)):
            return None
        last = records[-1].get(self.key) if isinstance(records[-1], dict) else None
        if not isinstance(last, str) or not last:
            raise ValueError(f"keyset paging needs a {self.key} on every record; the last record of the page has none")
        base = str(position.state.get("filter", ""))
        after = f"{self.key} gt {odata_string(last)}"
        url = with_query(position.url, **{"$filter": f"({base}) and {after}" if base else after})
        parts = urlsplit(url)
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("$skip", "$skiptoken")]
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept, safe="$'(),/:*", quote_via=quote), parts.fragment))
        return PagePosition(url, {"filter": base, "after": last})


@dataclass(frozen=True)
class NextLinkPaginator:
    """Follow a next link found at `path` in the body until it is absent (Graph `@odata.nextLink` style)."""

    path: tuple[str, ...]

    def start(self, url: str) -> PagePosition:
        return PagePosition(url)

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        link = dig(body, self.path)
        return PagePosition(link) if isinstance(link, str) and link else None


@dataclass(frozen=True)
class CountSkipPaginator:
    """`count`/`skip` offset paging (Razorpay collections): a page shorter than `count` is the last.

    The caller fixes the window (`from`/`to`) in the first URL, so records created while paging fall
    outside it and cannot shift the offsets under us.
    """

    default_count: int = 10

    def start(self, url: str) -> PagePosition:
        return PagePosition(url)

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        query = query_of(position.url)
        count = int(query.get("count", "") or self.default_count)
        if len(records) < count:
            return None
        return PagePosition(with_query(position.url, skip=int(query.get("skip", "0") or 0) + count))
