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
